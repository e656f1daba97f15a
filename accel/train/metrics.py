"""Classification metrics (scikit-learn) and per-video aggregation.

``classification_metrics`` turns labels and logits into one JSON-ready dict: accuracy,
balanced accuracy, precision / recall / F1 (macro and per class), AUROC (binary, or
one-vs-rest macro), the confusion matrix and per-class accuracy. Values that are undefined
for the data at hand (AUROC when a class is missing) are ``None``, never NaN, so
``metrics.json`` stays valid JSON.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under ``logits`` (plain, unweighted)."""
    if len(labels) == 0:
        return float("nan")
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return float(torch.nn.functional.cross_entropy(t, torch.as_tensor(labels, dtype=torch.int64)))


def auroc(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> float | None:
    """Binary AUROC on the positive class's probability, or macro one-vs-rest AUROC over the
    classes present; ``None`` when fewer than two classes are present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if num_classes == 2:
            return float(roc_auc_score(labels, probs[:, 1]))
        # One-vs-rest per present class: a class absent from the labels has no ROC curve.
        scores = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def _clean(x):
    """numpy scalars/arrays -> plain Python; NaN -> None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return [_clean(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else x
    if isinstance(x, np.integer):
        return int(x)
    return x


def classification_metrics(labels: Sequence[int] | np.ndarray, logits: np.ndarray,
                           classes: Sequence[str]) -> dict:
    """All the metrics of one evaluation as plain Python values.

    ``logits`` (N, K) may also be probabilities' logs; only arg-max and softmax are used.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = np.asarray(labels, dtype=np.int64)
    k = len(classes)
    out: dict = {"n": int(len(labels))}
    if len(labels) == 0:
        return out | {"accuracy": None, "loss": None, "auroc": None}
    logits = np.asarray(logits, dtype=np.float64).reshape(len(labels), -1)
    probs = softmax(logits)
    preds = logits.argmax(axis=1)
    all_classes = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division and single-class warnings
        p, r, f, support = precision_recall_fscore_support(labels, preds, labels=all_classes,
                                                           zero_division=0)
        pm, rm, fm, _ = precision_recall_fscore_support(labels, preds, labels=all_classes,
                                                        average="macro", zero_division=0)
        bal = balanced_accuracy_score(labels, preds)
    cm = confusion_matrix(labels, preds, labels=all_classes)
    per_class_acc = [float(cm[c, c] / cm[c].sum()) if cm[c].sum() else None for c in all_classes]
    out.update({
        "loss": cross_entropy(logits, labels),
        "accuracy": float(accuracy_score(labels, preds)),
        "balanced_accuracy": float(bal),
        "precision_macro": float(pm), "recall_macro": float(rm), "f1_macro": float(fm),
        "auroc": auroc(labels, probs, k),
        "per_class": {
            name: {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                   "accuracy": per_class_acc[c], "support": int(support[c])}
            for c, name in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    })
    return _clean(out)


def aggregate_by_video(video_ids: np.ndarray, logits: np.ndarray,
                       labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the logits of every video's clips: (ids, mean logits, labels), sorted by id."""
    video_ids = np.asarray(video_ids)
    ids, inverse = np.unique(video_ids, return_inverse=True)
    logits = np.asarray(logits, dtype=np.float64)
    sums = np.zeros((len(ids), logits.shape[1]))
    np.add.at(sums, inverse, logits)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    first = np.zeros(len(ids), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(video_ids))[::-1]  # first clip of every video
    return ids, sums / counts, np.asarray(labels)[first]
