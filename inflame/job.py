"""The entry point every cloud job runs: `python -m inflame.job SPEC`.

It resolves the platform's paths (see `inflame.platforms`) and runs the app through the same
launcher as `inflame train --local`, so the loop, checkpoints and manifest are identical.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from inflame.errors import InflameError


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m inflame.job SPEC", file=sys.stderr)
        raise SystemExit(2)
    from inflame.launcher import run_in_job

    try:
        result = run_in_job(args[0], argv=[sys.executable, "-m", "inflame.job", *args])
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
