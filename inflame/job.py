"""The entry point every cloud job runs:

    python -m inflame.job SPEC [--platform NAME] [--data NAME=PATH …] [--run-dir PATH]
                               [--checkpoint-dir PATH] [--nnodes N --nproc-per-node G]

It resolves the platform's paths (see `inflame.platforms`; on platforms that bind paths into
the command line, from the arguments) and runs the app through the same launcher as
`inflame train --local`, so the loop, checkpoints and manifest are identical.

With several processes (G per node on N nodes) on a platform that starts one container per
node (SageMaker, Vertex AI), it re-executes itself under torchrun, taking the node rank and
the master address from the platform's cluster description. Where the platform starts every
process itself (Azure ML's PyTorch distribution), RANK is already set and it just runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from inflame.errors import InflameError


def torchrun_command(
    args: Sequence[str], platform: str, nnodes: int, nproc_per_node: int, env: Mapping[str, str]
) -> list[str]:
    """The torchrun command that starts this job's processes on this node."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        from inflame.platforms import CLUSTERS

        if platform not in CLUSTERS:
            raise InflameError(
                f"A {nnodes}-node job on platform {platform!r} needs its cluster "
                f"description; inflame reads those of {', '.join(CLUSTERS)}."
            )
        cluster = CLUSTERS[platform](env)
        if cluster.nnodes != nnodes:
            raise InflameError(
                f"The job asked for {nnodes} nodes but the platform reports {cluster.nnodes}."
            )
        command += [
            f"--nnodes={nnodes}",
            f"--node-rank={cluster.node_rank}",
            f"--master-addr={cluster.master_addr}",
            f"--master-port={cluster.master_port}",
        ]
    return [*command, "-m", "inflame.job", *args]


def main(argv: Sequence[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m inflame.job")
    parser.add_argument("spec")
    parser.add_argument("--platform", help="platform name (default: detected)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--run-dir", type=Path, help="folder the platform collects")
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--nproc-per-node", type=int, default=1)
    args = parser.parse_args(raw)
    from inflame.launcher import run_in_job
    from inflame.platforms import BoundPaths, detect_platform

    try:
        platform = args.platform or detect_platform(os.environ)
        several = args.nnodes * args.nproc_per_node > 1
        if several and "RANK" not in os.environ:  # this node's processes are not started yet
            command = torchrun_command(raw, platform, args.nnodes, args.nproc_per_node, os.environ)
            os.execv(command[0], command)
        bound = None
        if args.data or args.run_dir:
            if not args.run_dir or not args.checkpoint_dir:
                raise InflameError("--data needs --run-dir and --checkpoint-dir as well.")
            pairs = [item.partition("=") for item in args.data]
            bound = BoundPaths(
                {name: Path(path) for name, _, path in pairs}, args.run_dir, args.checkpoint_dir
            )
        result = run_in_job(
            args.spec,
            argv=[sys.executable, "-m", "inflame.job", *raw],
            bound=bound,
            platform_name=platform,
        )
    except InflameError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    if result.manifest.get("status") == "completed":
        print(
            f"inflame: run complete in {result.run_dir}; weights sha256 "
            f"{result.manifest.get('weights_sha256')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
