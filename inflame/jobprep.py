"""Preparing a job, for training here and for submitting alike: load the spec and the app,
and check the hyperparameters against the app's declaration. Touches nothing on disk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inflame.apps import App, load_app
from inflame.hparams import resolve_hparams
from inflame.spec import JobSpec, load_spec


@dataclass(frozen=True)
class PreparedJob:
    spec: JobSpec  # with the app's resolved hyperparameters
    app: App


def prepare_job(spec_path: str | Path, overrides: Sequence[str] = ()) -> PreparedJob:
    """The validated spec (hyperparameters resolved against the app's HPARAMS) and the app."""
    spec = load_spec(spec_path, overrides)
    app = load_app(spec.job.app)
    if app.hparams is None:
        hparams = dict(spec.hyperparameters)
    else:
        hparams = resolve_hparams(
            app.hparams, spec.hyperparameters, app_name=app.name, locate=spec.locate
        )
    return PreparedJob(spec=spec.with_hyperparameters(hparams), app=app)
