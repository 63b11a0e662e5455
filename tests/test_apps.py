"""Loading an app: a process that imported it runs the code on disk, not a stale copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inflame.apps import load_app

APP = """import reload_probe_helper
from inflame import HParam
HPARAMS = (HParam("lr", float, {lr}),)
def train(ctx):
    return reload_probe_helper.VALUE
"""


def test_an_app_edited_while_a_process_runs_is_imported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "reload_probe_helper.py").write_text("VALUE = 1\n")
    (folder / "app.py").write_text(APP.format(lr=0.1))
    first = load_app(str(folder))
    assert first.module.train(None) == 1 and first.hparams[0].default == 0.1
    assert load_app(str(folder)).module is first.module  # unchanged: not imported again

    (folder / "reload_probe_helper.py").write_text("VALUE = 2\n")  # only a sibling changed
    assert load_app(str(folder)).module.train(None) == 2

    (folder / "app.py").write_text(APP.format(lr=0.2))  # same size, same second
    assert load_app(str(folder)).hparams[0].default == 0.2
