"""The entry point every cloud job runs:

    python -m inflame.job SPEC [--platform NAME] [--data NAME=PATH …] [--run-dir PATH]
                               [--checkpoint-dir PATH]

It resolves the platform's paths (see `inflame.platforms`; on platforms that bind paths into
the command line, from the arguments) and runs the app through the same launcher as
`inflame train --local`, so the loop, checkpoints and manifest are identical.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from inflame.errors import InflameError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inflame.job")
    parser.add_argument("spec")
    parser.add_argument("--platform", help="platform name (default: detected)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--run-dir", type=Path, help="folder the platform collects")
    parser.add_argument("--checkpoint-dir", type=Path)
    args = parser.parse_args(argv)
    from inflame.launcher import run_in_job
    from inflame.platforms import BoundPaths

    try:
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
            argv=[sys.executable, "-m", "inflame.job", *(sys.argv[1:] if argv is None else argv)],
            bound=bound,
            platform_name=args.platform,
        )
    except InflameError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    print(
        f"inflame: run complete in {result.run_dir}; weights sha256 "
        f"{result.manifest.get('weights_sha256')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
