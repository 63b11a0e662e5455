"""Start the service: check the run and the settings, bind the port, run uvicorn."""

from __future__ import annotations

import inspect
import os
import socket
import sys
from pathlib import Path

from inflame.errors import InflameError, RunError
from inflame.serving.settings import SETTINGS_ENV, ServeSettings

FACTORY = "inflame.serving.app:app_from_env"


def check_run(run_dir: Path) -> None:
    """The run must hold a model whose files match what it recorded: refused here, before a
    port is bound, rather than by a service that then cannot answer."""
    from inflame.model_files import META_FILE, WEIGHTS_FILE
    from inflame.predict import verify_model_files

    model = run_dir / "model"
    if not (model / META_FILE).is_file() or not (model / WEIGHTS_FILE).is_file():
        raise RunError(
            f"{run_dir} holds no trained model ({model / META_FILE} and {WEIGHTS_FILE}). Is the "
            "run finished? `inflame runs` lists runs and their status."
        )
    verify_model_files(run_dir)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given, as uvicorn does: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every kept-alive response waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait from now on, even before uvicorn accepts them
    except OSError as exc:
        sock.close()
        raise InflameError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Pick another --port (or "
            "stop what uses it), or a --host this machine has."
        ) from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


SERVICE_PACKAGES = ("fastapi", "uvicorn", "multipart", "prometheus_client")


def require_service_packages() -> None:
    from importlib.util import find_spec

    missing = [name for name in SERVICE_PACKAGES if find_spec(name) is None]
    if missing:
        raise InflameError(
            f"`inflame serve` needs what is not installed here ({', '.join(missing)}): "
            "`pip install 'inflame[serve]'`."
        )


def serve(settings: ServeSettings, *, log_level: str = "info") -> None:
    """Run until interrupted (Ctrl-C or SIGTERM: in-flight requests finish first)."""
    require_service_packages()
    settings.check()
    check_run(Path(settings.run_dir))
    if settings.backend == "onnx":
        from importlib.util import find_spec

        from inflame.predict import verify_onnx_export

        verify_onnx_export(Path(settings.run_dir))
        if find_spec("onnxruntime") is None:
            raise InflameError("--backend onnx needs onnxruntime: `pip install 'inflame[onnx]'`.")
    os.environ[SETTINGS_ENV] = settings.to_env()
    sock = bind(settings.host, settings.port)
    workers = f"{settings.workers} worker{'s' if settings.workers > 1 else ''}"
    announce("serve", sock, f"{Path(settings.run_dir).name} ({workers})")
    run_uvicorn(FACTORY, sock, workers=settings.workers, log_level=log_level)


def announce(what: str, sock: socket.socket, detail: str) -> None:
    print(
        f"inflame {what}: {detail} on {url(sock)} (API docs at {url(sock)}/docs)",
        file=sys.stderr,
        flush=True,
    )


def run_uvicorn(factory: str, sock: socket.socket, *, workers: int, log_level: str) -> None:
    """uvicorn on a bound socket, with the app from `factory` (one call per worker process);
    until Ctrl-C or SIGTERM, after which requests in flight finish."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        factory, factory=True, workers=workers, log_level=log_level, timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    if workers == 1:
        server.run(sockets=[sock])
        if not server.started:
            raise InflameError("The service did not start; its log above says why.")
    else:
        options = inspect.signature(Multiprocess).parameters
        extra = {"target": server.run} if "target" in options else {}
        Multiprocess(config, sockets=[sock], **extra).run()
