"""The code bundle (deterministic, secret-free, ignore rules) and the job ledger."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.packaging import build_bundle, safe_extract, safe_join


def make_app(root: Path) -> Path:
    app = root / "myapp"
    (app / "lib").mkdir(parents=True)
    (app / "app.py").write_text("def train(ctx):\n    pass\n")
    (app / "lib" / "helpers.py").write_text("X = 1\n")
    (app / "requirements.txt").write_text("# extra\nscikit-learn>=1\n")
    return app


def names(bundle) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        return set(tar.getnames())


def test_bundle_is_deterministic_and_self_contained(tmp_path: Path):
    app = make_app(tmp_path)
    first = build_bundle(app, "[job]\n")
    (app / "app.py").touch()  # a new mtime changes nothing
    second = build_bundle(app, "[job]\n")
    assert first.data == second.data and first.sha256 == second.sha256
    shipped = names(first)
    assert {
        "app/app.py",
        "app/lib/helpers.py",
        "spec.toml",
        "entry.sh",
        "vendor/inflame/__init__.py",
        "vendor/inflame/job.py",
        "vendor/tomli/__init__.py",  # TOML for images that run Python 3.10
        "vendor/tomli/_parser.py",
    } <= shipped
    # pure Python only: no compiled module (tomli's wheel has some) and no install step
    assert not [n for n in shipped if n.endswith((".so", ".pyd", ".pyc"))]
    assert "requirements.txt" not in shipped
    assert any("requirements.txt is not installed in cloud jobs" in w for w in first.warnings)
    (app / "lib" / "helpers.py").write_text("X = 2\n")
    assert build_bundle(app, "[job]\n").sha256 != first.sha256
    assert build_bundle(app, "[job]\nname = 'y'\n").sha256 != first.sha256
    with tarfile.open(fileobj=io.BytesIO(first.data), mode="r:gz") as tar:
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        modes = {m.name: m.mode for m in tar.getmembers()}
        entry = tar.extractfile("entry.sh").read().decode()
    assert modes["entry.sh"] == 0o755 and modes["app/app.py"] == 0o644  # sh runs it as is
    assert "pip" not in entry and "python3 -m inflame.job spec.toml" in entry


def test_secrets_never_reach_the_bundle(tmp_path: Path):
    app = make_app(tmp_path)
    planted = [
        ".env",
        ".env.production",
        "server.pem",
        "tls.key",
        "id_rsa",
        "id_rsa.pub",
        "gcp-credentials.json",
        ".aws/credentials",
        ".azure/config",
        ".config/gcloud/application_default_credentials.json",
        ".git/config",
        "lib/.netrc",
    ]
    for name in planted:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("PLANTED-SECRET-7f3a")
    bundle = build_bundle(app, "[job]\n")
    shipped = names(bundle)
    assert not [
        n for n in shipped if n.startswith("app/") and any(n == f"app/{p}" for p in planted)
    ], shipped
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        contents = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
    assert not [c for c in contents if b"PLANTED-SECRET-7f3a" in c]
    assert len(bundle.excluded_secrets) == len(planted)


def test_ignore_files_and_excluded_data_are_honoured(tmp_path: Path):
    (tmp_path / ".git").mkdir()  # the repository root
    (tmp_path / ".gitignore").write_text("myapp/big/\n")
    app = make_app(tmp_path)
    (app / ".inflameignore").write_text("*.ckpt\n!keep.ckpt\n")
    for name in (
        "big/weights.bin",
        "model.ckpt",
        "keep.ckpt",
        "data/train/a.jpg",
        "__pycache__/x.pyc",
        "runs/r1/manifest.json",
    ):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("x")
    shipped = names(build_bundle(app, "[job]\n", exclude=[app / "data" / "train"]))
    assert "app/keep.ckpt" in shipped and "app/.inflameignore" in shipped
    for left_out in (
        "app/big/weights.bin",
        "app/model.ckpt",
        "app/data/train/a.jpg",
        "app/__pycache__/x.pyc",
        "app/runs/r1/manifest.json",
    ):
        assert left_out not in shipped


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_safe_extract_refuses_escaping_members(tmp_path: Path, member: str):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(InflameError, match="Refusing to write"):
        safe_extract(raw.getvalue(), tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../x", "a/../../x", "C:/x", "c:x", "a\\..\\x", "x\0y", ""]
)
def test_safe_join_keeps_every_name_inside_the_folder(tmp_path: Path, name: str):
    with pytest.raises(InflameError, match="Refusing to write"):
        safe_join(tmp_path / "dest", name)


def test_safe_join_refuses_a_path_through_a_link_outside(tmp_path: Path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "out").symlink_to(tmp_path)
    assert safe_join(tmp_path / "dest", "model/weights.bin") == (
        tmp_path / "dest" / "model" / "weights.bin"
    )
    with pytest.raises(InflameError, match="resolves outside"):
        safe_join(tmp_path / "dest", "out/evil.txt")


def test_ledger_records_finds_and_reports_duplicates(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = ledger.begin(
        target="sagemaker",
        name="job-a",
        spec_sha256="s" * 64,
        bundle_sha256="b" * 64,
        request={"locator": {"region": "us-east-1"}},
    )
    assert ledger.get(first).status == "submitting"
    assert [r.id for r in ledger.duplicates("sagemaker", "s" * 64, "b" * 64)] == [first]
    ledger.update(first, provider_id="job-a-123", status="completed", console_url="https://x")
    assert ledger.find("job-a-123").id == first == ledger.find(str(first)).id
    assert ledger.find("job-a").request == {"locator": {"region": "us-east-1"}}
    assert ledger.duplicates("sagemaker", "s" * 64, "b" * 64) == []
    with pytest.raises(InflameError, match="No job 'nope'"):
        ledger.find("nope")
    assert len(Ledger(tmp_path / "ledger.sqlite").all()) == 1  # persisted


def test_download_tree_writes_below_the_prefix_and_refuses_escapes(tmp_path: Path):
    from inflame.targets.base import download_tree

    objects = {"p/model/w.bin": b"w", "p/": b"", "p/sub/": b"", "p/manifest.json": b"{}"}
    assert download_tree(tmp_path / "d", "p/", objects, objects.__getitem__) == 2
    assert (tmp_path / "d" / "model" / "w.bin").read_bytes() == b"w"
    for evil in ("p//etc/evil", "p/../evil", "p/a/../../evil"):
        with pytest.raises(InflameError, match="Refusing to write"):
            download_tree(tmp_path / "e", "p/", [evil], lambda name: b"x")
    assert not (tmp_path / "evil").exists()


def test_the_ledger_lives_in_inflame_home_in_a_private_folder(tmp_path: Path, monkeypatch):
    import platformdirs

    from inflame.ledger import HOME_ENV, inflame_home

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert inflame_home() == tmp_path / "home"
    monkeypatch.delenv(HOME_ENV)
    assert inflame_home() == Path(platformdirs.user_data_dir("inflame", appauthor=False))
    ledger = Ledger(tmp_path / "new" / "deeper" / "ledger.sqlite")
    assert ledger.path.is_file() and (ledger.path.stat().st_mode & 0o777) == 0o600
    assert (ledger.path.parent.stat().st_mode & 0o777) == 0o700


@pytest.fixture
def running_job(tmp_path: Path):
    """A ledger holding one submitted SageMaker job, "job-a"."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    job = ledger.begin(
        target="sagemaker",
        name="job-a",
        spec_sha256="s" * 64,
        bundle_sha256="b" * 64,
        request={"locator": {"region": "us-east-1"}},
    )
    ledger.update(job, provider_id="job-a", status="running", console_url="")
    return ledger, ledger.get(job)


def test_a_job_whose_state_cannot_be_read_still_counts_as_running(running_job, monkeypatch):
    """The duplicate guard errs on the side of not submitting twice."""
    from inflame.submit import still_active
    from inflame.targets.base import JobState
    from inflame.targets.sagemaker import TARGET

    ledger, record = running_job

    def unreachable(provider_id, locator):
        raise InflameError("Reading the job status failed: timed out")

    monkeypatch.setattr(TARGET, "status", unreachable)
    assert still_active(record, ledger) is True
    monkeypatch.setattr(TARGET, "status", lambda p, loc: JobState("completed", "Completed"))
    assert still_active(record, ledger) is False


def test_following_logs_that_cannot_be_read_falls_back_to_the_status(running_job, monkeypatch):
    from inflame.submit import follow
    from inflame.targets.base import JobState
    from inflame.targets.sagemaker import TARGET

    ledger, record = running_job
    states = iter(
        [JobState("running", "InProgress/Training")] * 2 + [JobState("completed", "Completed")]
    )
    monkeypatch.setattr(TARGET, "status", lambda p, loc: next(states))  # 3 polls at most

    def no_logs(provider_id, locator):
        raise InflameError("this account cannot read the job's logs")
        yield  # a generator, as the targets' logs are

    monkeypatch.setattr(TARGET, "logs", no_logs)
    emitted: list[str] = []
    state = follow(record, ledger, logs=True, emit=emitted.append, sleep=lambda s: None)
    assert state.state == "completed" and ledger.get(record.id).status == "completed"
    assert emitted == [
        "note: this account cannot read the job's logs",
        "job-a: InProgress/Training",
        "job-a: Completed",
    ]
