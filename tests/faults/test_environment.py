"""Faults from the machine: a full disk, a damaged, locked or directory-shaped ledger, a
damaged run folder among good ones. Each is one paragraph naming the path and what to do;
nothing already written is lost."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path

import pytest

from inflame.errors import InflameError, RunError
from inflame.launcher import train_local
from inflame.ledger import Ledger
from inflame.runs import list_runs, resolve_run
from inflame.runtime import MetricsLog
from tests.helpers import assert_clean_error


def test_a_full_disk_mid_run_names_the_path_and_the_run_resumes(write_spec, tmp_path, monkeypatch):
    spec = write_spec(hyperparameters={"epochs": 3})
    reference = train_local(spec, run_dir=tmp_path / "reference").manifest["weights_sha256"]

    real_log = MetricsLog.append

    def log(self, record):
        if record.get("epoch") == 2:  # the disk fills up during epoch 2's records
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_log(self, record)

    monkeypatch.setattr(MetricsLog, "append", log)
    run = tmp_path / "full"
    with pytest.raises(RunError) as caught:
        train_local(spec, run_dir=run)
    message = str(caught.value)
    assert message.startswith(f"No space left on device: {run / 'metrics.jsonl'}. Free some")
    assert f"inflame train --local --resume {run}" in message
    manifest = json.loads((run / "manifest.json").read_text())  # intact, and it says why
    assert manifest["status"] == "failed" and "No space left" in manifest["error"]
    assert not list(run.glob(".*.tmp-*")) and not list((run / "checkpoints").glob(".*tmp*"))

    monkeypatch.setattr(MetricsLog, "append", real_log)  # space freed
    resumed = train_local(None, resume=run).manifest
    assert resumed["status"] == "completed" and resumed["weights_sha256"] == reference


def test_the_cli_says_which_path_it_could_not_write(tmp_path, monkeypatch, capsys):
    import sys

    from inflame import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.jpg"))

    monkeypatch.setattr("inflame.data.split.split_dataset", full)
    monkeypatch.setattr(sys, "argv", ["inflame", "split", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"No space left on device: {tmp_path / 'out' / 'x.jpg'}. Free some space" in err
    assert "Traceback" not in err and "bug" not in err


@pytest.mark.parametrize("shape", ["garbage", "directory"])
def test_a_damaged_ledger_is_named_with_the_way_out(tmp_path, shape):
    path = tmp_path / "ledger.sqlite"
    if shape == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.mkdir()
    with pytest.raises(InflameError) as caught:
        Ledger(path).all()
    message = str(caught.value)
    assert f"The job ledger {path} cannot be used" in message
    assert f"mv {path} {path}.broken" in message
    path.rename(tmp_path / "aside")  # the way out works: a new ledger starts
    assert Ledger(path).all() == []


def test_a_locked_ledger_waits_then_says_so(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.wait_s = 0.2
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(InflameError, match="is locked by another inflame process"):
            ledger.begin(target="t", name="n", spec_sha256="s", bundle_sha256="b", request={})
    finally:
        holder.rollback()
        holder.close()
    ledger.begin(target="t", name="n", spec_sha256="s", bundle_sha256="b", request={})
    assert len(ledger.all()) == 1


def test_one_damaged_run_folder_does_not_hide_the_others(cli, write_spec, tmp_path):
    good = Path(
        cli("train", "--local", write_spec(hyperparameters={"epochs": 1}), check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    broken = tmp_path / "runs" / "zzz-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ half a manifest")
    runs = list_runs(tmp_path / "runs")
    assert {r.path for r in runs} == {good, broken}
    assert [r.status for r in runs if r.path == broken] == ["unreadable"]
    assert resolve_run("latest", tmp_path / "runs") == good  # never the damaged one
    listed = cli("runs", check=True)
    assert good.name in listed.stdout and "zzz-broken is unreadable" in " ".join(
        listed.stderr.split()
    )
    rows = [json.loads(x) for x in cli("runs", "--json", check=True).stdout.splitlines()]
    assert {r["status"] for r in rows} == {"completed", "unreadable"}


def test_file_names_that_are_not_utf8_are_hashed_by_their_bytes(
    cli, write_spec, demo_set, tmp_path
):
    import os
    import shutil

    from inflame.runs import hash_data_inputs

    data = tmp_path / "data"
    shutil.copytree(demo_set, data)
    folder = data / "train" / "circle"
    first = next(folder.iterdir())
    os.rename(bytes(first), os.fsencode(folder) + b"/caf\xe9.jpg")  # Latin-1, as old zips hold
    before = hash_data_inputs({"train": data / "train"})
    os.rename(os.fsencode(folder) + b"/caf\xe9.jpg", os.fsencode(folder) + b"/caf\xe8.jpg")
    after = hash_data_inputs({"train": data / "train"})
    assert before["fingerprint"] != after["fingerprint"]  # another name, another fingerprint

    spec = write_spec(
        data={"train": str(data / "train"), "val": str(data / "val")},
        hyperparameters={"epochs": 1},
    )
    result = cli("train", "--local", spec)
    assert result.returncode == 0, result.stderr


def test_more_processes_than_gpus_is_refused_before_any_starts(write_spec, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(RunError) as refused:
        train_local(write_spec(), run_dir=tmp_path / "ddp", nproc_per_node=2)
    said = str(refused.value)
    assert "trains in 2 processes (--nproc-per-node), one per GPU" in said
    assert "this machine has 1 GPU(s) visible (CUDA_VISIBLE_DEVICES=3)" in said
    assert "--nproc-per-node 1 or fewer" in said and "was cleared" in said
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == [".lock"]  # nothing else left


def test_a_file_given_where_a_folder_goes_is_a_clean_error(cli, write_spec, tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("keep me")
    train = cli("train", "--local", write_spec(), "--run-dir", note)
    assert_clean_error(train, str(note), "give a folder")
    space = {"learning_rate": {"log_uniform": [1e-4, 1e-1]}}
    spec = write_spec("sweep.toml", sweep={"trials": 1, "hyperparameters": space})
    sweep = cli("sweep", spec, "--out", note)
    assert_clean_error(sweep, f"--out {note} is a file, not a folder")
    api = cli("api", "--root", note, "--port", "0", INFLAME_API_TOKEN="t" * 40)
    assert_clean_error(api, f"--root {note} is a file, not a folder")
    assert note.read_text() == "keep me"
