"""`inflame eval`: the numbers agree with an independent computation (scikit-learn, numpy) and
with the run's own test score; the report is complete, self-contained and recorded in the
manifest; bad data is a clean error that leaves the previous report in place."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk

from inflame import tomlfile
from inflame.data.images import scan_image_folder
from inflame.evaluation.report import REPORT_FILES
from inflame.hashing import sha256_file
from inflame.launcher import train_local
from inflame.predict import Predictor
from tests.helpers import assert_clean_error, run_inflame, train_tiny_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the tiny fowl classifier: 3 classes, a 12-image test set on which
    it is right sometimes and wrong sometimes."""
    return train_tiny_run(
        tmp_path_factory.mktemp("eval"),
        name="evaluated",
        seed=5,
        data_seed=11,
        per_class=20,
        ratios=(0.6, 0.2, 0.2),
        epochs=3,
    )


def independent_probabilities(run: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """True labels and the model's class probabilities, image by image, through predict."""
    predictor = Predictor.from_run(run)
    _, samples = scan_image_folder(root, predictor.classes)
    probs = np.zeros((len(samples), len(predictor.classes)))
    answers = predictor.predict([s.path for s in samples], top_k=len(predictor.classes))
    for i, answer in enumerate(answers):
        for item in answer["top_k"]:  # rounded to 4 digits by predict
            probs[i, predictor.classes.index(item["label"])] = item["probability"]
    return np.array([s.label for s in samples]), probs / probs.sum(axis=1, keepdims=True)


def test_eval_numbers_match_an_independent_computation(trained: Path, tmp_path: Path):
    result = run_inflame("eval", trained, "--top-k", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = Path(result.stdout.strip().splitlines()[-1])
    assert out == trained / "eval"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((trained / "manifest.json").read_text())
    test_input = manifest["data"]["inputs"]["test"]
    assert report["data"]["path"] == test_input["path"] and report["data"]["input"] == "test"

    labels, probs = independent_probabilities(trained, Path(test_input["path"]))
    predicted = probs.argmax(axis=1)
    n = len(report["classes"])
    assert report["images"] == len(labels) == 12
    assert 0 < report["accuracy"] < 1, "the test needs a model that is sometimes wrong"
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert report["top_k_accuracy"]["2"] == pytest.approx(
        sk.top_k_accuracy_score(labels, probs, k=2, labels=range(n))
    )
    assert report["loss"] == pytest.approx(sk.log_loss(labels, probs, labels=range(n)), abs=2e-3)
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        labels, predicted, labels=range(n), zero_division=0
    )
    for i, name in enumerate(report["classes"]):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i] == 4
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(
            labels, predicted, labels=range(n), average=average, zero_division=0
        )
        assert [report[average][k] for k in ("precision", "recall", "f1")] == pytest.approx(
            [p, r, f]
        )
    assert report["confusion_matrix"] == sk.confusion_matrix(labels, predicted).tolist()

    # expected calibration error: |accuracy - confidence| per confidence bin, weighted
    confidence, correct = probs.max(axis=1), predicted == labels
    bins = np.minimum((confidence * 15).astype(int), 14)
    ece = sum(
        (bins == b).mean() * abs(correct[bins == b].mean() - confidence[bins == b].mean())
        for b in set(bins.tolist())
    )
    assert report["expected_calibration_error"] == pytest.approx(ece, abs=2e-3)
    shown = [b for b in report["reliability"] if b["images"]]
    assert sum(b["images"] for b in shown) == 12
    assert sum(b["images"] / 12 * abs(b["accuracy"] - b["confidence"]) for b in shown) == (
        pytest.approx(report["expected_calibration_error"])
    )

    # the training's own test score (another code path) says the same
    tests = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    scored = next(r for r in tests if "test_accuracy" in r)
    assert report["accuracy"] == pytest.approx(scored["test_accuracy"], abs=1e-9)
    assert report["loss"] == pytest.approx(scored["test_loss"], abs=1e-4)

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["predicted_label"] for r in rows] == [report["classes"][i] for i in predicted]
    assert [r["true_label"] for r in rows] == [report["classes"][i] for i in labels]
    assert [r["correct"] == "true" for r in rows] == correct.tolist()
    assert [float(r["probability"]) for r in rows] == pytest.approx(confidence, abs=1e-4)

    recorded = json.loads((trained / "manifest.json").read_text())["evaluations"]["eval"]
    assert recorded["data"]["fingerprint"] == test_input["fingerprint"]
    assert recorded["accuracy"] == report["accuracy"]
    assert recorded["files"] == {name: sha256_file(out / name) for name in REPORT_FILES}
    assert "evaluated" not in result.stderr and "accuracy" in result.stderr


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images[found.get("id") or f"img{len(self.images)}"] = found["src"] or ""
        for key in ("href", "src"):
            if found.get(key) and not str(found[key]).startswith("data:"):
                self.links.append(str(found[key]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_is_self_contained_and_every_picture_decodes(trained: Path, tmp_path):
    out = tmp_path / "report"
    result = run_inflame("eval", trained, "--data", "val", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert page.links == []  # nothing outside the file
    assert {"curves", "confusion-matrix", "reliability"} <= set(page.images)
    report = json.loads((out / "report.json").read_text())
    mistakes = report["images"] - round(report["accuracy"] * report["images"])
    assert len(page.images) == 3 + min(mistakes, 12)  # plus a thumbnail per mistake
    for name, src in page.images.items():
        header, _, payload = src.partition(",")
        assert header in ("data:image/png;base64", "data:image/jpeg;base64"), name
        with Image.open(io.BytesIO(base64.b64decode(payload))) as picture:
            picture.load()
            assert min(picture.size) > 16, name
    with Image.open(
        io.BytesIO(base64.b64decode(page.images["confusion-matrix"].split(",")[1]))
    ) as m:
        assert m.tobytes() == Image.open(out / "confusion_matrix.png").tobytes()
    text = " ".join(page.text)
    with open(out / "results.csv", newline="") as handle:  # the most confident mistakes first
        wrong = [r for r in csv.DictReader(handle) if r["correct"] == "false"]
    wrong.sort(key=lambda r: -float(r["probability"]))
    captions = [t for t in page.text if t.endswith((".png", ".jpg"))]
    assert captions == [Path(r["image"]).name for r in wrong[:12]]
    assert all(name in text for name in report["classes"])
    assert f"{report['accuracy']:.4f}" in text
    # an --out outside the run is recorded by its absolute path, next to the default one
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["evaluations"][str(out)]["data"]["input"] == "val"


BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome", "chromium-browser")
# added to a copy of the report: JS errors, then each picture's state once the page loaded
HARNESS_HEAD = (
    "<script>window.__errors = []; window.addEventListener('error', e => "
    "window.__errors.push(String(e.message || (e.target && e.target.outerHTML.slice(0, 80)))),"
    " true);</script>"
)
HARNESS_TAIL = """<script>window.addEventListener('load', () => {
  const pictures = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {id: i.id, alt: i.alt, complete: i.complete, natural: i.naturalWidth,
            left: r.left, top: r.top + window.scrollY, width: r.width, height: r.height};
  });
  document.body.setAttribute('data-check', JSON.stringify({
    errors: window.__errors, pictures, text: document.body.innerText,
    height: document.documentElement.scrollHeight}));
});</script>"""


def headless_chromium() -> str:
    """A headless Chromium (CI installs chromium-headless-shell; INFLAME_CHROMIUM overrides)."""
    found = os.environ.get("INFLAME_CHROMIUM") or next(
        (path for path in map(shutil.which, BROWSERS) if path), None
    )
    if not found:
        pytest.fail(
            "The HTML report is opened in a headless Chromium, and none is installed: "
            "`apt-get install chromium-headless-shell` (tools/install-test-deps.sh does it), "
            "or point INFLAME_CHROMIUM at one."
        )
    return found


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    command = [headless_chromium(), "--headless", "--no-sandbox", "--disable-gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_html_report_opens_in_a_browser_and_shows_the_matrix(trained: Path, tmp_path):
    out = tmp_path / "report"
    result = run_inflame("eval", trained, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    harness = out / "harness.html"  # beside it: the same file:// origin and folder
    harness.write_text(
        page.replace("<head>", "<head>" + HARNESS_HEAD, 1).replace(
            "</body>", HARNESS_TAIL + "</body>", 1
        ),
        encoding="utf-8",
    )
    dumped = _chromium("--virtual-time-budget=5000", "--dump-dom", harness.as_uri())
    assert dumped.returncode == 0, dumped.stderr
    raw = dumped.stdout.split('data-check="', 1)[1].split('"', 1)[0]
    check = json.loads(html.unescape(raw))
    assert check["errors"] == []
    pictures = {p["id"] or p["alt"]: p for p in check["pictures"]}
    assert {"curves", "confusion-matrix", "reliability"} <= set(pictures)
    for name, picture in pictures.items():
        assert picture["complete"] and picture["natural"] > 16, (name, picture)
    matrix = pictures["confusion-matrix"]
    assert matrix["width"] > 150 and matrix["height"] > 150  # shown, not a broken icon
    report = json.loads((out / "report.json").read_text())
    assert all(name in check["text"] for name in report["classes"])
    assert f"{report['accuracy']:.4f}" in check["text"]

    # what the browser drew where the matrix is: the colour map's blues, as in the PNG
    shot = tmp_path / "shot.png"
    size = f"--window-size=1280,{int(check['height']) + 20}"
    drawn = _chromium(size, "--hide-scrollbars", f"--screenshot={shot}", harness.as_uri())
    assert drawn.returncode == 0 and shot.is_file(), drawn.stderr

    def blue_share(picture: Image.Image) -> float:
        rgb = np.asarray(picture.convert("RGB")).astype(int)
        blue = (rgb[..., 2] - rgb[..., 0] > 60) & (rgb[..., 2] > 100)
        return float(blue.mean())

    box = [round(matrix[k]) for k in ("left", "top", "width", "height")]
    with Image.open(shot) as screen:
        shown = screen.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        shown_share = blue_share(shown)
    with Image.open(out / "confusion_matrix.png") as source:
        source_share = blue_share(source)
    assert source_share > 0.05
    assert abs(shown_share - source_share) < 0.05, (shown_share, source_share)


def test_bad_data_is_a_clean_error_and_the_previous_report_stays(trained: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = tmp_path / "data"
    shutil.copytree(
        json.loads((run / "manifest.json").read_text())["data"]["inputs"]["test"]["path"], data
    )
    first = run_inflame("eval", run, "--data", data, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in (run / "eval").iterdir()}

    broken = sorted((data / "circle").iterdir())[0]
    broken.write_bytes(b"\x89PNG not really")
    result = run_inflame("eval", run, "--data", data, cwd=tmp_path)
    assert_clean_error(result, "1 unreadable image(s)", broken.name)
    assert {p.name: p.read_bytes() for p in (run / "eval").iterdir()} == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".eval")) == []

    (data / "owl").mkdir()
    shutil.copy(sorted((data / "square").iterdir())[0], data / "owl" / "x.png")
    assert_clean_error(run_inflame("eval", run, "--data", data, cwd=tmp_path), "owl")
    assert_clean_error(
        run_inflame("eval", run, "--data", "nowhere", cwd=tmp_path),
        "--data 'nowhere' is neither one of the run's data inputs (train, val, test)",
    )


def test_the_report_never_replaces_a_folder_or_file_that_is_not_a_report(trained, tmp_path):
    mine = tmp_path / "mydocs"
    (mine / "photos").mkdir(parents=True)
    (mine / "thesis.txt").write_text("important notes")
    note = tmp_path / "notes.txt"
    note.write_text("keep me")
    for out, says in ((mine, "thesis.txt"), (note, "is a file"), (Path("."), "job.toml")):
        (tmp_path / "job.toml").write_text("[job]\n")  # the folder `.` stands for holds it
        result = run_inflame("eval", trained, "--out", out, cwd=tmp_path)
        assert_clean_error(result, "--out", says)
    assert (mine / "thesis.txt").read_text() == "important notes" and (mine / "photos").is_dir()
    assert note.read_text() == "keep me" and (tmp_path / "job.toml").is_file()
    report = tmp_path / "report"
    report.mkdir()  # an empty folder, then the report itself: both are written
    for _ in range(2):
        done = run_inflame("eval", trained, "--out", report, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)


def test_changed_test_data_is_evaluated_with_a_warning(trained: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    manifest = json.loads((run / "manifest.json").read_text())
    data = tmp_path / "test"
    shutil.copytree(manifest["data"]["inputs"]["test"]["path"], data)
    manifest["data"]["inputs"]["test"]["path"] = str(data)  # the run's test input, moved here
    (run / "manifest.json").write_text(json.dumps(manifest))
    victim = sorted((data / "square").iterdir())[0]
    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    result = run_inflame("eval", run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "has changed since the run trained on it" in result.stderr
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["data"]["changed_since_training"] is True


def test_runs_compare_shows_what_differs_and_plots_the_curves_together(trained, tmp_path):
    spec = tomlfile.loads((trained / "spec.toml").read_text())
    spec["hyperparameters"].update(learning_rate=0.01, epochs=2)
    (tmp_path / "other.toml").write_text(tomlfile.dumps(spec), encoding="utf-8")
    other = train_local(tmp_path / "other.toml", run_dir=tmp_path / "other").run_dir

    result = run_inflame(
        "runs", "compare", trained, other, "--json", "--plot", "both.png", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    compared = json.loads(result.stdout)
    assert sorted(compared["differing"]) == ["epochs", "learning_rate"]
    assert compared["hyperparameters"]["learning_rate"] == [0.001, 0.01]
    results = compared["results"]
    assert results["epochs"] == [3, 2] and results["status"] == ["completed"] * 2
    for i, run in enumerate((trained, other)):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert results["test_accuracy"][i] == next(
            r["test_accuracy"] for r in records if "test_accuracy" in r
        )
        saved = json.loads((run / "manifest.json").read_text())["saved"]["epoch"]
        assert results["val_accuracy"][i] == next(
            r["val_accuracy"] for r in records if r.get("epoch") == saved
        )
    with Image.open(tmp_path / "both.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 400

    table = run_inflame("runs", "compare", trained, other, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "learning_rate" in table.stdout and "architecture" not in table.stdout
    assert (
        "architecture"
        in run_inflame("runs", "compare", trained, other, "--all", cwd=tmp_path).stdout
    )
    assert_clean_error(run_inflame("runs", "compare", trained, cwd=tmp_path), "at least two runs")
