"""The job ledger: a SQLite file recording every submission before and after the provider
call, so that a crash or a retry never submits twice without saying so."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import InflameError
from inflame.runs import utc_now

HOME_ENV = "INFLAME_HOME"
ACTIVE = ("submitting", "submitted", "pending", "running", "stopping")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    provider_id TEXT,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    request TEXT NOT NULL,
    console_url TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (name);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    run TEXT NOT NULL,
    weights_sha256 TEXT,
    archive_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    locator TEXT NOT NULL,
    requests TEXT NOT NULL,
    console_url TEXT,
    error TEXT
);
"""


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    target: str
    name: str
    run: str
    weights_sha256: str | None
    archive_sha256: str
    status: str
    created_at: str
    updated_at: str
    locator: dict[str, Any]
    requests: list[Any]
    console_url: str | None
    error: str | None


def inflame_home() -> Path:
    """$INFLAME_HOME, or the user's data folder (e.g. ~/.local/share/inflame)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("inflame", appauthor=False))


@dataclass(frozen=True)
class JobRecord:
    id: int
    target: str
    name: str
    provider_id: str | None
    status: str
    submitted_at: str
    updated_at: str
    spec_sha256: str
    bundle_sha256: str
    request: dict[str, Any]
    console_url: str | None
    error: str | None


class Ledger:
    def __init__(self, path: Path | None = None):
        self.path = path or inflame_home() / "ledger.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():  # private: it holds requests and console links
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._connect() as db:
            db.executescript(_SCHEMA)

    wait_s = 30.0  # how long a write waits for another process's lock

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=self.wait_s)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise InflameError(
                    f"The job ledger {self.path} is locked by another inflame process (waited "
                    f"{self.wait_s:.0f} s). Try again when that one has finished."
                ) from None
            raise self._unusable(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        finally:
            db.close()

    def _unusable(self, exc: Exception) -> InflameError:
        return InflameError(
            f"The job ledger {self.path} cannot be used ({exc}). If it is damaged, move it "
            f"aside (`mv {self.path} {self.path}.broken`) and inflame starts a new one: jobs "
            "recorded only in the old one keep running, but `inflame status` no longer finds "
            "them (the provider's console does)."
        )

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        values = dict(row)
        values["request"] = json.loads(values["request"])
        return JobRecord(**values)

    def begin(
        self,
        *,
        target: str,
        name: str,
        spec_sha256: str,
        bundle_sha256: str,
        request: dict[str, Any],
    ) -> int:
        """Record a submission about to be sent; returns the ledger id."""
        now = utc_now()
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO jobs (target, name, status, submitted_at, updated_at, spec_sha256,"
                " bundle_sha256, request) VALUES (?, ?, 'submitting', ?, ?, ?, ?, ?)",
                (target, name, now, now, spec_sha256, bundle_sha256, json.dumps(request)),
            )
            return int(cursor.lastrowid)

    def update(self, job_id: int, **fields: Any) -> None:
        allowed = {"provider_id", "status", "console_url", "error"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown ledger fields: {unknown}")
        fields["updated_at"] = utc_now()
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: int) -> JobRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InflameError(
                f"No job {job_id} in the ledger ({self.path}). `inflame jobs` lists them."
            )
        return self._record(row)

    def find(self, ref: str) -> JobRecord:
        """A job by ledger id or provider job name."""
        if ref.isdigit():
            return self.get(int(ref))
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE name = ? OR provider_id = ? ORDER BY id DESC LIMIT 1",
                (ref, ref),
            ).fetchone()
        if row is None:
            raise InflameError(
                f"No job {ref!r} in the ledger ({self.path}). Give the ledger id "
                "or the job name that `inflame submit` printed; `inflame jobs` "
                "lists them."
            )
        return self._record(row)

    def all(self) -> list[JobRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [self._record(row) for row in rows]

    def duplicates(self, target: str, spec_sha256: str, bundle_sha256: str) -> list[JobRecord]:
        """Earlier submissions of the same spec and code to the same target that are still
        in flight, or whose fate is unknown (a crash between 'submitting' and the reply)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE target = ? AND spec_sha256 = ? AND bundle_sha256 = ?"
                f" AND status IN ({', '.join('?' * len(ACTIVE))}) ORDER BY id",
                (target, spec_sha256, bundle_sha256, *ACTIVE),
            ).fetchall()
        return [self._record(row) for row in rows]

    # ---- deployments (`inflame deploy`) --------------------------------------------------

    def add_deployment(
        self,
        *,
        target: str,
        name: str,
        run: str,
        weights_sha256: str | None,
        archive_sha256: str,
        locator: dict[str, Any],
        requests: list[Any],
    ) -> int:
        """Record a deployment about to be created; returns its ledger id."""
        now = utc_now()
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO deployments (target, name, run, weights_sha256, archive_sha256,"
                " status, created_at, updated_at, locator, requests)"
                " VALUES (?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?)",
                (
                    target,
                    name,
                    run,
                    weights_sha256,
                    archive_sha256,
                    now,
                    now,
                    json.dumps(locator),
                    json.dumps(requests),
                ),
            )
            return int(cursor.lastrowid)

    def update_deployment(self, deployment_id: int, **fields: Any) -> None:
        unknown = set(fields) - {"status", "console_url", "error", "locator"}
        if unknown:
            raise ValueError(f"unknown ledger fields: {unknown}")
        if "locator" in fields:
            fields["locator"] = json.dumps(fields["locator"])
        fields["updated_at"] = utc_now()
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._connect() as db:
            db.execute(
                f"UPDATE deployments SET {assignments} WHERE id = ?",
                (*fields.values(), deployment_id),
            )

    def deployments(self, include_deleted: bool = False) -> list[DeploymentRecord]:
        query = "SELECT * FROM deployments"
        if not include_deleted:
            query += " WHERE status != 'deleted'"
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id").fetchall()
        return [_deployment(row) for row in rows]

    def find_deployment(self, ref: str) -> DeploymentRecord:
        """The newest deployment with this endpoint name (or ledger id)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM deployments WHERE name = ? OR CAST(id AS TEXT) = ?"
                " ORDER BY id DESC LIMIT 1",
                (ref, ref),
            ).fetchone()
        if row is None:
            raise InflameError(
                f"No deployment {ref!r} in the ledger ({self.path}). `inflame endpoints` "
                "lists them."
            )
        return _deployment(row)


def _deployment(row: sqlite3.Row) -> DeploymentRecord:
    values = dict(row)
    values["locator"] = json.loads(values["locator"])
    values["requests"] = json.loads(values["requests"])
    return DeploymentRecord(**values)
