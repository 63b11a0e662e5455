"""`inflame sweep SPEC`: hyperparameter search over the spec's [sweep] space with Optuna.

The study lives in persistent storage (SQLite in the sweep folder unless `--storage` names
another database), so a sweep that was stopped or killed continues where it stopped:
finished trials are kept, a trial that was training continues from its checkpoint, and
several sweep processes may share one study. Each trial is an ordinary run in
`SWEEP/trials/`; the folder also holds the summary (best first) and the plots.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import (
    InflameError,
    RunInterrupted,
    RunTerminated,
    SpecError,
    did_you_mean,
    make_folder,
)
from inflame.jobprep import PreparedJob, prepare_job
from inflame.runs import pid_alive, write_json_atomic
from inflame.stopping import Terminated, on_sigterm
from inflame.sweep.study import (
    default_storage,
    format_override,
    identity,
    import_optuna,
    make_sampler,
    open_study,
    suggest,
)
from inflame.sweep.trials import Outcome

SWEEP_FILE = "sweep.json"
OWNER_ATTR = "inflame_owner"  # {host, pid} of the sweep process that runs the trial
LEDGER_ATTR = "inflame_ledger_id"  # a cloud trial's job in the ledger
ERROR_ATTR = "inflame_error"
MAX_FAILURES_IN_A_ROW = 3


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    finished: int  # trials of the study that have ended (this and earlier sweeps)
    best_number: int | None
    best_value: float | None
    best_run: Path | None
    interrupted: bool = False


def default_sweep_dir(job_name: str) -> Path:
    return Path(os.environ.get("INFLAME_SWEEPS") or "sweeps") / job_name


def prepare_sweep(spec_path: Path, overrides: Sequence[str]) -> PreparedJob:
    """The spec, its app, and a [sweep] space checked against the app's hyperparameters:
    every name declared, every range end and choice a value the app accepts."""
    job = prepare_job(spec_path, overrides)
    spec, sweep = job.spec, job.spec.sweep
    if sweep is None or not sweep.hyperparameters:
        missing = "no [sweep] table" if sweep is None else "no [sweep.hyperparameters]"
        raise SpecError(
            f"{spec_path} has {missing}: nothing to search. Add, for example:\n"
            '[sweep]\nmetric = "val_accuracy"\ntrials = 20\n\n[sweep.hyperparameters]\n'
            "learning_rate = { log_uniform = [1e-4, 1e-1] }\nbatch_size = { choice = [16, 32] }"
        )
    declared = {p.name: p for p in job.app.hparams} if job.app.hparams is not None else None
    known = declared if declared is not None else spec.hyperparameters
    for name, dist in sweep.hyperparameters.items():
        where = spec.locate(("sweep", "hyperparameters", name))
        if name not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise SpecError(
                f"Invalid job spec, {where}: `sweep.hyperparameters.{name}` is not a "
                f"hyperparameter of app {job.app.name}.{did_you_mean(name, known)} Its "
                f"hyperparameters: {listing}."
            )
        if declared is None:
            continue
        hparam = declared[name]
        if not dist.is_int and dist.kind != "choice" and float not in hparam.types:
            raise SpecError(
                f"Invalid job spec, {where}: `{name}` is declared {hparam.type_name}, but "
                f"`sweep.hyperparameters.{name}` draws fractional values ({dist.kind}). "
                f"Use `int` or `log_int`, or `choice`."
            )
        for value in dist.endpoints():
            try:
                hparam.coerce(value)
            except ValueError as exc:
                raise SpecError(
                    f"Invalid job spec, {where}: `sweep.hyperparameters.{name}` would try "
                    f"{value!r}, but {name} {exc}."
                ) from None
    return job


def trial_overrides(params: dict[str, Any]) -> list[str]:
    return [format_override(name, value) for name, value in params.items()]


def _owner() -> dict[str, Any]:
    return {"host": platform.node(), "pid": os.getpid()}


def _alive(owner: Any) -> bool:
    """Whether the sweep process that owns a trial may still be running it (always true
    for another host: it cannot be checked from here)."""
    if not isinstance(owner, dict) or owner.get("host") != platform.node():
        return isinstance(owner, dict)
    pid = owner.get("pid")
    if pid == os.getpid():  # not this process's (those are known): a reused pid
        return False
    return not isinstance(pid, int) or pid_alive(pid)


class Sweep:
    """One sweep process's view of the study: starts trials until the study has `trials`,
    follows them, reports their epochs, prunes, and records how each ended."""

    def __init__(
        self,
        spec_path: Path,
        overrides: Sequence[str] = (),
        *,
        trials: int | None = None,
        parallel: int = 1,
        target: str | None = None,
        out: Path | None = None,
        storage: str | None = None,
        poll_s: float = 30.0,
        emit: Callable[[str], None] = print,
    ):
        if parallel < 1:
            raise InflameError(f"--parallel must be at least 1, got {parallel}.")
        self.job = prepare_sweep(Path(spec_path), overrides)
        self.spec_path, self.overrides = Path(spec_path), list(overrides)
        self.space = self.job.spec.sweep
        assert self.space is not None
        wanted = trials if trials is not None else self.space.trials
        if wanted < 1:
            raise InflameError(f"--trials must be at least 1, got {wanted}.")
        grid = self.space.grid_size() if self.space.sampler == "grid" else None
        self.n_trials = min(wanted, grid) if grid else wanted
        self.parallel, self.target, self.emit = parallel, target, emit
        self.sweep_dir = Path(out) if out else default_sweep_dir(self.job.spec.job.name)
        self.storage = storage
        self.poll_s = poll_s
        self.sweep_id = identity(self.job.spec.to_dict(resolved=True), self.space)
        self.reported: dict[int, set[int]] = {}  # trial -> the epochs the study holds

    # ---- the trials' executor ----
    def _executor(self) -> Any:
        metric = self.space.metric
        if self.target:
            from inflame.sweep.cloud import CloudTrials

            return CloudTrials(
                self.sweep_dir, self.spec_path, self.overrides, metric, self.target, self.poll_s
            )
        from inflame.sweep.local import LocalTrials

        return LocalTrials(self.sweep_dir, self.spec_path, self.overrides, metric, self.parallel)

    # ---- dry run ----
    def plan(self) -> list[dict[str, Any]]:
        """Every trial's hyperparameters and plan (the command, or the cloud request) as
        the sampler draws them before any result; nothing is stored or sent. TPE draws its
        first trials at random, and later ones from earlier results, so a real sweep's
        later trials differ."""
        optuna = import_optuna()
        study = optuna.create_study(
            direction=self.space.direction,
            sampler=make_sampler(self.space, self.job.spec.job.seed),
        )
        executor = self._executor()
        plans = []
        for _ in range(self.n_trials):
            trial = study.ask()
            params = suggest(trial, self.space.hyperparameters)
            overrides = trial_overrides(params)
            if not self.target:
                prepare_job(self.spec_path, [*self.overrides, *overrides])  # each one valid
            shown = executor.describe(trial.number, overrides)
            plans.append({"trial": trial.number, "params": params, **shown})
        return plans

    # ---- the sweep ----
    def run(self) -> SweepResult:
        optuna = import_optuna()
        make_folder(self.sweep_dir, "--out")
        storage = self.storage or default_storage(self.sweep_dir)
        study = open_study(
            storage,
            self.job.spec.job.name,
            self.space,
            self.job.spec.job.seed,
            self.sweep_id,
        )
        self._write_sweep_file(storage)
        executor = self._executor()
        trials: dict[int, Any] = {}  # number -> optuna.Trial, for the trials this process runs
        failures = {"in_a_row": 0, "completed": 0}
        stop_requested: BaseException | None = None
        with on_sigterm():
            try:
                while True:
                    self._fill(study, executor, trials)
                    if not executor.running and not executor.ended:
                        break
                    for number, epochs in executor.progress().items():
                        self._report(trials[number], epochs, executor)
                    for outcome in executor.finished():
                        self._record(study, trials.pop(outcome.number), outcome, failures)
                    time.sleep(0.2)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
                stop_requested = exc
                why = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
                self.emit(f"stopping: asking {len(executor.running)} trial(s) to stop ({why})")
                for outcome in executor.stop_all(why):
                    self._record(study, trials.pop(outcome.number), outcome, failures)
            except BaseException:
                executor.stop_all("SIGTERM")
                raise
        from inflame.sweep.results import write_results

        best = write_results(self.sweep_dir, study)
        finished = len(_finished(study, optuna))
        result = SweepResult(
            self.sweep_dir,
            finished,
            best.number if best else None,
            best.value if best else None,
            best.run_dir if best else None,
            interrupted=stop_requested is not None,
        )
        if stop_requested is not None:
            stopped = RunTerminated if isinstance(stop_requested, Terminated) else RunInterrupted
            raise stopped(
                f"Sweep stopped after {finished} finished trial(s); the trials in flight "
                f"were checkpointed. Continue it with the same command "
                f"(its study: {self.sweep_dir})."
            )
        return result

    def _write_sweep_file(self, storage: str) -> None:
        from inflame.redact import redact_url_password

        write_json_atomic(
            self.sweep_dir / SWEEP_FILE,
            {
                "study": self.job.spec.job.name,
                "storage": redact_url_password(storage),
                "spec": str(self.spec_path.absolute()),
                "overrides": self.overrides,
                "target": self.target or "local",
                "metric": self.space.metric,
                "direction": self.space.direction,
                "sampler": self.space.sampler,
                "trials": self.n_trials,
                "sweep_sha256": self.sweep_id,
            },
        )

    def _fill(self, study: Any, executor: Any, trials: dict[int, Any]) -> None:
        """Start trials while fewer than `parallel` run here: first those a dead sweep
        left unfinished, then new ones until the study holds `n_trials`."""
        optuna = import_optuna()
        if len(executor.running) >= self.parallel:
            return
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if len(executor.running) >= self.parallel:
                return
            if frozen.number in trials or _alive(frozen.user_attrs.get(OWNER_ATTR)):
                continue
            if not self.target and executor.busy(frozen.number):
                continue  # its process is still stopping; look again next time
            if set(frozen.params) != set(self.space.hyperparameters):
                study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                continue  # stopped before its hyperparameters were all drawn
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr(OWNER_ATTR, _owner())
            trials[frozen.number] = trial
            self.reported[frozen.number] = set(frozen.intermediate_values)
            self._continue(trial, frozen, executor)
        while (
            len(executor.running) < self.parallel and len(_counted(study, optuna)) < self.n_trials
        ):
            trial = study.ask()
            trial.set_user_attr(OWNER_ATTR, _owner())
            params = suggest(trial, self.space.hyperparameters)
            trials[trial.number] = trial
            self.reported[trial.number] = set()
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            if self.target:
                try:
                    record = executor.submit(trial.number, trial_overrides(params))
                except InflameError as exc:  # refused (a duplicate in flight…): this trial only
                    executor.ended.append(Outcome(trial.number, "failed", error=str(exc)))
                    continue
                trial.set_user_attr(LEDGER_ATTR, record.id)
                self.emit(f"trial {trial.number}: submitted {record.provider_id} ({shown})")
            else:
                executor.start(trial.number, trial_overrides(params))
                self.emit(f"trial {trial.number}: started ({shown})")

    def _continue(self, trial: Any, frozen: Any, executor: Any) -> None:
        overrides = trial_overrides(frozen.params)
        if self.target:
            ledger_id = frozen.user_attrs.get(LEDGER_ATTR)
            if ledger_id is not None:
                record = executor.record(int(ledger_id))
                executor.follow(frozen.number, record)
            else:
                try:
                    record = executor.submit(frozen.number, overrides)
                except InflameError as exc:
                    executor.ended.append(Outcome(frozen.number, "failed", error=str(exc)))
                    return
                trial.set_user_attr(LEDGER_ATTR, record.id)
            self.emit(f"trial {frozen.number}: following {record.provider_id} again")
            return
        how = executor.start(frozen.number, overrides)
        self.emit(f"trial {frozen.number}: {how} (left unfinished by an earlier sweep)")

    def _report_epochs(self, trial: Any, epochs: dict[int, float]) -> None:
        done = self.reported.setdefault(trial.number, set())
        for epoch in sorted(set(epochs) - done):
            trial.report(epochs[epoch], epoch)
            done.add(epoch)

    def _report(self, trial: Any, epochs: dict[int, float], executor: Any) -> None:
        self._report_epochs(trial, epochs)
        if trial.should_prune():
            executor.prune(trial.number)
            self.emit(f"trial {trial.number}: pruned after epoch {max(epochs)}")

    def _record(self, study: Any, trial: Any, outcome: Outcome, failures: dict[str, int]) -> None:
        optuna = import_optuna()
        state = optuna.trial.TrialState
        self._report_epochs(trial, outcome.epochs)
        self.reported.pop(outcome.number, None)
        number = outcome.number
        if outcome.kind == "completed":
            study.tell(trial, outcome.value)
            failures["in_a_row"], failures["completed"] = 0, failures["completed"] + 1
            self.emit(f"trial {number}: {self.space.metric} = {outcome.value:.6g}")
        elif outcome.kind == "pruned":
            study.tell(trial, state=state.PRUNED)
        elif outcome.kind == "stopped":
            self.emit(f"trial {number}: stopped; the next sweep continues it")
        else:
            trial.set_user_attr(ERROR_ATTR, outcome.error[:2000])
            study.tell(trial, state=state.FAIL)
            failures["in_a_row"] += 1
            self.emit(f"trial {number}: failed: {outcome.error}")
            if outcome.fatal:  # every trial would fail the same way
                raise SpecError(outcome.error)
            if failures["in_a_row"] >= MAX_FAILURES_IN_A_ROW and not failures["completed"]:
                raise InflameError(
                    f"{failures['in_a_row']} trials failed in a row and none completed; "
                    f"stopping the sweep. The last error: {outcome.error} (each trial's "
                    f"output is in {self.sweep_dir / 'logs'})."
                )


def _counted(study: Any, optuna: Any) -> list[Any]:
    """The trials that count towards the sweep's number: all but those waiting."""
    states = optuna.trial.TrialState
    return study.get_trials(
        deepcopy=False, states=(states.RUNNING, states.COMPLETE, states.PRUNED, states.FAIL)
    )


def _finished(study: Any, optuna: Any) -> list[Any]:
    states = optuna.trial.TrialState
    return study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.FAIL))
