"""PNG plots of benchmark records (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_throughput(records: list[dict], path: str | Path, *, mode: str = "infer") -> Path | None:
    """Clips/s per model and variant: grouped bars at each model's largest fixed batch, and
    clips/s against batch size when several batch sizes were measured. None if nothing ran."""
    rows = [r for r in records if r["status"] == "ok" and r["mode"] == mode]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    multi_batch = len({r["batch_size"] for r in rows}) > 1
    fig, axes = plt.subplots(1, 2 if multi_batch else 1, figsize=(13 if multi_batch else 8, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(variants)
    x = np.arange(len(models))
    for i, v in enumerate(variants):
        heights = []
        for m in models:
            at = [r for r in rows if r["model"] == m and r["variant"] == v and not r.get("sweep")]
            heights.append(max(at, key=lambda r: r["batch_size"])["clips_per_s"] if at else 0.0)
        ax.bar(x + i * width - 0.4 + width / 2, heights, width, label=v)
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylabel("clips / s")
    ax.set_title(f"{mode}: throughput per variant ({rows[0]['device']})")
    ax.legend(fontsize=8)
    if multi_batch:
        ax = axes[0][1]
        for m in models:
            for v in variants:
                at = sorted((r for r in rows if r["model"] == m and r["variant"] == v),
                            key=lambda r: r["batch_size"])
                if len(at) > 1:
                    ax.plot([r["batch_size"] for r in at], [r["clips_per_s"] for r in at],
                            marker="o", label=f"{m} {v}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("clips / s")
        ax.set_title("throughput vs batch size")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
