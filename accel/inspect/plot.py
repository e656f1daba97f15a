"""``inspect.png``: histograms of duration, resolution, keyframe interval and fps, and the
files per class in each split."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _hist(ax, values: list[float], title: str, xlabel: str) -> None:
    if values:
        ax.hist(values, bins=min(30, max(5, len(set(values)))), color="tab:blue", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("files")


def plot_report(records: list[dict], balance: dict[str, dict[str, int]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = [r for r in records if "skipped" not in r and r.get("container") != "frames"]
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    _hist(axes[0], [r["duration_s"] for r in videos], "duration", "seconds")
    labels = [f"{r['width']}x{r['height']}" for r in videos]
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    axes[1].bar(names.tolist(), counts.tolist(), color="tab:blue")
    axes[1].set_title("resolution")
    axes[1].tick_params(axis="x", rotation=45)
    _hist(axes[2], [r["keyframe_interval_mean"] for r in videos], "keyframe interval (mean)", "frames")
    _hist(axes[3], [r["fps"] for r in videos], "fps", "frames per second")
    classes = sorted({c for counts in balance.values() for c in counts})
    width = 0.8 / max(1, len(balance))
    x = np.arange(len(classes))
    for k, (split, per_class) in enumerate(balance.items()):
        axes[4].bar(x + k * width, [per_class.get(c, 0) for c in classes], width, label=split)
    axes[4].set_xticks(x + width * (len(balance) - 1) / 2, classes, rotation=45)
    axes[4].set_title("files per class and split")
    axes[4].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
