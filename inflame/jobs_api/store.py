"""The jobs of `inflame api`, in SQLite: they outlive the service."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inflame.runs import utc_now

NEW, IN_PROGRESS, READY, ERROR, CANCELLED = "new", "in_progress", "ready", "error", "cancelled"
STATUSES = (NEW, IN_PROGRESS, READY, ERROR, CANCELLED)
FINAL = frozenset({READY, ERROR, CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    spec TEXT NOT NULL,          -- the spec file the job trains
    overrides TEXT NOT NULL,     -- JSON list of --set values
    run_dir TEXT NOT NULL,
    log TEXT NOT NULL,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,                -- JSON: the last epoch's metrics
    result TEXT,                 -- JSON: run_dir, weights_sha256, saved epoch
    error TEXT,
    target TEXT NOT NULL DEFAULT 'local',  -- or a cloud target (`inflame submit`)
    ledger_id INTEGER                      -- a cloud job's id in inflame's job ledger
)
"""
_ADDED_COLUMNS = {
    "target": "TEXT NOT NULL DEFAULT 'local'",
    "ledger_id": "INTEGER",
}


@dataclass
class Job:
    id: str
    status: str
    created: str
    updated: str
    spec: str
    overrides: list[str]
    run_dir: str
    log: str
    pid: int | None
    attempts: int
    cancel_requested: bool
    metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    target: str = "local"
    ledger_id: int | None = None

    def public(self) -> dict[str, Any]:
        """What `GET /jobs/{id}` answers."""
        shown = asdict(self)
        for private in ("pid", "log", "cancel_requested"):
            shown.pop(private)
        if self.target != "local":
            shown.pop("run_dir")  # the run lives in the cloud: see `result`
        return {key: value for key, value in shown.items() if value is not None}


class JobStore:
    """Thread-safe: one connection, one lock (the service's threads share it)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._transaction() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():  # a database from an earlier version
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def create(
        self,
        spec: Path,
        overrides: list[str],
        root: Path,
        *,
        job_id: str | None = None,
        target: str = "local",
    ) -> Job:
        job_id = job_id or uuid.uuid4().hex[:16]
        now = utc_now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, status, created, updated, spec, overrides, run_dir, log,"
                " target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    NEW,
                    now,
                    now,
                    str(spec),
                    json.dumps(overrides),
                    str(root / "runs" / job_id),
                    str(root / "jobs" / job_id / "log.txt"),
                    target,
                ),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def all(self, status: str | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY created, rowid", args).fetchall()
        return [_job(row) for row in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        encoded = {
            key: json.dumps(value) if key in ("metrics", "result", "overrides") else value
            for key, value in fields.items()
        }
        encoded["updated"] = utc_now()
        assignments = ", ".join(f"{key} = ?" for key in encoded)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*encoded.values(), job_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    for key in ("metrics", "result", "overrides"):
        data[key] = json.loads(data[key]) if data[key] is not None else None
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)
