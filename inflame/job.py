"""The entry point every cloud job runs (from the code bundle's entry.sh):

    python -m inflame.job SPEC [--platform NAME] [--data NAME=PATH …] [--run-dir PATH]
                               [--checkpoint-dir PATH] [--nnodes N --nproc-per-node G]

It asks the platform's provider (see `inflame.targets`) where the inputs, the run directory
and the checkpoints are (or takes them from the command line, where the platform binds paths
there) and runs the app through the same launcher as `inflame train --local`, so the loop,
checkpoints and manifest are identical.

With several processes (G per node on N nodes) on a platform that starts one container per
node (SageMaker, Vertex AI), it re-executes itself under torchrun, with the node rank and the
master from the platform's cluster description, after waiting (bounded) for the master's
host name to resolve. The processes torchrun starts carry our own marker (LAUNCHED_ENV), so
they run the app instead of launching again; variables a platform sets for its own launcher
(Vertex AI sets RANK and WORLD_SIZE per node) decide nothing. Where the platform starts every
process itself (Azure ML's PyTorch distribution), the job runs directly.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inflame.errors import InflameError

if TYPE_CHECKING:  # pragma: no cover
    from inflame.targets.base import Provider

LAUNCHED_ENV = "INFLAME_LAUNCHED"  # set in the processes inflame's torchrun starts
HOST_WAIT_S = 15 * 60  # as long as the sagemaker-training toolkit waits for host names


def resolve_host(
    host: str,
    timeout: float = HOST_WAIT_S,
    *,
    lookup: Callable[[str], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The address of `host`, retried with backoff until it resolves: cluster members' names
    may not resolve yet when a node starts (SageMaker says so)."""
    lookup = lookup or socket.gethostbyname
    deadline, wait = clock() + timeout, 0.1
    while True:
        try:
            return lookup(host)
        except OSError as exc:
            if clock() + wait > deadline:
                raise InflameError(
                    f"The master node's host name {host!r} did not resolve within "
                    f"{timeout:.0f} s ({exc}); the cluster's network never came up."
                ) from None
            sleep(wait)
            wait = min(wait * 2, 30.0)


def torchrun_command(
    args: Sequence[str],
    provider: Provider,
    nnodes: int,
    nproc_per_node: int,
    env: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The torchrun command that starts this node's processes, and their environment."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    child_env = {**env, LAUNCHED_ENV: "1"}
    if nnodes == 1:
        command.append("--standalone")
    else:
        cluster = provider.cluster(env)
        if cluster.nnodes != nnodes:
            raise InflameError(
                f"The job asked for {nnodes} nodes but the platform reports {cluster.nnodes}."
            )
        command += [
            f"--nnodes={nnodes}",
            f"--node-rank={cluster.node_rank}",
            f"--master-addr={resolve_host(cluster.master_addr)}",
            f"--master-port={cluster.master_port}",
        ]
        if cluster.network_interface:
            child_env.setdefault("NCCL_SOCKET_IFNAME", cluster.network_interface)
    return [*command, "-m", "inflame.job", *args], child_env


def _check_world(env: Mapping[str, str], nnodes: int, nproc_per_node: int) -> None:
    """Processes the platform started must be as many as the job asked for."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world != nnodes * nproc_per_node:
        raise InflameError(
            f"The platform started {world} process(es) but the job asked for {nnodes} "
            f"node(s) x {nproc_per_node} process(es)."
        )


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
    if argv is None:  # tcmalloc or jemalloc when the image has one (before torch loads)
        from inflame.allocator import reexec_with_allocator

        try:
            reexec_with_allocator()
        except InflameError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
    from inflame.jobprep import prepare_job
    from inflame.launcher import run_in_job
    from inflame.targets import detect_platform, get_target
    from inflame.targets.base import BoundPaths

    env = dict(os.environ)
    try:
        platform = args.platform or detect_platform(env)
        if platform is None:
            raise InflameError(
                "python -m inflame.job runs inside cloud jobs, and this is none (no "
                "INFLAME_PLATFORM). Locally, use `inflame train --local`."
            )
        provider = get_target(platform)
        several = args.nnodes * args.nproc_per_node > 1
        if several and provider.capabilities.starts_processes:
            _check_world(env, args.nnodes, args.nproc_per_node)
        elif several and not env.get(LAUNCHED_ENV):  # this node's processes: not started yet
            command, child_env = torchrun_command(
                raw, provider, args.nnodes, args.nproc_per_node, env
            )
            os.execve(command[0], command, child_env)
        bound = None
        if args.data or args.run_dir:
            if not args.run_dir or not args.checkpoint_dir:
                raise InflameError("--data needs --run-dir and --checkpoint-dir as well.")
            pairs = [item.partition("=") for item in args.data]
            bound = BoundPaths(
                {name: Path(path) for name, _, path in pairs}, args.run_dir, args.checkpoint_dir
            )
        job = prepare_job(args.spec)
        paths = provider.job_paths(job.spec, env, bound)
        result = run_in_job(job, paths, env, argv=[sys.executable, "-m", "inflame.job", *raw])
    except InflameError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _leave(exc.exit_code, real_process=argv is None)
        return
    except KeyboardInterrupt as exc:  # a process other than rank 0, stopped with the others
        from inflame.stopping import EXIT_CODE, Terminated

        print(f"inflame: stopped ({exc or 'SIGINT'})", file=sys.stderr, flush=True)
        _leave(EXIT_CODE if isinstance(exc, Terminated) else 130, real_process=argv is None)
    if result.manifest.get("status") == "completed":
        print(
            f"inflame: run complete in {result.run_dir}; weights sha256 "
            f"{result.manifest.get('weights_sha256')}",
            flush=True,
        )
    _leave(0, real_process=argv is None)


def _leave(code: int, *, real_process: bool) -> None:
    """Exit with `code`; one process of several (a real one, not a test calling main) skips
    the interpreter's teardown, which can abort after DDP (`exit_without_teardown`)."""
    if real_process and int(os.environ.get("WORLD_SIZE") or 1) > 1:
        from inflame.stopping import exit_without_teardown

        exit_without_teardown(code)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
