"""One process of a multi-process local run: `torchrun … -m inflame.worker RUN_DIR SPEC_DIR`.

The parent (`inflame train --nproc-per-node N`) has validated the spec and written the run
directory; each worker rebuilds the job from RUN_DIR/spec.toml, takes its rank from torchrun's
variables, joins the process group and runs the app. Rank 0 writes metrics, checkpoints and
the model; the parent finishes the manifest.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from inflame.errors import InflameError
from inflame.stopping import Terminated, exit_without_teardown, on_sigterm


def main() -> None:
    exit_without_teardown(_work(Path(sys.argv[1]), Path(sys.argv[2])))


def _work(run_dir: Path, spec_dir: Path) -> int:
    """Run this process's share of the job; the exit code (a crash still raises)."""
    from inflame.appfault import training_failure
    from inflame.jobprep import prepare_job
    from inflame.launcher import EXTRA_INPUTS, STOPPED_FILE, handoff
    from inflame.runs import SPEC_FILE
    from inflame.runtime import local_context
    from inflame.training.distributed import close_distributed, init_distributed
    from inflame.training.seeding import seed_everything

    try:
        job = prepare_job(run_dir / SPEC_FILE)
        ctx = local_context(job.spec, job.spec.hyperparameters, run_dir)
        ctx.spec_dir = spec_dir
        from inflame.training.fastpath import deterministic_env

        deterministic_env(ctx.performance)
        init_distributed(ctx)
        seed_everything(ctx.seed)  # the same initial weights in every process
        try:
            with on_sigterm():
                try:
                    job.app.train(ctx)
                except Exception as exc:  # the parent says what to do next
                    failure = training_failure(exc, job.app.folder)
                    if failure is None:
                        raise
                    raise failure from exc
            if ctx.is_main:  # for the parent's manifest
                (run_dir / EXTRA_INPUTS).write_text(json.dumps(handoff(ctx)))
        finally:
            close_distributed()
    except InflameError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # stopped at a safe point: the parent records it
        if os.environ.get("RANK", "0") == "0":
            # a Terminated message starts with what asked ("SIGTERM arrived…", "SIGINT …")
            said = str(exc).partition(" ")[0] or "SIGTERM"
            name = said if isinstance(exc, Terminated) else "SIGINT"
            stopped = {"signal": name, "message": str(exc)}
            (run_dir / STOPPED_FILE).write_text(json.dumps(stopped), encoding="utf-8")
        return 0  # torchrun then ends quietly; the parent decides
    return 0


if __name__ == "__main__":
    main()
