"""Report plots as PNG files (matplotlib's Agg backend: no display needed).

Every function takes plain data (lists, arrays) and a path, writes one figure and closes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def plot_curves(history: Sequence[dict], keys: Sequence[str], path: str | Path, *,
                title: str, ylabel: str) -> Path:
    """One line per ``key`` of the per-epoch ``history`` records, over epochs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] + 1 for h in history]
    for key in keys:
        ys = [h.get(key) for h in history]
        pts = [(e, y) for e, y in zip(epochs, ys) if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=key)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], path: str | Path,
                          *, title: str = "confusion matrix") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if top and cm[i, j] > top / 2 else "black")
    return _save(fig, path)


def plot_roc(labels: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str], path: str | Path,
             *, title: str = "ROC") -> Path:
    """Binary: one curve for the positive class; multi-class: one-vs-rest per present class."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(5, 5))
    targets = [1] if len(classes) == 2 else range(len(classes))
    for c in targets:
        positives = np.asarray(labels == c)
        if positives.all() or not positives.any():
            continue  # no ROC curve without both positives and negatives
        fpr, tpr, _ = roc_curve(positives, probs[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_per_class_accuracy(accuracy: Sequence[float | None], classes: Sequence[str],
                            path: str | Path, *, title: str = "per-class accuracy") -> Path:
    plt = _plt()
    k = len(classes)
    values = [a if a is not None else 0.0 for a in accuracy]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * k + 2), 4))
    bars = ax.bar(range(k), values, color="tab:blue")
    for b, a in zip(bars, accuracy):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01,
                "n/a" if a is None else f"{a:.2f}", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy (recall)")
    ax.set_title(title)
    return _save(fig, path)
