"""The timeline picture of a live run: class probabilities over time as stacked ribbons, the
smoothed label as a band above them, dropped and late frames marked below."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .live import FrameResult


def _time_of(r: FrameResult, fps: float) -> float:
    return r.pts_s if r.pts_s is not None else r.index / fps


def plot_timeline(results: Sequence[FrameResult], classes: Sequence[str], path: str | Path, *,
                  fps: float = 25.0, title: str = "") -> Path:
    """Write the timeline PNG to ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    inferred = [r for r in results if not r.dropped and r.probs is not None]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colors = [cmap(k % cmap.N) for k in range(len(classes))]
    fig, (band, ax) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 6], "hspace": 0.05})
    if inferred:
        t = [_time_of(r, fps) for r in inferred]
        probs = list(zip(*[r.probs for r in inferred]))
        ax.stackplot(t, *probs, labels=list(classes), colors=colors, alpha=0.85,
                     step="post")
        for r, start, end in zip(inferred, t, t[1:] + [t[-1] + 1.0 / fps]):  # smoothed label band
            band.axvspan(start, end, color=colors[list(classes).index(str(r.smoothed_label))], lw=0)
    for flag, y, color, name in (("dropped", -0.05, "0.35", "dropped"), ("late", -0.11, "red", "late")):
        times = [_time_of(r, fps) for r in results if getattr(r, flag)]
        if times:
            ax.plot(times, [y] * len(times), "|", color=color, ms=7, label=f"{name} ({len(times)})")
    ax.set_ylim(-0.15, 1.0)
    ax.set_ylabel("probability")
    ax.set_xlabel("time (s, stream pts)")
    band.set_yticks([])
    band.set_ylabel("smoothed", rotation=0, ha="right", va="center")
    band.set_title(title or "predictions over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
