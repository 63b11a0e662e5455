"""`python -m inflame ARGS` for the tests, without paying the interpreter's start and the
torch import (~4 s on 2 cores) for every call.

A server process imports torch, torchvision and numpy once, then forks a child per call.
The child is a fresh process as `python -m inflame` makes it: its own pid, the call's
environment, working folder and argv, stdin/stdout/stderr on the caller's pipes, default
signal handlers, and inflame imported anew (the server never imports it). It exits with
the code the CLI chose, or dies by the signal that killed it. The network guard
(tests/netguard) is active in the server, hence in every child.

Only imports happen before the fork: no thread and no OpenMP pool exist yet, so forking
is safe. Anything that needs a real interpreter start (import-time checks, an execve with
a preloaded allocator) still works: the child can exec, and tests that measure imports
start their own interpreter.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_SERVER = r"""
import json, os, runpy, selectors, signal, socket, sys, traceback
import numpy, torch, torchvision  # noqa: F401  the point of the server
import PIL.Image  # noqa: F401

listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(64)
print("ready", flush=True)
children = {}  # pid -> connection waiting for its exit status
selector = selectors.DefaultSelector()
selector.register(listener, selectors.EVENT_READ)


def child(request, fds):
    listener.close()
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as at interpreter start
    for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    os.chdir(request["cwd"])
    started_with = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.orig_argv = [sys.executable, "-m", "inflame", *request["args"]]
    sys.argv = ["inflame", *request["args"]]
    # sys.path as `python -m` builds it from this call's PYTHONPATH: the working folder,
    # then PYTHONPATH, then what the server's own PYTHONPATH did not add
    given = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    rest = [p for p in sys.path[1:] if p not in started_with]
    sys.path[:] = [request["cwd"], *given, *rest]
    code = 0
    try:
        runpy.run_module("inflame", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as the interpreter does: die by the signal
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


while True:
    for key, _ in selector.select(timeout=0.05):
        connection, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        pid = os.fork()
        if pid == 0:
            selector.close()
            for other in children.values():
                other.close()
            child(json.loads(message), fds)
        for fd in fds:
            os.close(fd)
        connection.sendall(f"{pid}\n".encode())
        children[pid] = connection
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            connection = children.pop(pid)
            try:
                connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass
            connection.close()
"""


class Zygote:
    """The server, started on first use and stopped when the test process exits."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._socket = ""

    def _start(self, env: Mapping[str, str]) -> None:
        folder = tempfile.mkdtemp(prefix="inflame-zygote-")
        self._socket = os.path.join(folder, "socket")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, self._socket],
            env=dict(env),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the test zygote did not start")
        atexit.register(self.stop)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._socket:
            Path(self._socket).unlink(missing_ok=True)
            os.rmdir(os.path.dirname(self._socket))
            self._socket = ""

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        """As `subprocess.run([python, -m, inflame, *args], capture_output=True, text=True)`."""
        if self._process is None or self._process.poll() is not None:
            self._start(env)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self._socket)
            request = {"args": list(args), "cwd": str(cwd), "env": dict(env)}
            socket.send_fds(
                connection, [json.dumps(request).encode()], [stdin, out_write, err_write]
            )
        finally:
            for fd in (stdin, out_write, err_write):
                os.close(fd)
        reader = connection.makefile("r")
        pid = int(reader.readline())
        chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
        selector = selectors.DefaultSelector()
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        open_fds = set(chunks)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                for fd in chunks:
                    os.close(fd)
                raise subprocess.TimeoutExpired(["inflame", *args], timeout)
            for key, _ in selector.select(timeout=min(left, 1.0)):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
        selector.close()
        for fd in chunks:
            os.close(fd)
        returncode = int(reader.readline())
        connection.close()
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "inflame", *args],
            returncode,
            b"".join(chunks[out_read]).decode(errors="replace"),
            b"".join(chunks[err_read]).decode(errors="replace"),
        )


ZYGOTE = Zygote()
