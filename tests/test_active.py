"""Active learning's query step: `inflame query` ranks an unlabelled pool deterministically, its
scores are the model's own probabilities put through each strategy, the selection is copied
for labelling under the model's guess, and what produced it is recorded."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from inflame.active.query import query_pool, uncertainty
from inflame.data.demo import make_demo_dataset
from inflame.errors import InflameError
from inflame.hashing import sha256_file
from inflame.predict import Predictor
from tests.helpers import assert_clean_error, loop_data, run_inflame


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 unlabelled images (the demo set's, class folders flattened into nested ones) and a
    file that is not an image."""
    source = tmp_path_factory.mktemp("pool-source")
    make_demo_dataset(source, per_class=4, image_size=32, seed=11, ratios=None)
    pool = tmp_path_factory.mktemp("pool") / "unlabelled"
    for i, image in enumerate(sorted(source.rglob("*.jpg"))):
        target = pool / f"batch{i % 2}" / f"img{i:02d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    (pool / "batch0" / "broken.jpg").write_bytes(b"not an image")
    return pool


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_query_ranks_the_pool_by_the_models_own_uncertainty(run: Path, pool: Path, tmp_path: Path):
    copies = tmp_path / "to-label"
    first = run_inflame(
        "query", run, "--pool", pool, "--k", "5", "--copy-to", copies, "--out", tmp_path / "q1",
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "q1" / "query.csv")
    rows = _csv(tmp_path / "q1" / "query.csv")
    assert len(rows) == 12 and [r["rank"] for r in rows] == [str(i) for i in range(1, 13)]

    predictor = Predictor.from_run(run)
    for row in rows:  # each score is the entropy of the model's probabilities for that image
        p = predictor.probabilities([predictor.decode(pool / row["image"])])[0].astype(float)
        assert float(row["score"]) == pytest.approx(-sum(x * math.log(x) for x in p), abs=1e-5)
        assert row["predicted_label"] == predictor.classes[int(np.argmax(p))]
        assert float(row["probability"]) == pytest.approx(float(p.max()), abs=1e-6)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1

    record = json.loads((tmp_path / "q1" / "query.json").read_text())
    assert record["strategy"] == "entropy" and record["run"] == str(run)
    assert record["selected"] == [r["image"] for r in rows[:5]]
    assert record["pool_images"] == 13 and record["skipped"] == 1
    assert record["skipped_images"][0]["image"] == "batch0/broken.jpg"
    manifest = json.loads((run / "manifest.json").read_text())
    assert record["weights_sha256"] == manifest["weights_sha256"]
    copied = sorted(p.relative_to(copies).as_posix() for p in copies.rglob("*.jpg"))
    expected = sorted(f"{r['predicted_label']}/{Path(r['image']).name}" for r in rows[:5])
    assert copied == expected  # the five most uncertain, under the model's guess
    for row in rows[:5]:
        target = copies / row["predicted_label"] / Path(row["image"]).name
        assert sha256_file(target) == sha256_file(pool / row["image"])

    again = run_inflame(
        "query", run, "--pool", pool, "--k", "5", "--out", tmp_path / "q2", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "q2" / "query.csv").read_bytes() == (
        tmp_path / "q1" / "query.csv"
    ).read_bytes()
    assert (
        json.loads((tmp_path / "q2" / "query.json").read_text())["pool_sha256"]
        == record["pool_sha256"]
    )

    refused = run_inflame("query", run, "--pool", pool, "--out", tmp_path / "q1", cwd=tmp_path)
    assert_clean_error(refused, "query.csv exists already", "--out")
    missing = run_inflame("query", run, "--pool", tmp_path / "nowhere", cwd=tmp_path)
    assert_clean_error(missing, "no such folder")
    wrong = run_inflame("query", run, "--pool", pool, "--strategy", "vibes", cwd=tmp_path)
    assert_clean_error(wrong, "entropy, margin, least_confidence, random")


def test_each_strategy_scores_as_defined():
    p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2]])
    assert uncertainty(p, "least_confidence") == pytest.approx([0.5, 0.1, 0.6])
    assert uncertainty(p, "margin") == pytest.approx([0.8, 0.15, 1.0])
    entropy = uncertainty(p, "entropy")
    assert entropy[1] < entropy[0] < entropy[2]
    assert entropy[0] == pytest.approx(
        -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    )
    draws = uncertainty(p, "random", seed=3)
    assert list(draws) == list(uncertainty(p, "random", seed=3))
    assert list(draws) != list(uncertainty(p, "random", seed=4))


def test_random_selection_is_seeded_and_differs_from_uncertainty(run: Path, pool: Path):
    predictor = Predictor.from_run(run)
    by_entropy = query_pool(predictor, run, pool, strategy="entropy", k=4)
    first = query_pool(predictor, run, pool, strategy="random", k=4, seed=1)
    same = query_pool(predictor, run, pool, strategy="random", k=4, seed=1)
    other = query_pool(predictor, run, pool, strategy="random", k=4, seed=2)
    names = [r["image"] for r in first.rows]
    assert names == [r["image"] for r in same.rows]
    assert names != [r["image"] for r in other.rows]
    assert names != [r["image"] for r in by_entropy.rows]
    margin = query_pool(predictor, run, pool, strategy="margin", k=4)
    assert [r["score"] for r in margin.rows] == sorted(
        (r["score"] for r in margin.rows), reverse=True
    )
    with pytest.raises(InflameError, match="--k must be at least 1"):
        query_pool(predictor, run, pool, k=0)


def test_a_device_without_torch_queries_with_the_onnx_export(run: Path, pool: Path, tmp_path: Path):
    """Run in a plain interpreter (not the test zygote, which holds torch) with
    `-X importtime`: the query must not import torch."""
    import subprocess
    import sys

    from inflame.exporting import export_run
    from tests.conftest import guarded_env

    exported = tmp_path / "run"
    shutil.copytree(run, exported)
    export_run(exported, "onnx")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "inflame", "query", str(exported),
         "--pool", str(pool), "--backend", "onnx", "--out", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=300,
        env=guarded_env(INFLAME_HOME=str(tmp_path / "home")),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "onnxruntime" in imported and "torch" not in imported
    onnx_rows = _csv(tmp_path / "q" / "query.csv")
    torch_rows = query_pool(Predictor.from_run(run), run, pool).rows
    assert json.loads((tmp_path / "q" / "query.json").read_text())["backend"] == "onnx"
    by_image = {row["image"]: row for row in torch_rows}
    assert len(onnx_rows) == len(by_image)
    for ours in onnx_rows:  # the same scores (within float error), whatever the tie order
        theirs = by_image[ours["image"]]
        assert float(ours["score"]) == pytest.approx(theirs["score"], abs=1e-4)
        assert ours["predicted_label"] == theirs["predicted_label"]


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def test_label_import_adds_new_images_refuses_duplicates_and_never_overwrites(tmp_path: Path):
    make_demo_dataset(tmp_path / "set", per_class=3, image_size=32, seed=5, ratios=None)
    make_demo_dataset(tmp_path / "new", per_class=3, image_size=32, seed=6, ratios=None)
    train, new = tmp_path / "set", tmp_path / "new"
    a, b = sorted(p.name for p in train.iterdir())[:2]
    before = _tree(train)
    fresh = sorted((new / a).iterdir())
    src = tmp_path / "labelled"
    (src / a).mkdir(parents=True)
    (src / b).mkdir()
    (src / "goose").mkdir()
    (src / "__MACOSX").mkdir()
    shutil.copy(fresh[0], src / a / "new1.jpg")  # new content
    taken = sorted((train / a).iterdir())[0].name
    shutil.copy(fresh[1], src / a / taken)  # a name the set uses, other content
    shutil.copy(sorted((train / b).iterdir())[0], src / b / "again.jpg")  # already in the set
    shutil.copy(fresh[0], src / b / "twice.jpg")  # the same image as new1.jpg, other label
    shutil.copy(fresh[2], src / "goose" / "g.jpg")  # a new class
    (src / a / "notes.txt").write_text("not an image")
    (src / "__MACOSX" / "._junk.jpg").write_bytes(b"junk")

    result = run_inflame("label", "import", src, "--into", train, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {a: 2, "goose": 1}
    after = _tree(train)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing overwritten
    added = {k: v for k, v in after.items() if k not in before and not k.startswith(".")}
    stem, suffix = taken.rsplit(".", 1)
    assert added == {
        f"{a}/new1.jpg": sha256_file(fresh[0]),
        f"{a}/{stem}-1.{suffix}": sha256_file(fresh[1]),
        "goose/g.jpg": sha256_file(fresh[2]),
    }
    flat = " ".join(result.stderr.split())
    assert f"refused {b}/again.jpg: the same image as {b}/" in flat
    assert f"refused {b}/twice.jpg: the same image as {a}/new1.jpg" in flat
    assert f"refused {a}/notes.txt: not an image file" in flat
    assert "goose (new class)" in flat and "_junk" not in flat
    [record] = [
        json.loads(line) for line in (train / ".inflame-imports.jsonl").read_text().splitlines()
    ]
    assert record["added"] == {a: 2, "goose": 1} and record["source"] == str(src.resolve())
    assert len(record["duplicates"]) == 2 and record["files"]["goose"] == ["goose/g.jpg"]

    again = run_inflame("label", "import", src, "--into", train, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout) == {}
    assert _tree(train) == after  # everything is there already: nothing added or recorded
    missing = run_inflame("label", "import", tmp_path / "nowhere", "--into", train, cwd=tmp_path)
    assert_clean_error(missing, "no such folder")


def test_warm_start_maps_the_head_by_class_and_keeps_the_body(tmp_path: Path):
    import torch

    from inflame.vision import build_classifier, get_head, save_classifier, warm_start

    torch.manual_seed(0)
    parent = build_classifier("resnet18", 3)
    save_classifier(parent, tmp_path / "model", architecture="resnet18", classes=["a", "b", "c"],
                    image_size=32)  # fmt: skip
    torch.manual_seed(1)
    child = build_classifier("resnet18", 4)
    fresh_row = get_head(child).weight[3].detach().clone()
    done = warm_start(child, tmp_path / "model", ["a", "c", "b", "d"])
    assert done == {"parent_classes": ["a", "b", "c"], "new_classes": ["d"]}
    before, after = get_head(parent), get_head(child)
    for row, index in ((0, 0), (1, 2), (2, 1)):  # by name, not by position
        assert torch.equal(after.weight[row], before.weight[index])
        assert torch.equal(after.bias[row], before.bias[index])
    assert torch.equal(after.weight[3], fresh_row)  # the new class keeps its fresh row
    assert torch.equal(child.conv1.weight, parent.conv1.weight)
    with pytest.raises(InflameError, match=r"classes \['c'\] are not in this run"):
        warm_start(build_classifier("resnet18", 2), tmp_path / "model", ["a", "b"])
    with pytest.raises(InflameError, match="resnet18 weights do not fit"):
        warm_start(build_classifier("mobilenet_v3_small", 3), tmp_path / "model", ["a", "b", "c"])


def _first_loss(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return next(json.loads(line)["train_loss"] for line in lines if "train_loss" in line)


def test_a_warm_start_begins_from_its_parent_and_records_the_lineage(tmp_path: Path, write_spec):
    from inflame.launcher import train_local

    spec = write_spec(hyperparameters={"epochs": 15})
    train_local(spec, run_dir=tmp_path / "parent")  # in process: the CLI is tested below
    # one epoch at a tiny learning rate: its loss is that of the weights the run starts from
    one = ["hyperparameters.epochs=1", "hyperparameters.learning_rate=0.00001"]
    train_local(spec, one, run_dir=tmp_path / "cold")
    warm = run_inflame(
        "train", "--local", spec, *(a for o in one for a in ("--set", o)),
        "--init-from", tmp_path / "parent", "--run-dir", tmp_path / "warm", cwd=tmp_path,
    )  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    # it starts where the parent ended, far below a fresh model
    lines = (tmp_path / "parent" / "metrics.jsonl").read_text().splitlines()
    parent_last = [json.loads(line) for line in lines if "train_loss" in line][-1]["train_loss"]
    warm_first, cold_first = _first_loss(tmp_path / "warm"), _first_loss(tmp_path / "cold")
    assert warm_first < 0.5 * cold_first, (warm_first, cold_first)  # ~0.3 vs ~1.4 here
    assert warm_first < 1.5 * parent_last, (warm_first, parent_last)
    manifest = json.loads((tmp_path / "warm" / "manifest.json").read_text())
    parent_manifest = json.loads((tmp_path / "parent" / "manifest.json").read_text())
    assert manifest["parent"]["run"] == str((tmp_path / "parent").resolve())
    assert manifest["parent"]["weights_sha256"] == parent_manifest["weights_sha256"]
    assert manifest["warm_start"]["new_classes"] == []  # ctx.record: a top-level key
    assert "parent" not in json.loads((tmp_path / "cold" / "manifest.json").read_text())

    train_local(spec, one, run_dir=tmp_path / "child", init_from=tmp_path / "warm")
    shown = run_inflame("runs", "show", tmp_path / "child", cwd=tmp_path)
    flat = " ".join(shown.stdout.split())
    assert f"parent {(tmp_path / 'warm').resolve()}" in flat
    assert f"parent^2 {(tmp_path / 'parent').resolve()}" in flat

    both = run_inflame(
        "train", "--local", "--resume", tmp_path / "child", "--init-from", tmp_path / "parent",
        cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(both, "--init-from starts a new run", "--resume")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "parent", unfinished)
    stored = json.loads((unfinished / "manifest.json").read_text())
    (unfinished / "manifest.json").write_text(json.dumps({**stored, "status": "running"}))
    refused = run_inflame("train", "--local", spec, "--init-from", unfinished, cwd=tmp_path)
    assert_clean_error(refused, "not completed")


def test_a_two_round_loop_labels_from_the_oracle_and_retrains_from_the_last_model(
    tmp_path: Path,
):
    from inflame import tomlfile
    from tests.conftest import TINY_HPARAMS

    data, pool = loop_data(tmp_path)
    spec = tmp_path / "job.toml"
    spec.write_text(tomlfile.dumps({
        "job": {"name": "loop", "app": "fowl_classifier", "seed": 1},
        "data": {"train": str(data / "train"), "val": str(data / "val")},
        "hyperparameters": {**TINY_HPARAMS, "epochs": 1},
    }))  # fmt: skip
    before_train, before_pool = _tree(data / "train"), _tree(pool)
    out = tmp_path / "loop"
    result = run_inflame(
        "loop", spec, "--pool", pool, "--oracle", data / "test", "--rounds", "2", "--k", "5",
        "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "curve.csv")
    curve = _csv(out / "curve.csv")
    assert [(r["round"], r["labelled"], r["added"]) for r in curve] == [
        ("0", "12", "0"), ("1", "17", "5"), ("2", "22", "5"),
    ]  # fmt: skip
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in curve)
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for index in (1, 2):  # each retraining starts from the model before it
        manifest = json.loads((out / "runs" / f"round-{index}" / "manifest.json").read_text())
        assert manifest["parent"]["run"] == str((out / "runs" / f"round-{index - 1}").resolve())
    oracle = {sha256_file(p): p.parent.name for p in (data / "test").rglob("*.jpg")}
    added = {k: v for k, v in _tree(out / "train").items() if not k.startswith(".")}
    new = {name: digest for name, digest in added.items() if digest not in before_train.values()}
    assert len(new) == 10 and all(oracle[d] == name.split("/")[0] for name, d in new.items())
    first = _csv(out / "queries" / "round-1" / "query.csv")
    picked = {sha256_file(pool / row["image"]) for row in first[:5]}
    assert picked <= set(new.values())  # the five the first model was least sure of
    assert _tree(data / "train") == before_train and _tree(pool) == before_pool  # untouched
    assert len(list((out / "pool").iterdir())) == 24 - 10


def test_copies_for_labelling_never_collide_or_overwrite(tmp_path: Path):
    from inflame.active.query import Query, write_query

    pool = tmp_path / "pool"
    for folder, data in (("a", b"first"), ("b", b"second"), ("c", b"third")):
        (pool / folder).mkdir(parents=True)
        (pool / folder / "1.jpg").write_bytes(data)
    copy_to = tmp_path / "to-label"
    (copy_to / "duck").mkdir(parents=True)
    (copy_to / "duck" / "1.jpg").write_bytes(b"someone else's")
    rows = [
        {"rank": i + 1, "image": f"{f}/1.jpg", "score": 1.0 - i / 10, "predicted_label": "duck",
         "probability": 0.5} for i, f in enumerate("abc")
    ]  # fmt: skip
    query = Query(rows, [], {"k": 3}, files={r["image"]: pool / r["image"] for r in rows})
    written = write_query(query, tmp_path / "q", copy_to)
    assert [p.name for p in written] == ["1-1.jpg", "1-2.jpg", "1-3.jpg"]
    assert [p.read_bytes() for p in written] == [b"first", b"second", b"third"]
    assert (copy_to / "duck" / "1.jpg").read_bytes() == b"someone else's"
    again = write_query(query, tmp_path / "q2", copy_to)  # the same copies are reused
    assert again == written and len(list((copy_to / "duck").iterdir())) == 4


def test_a_cloud_warm_start_carries_the_verified_parent_in_the_bundle(
    run: Path, tmp_path: Path, monkeypatch
):
    """`inflame submit --init-from RUN`: the bundle holds the parent's record, manifest and
    model files (nothing else of the run); inside the job they are checked again."""
    import io
    import tarfile

    from inflame.errors import RunError
    from inflame.submit import plan_submission
    from inflame.warmstart import bundled_parent, job_warm_start
    from tests.helpers import write_cloud_spec

    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    spec = write_cloud_spec(
        tmp_path / "sm.toml", "warm_sm",
        {"train": "s3://my-bucket/train", "val": "s3://my-bucket/val"}, "sagemaker",
        {"role": "arn:aws:iam::123456789012:role/r", "region": "us-east-1",
         "output": "s3://my-bucket/inflame"},
    )  # fmt: skip
    cold = plan_submission(spec, "sagemaker")
    warm = plan_submission(spec, "sagemaker", init_from=run)
    manifest = json.loads((run / "manifest.json").read_text())
    added = sorted(set(warm.bundle.files) - set(cold.bundle.files))
    assert added == sorted(
        ["parent/parent.json", "parent/manifest.json"]
        + [f"parent/model/{name}" for name in manifest["outputs"]]
    )
    assert warm.bundle.sha256 != cold.bundle.sha256  # a different job: not a duplicate
    job = tmp_path / "job"
    with tarfile.open(fileobj=io.BytesIO(warm.bundle.data)) as tar:
        tar.extractall(job, filter="data")
    record, model = bundled_parent(job)
    assert record["run"] == str(run.resolve())
    assert record["weights_sha256"] == manifest["weights_sha256"]
    assert model == job / "parent" / "model" and (model / "weights.safetensors").is_file()
    assert bundled_parent(tmp_path) is None  # not a warm start
    assert job_warm_start(job, restarted=False) == (record, model)
    assert job_warm_start(tmp_path, restarted=False) == (None, None)
    assert job_warm_start(job, restarted=True) == (record, None)  # resumes its own checkpoint
    (model / "weights.safetensors").write_bytes(b"not the parent's weights")
    with pytest.raises(RunError, match="has changed since the run finished"):
        bundled_parent(job)

    shown = run_inflame(
        "submit", spec, "--target", "sagemaker", "--dry-run", "--init-from", run, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert f"warm start from {run}" in " ".join(shown.stderr.split())


def test_a_cloud_loop_needs_a_data_uri_its_target_reads(tmp_path: Path, write_spec):
    spec = write_spec()
    pool = tmp_path / "pool"
    pool.mkdir()
    alone = run_inflame(
        "loop", spec, "--pool", pool, "--oracle", pool, "--target", "sagemaker", cwd=tmp_path
    )
    assert_clean_error(alone, "--target and --data-uri go together")
    wrong = run_inflame(
        "loop", spec, "--pool", pool, "--oracle", pool, "--target", "sagemaker",
        "--data-uri", "gs://bucket/loop", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(wrong, "sagemaker jobs read data from s3://")


def test_a_cloud_round_that_stops_says_what_still_runs_and_how_to_get_it(
    tmp_path: Path, monkeypatch
):
    from types import SimpleNamespace

    import inflame.submit as submit
    from inflame.active.cloud import CloudRounds
    from inflame.errors import RunInterrupted
    from inflame.targets.base import JobState

    rounds = object.__new__(CloudRounds)  # only its waiting, without a spec to plan
    rounds.poll_s, rounds.emit = 0, print
    record, run_dir = SimpleNamespace(id=7, provider_id="loop-job-1"), tmp_path / "round-1"

    def wait():
        with pytest.raises(InflameError) as raised:
            rounds._wait_and_download(1, record, None, run_dir)
        return raised.value, " ".join(str(raised.value).split())

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(submit, "follow", ctrl_c)
    error, text = wait()
    assert isinstance(error, RunInterrupted) and error.exit_code == 130
    assert "loop-job-1 runs; it goes on in the cloud" in text
    assert f"`inflame cancel 7` stops it; `inflame download 7 {run_dir}`" in text
    monkeypatch.setattr(submit, "follow", lambda *a, **k: JobState("failed", "Failed", "OOM"))
    _, text = wait()
    assert "Round 1's job loop-job-1 ended Failed: OOM. The loop stops here." in text
    assert "`inflame logs 7`" in text
    monkeypatch.setattr(submit, "follow", lambda *a, **k: JobState("completed", "Completed"))

    def unreachable(record, destination):
        raise InflameError("Reading s3://b/model.tar.gz failed: timed out.")

    monkeypatch.setattr(submit, "download", unreachable)
    _, text = wait()
    assert "completed, but its run could not be downloaded: Reading s3://b/model" in text
    assert f"`inflame download 7 {run_dir}` tries again" in text


def test_label_import_keeps_two_images_of_the_same_name_apart(tmp_path: Path):
    """Labelled batches often reuse file names (camera counters): both images arrive."""
    from inflame.active.labels import import_labels

    make_demo_dataset(tmp_path / "set", per_class=2, image_size=32, seed=5, ratios=None)
    make_demo_dataset(tmp_path / "new", per_class=2, image_size=32, seed=6, ratios=None)
    label = sorted(p.name for p in (tmp_path / "set").iterdir() if p.is_dir())[0]
    images = sorted((tmp_path / "new" / label).iterdir())
    for batch, image in zip(("batch1", "batch2"), images, strict=True):
        (tmp_path / "labelled" / label / batch).mkdir(parents=True)
        shutil.copy(image, tmp_path / "labelled" / label / batch / "photo.jpg")
    result = import_labels(tmp_path / "labelled", tmp_path / "set")
    assert result.added == {label: [f"{label}/photo.jpg", f"{label}/photo-1.jpg"]}
    stored = tmp_path / "set" / label
    assert sha256_file(stored / "photo.jpg") == sha256_file(images[0])
    assert sha256_file(stored / "photo-1.jpg") == sha256_file(images[1])


def test_a_warm_start_refuses_a_parent_whose_model_changed(run: Path, tmp_path: Path):
    """Locally as in the cloud: the parent's weights must be those its run recorded."""
    from inflame.errors import RunError
    from inflame.warmstart import parent_record

    parent = tmp_path / "parent"
    shutil.copytree(run, parent)
    recorded = json.loads((parent / "manifest.json").read_text())["weights_sha256"]
    assert parent_record(parent)["weights_sha256"] == recorded
    (parent / "model" / "weights.safetensors").write_bytes(b"another model's weights")
    with pytest.raises(RunError, match="has changed since the run finished"):
        parent_record(parent)
