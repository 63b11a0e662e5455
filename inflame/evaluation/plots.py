"""The evaluation's and the run's pictures, drawn with matplotlib (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

DPI = 110


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend

    return Figure(figsize=(width, height), layout="constrained")


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path
) -> None:
    """Counts per (true, predicted) class, each cell shaded by its share of the true class."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = max(3.5, 0.55 * len(classes) + 2)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = range(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    if len(classes) <= 30:  # numbers stay legible
        for (row, col), count in np.ndenumerate(counts):
            color = "white" if shares[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    fig.savefig(path, dpi=DPI, format="png")


def reliability_png(bins: Sequence[dict[str, float]], ece: float, path: Path) -> None:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration."""
    fig = _figure(5, 4.5)
    ax = fig.subplots()
    filled = [b for b in bins if b["images"]]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        label="accuracy",
    )
    ax.bar(
        [b["low"] for b in filled],
        [abs(b["confidence"] - b["accuracy"]) for b in filled],
        bottom=[min(b["confidence"], b["accuracy"]) for b in filled],
        width=width,
        align="edge",
        facecolor="none",
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the top label")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=DPI, format="png")


def curves_png(
    epochs: Sequence[dict[str, Any]], path: Path, title: str = "", saved_epoch: int | None = None
) -> bool:
    """Loss and accuracy per epoch (train and val, as logged), with the epoch whose weights
    were saved marked; False when there is nothing to draw. `epochs` may hold several runs'
    records under a "run" key (a comparison)."""
    from matplotlib.ticker import MaxNLocator

    series = [
        k
        for k in ("loss", "accuracy")
        if any(f"{split}_{k}" in r for r in epochs for split in ("train", "val"))
    ]
    if not series:
        return False
    runs = list(dict.fromkeys(r.get("run", "") for r in epochs))
    fig = _figure(5 * len(series), 4)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, kind in zip(axes, series, strict=True):
        for run in runs:
            rows = [r for r in epochs if r.get("run", "") == run]
            for split, style in (("train", "--"), ("val", "-")):
                points = [
                    (r["epoch"], r[f"{split}_{kind}"]) for r in rows if f"{split}_{kind}" in r
                ]
                if points:
                    label = f"{run} {split}".strip()
                    ax.plot(
                        *zip(*points, strict=True), style, marker="o", markersize=3, label=label
                    )
        if saved_epoch is not None:
            ax.axvline(
                saved_epoch, color="gray", linestyle=":", label=f"saved (epoch {saved_epoch})"
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=DPI, format="png")
    return True


def learning_curve_png(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Accuracy against the number of labelled training images, one line per `strategy`
    (active learning's learning curve)."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        points = sorted(
            (r["labelled"], r["val_accuracy"])
            for r in rows
            if r["strategy"] == strategy and r.get("val_accuracy") is not None
        )
        if points:
            ax.plot(*zip(*points, strict=True), "-", marker="o", markersize=3, label=strategy)
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=DPI, format="png")
