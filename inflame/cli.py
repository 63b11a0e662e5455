"""The `inflame` command line: parse arguments, call the library, render the result.

No logic lives here. Heavy modules (torch, torchvision, cloud SDKs) are imported inside
the commands that need them, so `inflame --help` stays fast. For the same reason this
module has no `from __future__ import annotations`: typer would then compile and eval
every command's annotation strings (~700) on every start, ~35 ms.
"""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

# Plain click help and usage errors: typer's rich formatting costs ~90 ms of imports on every
# `--help`, nearly half the CLI's start-up (TYPER_USE_RICH=1 brings it back).
os.environ.setdefault("TYPER_USE_RICH", "0")
import typer

from inflame import __version__
from inflame.errors import InflameError
from inflame.targets import PROVIDERS

app = typer.Typer(
    name="inflame",
    help="One TOML job spec, one PyTorch training app, every place it can run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="List local runs, or show one.", no_args_is_help=False)
app.add_typer(runs_app, name="runs")
cache_app = typer.Typer(
    help="The local cache: file fingerprints, decoded images, frozen-backbone features.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
label_app = typer.Typer(help="Bring newly labelled images into a training set.")
app.add_typer(label_app, name="label")

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", metavar="SECTION.KEY=VALUE", help="Override a spec value (repeatable)."
    ),
]
Backend = Annotated[
    str,
    typer.Option(help="`torch`, or `onnx`: the run's ONNX export on onnxruntime, no torch."),
]
RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Folder holding runs (default: $INFLAME_RUNS_DIR or ./runs)."),
]


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        print(f"inflame {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error."),
    ] = False,
) -> None:
    """One TOML job spec, one PyTorch training app, every place it can run."""
    if debug:
        from inflame.crashlog import DEBUG_ENV

        os.environ[DEBUG_ENV] = "1"


@app.command()
def train(
    spec: Annotated[
        Path | None,
        typer.Argument(help="Job spec (TOML). Optional with --resume.", show_default=False),
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Run here (the default; cloud runs use `inflame submit`)."),
    ] = True,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="SECTION.KEY=VALUE",
            help="Override a spec value, e.g. hyperparameters.epochs=3 (repeatable).",
        ),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Write the run here instead of runs/<name>-<time>-<hash>.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue a run (directory, name, or `latest`) from its last checkpoint."
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from",
            help="Warm start: begin from a finished run's weights (directory, name or `latest`).",
        ),
    ] = None,
    runs_dir: RunsDir = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Processes (DDP) on this machine, e.g. one per GPU; launched through torchrun.",
        ),
    ] = None,
    help_app: Annotated[
        bool, typer.Option("--help-app", help="List the app's hyperparameters and exit.")
    ] = False,
) -> None:
    """Train the spec's app locally: checkpoints, resume, hashed run directory."""
    if help_app:
        _print_app_help(spec, overrides or [])
        return
    from inflame.allocator import reexec_with_allocator

    reexec_with_allocator()  # tcmalloc or jemalloc when installed (before torch loads)
    from inflame.launcher import train_local

    result = train_local(
        spec,
        overrides or [],
        run_dir=run_dir,
        resume=resume,
        runs_root=runs_dir,
        nproc_per_node=nproc_per_node,
        init_from=init_from,
    )
    _print_train_summary(result.run_dir, result.manifest)
    print(result.run_dir)


def _print_app_help(spec: Path | None, overrides: list[str]) -> None:
    if spec is None:
        raise InflameError("--help-app needs the job spec: `inflame train --help-app SPEC`.")
    from rich.console import Console
    from rich.table import Table

    from inflame.apps import load_app
    from inflame.spec import load_spec

    loaded = load_spec(spec, overrides)
    application = load_app(loaded.job.app)
    table = Table(title=f"Hyperparameters of app `{application.name}` ({application.file})")
    for column in ("name", "type", "default", "in spec", "help"):
        table.add_column(column, overflow="fold")
    for param in application.hparams or ():
        given = loaded.hyperparameters.get(param.name, "")
        table.add_row(
            param.name,
            param.type_name,
            json.dumps(param.default),
            json.dumps(given) if param.name in loaded.hyperparameters else "",
            param.help
            + (f" Choices: {', '.join(map(str, param.choices))}." if param.choices else ""),
        )
        del given
    if application.hparams is None:
        table.caption = "This app declares no HPARAMS: any hyperparameter passes unchecked."
    Console().print(table)


def _print_train_summary(run_dir: Path, manifest: dict[str, Any]) -> None:
    from inflame.runs import read_metrics

    epochs = [r for r in read_metrics(run_dir) if "epoch" in r]
    console = _stderr()
    if epochs:
        line = f"trained {epochs[-1]['epoch']} epoch(s)"
        saved = manifest.get("saved") or {}
        at_saved = next((r for r in epochs if r["epoch"] == saved.get("epoch")), None)
        if at_saved is not None:  # the epoch the weights hold, and what chose it
            line += f"; saved epoch {at_saved['epoch']} (best {saved['monitor']}"
            if isinstance(saved.get("value"), float):
                line += f" {saved['value']:.4f}"
            line += ")"
            if "val_accuracy" in at_saved and saved["monitor"] != "val_accuracy":
                line += f", val_accuracy {at_saved['val_accuracy']:.4f}"
        console.print(line)
    tests = [r for r in read_metrics(run_dir) if "test_accuracy" in r]
    if tests:
        console.print(f"test_accuracy {tests[-1]['test_accuracy']:.4f}")
    if manifest.get("weights_sha256"):
        console.print(f"weights sha256 {manifest['weights_sha256']}")
    console.print(f"run directory (predict with `inflame predict IMAGE --run {run_dir}`):")


@app.command()
def predict(
    images: Annotated[
        list[Path], typer.Argument(help="Image files or folders.", show_default=False)
    ],
    run: Annotated[
        str, typer.Option("--run", "-r", help="Run directory, run name, or `latest`.")
    ] = "latest",
    top_k: Annotated[
        int | None, typer.Option("--top-k", "-k", help="Also list the K most likely labels.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    backend: Backend = "torch",
    runs_dir: RunsDir = None,
) -> None:
    """Label images with a trained run: one JSON object per image per line."""
    from inflame.predict import load_predictor
    from inflame.runs import resolve_run

    predictor = load_predictor(resolve_run(run, runs_dir), backend)
    failed = total = 0
    for result in predictor.predict(images, top_k=top_k, batch_size=batch_size):
        total += 1
        print(json.dumps(result, allow_nan=False), flush=True)  # NaN is not JSON
        if "error" in result:
            failed += 1
            print(f"error: {result['error']}", file=sys.stderr)
    if failed:
        print(f"{failed} of {total} input(s) could not be labelled", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def query(
    run: Annotated[
        str, typer.Argument(help="Run directory, run name, or `latest`.", show_default=False)
    ],
    pool: Annotated[
        Path, typer.Option("--pool", help="A folder of unlabelled images (searched recursively).")
    ],
    k: Annotated[int, typer.Option("--k", help="How many images to select.")] = 100,
    strategy: Annotated[
        str, typer.Option(help="entropy, margin, least_confidence or random.")
    ] = "entropy",
    copy_to: Annotated[
        Path | None,
        typer.Option(
            "--copy-to", help="Copy the selected images here, in folders named by the guess."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where query.csv and query.json go (default: RUN/queries/…)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The random strategy's seed.")] = 0,
    backend: Backend = "torch",
    runs_dir: RunsDir = None,
) -> None:
    """Rank an unlabelled pool by how unsure the run's model is: the images to label next."""
    import time

    from inflame.active.query import QUERY_CSV, query_pool, write_query
    from inflame.predict import load_predictor
    from inflame.runs import resolve_run

    run_dir = resolve_run(run, runs_dir)
    predictor = load_predictor(run_dir, backend)
    ranked = query_pool(predictor, run_dir, pool, strategy=strategy, k=k, seed=seed)
    out = out or run_dir / "queries" / f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}"
    copied = write_query(ranked, out, copy_to)
    console = _stderr()
    record = ranked.record
    console.print(
        f"scored {record['scored']} of {record['pool_images']} images of {pool} "
        f"({record['skipped']} unreadable); the {record['k']} most worth labelling by "
        f"{strategy}:",
        soft_wrap=True,
    )
    for row in ranked.selected()[:10]:
        console.print(
            f"  {row['rank']:>4}  {row['score']:.4f}  {row['predicted_label']} "
            f"({row['probability']:.2f})  {row['image']}",
            soft_wrap=True,
        )
    if copied:
        console.print(f"copied {len(copied)} images to {copy_to}, in folders named by the guess")
    print(out / QUERY_CSV)


@label_app.command("import")
def label_import(
    source: Annotated[
        Path, typer.Argument(help="Labelled images: SRC/<class>/<image>.", show_default=False)
    ],
    into: Annotated[Path, typer.Option("--into", help="The training set (TRAIN/<class>/).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be added; copy nothing.")
    ] = False,
) -> None:
    """Merge labelled class folders into a training set: duplicates (by content) refused,
    nothing overwritten, a provenance record kept."""
    from inflame.active.labels import PROVENANCE, import_labels

    result = import_labels(source, into, dry_run=dry_run)
    console = _stderr()
    verb = "would add" if dry_run else "added"
    for name, files in sorted(result.added.items()):
        new = " (new class)" if name in result.new_classes else ""
        console.print(f"{verb} {len(files)} to {name}{new}")
    for item in result.duplicates:
        console.print(
            f"refused {item['file']}: the same image as {item['same_as']}", soft_wrap=True
        )
    for item in result.refused:
        console.print(f"refused {item['file']}: {item['error']}", soft_wrap=True)
    total = sum(len(files) for files in result.added.values())
    console.print(
        f"{verb} {total} image(s) to {into}"
        + ("" if dry_run or not total else f"; provenance in {into / PROVENANCE}")
    )
    print(json.dumps(result.record["added"]))


@app.command()
def loop(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML).", show_default=False)],
    pool: Annotated[Path, typer.Option("--pool", help="Unlabelled images to query from.")],
    oracle: Annotated[
        Path,
        typer.Option("--oracle", help="The same images in class folders: the true labels."),
    ],
    rounds: Annotated[int, typer.Option("--rounds", help="Query-label-retrain rounds.")] = 3,
    k: Annotated[int, typer.Option("--k", help="Images labelled per round.")] = 100,
    strategy: Annotated[
        str, typer.Option(help="entropy, margin, least_confidence or random.")
    ] = "entropy",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The loop's folder (default: loops/…).")
    ] = None,
    overrides: Overrides = None,
    seed: Annotated[int, typer.Option(help="The random strategy's seed.")] = 0,
    target: Annotated[
        str | None,
        typer.Option(
            "--target", "-t", help=f"Retrain as cloud jobs there ({', '.join(PROVIDERS)})."
        ),
    ] = None,
    data_uri: Annotated[
        str | None,
        typer.Option(
            "--data-uri",
            help="With --target: a cloud folder (s3://, gs://, azureml://datastores/…/paths/…) "
            "the loop uploads each round's training set under.",
        ),
    ] = None,
    poll: Annotated[
        float, typer.Option(help="With --target: seconds between job status checks.")
    ] = 15.0,
) -> None:
    """Active learning: train, query the pool, label from the oracle, retrain from the last
    model; writes the learning curve (curve.csv, curve.png)."""
    from inflame.allocator import reexec_with_allocator

    reexec_with_allocator()
    from inflame.active.loop import CURVE_CSV, run_loop

    folder, rows = run_loop(
        spec,
        pool=pool,
        oracle=oracle,
        rounds=rounds,
        k=k,
        strategy=strategy,
        out=out,
        overrides=overrides or [],
        seed=seed,
        target=target,
        data_uri=data_uri,
        poll_s=poll,
    )
    console = _stderr()
    for row in rows:
        accuracy = "-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.3f}"
        console.print(
            f"round {row['round']}: {row['labelled']} labelled images, val_accuracy {accuracy}"
        )
    print(folder / CURVE_CSV)


@app.command("eval")
def evaluate(
    run: Annotated[
        str, typer.Argument(help="Run directory, run name, or `latest`.", show_default=False)
    ] = "latest",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="A data input of the run (test, val, ...) or a folder with one sub-folder per "
            "class. Default: the run's test input, else its val input.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: RUN/eval).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Report top-2..K accuracy.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    runs_dir: RunsDir = None,
) -> None:
    """Score a run's model: metrics, confusion matrix, calibration, an HTML report."""
    from inflame.evaluation.report import evaluate_run
    from inflame.runs import resolve_run

    result = evaluate_run(
        resolve_run(run, runs_dir), data, out_dir=out, top_k=top_k, batch_size=batch_size
    )
    report = result.report
    console = _stderr()
    if report["data"]["changed_since_training"]:
        console.print(
            f"warning: {report['data']['path']} has changed since the run trained on it "
            "(its fingerprint differs from the one in the manifest)"
        )
    line = f"{report['images']} images: accuracy {report['accuracy']:.4f}"
    for k, value in report["top_k_accuracy"].items():
        line += f", top-{k} {value:.4f}"
    line += (
        f", loss {report['loss']:.4f}, macro F1 {report['macro']['f1']:.4f}, "
        f"ECE {report['expected_calibration_error']:.4f}"
    )
    console.print(line)
    console.print(f"report: {result.out_dir / 'report.html'}")
    print(result.out_dir)


@app.command()
def serve(
    run: Annotated[
        str, typer.Argument(help="Run directory, run name, or `latest`.", show_default=False)
    ] = "latest",
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with the model.")] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the API token (else $INFLAME_API_TOKEN)."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body.")] = 20.0,
    max_files: Annotated[int, typer.Option(help="Most images in one request.")] = 16,
    max_batch: Annotated[int, typer.Option(help="Most images in one forward pass.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more images.")
    ] = 5.0,
    backend: Annotated[
        str, typer.Option(help="`torch`, or `onnx` (the run's ONNX export, no torch).")
    ] = "torch",
    runs_dir: RunsDir = None,
) -> None:
    """Serve a trained run over HTTP: POST /predict, /healthz, /readyz, /metadata, /metrics."""
    from inflame.runs import resolve_run
    from inflame.serving.server import serve as run_service
    from inflame.serving.settings import ServeSettings

    settings = ServeSettings(
        run_dir=str(resolve_run(run, runs_dir).resolve()),
        host=host,
        port=port,
        workers=workers,
        token_file=str(token_file) if token_file else None,
        max_upload_mb=max_upload_mb,
        max_files=max_files,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        backend=backend,
    )
    run_service(settings)


@app.command()
def api(
    root: Annotated[
        Path, typer.Option(help="The service's folder: its job database, job logs, runs.")
    ] = Path("inflame-api"),
    allowed_root: Annotated[
        Path | None,
        typer.Option(help="Spec files named by path must lie under it (default: the cwd)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8001,
    parallel: Annotated[int, typer.Option(help="Jobs that train here at once.")] = 1,
    poll_seconds: Annotated[
        float, typer.Option(help="How often a cloud job's provider is asked for its state.")
    ] = 30.0,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the API token (else $INFLAME_API_TOKEN); required."),
    ] = None,
) -> None:
    """Training jobs over HTTP: POST /jobs, GET /jobs/{id}, GET /jobs, DELETE /jobs/{id}."""
    from inflame.jobs_api.app import ApiSettings
    from inflame.jobs_api.server import serve_api

    settings = ApiSettings(
        root=str(root.resolve()),
        allowed_root=str((allowed_root or Path.cwd()).resolve()),
        host=host,
        port=port,
        parallel=parallel,
        cloud_poll_s=poll_seconds,
        token_file=str(token_file) if token_file else None,
    )
    serve_api(settings)


@app.command()
def deploy(
    run: Annotated[
        str, typer.Argument(help="Run directory, run name, or `latest`.", show_default=False)
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="azure, sagemaker or vertex.")],
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the exact requests; send nothing.")
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Deploy a trained run as a managed real-time endpoint ([targets.<target>] settings)."""
    from inflame.deploy.plan import deploy as create
    from inflame.deploy.plan import plan_deployment
    from inflame.ledger import Ledger
    from inflame.runs import resolve_run

    plan = plan_deployment(resolve_run(run, runs_dir), target, overrides or [])
    console = _stderr()
    where = ", ".join(f"{key} {value}" for key, value in plan.where.items())
    console.print(f"endpoint {plan.name} on {target} ({where})", soft_wrap=True)
    console.print(
        f"model archive: {plan.archive_uri} ({len(plan.archive.data):,} bytes, sha256 "
        f"{plan.archive.sha256[:12]}…)",
        soft_wrap=True,
    )
    if dry_run:
        console.print("[bold]checked against[/bold]")
        for check in plan.checks:
            console.print(f"  - {check}", soft_wrap=True)
        print(json.dumps(plan.to_json(), indent=2))
        return
    record = create(plan, Ledger())
    console.print(f"creating endpoint {record.name} (ledger id {record.id}); it takes minutes")
    console.print(f"console: {record.console_url}")
    print(record.name)


@app.command()
def endpoints(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List deployed endpoints (the ledger), with the status each provider reports now."""
    from inflame.deploy.plan import refresh
    from inflame.ledger import Ledger

    ledger = Ledger()
    console = _stderr()
    rows = []
    for record in ledger.deployments():
        try:
            record = refresh(record, ledger)
        except InflameError as exc:
            console.print(f"[yellow]warning:[/yellow] {record.name}: {exc}", soft_wrap=True)
        rows.append(record)
    if as_json:
        for r in rows:
            fields = ("id", "target", "name", "status", "run", "weights_sha256", "error")
            print(json.dumps({key: getattr(r, key) for key in fields} | {"created": r.created_at}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Endpoints")
    for column in ("id", "target", "name", "status", "run", "created"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), r.target, r.name, r.status, Path(r.run).name, r.created_at)
    Console().print(table)


@app.command()
def undeploy(
    endpoint: Annotated[
        str, typer.Argument(help="Endpoint name (or ledger id).", show_default=False)
    ],
) -> None:
    """Delete a deployed endpoint, its configuration and its model."""
    from inflame.deploy.plan import undeploy as delete
    from inflame.ledger import Ledger

    ledger = Ledger()
    record = ledger.find_deployment(endpoint)
    delete(record, ledger)
    _stderr().print(f"deleted endpoint {record.name} ({record.target})")


@app.command()
def export(
    run: Annotated[
        str, typer.Argument(help="Run directory, run name, or `latest`.", show_default=False)
    ] = "latest",
    fmt: Annotated[str, typer.Option("--format", "-f", help="`onnx` or `torchscript`.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: RUN/export/...).")
    ] = None,
    runs_dir: RunsDir = None,
) -> None:
    """Export a run's model (ONNX or TorchScript), checked against PyTorch on sample images."""
    from inflame.exporting import export_run
    from inflame.runs import resolve_run

    result = export_run(resolve_run(run, runs_dir), fmt, out)
    parity = result.record["parity"]
    _stderr().print(
        f"{fmt} export: {result.path} (sha256 {result.record['sha256'][:12]}…); largest "
        f"probability difference from PyTorch {parity['max_abs_diff_probability']:.1e} on "
        f"{parity['source']}"
    )
    print(result.path)


@app.command()
def sweep(
    args: Annotated[
        list[str],
        typer.Argument(
            help="SPEC (run or continue the sweep of its [sweep] table), or `show DIR`.",
            metavar="SPEC | show DIR",
            show_default=False,
        ),
    ],
    trials: Annotated[
        int | None,
        typer.Option("--trials", "-n", help="Trials in the study in all (default: sweep.trials)."),
    ] = None,
    parallel: Annotated[
        int, typer.Option("--parallel", "-p", help="Trials in flight at once (CPUs split).")
    ] = 1,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help=f"Run each trial as a job on {', '.join(PROVIDERS)}."),
    ] = None,
    overrides: Overrides = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Sweep folder (default: sweeps/<job name>)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL (default: SQLite in the sweep folder)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every trial's plan; run and store nothing.")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between cloud status checks.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="`show`: JSON lines.")] = False,
) -> None:
    """Hyperparameter search (Optuna): `inflame sweep SPEC`, `inflame sweep show DIR`."""
    if args[0] == "show" and len(args) == 2:
        _show_sweep(Path(args[1]), storage, as_json)
        return
    if len(args) != 1:
        raise InflameError(
            "Usage: `inflame sweep SPEC [options]` to run a sweep, or "
            "`inflame sweep show DIR` to print one."
        )
    from inflame.sweep.runner import Sweep

    console = _stderr()
    runner = Sweep(
        Path(args[0]),
        overrides or [],
        trials=trials,
        parallel=parallel,
        target=target,
        out=out,
        storage=storage,
        poll_s=poll,
        emit=lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False),
    )
    if dry_run:
        plans = runner.plan()
        console.print(
            f"{len(plans)} trial(s) as the sampler draws them before any result "
            "(nothing is run or stored):"
        )
        for plan in plans:
            print(json.dumps(plan, default=str))
        return
    result = runner.run()
    if result.best_number is None:
        console.print("no trial completed")
        raise typer.Exit(1)
    console.print(
        f"best: trial {result.best_number}, {runner.space.metric} = {result.best_value:.6g}; "
        f"predict with `inflame predict IMAGE --run {result.sweep_dir / 'best'}`"
    )
    _show_sweep(result.sweep_dir, storage, as_json=False, quiet=True)
    print(result.best_run)


def _show_sweep(folder: Path, storage: str | None, as_json: bool, quiet: bool = False) -> None:
    from rich.table import Table

    from inflame.sweep.results import load_sweep, trial_rows, write_results

    record, study = load_sweep(folder, storage)
    if not quiet:
        write_results(folder, study)
    rows = trial_rows(folder, study)
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return
    names = sorted({name for row in rows for name in row["params"]})
    table = Table(
        title=f"sweep {record.get('study', '?')}: {record.get('metric')} "
        f"({record.get('direction')}), {len(rows)} trial(s)"
    )
    for column in ("trial", "state", "value", "epochs", *names):
        table.add_column(column, justify="right" if column != "state" else "left")
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.6g}"
        params = [_cell(row["params"].get(n)) for n in names]
        table.add_row(str(row["trial"]), row["state"], value, str(row["epochs"] or ""), *params)
    console = _stderr() if quiet else None
    from rich.console import Console

    (console or Console()).print(table)
    if not quiet:
        print(f"summary: {folder / 'summary.csv'}; plots: {folder / 'plots'}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@runs_app.callback(invoke_without_command=True)
def runs_list(
    ctx: typer.Context,
    runs_dir: RunsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List local runs: name, time, status, epochs, best val accuracy, weights hash."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from inflame.runs import default_runs_root, list_runs

    root = runs_dir or default_runs_root()
    summaries = list_runs(root)
    if as_json:
        for s in summaries:
            print(
                json.dumps(
                    {
                        "run": str(s.path),
                        "job": s.job,
                        "created": s.created,
                        "status": s.status,
                        "epochs": s.epochs,
                        "saved_epoch": s.saved_epoch,
                        "monitor": s.monitor,
                        "val_accuracy": s.val_accuracy,
                        "weights_sha256": s.weights_sha256,
                        **({"problem": s.problem} if s.problem else {}),
                    }
                )
            )
        return
    if not summaries:
        _stderr().print(f"No runs under {root}. Train one with `inflame train --local SPEC`.")
        return
    columns: dict[str, list[str]] = {
        "run": [s.path.name for s in summaries],
        "created": [s.created.replace("T", " ")[:16] for s in summaries],
        "status": [s.status for s in summaries],
        "epochs": [str(s.epochs) for s in summaries],
        "saved": [str(s.saved_epoch) if s.saved_epoch is not None else "-" for s in summaries],
        # val acc: of the saved epoch, the one the weights hold
        "val acc": [
            f"{s.val_accuracy:.4f}" if s.val_accuracy is not None else "-" for s in summaries
        ],
        "weights": [(s.weights_sha256 or "-")[:12] for s in summaries],
    }

    def width() -> int:
        return sum(max(map(len, [name, *cells])) + 3 for name, cells in columns.items()) + 1

    console = Console()
    if not console.is_terminal:  # piped: every column, however wide (scripts read it)
        console = Console(width=max(width(), console.width))
    # the run's name whole (it is what other commands take): on a narrow terminal whole
    # columns give way instead, the weights' hash first, then the time it was created
    for dropped in ("weights", "created"):
        if width() <= console.width:
            break
        del columns[dropped]
    table = Table(title=f"Runs in {root}")
    for name in columns:
        table.add_column(name, no_wrap=name != "run", overflow="fold")
    for row in zip(*columns.values(), strict=True):
        table.add_row(*row)
    console.print(table)
    for s in summaries:
        if s.problem:
            _stderr().print(f"warning: {s.path.name} is unreadable: {s.problem}")


@runs_app.command("sync")
def runs_sync(
    run: Annotated[str, typer.Argument(help="Run directory, run name, or `latest`.")],
    runs_dir: RunsDir = None,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Write TensorBoard event files (RUN/tensorboard).")
    ] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Log the run to MLflow (a new MLflow run).")
    ] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI, for a run whose spec names none (implies --mlflow)."
        ),
    ] = None,
) -> None:
    """Replay a run's metrics into its trackers (after a tracker failed, or to add one)."""
    from inflame.runs import resolve_run
    from inflame.tracking.sync import sync_run

    run_dir = resolve_run(run, runs_dir)
    chosen = [
        name for name, on in (("tensorboard", tensorboard), ("mlflow", mlflow or mlflow_uri)) if on
    ]
    synced = sync_run(run_dir, chosen or None, mlflow_uri)
    for name, where in synced.items():
        if name == "mlflow":
            uri, count = where["tracking_uri"], where["metrics"]
            print(f"mlflow: run {where['run_id']} in {uri} ({count} metrics)")
        else:
            print(f"{name}: {where.get('records', 0)} record(s) -> {where.get('log_dir', '')}")


@runs_app.command("register")
def runs_register(
    run: Annotated[str, typer.Argument(help="Run directory, run name, or `latest`.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
    runs_dir: RunsDir = None,
) -> None:
    """Register a run's model in MLflow's model registry (a new version under NAME)."""
    from inflame.runs import resolve_run
    from inflame.tracking.mlflow_runs import register

    entry = register(resolve_run(run, runs_dir), name)
    print(f"registered {entry['name']} version {entry['version']} in {entry['tracking_uri']}")


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[
        list[str], typer.Argument(help="Two or more runs (directory or name).", show_default=False)
    ],
    runs_dir: RunsDir = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw their curves together (PNG).")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every hyperparameter, not only those that differ.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Runs side by side: the hyperparameters that differ, and their results."""
    from rich.console import Console
    from rich.table import Table

    from inflame.evaluation.compare import compare_runs, plot_comparison
    from inflame.runs import resolve_run

    run_dirs = [resolve_run(run, runs_dir) for run in runs]
    comparison = compare_runs(run_dirs)
    if plot is not None:
        plot_comparison(run_dirs, plot)
    if as_json:
        print(
            json.dumps(
                {
                    "runs": [str(r) for r in comparison.runs],
                    "hyperparameters": comparison.hyperparameters,
                    "differing": comparison.differing,
                    "results": comparison.results,
                },
                indent=2,
            )
        )
        return
    table = Table(title="Runs compared")
    table.add_column("")
    for run in comparison.runs:
        table.add_column(run.name, overflow="fold")

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    shown = comparison.hyperparameters if show_all else comparison.differing
    for name in shown:
        table.add_row(name, *map(cell, comparison.hyperparameters[name]))
    if not comparison.differing:
        table.add_row("(hyperparameters)", *(["all equal"] * len(comparison.runs)))
    table.add_section()
    for name, values in comparison.results.items():
        table.add_row(name, *map(cell, values))
    Console().print(table)
    if plot is not None:
        _stderr().print(f"curves: {plot}")


@cache_app.command("ls")
def cache_ls(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Show what the cache holds, per kind, and where."""
    from inflame.cache import KINDS, cache_root, usage

    rows = usage()
    if as_json:
        for row in rows:
            print(
                json.dumps(
                    {
                        "kind": row.kind,
                        "path": str(row.path),
                        "entries": row.entries,
                        "bytes": row.bytes,
                    }
                )
            )
        return
    print(f"cache: {cache_root()}  (INFLAME_CACHE_DIR moves it; INFLAME_NO_CACHE=1 turns it off)")
    for row in rows:
        print(
            f"  {row.kind:<13} {row.entries:>9,} entries {row.bytes / 1024**2:>10.1f} MiB   "
            f"{KINDS[row.kind]}"
        )


@cache_app.command("clear")
def cache_clear(
    kinds: Annotated[
        list[str] | None,
        typer.Argument(help="fingerprints, decoded and/or features (default: all)."),
    ] = None,
) -> None:
    """Delete cached work (it is redone when needed)."""
    from inflame.cache import KINDS, clear

    unknown = [k for k in kinds or [] if k not in KINDS]
    if unknown:
        raise InflameError(
            f"Unknown cache kind(s): {', '.join(unknown)}. Kinds: {', '.join(KINDS)}."
        )
    freed = clear(kinds or None)
    print(f"freed {freed / 1024**2:.1f} MiB")


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run directory, run name, or `latest`.")],
    runs_dir: RunsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show one run: status, hashes, hyperparameters and per-epoch metrics."""
    from rich.console import Console
    from rich.table import Table

    from inflame.runs import lineage, read_manifest, read_metrics, resolve_run, run_status

    run_dir = resolve_run(run, runs_dir)
    manifest = read_manifest(run_dir)
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    console = Console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    data = manifest.get("data", {})
    rows = [
        ("run", str(run_dir)),
        ("status", run_status(manifest)),
        ("job", manifest["job"]["name"]),
        ("created", manifest.get("created", "")),
        ("finished", manifest.get("finished", "")),
        ("app", f"{manifest['app']['name']}  sha256 {manifest['app']['sha256']}"),
        ("spec", f"{manifest['spec']['path']}  sha256 {manifest['spec']['sha256']}"),
        ("resolved spec", manifest["spec"]["resolved_sha256"]),
        ("seed", str(manifest.get("seed"))),
        ("dataset", f"fingerprint {data.get('fingerprint', '-')}"),
    ]
    for name, item in data.get("inputs", {}).items():
        rows.append((f"  {name}", f"{item['file_count']} files  {item['fingerprint']}"))
    rows.append(("hyperparameters", json.dumps(manifest.get("hyperparameters", {}))))
    rows.append(("weights sha256", manifest.get("weights_sha256") or "-"))
    for generation, parent in enumerate(lineage(run_dir), start=1):
        note = {"ok": "", "missing": "  (gone)", "changed": "  (its weights changed since)"}
        rows.append(
            (
                "parent" if generation == 1 else f"  parent^{generation}",
                f"{parent['run']}  weights {str(parent['weights_sha256'])[:12]}"
                + note[parent["state"]],
            )
        )
    env = manifest.get("environment", {})
    rows.append(
        (
            "environment",
            ", ".join(
                f"{k} {v}" for k, v in env.items() if k in ("python", "torch", "torchvision")
            ),
        )
    )
    if manifest.get("error"):
        rows.append(("error", manifest["error"]))
    for key, value in rows:
        facts.add_row(key, value)
    console.print(facts)
    epochs = [r for r in read_metrics(run_dir) if "epoch" in r]
    if epochs:
        columns = [k for k in epochs[0] if k not in ("seconds",)]
        table = Table(title="metrics")
        for column in columns:
            table.add_column(column, justify="right")
        for record in epochs:
            table.add_row(
                *(
                    f"{record.get(c):.4f}"
                    if isinstance(record.get(c), float)
                    else str(record.get(c, ""))
                    for c in columns
                )
            )
        console.print(table)


@app.command()
def split(
    source: Annotated[Path, typer.Argument(help="Class-per-folder image set.")],
    destination: Annotated[Path, typer.Argument(help="New folder for train/val[/test].")],
    ratios: Annotated[str, typer.Option(help="train,val[,test] fractions.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Shuffle seed.")] = 0,
) -> None:
    """Deterministic, stratified split into DST/{train,val,test}/<class>/."""
    from inflame.data.split import parse_ratios, split_dataset

    report = split_dataset(source, destination, parse_ratios(ratios), seed)
    _print_counts(report.counts)
    print(report.destination)


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    from rich.table import Table

    classes = sorted({c for per_split in counts.values() for c in per_split})
    table = Table()
    table.add_column("class")
    for name in counts:
        table.add_column(name, justify="right")
    for cls in classes:
        table.add_row(cls, *(str(counts[name].get(cls, 0)) for name in counts))
    _stderr().print(table)


@app.command("demo-data")
def demo_data(
    destination: Annotated[Path, typer.Argument(help="New folder for the demo set.")],
    per_class: Annotated[int, typer.Option(help="Images per class.")] = 400,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    split_it: Annotated[
        bool,
        typer.Option(
            "--split/--no-split", help="Write train/val/test (0.8/0.1/0.1) or one folder per class."
        ),
    ] = True,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Leave an existing non-empty DST as it is.")
    ] = False,
) -> None:
    """Generate the small synthetic demo image set (drawn shapes; no download)."""
    from inflame.data.demo import make_demo_dataset

    if exist_ok and destination.is_dir() and any(destination.iterdir()):
        _stderr().print(f"{destination} already exists; leaving it as it is (--exist-ok)")
        print(destination)
        return
    report = make_demo_dataset(
        destination,
        per_class=per_class,
        image_size=image_size,
        seed=seed,
        ratios=(0.8, 0.1, 0.1) if split_it else None,
    )
    _print_counts(report.counts)
    print(report.destination)


@app.command()
def init(
    destination: Annotated[Path, typer.Argument(help="New folder for your app.")],
    template: Annotated[
        str, typer.Option("--from", help="Zoo app to start from.")
    ] = "fowl_classifier",
    demo_data: Annotated[
        bool,
        typer.Option("--demo-data/--no-demo-data", help="Also generate the demo set in DIR/data."),
    ] = True,
) -> None:
    """Scaffold your own app (app.py + job.toml) that trains out of the box."""
    from inflame.scaffold import scaffold_app

    written = scaffold_app(destination, template, demo_data)
    console = _stderr()
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"train it: inflame train --local {destination / 'job.toml'}")
    print(destination)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML).", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help=f"{', '.join(PROVIDERS)}.")],
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact request; no credentials, no network.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="With --dry-run, also write the request to this file."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Poll until the job ends.")] = False,
    follow_logs: Annotated[
        bool, typer.Option("--follow", help="Stream the job's logs until it ends.")
    ] = False,
    again: Annotated[
        bool,
        typer.Option("--again", help="Submit even if the same spec and code are already running."),
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from",
            help="Warm start: the job begins from a finished run's weights, which travel in "
            "the code bundle (directory, name or `latest`).",
        ),
    ] = None,
    runs_dir: RunsDir = None,
) -> None:
    """Package the app and run it as a cloud GPU training job."""
    from inflame.redact import redact
    from inflame.submit import plan_submission

    parent = None
    if init_from is not None:
        from inflame.runs import resolve_run

        parent = resolve_run(init_from, runs_dir)
    plan = plan_submission(spec, target, overrides or [], init_from=parent)
    console = _stderr()
    if parent is not None:
        console.print(f"warm start from {parent} (its model is in the code bundle)", soft_wrap=True)
    shown = redact(
        {"summary": plan.summary, "warnings": [*plan.bundle.warnings, *plan.warnings]},
        plan.secret_values,
    )
    _print_summary(shown["summary"])
    for warning in shown["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    if plan.bundle.excluded_secrets:
        console.print(
            "left secret-looking file(s) out of the code bundle: "
            + ", ".join(plan.bundle.excluded_secrets),
            soft_wrap=True,
        )
    if dry_run:
        console.print("[bold]checked against[/bold]")
        for check in plan.checks:
            console.print(f"  - {check}", soft_wrap=True)
        console.print(
            f"[bold]would send[/bold] {redact(plan.endpoint, plan.secret_values)}", soft_wrap=True
        )
        for uri, what in plan.uploads.items():
            uri = redact(uri, plan.secret_values)
            console.print(f"[bold]would upload[/bold] {what} to {uri}", soft_wrap=True)
        print(plan.rendered)
        if output is not None:
            output.write_text(plan.rendered + "\n", encoding="utf-8")
            console.print(f"wrote {output}")
        return
    from inflame.ledger import Ledger
    from inflame.submit import follow, submit_plan

    ledger = Ledger()
    record = submit_plan(plan, ledger, again=again)
    console.print(f"submitted {record.provider_id} (ledger id {record.id})")
    console.print(f"console: {record.console_url}")
    print(record.provider_id)
    if wait or follow_logs:
        state = follow(record, ledger, logs=follow_logs)
        console.print(f"{record.provider_id}: {state.provider_state} {state.message}".rstrip())
        if state.state != "completed":
            raise typer.Exit(1)


def _print_summary(summary: dict[str, str]) -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in summary.items():
        table.add_row(key, value)
    _stderr().print(table)


@app.command()
def jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List submitted jobs (the ledger): id, target, name, status, submitted, spec hash."""
    from rich.console import Console
    from rich.table import Table

    from inflame.ledger import Ledger

    records = Ledger().all()
    if as_json:
        for r in records:
            print(
                json.dumps(
                    {
                        "id": r.id,
                        "target": r.target,
                        "name": r.name,
                        "provider_id": r.provider_id,
                        "status": r.status,
                        "submitted": r.submitted_at,
                        "spec_sha256": r.spec_sha256,
                        "bundle_sha256": r.bundle_sha256,
                    }
                )
            )
        return
    table = Table(title="Submitted jobs")
    for column in ("id", "target", "name", "status", "submitted", "spec"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            str(r.id),
            r.target,
            r.provider_id or r.name,
            r.status,
            r.submitted_at,
            r.spec_sha256[:12],
        )
    Console().print(table)


JobRef = Annotated[str, typer.Argument(help="Ledger id or job name, as `submit` printed.")]


@app.command()
def status(job: JobRef) -> None:
    """Ask the provider for a job's status."""
    from inflame.ledger import Ledger
    from inflame.submit import refresh

    ledger = Ledger()
    record = ledger.find(job)
    state = refresh(record, ledger)
    print(
        json.dumps(
            {
                "id": record.id,
                "job": record.provider_id,
                "target": record.target,
                "state": state.state,
                "provider_state": state.provider_state,
                "message": state.message,
                "model": state.model_uri,
            }
        )
    )


@app.command()
def logs(
    job: JobRef,
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """Print a job's logs."""
    from inflame.ledger import Ledger
    from inflame.submit import follow, job_logs

    ledger = Ledger()
    record = ledger.find(job)
    if follow_logs:
        follow(record, ledger, logs=True)
    else:
        for line in job_logs(record):
            print(line)


@app.command()
def cancel(job: JobRef) -> None:
    """Stop a running job."""
    from inflame.ledger import Ledger
    from inflame.submit import cancel as cancel_job

    ledger = Ledger()
    record = ledger.find(job)
    cancel_job(record, ledger)
    _stderr().print(f"stopping {record.provider_id}")


@app.command()
def download(
    job: JobRef,
    destination: Annotated[Path, typer.Argument(help="New local run directory.")],
) -> None:
    """Fetch a finished job's run (manifest, metrics, model) for `inflame predict`."""
    from inflame.ledger import Ledger
    from inflame.submit import download as download_job

    run_dir = download_job(Ledger().find(job), destination)
    _stderr().print(f"predict with `inflame predict IMAGE --run {run_dir}`")
    print(run_dir)


def main() -> None:
    """Console entry point: user errors become one paragraph on stderr, no traceback; an
    unexpected error becomes one paragraph and a crash log (`inflame.crashlog`)."""
    try:
        app()  # usage errors and Ctrl-C outside a run: typer's own messages and exit codes
    except InflameError as exc:
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        from inflame import crashlog
        from inflame.errors import environment_fault

        fault = environment_fault(exc)  # a full disk, a denied permission: not a bug
        if fault is not None and not crashlog.debugging():
            _print_error(f"{fault}, then run the command again.")
            sys.exit(2)
        if crashlog.debugging():
            raise
        log = crashlog.write_crash_log(exc, sys.argv)
        _print_error(crashlog.unexpected_message(exc, log))
        sys.exit(crashlog.EXIT_CODE)


def _print_error(message: str) -> None:
    from rich.markup import escape

    # soft wrap: the terminal wraps the paragraph; no newline ever splits a path or a command
    _stderr().print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
