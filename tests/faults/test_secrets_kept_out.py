"""Faults: secrets that would leak. The code bundle leaves out credential files by name and
by content and lists them; `${env:…}` values of secret-named variables never reach a run
folder or the screen; inflame's private state is private (0700 folders, 0600 files)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from inflame.ledger import Ledger
from inflame.packaging import build_bundle

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SERVICE_ACCOUNT = json.dumps(
    {"type": "service_account", "project_id": "p", "private_key_id": "abc", "client_email": "x"}
)
NAMED = [
    ".npmrc",
    "terraform.tfstate",
    "infra/prod.tfstate.backup",
    ".kube/config",
    "kubeconfig-prod",
    "id_ecdsa",
    "id_dsa.pub",
    ".docker/config.json",
    ".pgpass",
    "secrets.toml",
    ".huggingface/token",
    ".s3cfg",
    ".boto",
    ".databrickscfg",
    "gcp-service-account.json",
]


def test_keys_are_found_anywhere_in_a_files_first_mib(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("def train(ctx):\n    pass\n")
    for name, offset in (("early.log", 0), ("late.log", (1 << 20) - len(KEY) - 1)):
        (app / name).write_text("x" * offset + KEY)
    (app / "beyond.log").write_text("x" * ((1 << 20) + 1) + KEY)  # the documented bound
    bundle = build_bundle(app, "")
    left_out = {Path(p).name for p in bundle.excluded_secrets}
    assert left_out == {"early.log", "late.log"}


def test_the_bundle_leaves_out_credentials_by_name_and_by_content(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("def train(ctx):\n    pass\n")
    (app / "helpers.py").write_text("X = 1\n")
    for name in NAMED:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("secret\n")
    (app / "notes.txt").write_text("deploy key:\n" + KEY)  # a key under an innocent name
    (app / "config" / "key.json").parent.mkdir()
    (app / "config" / "key.json").write_text(SERVICE_ACCOUNT)
    bundle = build_bundle(app, "")
    shipped = {name.removeprefix("app/") for name in bundle.files if name.startswith("app/")}
    assert shipped == {"app.py", "helpers.py"}
    left_out = {Path(p).relative_to(app).as_posix() for p in bundle.excluded_secrets}
    assert left_out == {*NAMED, "notes.txt", "config/key.json"}  # listed, each by name


def test_secret_named_variables_never_reach_the_run_folder_or_the_screen(
    cli, write_spec, tmp_path, monkeypatch
):
    token = "tok-9f8e7d6c5b4a3210"
    spec = write_spec(
        job={"description": "run for ${env:INFLAME_API_TOKEN}"}, hyperparameters={"epochs": 1}
    )
    env_token = {"INFLAME_API_TOKEN": token}
    monkeypatch.setenv("INFLAME_API_TOKEN", token)  # the cli fixture's env starts from ours
    result = cli(
        "train", "--local", spec, "--set", "job.description=again ${env:INFLAME_API_TOKEN}"
    )
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    for path in run.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in result.stdout + result.stderr
    shown = cli("runs", "show", run, "--json", check=True)
    assert token not in shown.stdout
    assert env_token  # the value was set, and found nowhere


def test_private_state_is_private(cli, write_spec, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("INFLAME_HOME", str(home))
    ledger = Ledger()
    ledger.all()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    result = cli("train", "--local", write_spec(hyperparameters={"epochs": 1}), check=True)
    run = Path(result.stdout.strip().splitlines()[-1])
    assert stat.S_IMODE(run.stat().st_mode) & 0o077 == 0, oct(run.stat().st_mode)
    assert os.access(run, os.R_OK)


@pytest.fixture(autouse=True)
def _umask():
    previous = os.umask(0o022)  # the usual default, whatever the test runner has
    yield
    os.umask(previous)
