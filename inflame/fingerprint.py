"""A per-machine cache of data files' sha256, so starts and resumes stop re-reading them.

As in git's index, a cached sha256 is reused only while the file's (size, mtime, ctime,
inode, device) match what was recorded, and only if the file had settled before it was read:
an entry whose mtime or ctime lies within `RACY_NS` of the moment its hashing began is
"racily clean" (a same-size rewrite in the same timestamp tick would keep every stat field)
and is hashed again next time, after which it is trusted.

Storage: one SQLite database in `inflame.cache.cache_dir("fingerprints")`, one row per file,
keyed by absolute path. Each write is one transaction, so a killed process leaves the previous
state; concurrent runs take turns on SQLite's file lock. The rollback journal (not WAL) keeps
it working in a home folder on NFS. A cache that cannot be read or written never fails a run:
every file is hashed, a warning printed, and a corrupt database replaced.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import NamedTuple

from inflame.cache import cache_dir, cache_enabled

try:
    import sqlite3
except ImportError:  # a Python built without SQLite: no cache, every file is hashed
    sqlite3 = None  # type: ignore[assignment]

RACY_NS = 3_000_000_000  # > the coarsest timestamp tick (FAT's 2 s) plus the kernel clock's lag
BUSY_TIMEOUT_S = 60.0  # how long to wait for another run's write before hashing everything
DB_NAME = "files.sqlite3"
SCHEMA_VERSION = 1
_COLUMNS = "path, size, mtime_ns, ctime_ns, inode, device, sha256, recorded_ns"
_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    device INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL
) WITHOUT ROWID"""


class FileKey(NamedTuple):
    """What must not change for a cached sha256 to stay valid."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


def _int64(value: int) -> int:
    """SQLite integers are signed 64-bit; inode and device numbers may not be."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def file_key(path: str) -> FileKey | None:
    """The file's key now (following symlinks, as reading does); None if stat fails."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileKey(st.st_size, st.st_mtime_ns, st.st_ctime_ns, _int64(st.st_ino), _int64(st.st_dev))


# A row of the files table less its path: (*FileKey, sha256, recorded_ns). recorded_ns is the
# clock when its hashing began, before the file was stat'ed or read. Plain tuples: 100k files
# load in a tenth of the time NamedTuples take.
Row = tuple[int, int, int, int, int, str, int]


def valid_sha256(row: Row | None, key: FileKey | None) -> str | None:
    """The recorded sha256 if the file is unchanged and had settled before it was read."""
    if row is None or key is None or row[:5] != key:
        return None
    racily_clean = row[6] - max(key.mtime_ns, key.ctime_ns) < RACY_NS
    return None if racily_clean else row[5]


def _bounds(root: Path) -> tuple[bytes, bytes]:
    """The range of encoded paths strictly below root: prefix + sep <= path < prefix + sep+1."""
    prefix = os.fsencode(str(root).rstrip(os.sep) + os.sep)
    return prefix, prefix[:-1] + bytes([prefix[-1] + 1])


class FingerprintCache:
    """sha256 of files by absolute path, in one SQLite database in `folder`. `hits` and
    `misses` count the files served from it and the files read, since it was made."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / DB_NAME
        self.hits = 0
        self.misses = 0
        self._warned = False

    @classmethod
    def default(cls, env: Mapping[str, str] | None = None) -> FingerprintCache | None:
        """This machine's cache; None when INFLAME_NO_CACHE is set or SQLite is missing."""
        if sqlite3 is None or not cache_enabled(env):
            return None
        return cls(cache_dir("fingerprints", env))

    def sha256s(
        self, root: Path, paths: Sequence[str], hash_files: Callable[[list[str]], list[str]]
    ) -> list[str]:
        """sha256 of each file below the absolute `root`, in order. Files with a valid entry
        are not read; `hash_files` hashes the others, which are then recorded."""
        since = time.time_ns()  # before any stat or read: racily clean entries are judged by it
        known = self.load(root)
        keys = [file_key(p) for p in paths]
        digests = [valid_sha256(known.get(p), k) for p, k in zip(paths, keys, strict=True)]
        misses = [i for i, digest in enumerate(digests) if digest is None]
        for i, digest in zip(misses, hash_files([paths[i] for i in misses]), strict=True):
            digests[i] = digest
        self.hits += len(paths) - len(misses)
        self.misses += len(misses)
        fresh: dict[str, Row] = {
            paths[i]: (*key, digests[i], since) for i in misses if (key := keys[i]) is not None
        }
        stale = known.keys() - set(paths)
        if fresh or stale:
            self.store(fresh, stale)
        return digests  # type: ignore[return-value]  # every None was filled in

    def load(self, root: Path) -> dict[str, Row]:
        """Every row strictly below the absolute `root`, by path; {} if the cache is unreadable."""
        if not self.path.is_file():
            return {}
        query = f"SELECT {_COLUMNS} FROM files WHERE path >= ? AND path < ?"
        try:
            with self._connect() as db:
                if _version(db) != SCHEMA_VERSION:
                    return {}
                rows = db.execute(query, _bounds(root)).fetchall()
        except (sqlite3.Error, OSError) as exc:
            self._give_up("read", exc)
            return {}
        return {os.fsdecode(row[0]): row[1:] for row in rows}

    def count(self) -> int:
        """Files known to the cache (0 if it is missing or unreadable)."""
        if not self.path.is_file():
            return 0
        try:
            with self._connect() as db:
                return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        except (sqlite3.Error, OSError):
            return 0

    def store(self, rows: Mapping[str, Row], stale: Iterable[str] = ()) -> None:
        """Record rows by path and forget stale paths, in one transaction. Never raises."""
        insert = f"INSERT OR REPLACE INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting for others
                _ensure_schema(db)
                db.executemany(insert, ((os.fsencode(path), *row) for path, row in rows.items()))
                db.executemany(
                    "DELETE FROM files WHERE path = ?", ((os.fsencode(p),) for p in stale)
                )
                db.execute("COMMIT")  # closing without it rolls everything back
        except (sqlite3.Error, OSError) as exc:
            self._give_up("written", exc)

    def _connect(self) -> closing[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute("PRAGMA cache_size = -65536")  # 64 MiB: big writes need not lock out readers
        return closing(db)

    def _give_up(self, action: str, exc: BaseException) -> None:
        """Warn once; delete a corrupt database so that the next write starts a new one."""
        # SQLITE_CORRUPT and SQLITE_NOTADB; a subclass (locked, read-only, ...) is no reason
        corrupt = type(exc) is sqlite3.DatabaseError
        if corrupt:
            for suffix in ("-journal", "-wal", "-shm", ""):
                with suppress(OSError):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if not self._warned:
            self._warned = True
            problem = "is corrupt and was removed" if corrupt else f"could not be {action} ({exc})"
            print(
                f"warning: the fingerprint cache {self.path} {problem}; hashing the data "
                "files in full",
                file=sys.stderr,
            )


def _version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def _ensure_schema(db: sqlite3.Connection) -> None:
    if _version(db) != SCHEMA_VERSION:
        db.execute("DROP TABLE IF EXISTS files")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(_SCHEMA)
