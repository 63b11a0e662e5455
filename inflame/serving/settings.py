"""What `inflame serve` was asked for, checked before anything binds a port, and carried to
every worker process (as JSON in an environment variable; never the token itself)."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from inflame.errors import InflameError

SETTINGS_ENV = "INFLAME_SERVE_SETTINGS"
TOKEN_ENV = "INFLAME_API_TOKEN"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServeSettings:
    run_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    token_file: str | None = None  # else $INFLAME_API_TOKEN, else no token
    max_upload_mb: float = 20.0  # the whole request body
    max_files: int = 16  # images in one request
    max_batch: int = 32  # images in one forward pass
    max_wait_ms: float = 5.0  # how long a batch waits for more images after its first
    max_pixels: int = 50_000_000  # per image (decompression-bomb guard)
    backend: str = "torch"  # or "onnx": the run's ONNX export on onnxruntime

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(**json.loads(os.environ[SETTINGS_ENV]))

    def check(self) -> None:
        """Refuse settings no service should run with, each in one clear paragraph."""
        for name, value, low in (
            ("--port", self.port, 0),
            ("--workers", self.workers, 1),
            ("--max-files", self.max_files, 1),
            ("--max-batch", self.max_batch, 1),
        ):
            if value < low:
                raise InflameError(f"{name} must be at least {low}, got {value}.")
        if self.port > 65535:
            raise InflameError(f"--port must be at most 65535, got {self.port}.")
        if self.backend not in ("torch", "onnx"):
            raise InflameError(f"--backend must be `torch` or `onnx`, got `{self.backend}`.")
        if not self.max_upload_mb > 0:
            raise InflameError(f"--max-upload-mb must be above 0, got {self.max_upload_mb}.")
        if not 0 <= self.max_wait_ms <= 1000:
            raise InflameError(f"--max-wait-ms must be 0 to 1000, got {self.max_wait_ms}.")
        token = self.token()
        if token is None and not is_loopback(self.host):
            raise InflameError(
                f"--host {self.host} accepts connections from other machines, so an API token "
                f"is required: set {TOKEN_ENV}, or pass --token-file FILE (at least "
                f"{MIN_TOKEN_CHARS} characters; e.g. `openssl rand -hex 32 > token`). Clients "
                "send it as `Authorization: Bearer TOKEN`."
            )

    def token(self) -> str | None:
        """The API token from --token-file or $INFLAME_API_TOKEN; None when neither is set."""
        return read_token(self.token_file)


def read_token(token_file: str | None) -> str | None:
    """The API token from `token_file`, else $INFLAME_API_TOKEN; None when neither is set."""
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InflameError(f"Cannot read the API token file {path}: {exc}.") from None
        where = f"the token file {path}"
    else:
        token = os.environ.get(TOKEN_ENV)
        if token is None:
            return None
        token, where = token.strip(), f"${TOKEN_ENV}"
    if (
        len(token) < MIN_TOKEN_CHARS
        or not (token.isascii() and token.isprintable())
        or (any(c.isspace() for c in token))
    ):
        raise InflameError(
            f"The API token in {where} must be at least {MIN_TOKEN_CHARS} printable ASCII "
            "characters without spaces (e.g. `openssl rand -hex 32`)."
        )
    return token


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
