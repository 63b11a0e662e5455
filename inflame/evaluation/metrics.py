"""Classification metrics of scored images, computed with torchmetrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from inflame.evaluation.scoring import Scored

CALIBRATION_BINS = 15


def top_k_values(num_classes: int, top_k: int) -> list[int]:
    """The k of each reported top-k accuracy: 2..top_k, below the number of classes (top-k
    over every class is always 1)."""
    return [k for k in range(2, top_k + 1) if k < num_classes]


def compute_metrics(scored: Scored, top_k: int = 5) -> dict[str, Any]:
    """Loss, accuracy, top-k accuracy, per-class precision/recall/F1/support with macro and
    weighted averages, the confusion matrix (rows: true class, columns: predicted) and the
    expected calibration error of the top label."""
    import torch
    import torch.nn.functional as F
    from torchmetrics.functional.classification import (
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    logits = torch.from_numpy(scored.logits)
    target = torch.from_numpy(scored.labels)
    probs = torch.softmax(logits, dim=1)
    n = len(scored.classes)
    common = {"num_classes": n, "validate_args": True}

    def per_class(fn: Any) -> list[float]:
        return [float(v) for v in fn(probs, target, average="none", **common)]

    def averaged(fn: Any, average: str) -> float:
        return float(fn(probs, target, average=average, **common))

    # exact shares (count / images), as training reports them: not float32 ratios
    ranked = torch.argsort(probs, dim=1, descending=True, stable=True)

    def top_k_accuracy(k: int) -> float:
        return int((ranked[:, :k] == target[:, None]).any(dim=1).sum()) / len(target)

    support = torch.bincount(target, minlength=n)
    precision = per_class(multiclass_precision)
    recall = per_class(multiclass_recall)
    f1 = per_class(multiclass_f1_score)
    metrics: dict[str, Any] = {
        "images": len(target),
        "loss": float(F.cross_entropy(logits, target)),
        "accuracy": top_k_accuracy(1),
        "top_k_accuracy": {str(k): top_k_accuracy(k) for k in top_k_values(n, top_k)},
        "per_class": {
            name: {
                "precision": precision[i],
                "recall": recall[i],
                "f1": f1[i],
                "support": int(support[i]),
            }
            for i, name in enumerate(scored.classes)
        },
        "expected_calibration_error": float(
            multiclass_calibration_error(
                probs, target, n_bins=CALIBRATION_BINS, norm="l1", **common
            )
        ),
        "confusion_matrix": multiclass_confusion_matrix(probs, target, **common).tolist(),
    }
    for average in ("macro", "weighted"):
        metrics[average] = {
            "precision": averaged(multiclass_precision, average),
            "recall": averaged(multiclass_recall, average),
            "f1": averaged(multiclass_f1_score, average),
        }
    return metrics


def reliability_bins(scored: Scored, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Per confidence bin [low, high) (the last also holds 1.0), as torchmetrics bins for
    the calibration error: images, mean top-label confidence and accuracy."""
    probs = scored.probabilities
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == scored.labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "images": count,
                "confidence": float(confidence[members].mean()) if count else 0.0,
                "accuracy": float(correct[members].mean()) if count else 0.0,
            }
        )
    return rows
