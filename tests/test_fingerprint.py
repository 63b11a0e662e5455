"""The fingerprint cache: unchanged data files are not read again, changed ones always are."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from inflame import fingerprint
from inflame.fingerprint import FingerprintCache
from inflame.hashing import IGNORED_NAMES, iter_files, sha256_bytes, sha256_file, tree_hashes
from inflame.runs import hash_data_inputs

SETTLE_NS = 50_000_000  # the racy window in these tests; files older than it may be cached


def settle() -> None:
    """Let every file written so far leave the racy window."""
    time.sleep(1.5 * SETTLE_NS / 1e9)


def make_set(root: Path, files: int = 24) -> Path:
    """Files in class folders, plus names every listing must skip or keep."""
    for i in range(files):
        path = root / f"class_{i % 3}" / f"img_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100 + i))
    for name in ("nested/deep/x.bin", ".hidden", ".git/HEAD", "sub/__pycache__/m.pyc", "m.pyc"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    return root


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FingerprintCache:
    """This test's own cache (also the one hash_data_inputs uses), with a short racy window."""
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("INFLAME_NO_CACHE", raising=False)
    monkeypatch.setattr(fingerprint, "RACY_NS", SETTLE_NS)
    made = FingerprintCache.default()
    assert made is not None
    return made


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The data files opened (sha256_file opens each file it hashes), in any thread."""
    opened: list[str] = []
    real_open = builtins.open
    data = str(tmp_path / "data")

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and str(file).startswith(data):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return opened


def test_second_start_reads_no_file_and_matches_uncached(
    cache: FingerprintCache, reads: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = make_set(tmp_path / "data")
    settle()
    expected = tree_hashes(root)
    assert len(reads) == len(expected) == 26  # 24 images, .hidden, nested/deep/x.bin
    reads.clear()
    first = tree_hashes(root, cache=cache)
    assert first == expected and list(first) == list(expected)
    assert len(reads) == len(expected)
    reads.clear()
    assert tree_hashes(root, cache=cache) == expected
    assert reads == []
    assert (cache.hits, cache.misses) == (26, 26)
    monkeypatch.chdir(tmp_path)  # the real entry point, with a relative path
    manifest = hash_data_inputs({"train": Path("data")})
    assert manifest["inputs"]["train"]["files"] == expected
    assert reads == []


@pytest.mark.parametrize("rewrite", ["replaced", "in_place"])
def test_same_size_rewrite_with_restored_mtime_is_read_again(
    cache: FingerprintCache, reads: list[str], tmp_path: Path, rewrite: str
):
    root = make_set(tmp_path / "data")
    settle()
    before = tree_hashes(root, cache=cache)
    target = root / "class_0" / "img_000.jpg"
    old = os.stat(target)
    if rewrite == "replaced":  # new inode, new ctime
        (root / "new.tmp").write_bytes(os.urandom(old.st_size))
        os.replace(root / "new.tmp", target)
    else:  # same inode, new ctime
        target.write_bytes(os.urandom(old.st_size))
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.stat(target)
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert (new.st_ino != old.st_ino) == (rewrite == "replaced")
    reads.clear()
    after = tree_hashes(root, cache=cache)
    assert reads == [str(target)]
    assert after["class_0/img_000.jpg"] == sha256_file(target) != before["class_0/img_000.jpg"]
    assert after == tree_hashes(root)


def test_racily_clean_entry_is_read_again(
    cache: FingerprintCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A same-size rewrite in the same timestamp tick keeps every stat field: an entry
    recorded that close to the file's mtime must not be trusted."""
    monkeypatch.setattr(fingerprint, "RACY_NS", 3_000_000_000)
    real_key = fingerprint.file_key

    def coarse_key(path: str) -> fingerprint.FileKey | None:  # no ctime change to see
        key = real_key(path)
        return key._replace(ctime_ns=0) if key else None

    monkeypatch.setattr(fingerprint, "file_key", coarse_key)
    target = tmp_path / "data" / "a.bin"
    target.parent.mkdir()
    target.write_bytes(b"A" * 64)
    old = os.stat(target)
    assert tree_hashes(target.parent, cache=cache) == {"a.bin": sha256_bytes(b"A" * 64)}
    recorded = cache.load(target.parent)[str(target)]
    target.write_bytes(b"B" * 64)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert recorded[:5] == coarse_key(str(target))  # the stat fields cannot tell
    assert tree_hashes(target.parent, cache=cache) == {"a.bin": sha256_bytes(b"B" * 64)}


@pytest.mark.parametrize("damage", ["corrupt", "not_a_folder"])
def test_unusable_cache_hashes_everything_and_never_fails(
    cache: FingerprintCache,
    reads: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
):
    root = make_set(tmp_path / "data")
    settle()
    expected = tree_hashes(root, cache=cache)
    if damage == "corrupt":
        cache.path.write_bytes(b"not a database" * 300)
        damaged = FingerprintCache(cache.path.parent)
    else:
        (tmp_path / "a-file").write_text("x")
        damaged = FingerprintCache(tmp_path / "a-file")
    reads.clear()
    assert tree_hashes(root, cache=damaged) == expected
    assert len(reads) == len(expected)
    assert "warning: the fingerprint cache" in capsys.readouterr().err
    if damage == "corrupt":  # replaced by a good one
        reads.clear()
        assert tree_hashes(root, cache=damaged) == expected
        assert reads == []


def test_disabled_cache_reads_everything_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, reads: list[str], tmp_path: Path
):
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INFLAME_NO_CACHE", "1")
    root = make_set(tmp_path / "data")
    settle()
    assert FingerprintCache.default() is None
    first = hash_data_inputs({"train": root})
    assert hash_data_inputs({"train": root}) == first
    assert len(reads) == 2 * first["inputs"]["train"]["file_count"]
    assert first["inputs"]["train"]["files"] == tree_hashes(root)
    assert not (tmp_path / "cache").exists()


def test_deleted_files_are_forgotten(cache: FingerprintCache, reads: list[str], tmp_path: Path):
    root = make_set(tmp_path / "data")
    settle()
    tree_hashes(root, cache=cache)
    gone = root / "class_1" / "img_001.jpg"
    gone.unlink()
    reads.clear()
    assert "class_1/img_001.jpg" not in tree_hashes(root, cache=cache)
    assert reads == []
    assert str(gone) not in cache.load(root) and len(cache.load(root)) == 25


def test_a_killed_write_leaves_the_previous_cache(cache: FingerprintCache, tmp_path: Path):
    cache.store({"/x/kept": (1, 2, 3, 4, 5, "a" * 64, 6)})
    child = """if True:
        import os, sys
        from pathlib import Path
        from inflame.fingerprint import FingerprintCache

        class DiesHalfway(dict):
            def items(self):
                yield from list(super().items())[:50]
                os._exit(3)

        rows = {f"/x/{i}": (i, 2, 3, 4, 5, "b" * 64, 6) for i in range(100)}
        FingerprintCache(Path(sys.argv[1])).store(DiesHalfway(rows), stale=["/x/kept"])
    """
    result = subprocess.run([sys.executable, "-c", child, str(cache.path.parent)], timeout=60)
    assert result.returncode == 3
    assert cache.load(Path("/x")) == {"/x/kept": (1, 2, 3, 4, 5, "a" * 64, 6)}
    with sqlite3.connect(cache.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_concurrent_starts_share_one_cache(
    cache: FingerprintCache, reads: list[str], tmp_path: Path
):
    root = make_set(tmp_path / "data", files=1500)
    settle()
    expected = tree_hashes(root)
    child = """if True:
        import json, sys
        from pathlib import Path
        from inflame.fingerprint import FingerprintCache
        from inflame.hashing import tree_hashes

        print(json.dumps(tree_hashes(Path(sys.argv[1]), cache=FingerprintCache(Path(sys.argv[2])))))
    """
    command = [sys.executable, "-c", child, str(root), str(cache.path.parent)]
    starts = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for start in starts:
        out, err = start.communicate(timeout=120)
        assert start.returncode == 0 and err == "", err
        assert json.loads(out) == expected
    reads.clear()
    assert tree_hashes(root, cache=cache) == expected
    assert reads == []
    with sqlite3.connect(cache.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def rglob_files(root: Path, ignored: Iterable[str] = IGNORED_NAMES) -> list[Path]:
    """iter_files as it was before walk_files: manifests made with it must still match."""
    ignored = frozenset(ignored)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not ignored.intersection(p.relative_to(root).parts)
        and p.suffix != ".pyc"
    )


def test_listing_matches_rglob_on_odd_trees(
    cache: FingerprintCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = make_set(tmp_path / "data", files=6)
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "inner" / "f.txt").write_text("outside")
    for name in (".pyc", "a..pyc", "b.pyc.bak", "a-b", "a/b", "a b/c", "ünï/çødé"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / "linked-file").symlink_to(outside / "inner" / "f.txt")
    (root / "linked-folder").symlink_to(outside / "inner")  # not entered
    (root / "broken").symlink_to(tmp_path / "nowhere")
    (root / "loop").symlink_to(root / "loop")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x").write_text("x")
    settle()
    assert iter_files(root) == rglob_files(root)
    assert "linked-file" in tree_hashes(root) and "linked-folder/f.txt" not in tree_hashes(root)
    assert tree_hashes(root, cache=cache) == tree_hashes(root)
    assert list(tree_hashes(root, cache=cache)) == list(tree_hashes(root))
    monkeypatch.chdir(root)
    assert iter_files(Path(".")) == rglob_files(Path("."))
    assert iter_files(root / "missing") == [] == iter_files(root / "a-b")
