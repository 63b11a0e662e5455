"""Mutation testing of inflame's core modules: do the tests notice a realistic bug?

Not part of CI (hours on 2 cores). Each mutant is one small change to one module (a comparison
flipped, a condition negated, `and` for `or`, an integer off by one, a call or a return value
dropped, ...), made by a fixed set of AST operators. Mutants are sampled per module with a seed,
so a score is an unbiased estimate of the share of such bugs the suite catches. Each mutant runs
the module's tests in a scratch copy of the tree (subprocesses the tests start import the copy
too); it is *killed* when they fail or time out, and *survives* when they pass.

    python tools/mutation.py                       # 12 mutants per module, seed 0
    python tools/mutation.py --per-module 0        # every mutant (slow)
    python tools/mutation.py --module predict --list   # show the mutants, run nothing

Writes a JSON report (default `mutation-report.json`) and prints the score and every survivor.
Survivors judged equivalent (no behaviour can tell them apart) are listed in `EQUIVALENT` with the
reason, and the score is given with and without them.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module name -> (source file, the tests that should notice a bug in it), fastest tests first
# so that most mutants die early (pytest -x)
_CLI = "tests/test_cli.py::"
_STOP = "tests/faults/test_stop_and_lock.py"
TARGETS: dict[str, tuple[str, list[str]]] = {
    "loop": (
        "inflame/training/loop.py",
        [
            "tests/test_training.py",
            "tests/faults/test_results_are_correct.py",
            "tests/test_checkpoint_writer.py",
            "tests/faults/test_reported_is_saved.py",
            "tests/test_tracking.py",  # what fit gives the trackers (previews at a fresh start)
            _STOP,
        ],
    ),
    "checkpoint": (
        "inflame/training/checkpoint.py",
        [
            "tests/test_training.py",
            "tests/test_checkpoint_writer.py",
            "tests/faults/test_integrity.py",
            f"{_CLI}test_killed_run_resumes_to_the_same_weights",
            f"{_CLI}test_resume_refuses_a_changed_spec_or_a_finished_run",
            _STOP,
        ],
    ),
    "tensorfile": (
        "inflame/tensorfile.py",
        [
            "tests/test_tensorfile.py",
            "tests/test_feature_cache.py",
            "tests/faults/test_integrity.py",
        ],
    ),
    "predict": (
        "inflame/predict.py",
        [
            "tests/faults/test_results_are_correct.py",
            "tests/faults/test_integrity.py",
            "tests/faults/test_data_hygiene.py",
            f"{_CLI}test_train_then_predict",
            "tests/test_export.py",  # the ONNX predictor and its numpy preprocessing
        ],
    ),
    "split": (
        "inflame/data/split.py",
        [
            "tests/test_data.py",
            "tests/faults/test_results_are_correct.py",
            "tests/faults/test_values.py",
            f"{_CLI}test_demo_data_and_split_commands",
        ],
    ),
    "packaging": (
        "inflame/packaging.py",
        [
            "tests/test_packaging_ledger.py",
            "tests/faults/test_unsafe_inputs.py",
            "tests/faults/test_secrets_kept_out.py",
            "tests/test_secrets.py",
        ],
    ),
    "ledger": (
        "inflame/ledger.py",
        [
            "tests/test_packaging_ledger.py",
            "tests/faults/test_environment.py",
            "tests/faults/test_kill_anywhere.py::test_concurrent_submissions_are_all_recorded_once",
            "tests/test_secrets.py",
            "tests/test_deploy.py",  # the deployments table
        ],
    ),
    "submit": (
        "inflame/submit.py",
        [
            "tests/test_packaging_ledger.py",
            "tests/test_secrets.py",
            "tests/faults/test_kill_anywhere.py::test_concurrent_submissions_are_all_recorded_once",
            "tests/test_sagemaker.py",
        ],
    ),
    "spec": (
        "inflame/spec.py",
        [
            "tests/test_spec.py",
            "tests/faults/test_values.py",
            "tests/faults/test_fuzz.py",
            "tests/test_hparams_and_runtime.py",
            f"{_CLI}test_bad_specs_fail_cleanly_and_write_nothing",
        ],
    ),
    "hparams": (
        "inflame/hparams.py",
        [
            "tests/test_hparams_and_runtime.py",
            "tests/faults/test_values.py",
            "tests/test_spec.py",
            "tests/faults/test_fuzz.py",
            f"{_CLI}test_help_app_lists_the_declared_hyperparameters",
        ],
    ),
    "sagemaker": (
        "inflame/targets/sagemaker.py",
        ["tests/test_platforms.py", "tests/test_infra.py", "tests/test_sagemaker.py"],
    ),
    "runlock": (
        "inflame/runlock.py",
        [_STOP, "tests/faults/test_kill_anywhere.py"],
    ),
    "query": ("inflame/active/query.py", ["tests/test_active.py"]),
    "labels": ("inflame/active/labels.py", ["tests/test_active.py"]),
    "warmstart": (
        "inflame/warmstart.py",
        [
            "tests/test_active.py",
            "tests/test_sagemaker.py::test_a_loop_retrains_each_round_as_a_sagemaker_job_from_the_last_model",
        ],
    ),
    "deploy_vertex": ("inflame/deploy/vertex.py", ["tests/test_deploy_vertex.py"]),
    "deploy_azure": ("inflame/deploy/azure.py", ["tests/test_deploy_azure.py"]),
}

# (module, the mutated line as written, mutated span) -> why no behaviour can tell the
# mutant from the original (keyed by text, not line number, so edits above do not stale it)
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("runlock", '"command": " ".join(sys.argv[:6]),', "(7)"): (
        "how many words of the command line the lock file keeps for a person reading it; "
        "nothing reads the field back, and no rule fixes the count"
    ),
    ("ledger", "@dataclass(frozen=True)", "(False)"): (
        "JobRecord and DeploymentRecord are snapshots of a row that no code assigns to, "
        "hashes or puts in a set: frozen guards against a future mistake, no behaviour today"
    ),
    ("labels", "target.parent.mkdir(parents=True, exist_ok=True)", "(False)"): (
        "a target's parent is a class folder directly inside --into, which must exist: "
        "there is never a missing parent to make"
    ),
    ("predict", "for v, i in zip(values, indices, strict=True)", "(False)"): (
        "torch.topk returns values and indices of the same length: strict never fires"
    ),
    ("predict", "batch_size: int = 32,", "(33)"): (
        "how many images go through the model at once changes no answer: in eval mode each "
        "image's output depends on that image only"
    ),
    ("predict", "batch_size: int = 32,", "(31)"): (
        "how many images go through the model at once changes no answer (as for 33)"
    ),
    (
        "runlock",
        "raw = os.pread(fd, 65536, 0)  # from the start, wherever the file's offset is",
        "(65535)",
    ): ("the holder record is a short JSON line (pid, host, time, command): far below either size"),
    (
        "loop",
        "optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]",
        "(False)",
    ): (
        "zeroed and absent gradients give the same step for every parameter that gets a "
        "gradient each step, which is every trainable one in fit; None only saves memory"
    ),
    ("spec", "spot: bool = False", "(True)"): (
        "ComputeSection is built in one place, with every field given: the defaults are never used"
    ),
    ("spec", "@dataclass(frozen=True)", "(False)"): (
        "the spec's dataclasses are never assigned to nor hashed; frozen only guards "
        "against a future mistake"
    ),
    ("submit", "shutil.rmtree(staging, ignore_errors=True)", "(False)"): (
        "as in split: removing the staging folder this process just made does not fail"
    ),
    ("split", "shutil.rmtree(staging, ignore_errors=True)", "(False)"): (
        "removing the staging folder this process just made does not fail; ignore_errors "
        "only keeps the original error should it ever"
    ),
    ("tensorfile", "if size < 8:", "(9)"): (
        "an 8-byte file is refused either way: by the next check (its header is longer "
        "than the 0 bytes left)"
    ),
    (
        "tensorfile",
        'key=lambda item: item[1]["data_offsets"][0] if isinstance(item[1], dict) else 0,',
        "(1)",
    ): "a non-table header entry is refused right after the sort, whatever its sort key",
    ("packaging", "total > EXPANSION_FLOOR and total > MAX_EXPANSION * max(packed, 1)", "(2)"): (
        "a tar.gz archive is never shorter than 2 bytes"
    ),
    (
        "loop",
        "if distributed and epoch > state_epoch_at_start:",
        "(epoch >= state_epoch_at_start)",
    ): "a fresh DDP wrapper at the first epoch is the same as the one made just before it",
    ("loop", "_hinted.append(True)", "(False)"): (
        "`_hinted` is tested for being empty: [False] is as non-empty as [True]"
    ),
    ("ledger", "db.close()", "None"): (
        "an unclosed SQLite connection is closed when it is collected, at once in CPython "
        "(reference counting): no behaviour differs"
    ),
    ("predict", "options.log_severity_level = 3  # errors only", "(4)"): (
        "onnxruntime's levels stop at 4 (fatal): 3 and 4 both silence every warning "
        "inflame could trigger, and no test can make onnxruntime log an error"
    ),
}

_SWAP_COMPARE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_SWAP_BINOP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
}


@dataclass(frozen=True)
class Mutant:
    """One change to one module: the source span [start, end) replaced by `text`."""

    module: str
    operator: str
    line: int
    start: tuple[int, int]
    end: tuple[int, int]
    original: str
    text: str
    context: str = ""  # the whole source line, stripped

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.module, self.context, self.text)


@dataclass
class Outcome:
    """What the module's tests said about one mutant."""

    mutant: Mutant
    status: str  # killed | survived | timeout | equivalent
    seconds: float
    detail: str = ""


def _skipped_subtrees(tree: ast.AST) -> set[int]:
    """ids of nodes no operator touches: docstrings, annotations, raise/f-string text, imports."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Import, ast.ImportFrom, ast.Assert)):
            mark(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for arg in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs):
                mark(arg.annotation)
            mark(node.args.vararg and node.args.vararg.annotation)
            mark(node.args.kwarg and node.args.kwarg.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            mark(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                mark(body[0])
    return skip


def _variants(node: ast.AST) -> Iterator[tuple[str, ast.AST, ast.AST]]:
    """(operator, node whose span is replaced, replacement node) for each mutation of `node`."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _SWAP_COMPARE:
                new = copy.deepcopy(node)
                new.ops[i] = _SWAP_COMPARE[type(op)]()
                yield "compare", node, new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "and/or", node, new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop not", node, node.operand
    elif isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BINOP:
        new = copy.deepcopy(node)
        new.op = _SWAP_BINOP[type(node.op)]()
        yield "arithmetic", node, new
    elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
        yield "negate condition", node.test, ast.UnaryOp(ast.Not(), node.test)
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "flip bool", node, ast.Constant(not node.value)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield "int + 1", node, ast.Constant(node.value + 1)
        if node.value != 0:
            yield "int - 1", node, ast.Constant(node.value - 1)
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return None", node, ast.Return(ast.Constant(None))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "drop call", node, ast.Expr(ast.Constant(None))
    elif isinstance(node, (ast.Break, ast.Continue)):
        other = ast.Continue() if isinstance(node, ast.Break) else ast.Break()
        yield "break/continue", node, other


def mutants_of(module: str, path: Path) -> list[Mutant]:
    """Every mutant the operators make of one source file, in source order."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    skip = _skipped_subtrees(tree)
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        for operator, span, replacement in _variants(node):
            text = ast.unparse(replacement)
            if isinstance(span, ast.expr):
                text = f"({text})"
            original = ast.get_source_segment(source, span) or ""
            found.append(
                Mutant(
                    module=module,
                    operator=operator,
                    line=span.lineno,
                    start=(span.lineno, span.col_offset),
                    end=(span.end_lineno or span.lineno, span.end_col_offset or 0),
                    original=" ".join(original.split()),
                    text=text,
                    context=lines[span.lineno - 1].strip(),
                )
            )
    found.sort(key=lambda m: (m.start, m.operator, m.text))
    return found


def apply(source: str, mutant: Mutant) -> str:
    """`source` with the mutant's span replaced (ast offsets are UTF-8 byte columns)."""
    lines = source.encode("utf-8").splitlines(keepends=True)
    (l0, c0), (l1, c1) = mutant.start, mutant.end
    head = b"".join(lines[: l0 - 1]) + lines[l0 - 1][:c0]
    tail = lines[l1 - 1][c1:] + b"".join(lines[l1:])
    mutated = (head + mutant.text.encode("utf-8") + tail).decode("utf-8")
    ast.parse(mutated)  # a mutant must still compile, or it proves nothing
    return mutated


LINKED = (".test-deps",)  # ignored, installed by tools/install-test-deps.sh, never mutated


def _scratch_copy(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files of the tree, without bytecode, and
    links to the test dependencies installed into the tree (`LINKED`)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    for name in LINKED:
        if (ROOT / name).exists():
            (dest / name).symlink_to(ROOT / name)
    return dest


def _env(scratch: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(scratch), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


def _pytest(scratch: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed'|'failed'|'timeout', seconds, last lines of output)."""
    # one process (-n 0): -x stops at the first failure, and the timeout's baseline is sequential
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider"]
    command += tests
    began = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=scratch,
            env=_env(scratch),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - began, ""
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return ("passed" if done.returncode == 0 else "failed"), time.monotonic() - began, tail


def _check_isolation(scratch: Path) -> None:
    """Refuse to run when the scratch copy would not be the code under test."""
    found = subprocess.run(
        [sys.executable, "-c", "import inflame; print(inflame.__file__)"],
        cwd=tempfile.gettempdir(),
        env=_env(scratch),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(scratch.resolve()):
        sys.exit(f"mutation: `import inflame` loads {found}, not the scratch copy {scratch}")


def run_module(
    module: str,
    mutants: list[Mutant],
    scratch: Path,
    slack: float,
    done: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """The module's tests once unmutated (they must pass), then once per mutant; `done` is
    called with each outcome as it comes."""
    relative, tests = TARGETS[module]
    target = scratch / relative
    original = target.read_text(encoding="utf-8")
    status, baseline, tail = _pytest(scratch, tests, timeout=3600)
    if status != "passed":
        sys.exit(f"mutation: the tests of {module} fail without any mutant:\n{tail}")
    print(f"{module}: {len(mutants)} mutants, tests take {baseline:.0f} s unmutated", flush=True)
    outcomes: list[Outcome] = []
    try:
        for mutant in mutants:
            target.write_text(apply(original, mutant), encoding="utf-8")
            status, seconds, tail = _pytest(scratch, tests, timeout=slack * baseline + 30)
            verdict = {"failed": "killed", "passed": "survived", "timeout": "timeout"}[status]
            if verdict == "survived" and mutant.key in EQUIVALENT:
                verdict, tail = "equivalent", EQUIVALENT[mutant.key]
            outcomes.append(Outcome(mutant, verdict, seconds, tail))
            done(outcomes[-1])
            mark = {"killed": ".", "timeout": "T", "survived": "S", "equivalent": "E"}[verdict]
            print(mark, end="", flush=True)
    finally:
        target.write_text(original, encoding="utf-8")
    print(flush=True)
    return outcomes


def sample(mutants: list[Mutant], per_module: int, seed: int, module: str) -> list[Mutant]:
    if per_module <= 0 or len(mutants) <= per_module:
        return mutants
    chosen = random.Random(f"{seed}:{module}").sample(range(len(mutants)), per_module)
    return [mutants[i] for i in sorted(chosen)]


def summarise(outcomes: list[Outcome]) -> dict[str, object]:
    """Scores overall and per module; a timeout counts as killed (the bug was noticed)."""

    def score(items: list[Outcome], drop_equivalent: bool) -> dict[str, object]:
        counted = [o for o in items if not (drop_equivalent and o.status == "equivalent")]
        killed = sum(o.status in ("killed", "timeout") for o in counted)
        n = len(counted)
        p = killed / n if n else 0.0
        return {
            "mutants": n,
            "killed": killed,
            "score": round(p, 3),
            "stderr": round(math.sqrt(p * (1 - p) / n), 3) if n else 0.0,
        }

    modules = sorted({o.mutant.module for o in outcomes})
    return {
        "all": score(outcomes, drop_equivalent=False),
        "without_equivalent": score(outcomes, drop_equivalent=True),
        "modules": {
            m: score([o for o in outcomes if o.mutant.module == m], drop_equivalent=True)
            for m in modules
        },
    }


def _mutant(raw: dict) -> Mutant:
    return Mutant(**{**raw, "start": tuple(raw["start"]), "end": tuple(raw["end"])})


def load_outcomes(report: Path) -> list[Outcome]:
    items = json.loads(report.read_text(encoding="utf-8"))["outcomes"]
    return [Outcome(**{**item, "mutant": _mutant(item["mutant"])}) for item in items]


def survivors(report: Path, modules: list[str]) -> dict[str, list[Mutant]]:
    """The survivors of an earlier report that still apply to today's source (a mutant
    whose span no longer holds its original text is dropped, with a note)."""
    found: dict[str, list[Mutant]] = {}
    for item in json.loads(report.read_text(encoding="utf-8"))["outcomes"]:
        if item["status"] != "survived" or item["mutant"]["module"] not in modules:
            continue
        mutant = _mutant(item["mutant"])
        alike = [  # the same change at the same place, allowing for lines added above it
            m
            for m in mutants_of(mutant.module, ROOT / TARGETS[mutant.module][0])
            if (m.operator, m.original, m.text) == (mutant.operator, mutant.original, mutant.text)
        ]
        if not alike:
            print(f"note: {mutant.module}:{mutant.line} no longer applies; skipped")
            continue
        same = min(alike, key=lambda m: abs(m.line - mutant.line))
        found.setdefault(mutant.module, []).append(same)
    return found


def write_report(out: Path, outcomes: list[Outcome], seed: int, per_module: int) -> dict:
    summary = summarise(outcomes)
    report = {
        "seed": seed,
        "per_module": per_module,
        "summary": summary,
        "outcomes": [{**asdict(o), "mutant": asdict(o.mutant)} for o in outcomes],
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--per-module", type=int, default=12, help="0: every mutant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="modules tested at once")
    parser.add_argument("--slack", type=float, default=3.0, help="timeout: slack x baseline")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the outcomes already in --out and test only the modules it lacks",
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        metavar="REPORT",
        help="run only the survivors of an earlier report (e.g. after adding tests)",
    )
    parser.add_argument("--out", type=Path, default=Path("mutation-report.json"))
    args = parser.parse_args(argv)

    modules = args.module or sorted(TARGETS)
    if args.recheck is not None:
        chosen = survivors(args.recheck, modules)
        modules = [m for m in modules if chosen.get(m)]
    else:
        chosen = {
            m: sample(mutants_of(m, ROOT / TARGETS[m][0]), args.per_module, args.seed, m)
            for m in modules
        }
    if args.list:
        for mutants in chosen.values():
            for mu in mutants:
                print(f"{mu.module}:{mu.line} [{mu.operator}] {mu.original!r} -> {mu.text!r}")
        return 0

    earlier: list[Outcome] = []
    if args.resume and args.out.is_file():
        earlier = load_outcomes(args.out)
        finished = {o.mutant.module for o in earlier}
        modules = [m for m in modules if m not in finished]
        print(f"resuming {args.out}: {len(earlier)} outcomes kept; testing {', '.join(modules)}")

    with tempfile.TemporaryDirectory(prefix="inflame-mutation-") as tmp:
        scratches = [_scratch_copy(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        _check_isolation(scratches[0])
        pool = ThreadPoolExecutor(max_workers=len(scratches))
        free = list(scratches)

        outcomes: list[Outcome] = earlier

        def record(outcome: Outcome) -> None:  # the report so far, after every mutant
            outcomes.append(outcome)
            write_report(args.out, outcomes, args.seed, args.per_module)

        def one(module: str) -> None:
            scratch = free.pop()
            try:
                run_module(module, chosen[module], scratch, args.slack, record)
            finally:
                free.append(scratch)

        list(pool.map(one, modules))

    summary = write_report(args.out, outcomes, args.seed, args.per_module)
    for name, s in summary["modules"].items():  # type: ignore[union-attr]
        print(f"  {name:<12} {s['killed']:>3}/{s['mutants']:<3} {s['score']:.0%}")
    total = summary["without_equivalent"]
    print(
        f"score {total['killed']}/{total['mutants']} = {total['score']:.0%} "  # type: ignore[index]
        f"(± {total['stderr']:.0%}); report: {args.out}"
    )  # type: ignore[index]
    for o in outcomes:
        if o.status == "survived":
            m = o.mutant
            print(f"survived {m.module}:{m.line} [{m.operator}] {m.original!r} -> {m.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
