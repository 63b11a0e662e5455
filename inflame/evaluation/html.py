"""The evaluation as one self-contained HTML page: every picture is embedded, so the file
opens from disk, mailed or copied, with nothing beside it."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

THUMBNAIL_PX = 128

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures img { max-width: 100%; margin: 0 1em 1em 0; vertical-align: top; }
.mistakes { display: flex; flex-wrap: wrap; gap: 12px; }
.mistakes figure { margin: 0; width: 150px; font-size: 0.8em; }
.facts td:first-child { font-weight: bold; }
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(path: Path, alt: str, element_id: str) -> str:
    uri = _data_uri(path.read_bytes(), "image/png")
    return f'<img id="{element_id}" src="{uri}" alt="{html.escape(alt)}">'


def _thumbnail(path: Path) -> str:
    """A small JPEG of the image, as loaded for training (orientation applied)."""
    from inflame.data.images import open_image

    image = open_image(path)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _num(value: float) -> str:
    return f"{value:.4f}"


def write_html(
    folder: Path, report: dict[str, Any], worst: list[dict[str, Any]], curves: Path | None
) -> None:
    e = html.escape
    data = report["data"]
    facts = [
        ("run", report["run"]),
        (
            "data",
            f"{data['path']}" + (f" (the run's {data['input']} input)" if data["input"] else ""),
        ),
        ("data fingerprint", f"{data['fingerprint']} ({data['file_count']} files)"),
        ("weights sha256", report.get("weights_sha256") or "-"),
        ("evaluated", report["created"]),
    ]
    summary = [("images", str(report["images"])), ("accuracy", _num(report["accuracy"]))]
    summary += [(f"top-{k} accuracy", _num(v)) for k, v in report["top_k_accuracy"].items()]
    summary += [
        ("loss (cross-entropy)", _num(report["loss"])),
        ("expected calibration error", _num(report["expected_calibration_error"])),
        ("macro F1", _num(report["macro"]["f1"])),
        ("weighted F1", _num(report["weighted"]["f1"])),
    ]
    rows = "".join(
        f"<tr><td>{e(name)}</td>"
        + "".join(f'<td class="n">{_num(m[k])}</td>' for k in ("precision", "recall", "f1"))
        + f'<td class="n">{m["support"]}</td></tr>'
        for name, m in report["per_class"].items()
    )
    for average in ("macro", "weighted"):
        m = report[average]
        rows += (
            f"<tr><th>{average} average</th>"
            + "".join(f'<td class="n">{_num(m[k])}</td>' for k in ("precision", "recall", "f1"))
            + f'<td class="n">{report["images"]}</td></tr>'
        )
    figures = [
        _img(folder / "confusion_matrix.png", "confusion matrix", "confusion-matrix"),
        _img(folder / "reliability.png", "reliability diagram", "reliability"),
    ]
    if curves is not None:
        figures.insert(0, _img(curves, "training curves", "curves"))
    mistakes = (
        "".join(
            f'<figure><img src="{_thumbnail(m["image"])}" alt="{e(m["image"].name)}">'
            f"<figcaption>{e(m['image'].name)}<br>true <b>{e(m['true'])}</b>, predicted "
            f"<b>{e(m['predicted'])}</b> ({m['probability']:.2f})</figcaption></figure>"
            for m in worst
        )
        or "<p>No mistakes.</p>"
    )
    changed = (
        "<p><b>Warning:</b> this data has changed since the run trained on it.</p>"
        if data["changed_since_training"]
        else ""
    )
    summary_rows = "".join(f'<tr><td>{e(k)}</td><td class="n">{v}</td></tr>' for k, v in summary)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evaluation of {e(Path(report["run"]).name)}</title><style>{_STYLE}</style></head>
<body>
<h1>Evaluation of {e(Path(report["run"]).name)}</h1>
<table class="facts">{"".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in facts)}</table>
{changed}
<h2>Summary</h2>
<table id="summary">{summary_rows}</table>
<h2>Per class</h2>
<table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>
<th>support</th></tr>{rows}</table>
<h2>Pictures</h2>
<div class="figures">{"".join(figures)}</div>
<h2>The most confident mistakes</h2>
<div class="mistakes">{mistakes}</div>
</body></html>
"""
    (folder / "report.html").write_text(page, encoding="utf-8")
