"""`python -m inflame ARGS` for the tests, without paying the interpreter's start and the
torch import (~4 s on 2 cores) for every call.

A server process imports torch, torchvision and numpy once, then forks a child per call.
The child is a fresh process as `python -m inflame` makes it: its own pid, the call's
environment, working folder, argv and sys.path, stdin/stdout/stderr on the caller's pipes,
the signal dispositions a new interpreter would inherit, numpy's global RNG reseeded, and
inflame imported anew (the server never imports it). It ends as an interpreter does: it
waits for non-daemon threads, runs atexit, flushes, and exits with the CLI's code or dies
by the signal that stopped it. The network guard (tests/netguard) is active in the server,
hence in every child.

Before the fork only imports have run: no OpenMP pool exists yet, and OpenBLAS's thread
pool (numpy starts it) is fork-safe by design. Variables read when those libraries load
(`OMP_*`, `MKL_*`, `LD_*`, `PYTHON*`...) cannot change in a forked child, so a call that
sets them differently from the server runs in a plain interpreter instead; so does any
call when INFLAME_TEST_ZYGOTE=0. Tests that measure imports or run an app as a script
start their own interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

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


def child(request, fds, connection):
    listener.close()
    connection.close()
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    if request.get("sigint_default"):  # Ctrl-C as in a terminal, even if pytest ignores it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    started_with = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.clear()
    os.environ.update(request["env"])
    numpy.random.seed()  # a new interpreter's global RNG is seeded from the OS
    sys.orig_argv = [sys.executable, "-m", "inflame", *request["args"]]
    sys.argv = ["inflame", *request["args"]]
    # sys.path as `python -m` builds it from this call's PYTHONPATH: the working folder,
    # then PYTHONPATH, then what the server's own PYTHONPATH did not add
    given = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    rest = [p for p in sys.path[1:] if p not in started_with]
    sys.path[:] = [request["cwd"], *given, *rest]
    code, interrupted = 0, False
    try:
        runpy.run_module("inflame", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does on its way out
        import atexit, threading
        threading._shutdown()  # waits for non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if interrupted:  # as the interpreter does: die by the signal
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def serve_one():
    connection, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    pid = os.fork()
    if pid == 0:
        selector.close()
        for other in children.values():
            other.close()
        child(json.loads(message), fds, connection)
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    children[pid] = connection


while True:
    for key, _ in selector.select(timeout=0.05):
        try:
            serve_one()
        except Exception:  # one bad call must not take the server down
            traceback.print_exc()
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


# read when Python, torch, numpy or their libraries load: a child cannot change them
_FIXED_AT_START = re.compile(
    r"(PYTHON(?!PATH$)\w*|OMP_\w+|KMP_\w+|MKL_\w+|OPENBLAS_\w+|GOTO\w+|LD_\w+|MALLOC_\w+"
    r"|CUDA_\w+|TORCH_\w+|PYTORCH_\w+|LC_\w+|LANG|LANGUAGE)"
)


def _fixed(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if _FIXED_AT_START.fullmatch(k)}


class Zygote:
    """The server, started on first use and stopped when the test process exits."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._socket = ""
        self._fixed: dict[str, str] = {}

    def _start(self, env: Mapping[str, str]) -> None:
        self.stop()  # a server that died leaves its socket folder
        folder = tempfile.mkdtemp(prefix="inflame-zygote-")
        self._socket = os.path.join(folder, "socket")
        self._fixed = _fixed(env)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, self._socket],
            env=dict(env),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the test zygote did not start (its error is above)")
        atexit.register(self.stop)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._socket:
            shutil.rmtree(os.path.dirname(self._socket), ignore_errors=True)
            self._socket = ""

    def popen(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        sigint_default: bool = False,
    ) -> ZygoteProcess | subprocess.Popen[str]:
        """As `subprocess.Popen([python, -m, inflame, *args], text=True, ...)` with stdout
        and stderr each PIPE, DEVNULL or None (inherited). `sigint_default`: Ctrl-C's
        default action even where the tests run with SIGINT ignored (in the background)."""
        command = [sys.executable, "-m", "inflame", *args]
        if self._process is None or self._process.poll() is not None:
            self._start(env)
        elif _fixed(env) != self._fixed:  # a child could not apply them: a real start
            return subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdout=stdout,
                stderr=stderr,
                text=True,
                preexec_fn=_default_sigint if sigint_default else None,
            )
        return ZygoteProcess(self._socket, command, cwd, env, stdout, stderr, sigint_default)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ZygoteProcess:
    """A forked `python -m inflame`, with the part of `subprocess.Popen`'s interface the
    tests use."""

    def __init__(
        self,
        server: str,
        command: list[str],
        cwd: Path,
        env: Mapping[str, str],
        stdout: int | None,
        stderr: int | None,
        sigint_default: bool,
    ):
        self.args = command
        self.returncode: int | None = None
        self._pipes: dict[int, list[bytes]] = {}  # read end -> what came so far
        self._open: set[int] = set()  # read ends not at their end yet
        self._order: list[int | None] = []  # stdout's and stderr's read end, or None
        self._files: dict[int, IO[str]] = {}  # read ends handed out as files
        stdin = os.open(os.devnull, os.O_RDONLY)
        given, ours = [stdin], [stdin]  # the child's 0, 1, 2; what we close once sent
        for choice, inherited in ((stdout, 1), (stderr, 2)):
            if choice == subprocess.PIPE:
                read, write = os.pipe()
                self._pipes[read] = []
                self._open.add(read)
                self._order.append(read)
                given.append(write)
                ours.append(write)
            else:
                fd = os.open(os.devnull, os.O_WRONLY) if choice == subprocess.DEVNULL else inherited
                given.append(fd)
                if fd != inherited:
                    ours.append(fd)
                self._order.append(None)
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._connection.settimeout(60)
        try:
            self._connection.connect(server)
            request = {
                "args": command[3:],
                "cwd": str(cwd),
                "env": dict(env),
                "sigint_default": sigint_default,
            }
            socket.send_fds(self._connection, [json.dumps(request).encode()], given)
        finally:
            for fd in ours:
                os.close(fd)
        self._reader = self._connection.makefile("r")
        self.pid = int(self._reader.readline() or "0")
        if not self.pid:
            raise RuntimeError("the test zygote gave no process (did it die?)")
        self._connection.settimeout(None)

    @property
    def stdout(self) -> IO[str] | None:
        """stdout's pipe as a text file, to read as it comes (then not `communicate`)."""
        return self._text(self._order[0])

    @property
    def stderr(self) -> IO[str] | None:
        """stderr's pipe as a text file, to read as it comes (then not `communicate`)."""
        return self._text(self._order[1])

    def _text(self, fd: int | None) -> IO[str] | None:
        if fd is None:
            return None
        if fd not in self._files:
            self._files[fd] = os.fdopen(fd, "r", errors="replace")
            self._open.discard(fd)  # now the file's to read and close
        return self._files[fd]

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._connection], [], [], 0)
            if ready:
                self._read_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            ready, _, _ = select.select([self._connection], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read_status()
        assert self.returncode is not None
        return self.returncode

    def _read_status(self) -> None:
        line = self._reader.readline()
        if not line:
            raise RuntimeError("the test zygote gave no exit status (did it die?)")
        self.returncode = int(line)
        self._reader.close()
        self._connection.close()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not reaped yet: the pid is still this process's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read the pipes to their end, then wait; a timeout leaves the process running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in self._open:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(timeout=left):
                    data = os.read(key.fd, 65536)
                    if data:
                        self._pipes[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
                        self._open.discard(key.fd)
                        os.close(key.fd)
        left = None if deadline is None else max(deadline - time.monotonic(), 0)
        self.wait(left)
        texts = [
            None if fd is None else b"".join(self._pipes[fd]).decode(errors="replace")
            for fd in self._order
        ]
        return texts[0], texts[1]


ZYGOTE = Zygote()
