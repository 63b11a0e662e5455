"""The CLI's net under every fault nobody has given a message yet: one paragraph, exit code
70, the traceback in a private crash log; `--debug` shows it instead."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inflame import cli


def test_an_unexpected_error_is_one_paragraph_and_a_private_crash_log(
    monkeypatch, tmp_path: Path, capsys
):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INFLAME_DEBUG", "0")

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line of the message")

    monkeypatch.setattr("inflame.runs.list_runs", broken)
    monkeypatch.setattr(sys, "argv", ["inflame", "runs", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 70
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: inflame failed unexpectedly (RuntimeError: boom)")
    assert "Traceback" not in err and "second line" not in err and "--debug" in err
    [log] = (tmp_path / "home" / "logs").glob("crash-*.log")
    assert log.name in err.replace(" ", "")
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: boom" in text and "command: inflame runs" in text

    monkeypatch.setattr(sys, "argv", ["inflame", "--debug", "runs", "--runs-dir", str(tmp_path)])
    with pytest.raises(RuntimeError, match="boom"):
        cli.main()


def test_user_errors_stay_one_paragraph_without_a_log(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    missing = tmp_path / "no-such-run"
    monkeypatch.setattr(sys, "argv", ["inflame", "runs", "show", str(missing)])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no-such-run" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "logs").exists()
