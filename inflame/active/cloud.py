"""`inflame loop --target`: each round's retraining as a cloud job, the querying here.

Everything the loop writes in the cloud is under a folder of its own, `DATA_URI/<loop>/`
(the loop folder's name and a random suffix, so two loops never share a file). A round
uploads the loop's training set as it stands to `round-N/train/` there (a folder per round,
so every job's input stays as it was when the job ran), the spec's other local inputs once
to `inputs/<name>/`, submits through the normal path (plan, ledger, duplicate guard) with the
previous round's model in the code bundle (a warm start), follows the job until it ends, and
downloads its run next to the local rounds.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inflame.errors import InflameError, RunInterrupted


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CloudRounds:
    """Trains the loop's rounds on one target, reading and writing under `data_uri`. Built
    before the loop writes anything: the URI, the target settings and the first round's
    request are checked here (offline). The spec's local data, the loop's folder and
    `exclude` (the pool, the oracle) never go into a code bundle, even inside the app folder."""

    def __init__(
        self,
        spec_path: Path,
        target: str,
        data_uri: str,
        loop_dir: Path,
        overrides: Sequence[str] = (),
        *,
        exclude: Sequence[Path] = (),
        poll_s: float = 15.0,
        emit: Callable[[str], None] = _stderr,
    ):
        from inflame.spec import load_spec
        from inflame.targets import get_target

        if poll_s < 0:
            raise InflameError(f"--poll {poll_s}: give the seconds between checks, 0 or more.")
        self.provider = get_target(target)
        self.provider.check_upload_uri(data_uri, "--data-uri")
        self.spec_path, self.target, self.loop_dir = spec_path, target, loop_dir
        self.data_uri = f"{data_uri.rstrip('/')}/{loop_dir.name}-{secrets.token_hex(3)}"
        self.overrides, self.poll_s, self.emit = list(overrides), poll_s, emit
        spec = load_spec(spec_path, self.overrides)
        # the spec's local folders reach the job as uploads, never inside the code bundle
        self.local = {name: item.path for name, item in spec.data.items() if item.is_local}
        self.exclude = [*self.local.values(), loop_dir, *exclude]  # never in the bundle
        self.uploaded: set[str] = set()  # the spec's other local inputs, sent once
        self._plan(0, None)  # every check a submission makes, before anything is written

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "data_uri": self.data_uri}

    def _uris(self, index: int) -> dict[str, str]:
        """Where the job reads each local input (a folder: the slash ends it, so that
        SageMaker's prefix `round-1/` never matches `round-10/`)."""
        return {
            name: f"{self.data_uri}/round-{index}/train/"
            if name == "train"
            else f"{self.data_uri}/inputs/{name}/"
            for name in self.local
        }

    def _plan(self, index: int, parent: Path | None) -> Any:
        from inflame.submit import plan_submission

        uris = self._uris(index)
        return plan_submission(
            self.spec_path,
            self.target,
            [*self.overrides, *(f"data.{name}={uri}" for name, uri in uris.items())],
            init_from=parent,
            exclude=self.exclude,
        )

    def __call__(self, index: int, train: Path, parent: Path | None, run_dir: Path) -> Any:
        """Train round `index` on `train` (warm-started from `parent`) as a cloud job whose
        run ends up in `run_dir`; returns the run's manifest."""
        from inflame.ledger import Ledger
        from inflame.runs import read_manifest
        from inflame.submit import submit_plan

        plan = self._plan(index, parent)
        for warning in (*plan.bundle.warnings, *plan.warnings):
            self.emit(f"warning: {warning}")
        for name, uri in self._uris(index).items():
            if name == "train" or name not in self.uploaded:  # train grows every round
                folder = train if name == "train" else self.local[name]
                count = self.provider.upload_folder(folder, uri, plan.locator)
                self.emit(f"round {index}: {count} file(s) of {folder} in {uri}")
                self.uploaded.add(name)
        ledger = Ledger()
        record = submit_plan(plan, ledger)
        self.emit(f"round {index}: job {record.provider_id} (ledger id {record.id})")
        self._wait_and_download(index, record, ledger, run_dir)
        return read_manifest(run_dir)

    def _wait_and_download(self, index: int, record: Any, ledger: Any, run_dir: Path) -> None:
        from inflame.submit import download, follow

        job = f"Round {index}'s job {record.provider_id}"
        kept = f"The rounds before it are in {run_dir.parent}."
        try:
            state = follow(record, ledger, logs=False, interval=self.poll_s, emit=self.emit)
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"Stopped while {job} runs; it goes on in the cloud. `inflame cancel "
                f"{record.id}` stops it; `inflame download {record.id} {run_dir}` fetches its "
                f"run once it completes. {kept}"
            ) from None
        if state.state != "completed":
            raise InflameError(
                f"{job} ended {state.provider_state}"
                f"{': ' + state.message if state.message else ''}. The loop stops here. "
                f"{kept} `inflame logs {record.id}` shows the job's log."
            )
        try:
            download(record, run_dir)
        except InflameError as exc:
            raise InflameError(
                f"{job} completed, but its run could not be downloaded: {exc} `inflame "
                f"download {record.id} {run_dir}` tries again. {kept}"
            ) from None
