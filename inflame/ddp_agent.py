"""torchrun for `inflame train --nproc-per-node N`: torch's own launcher
(`torch.distributed.run`, same arguments), quiet when a training process fails.

Each process prints its own one-paragraph error (or, for a bug, its traceback); torchrun
would add an error log line, a summary table and its own traceback (ChildFailedError), which
say nothing more, except for a process a signal killed: that gets one line here. A failed
process ends the agent with exit code 1, as torchrun's uncaught ChildFailedError does, and
the parent (`inflame.launcher`) says what to do next.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

# its ERROR line "failed (exitcode: 1) local_rank: 0 …" and the WARNINGs about closing the
# other processes; rendezvous and start-up problems are logged elsewhere and still show
_QUIET = "torch.distributed.elastic.multiprocessing.api"


def main(argv: Sequence[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger(_QUIET).setLevel(logging.CRITICAL)
    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except ChildFailedError as exc:
        for line in killed(exc.failures):
            print(line, file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def killed(failures: Mapping[int, Any]) -> list[str]:
    """A line for each process a signal ended: it could print nothing itself (the kernel's
    out-of-memory killer sends SIGKILL), and torchrun's summary, which said so, is gone."""
    lines = []
    for rank, failure in sorted(failures.items()):
        if failure.exitcode < 0:
            why = " (often the kernel's out-of-memory killer)" if failure.exitcode == -9 else ""
            lines.append(
                f"error: training process {rank} (pid {failure.pid}) was killed by "
                f"{failure.signal_name()}{why}."
            )
    return lines


if __name__ == "__main__":
    main()
