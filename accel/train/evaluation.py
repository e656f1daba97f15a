"""Clip-level and video-level evaluation, shared by ``train.py`` and ``evaluate.py``.

* clip level: one clip per video, drawn by the split's sampling strategy (``uniform`` by
  default), through the same loader as training.
* video level: every video tiled with sliding windows (:func:`accel.sample_clips`), the
  model run on every window, the logits averaged per video.

Both scripts call :func:`evaluate_split` with the same settings (taken from the checkpoint
by ``evaluate.py``), so on CPU the final test of training and a later evaluation of the
checkpoint agree bit for bit.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..data.config import IMAGENET_MEAN, IMAGENET_STD
from ..data.loader import ClipBatchLoader, LoaderBackend, build_loader
from ..data.manifests import Manifest
from ..data.options import DecodeOptions
from ..data.prefetch import DevicePrefetcher
from ..data.samplers import ShardSampler
from ..data.sampling import Strategy
from ..data.transforms import ClipTransform
from ..data.windows import build_window_loader
from .config import TrainConfig
from .distributed import DistInfo, gather_arrays
from .metrics import aggregate_by_video, classification_metrics, softmax


# --------------------------------------------------------------------------- prediction
@dataclass
class Predictions:
    """Per-clip outputs in video-id order."""

    video_ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def predict(fwd: Callable[[torch.Tensor], torch.Tensor], loader: ClipBatchLoader,
            device: torch.device, transform: ClipTransform, *, chunk: int | None = None, info: DistInfo | None = None,
            progress=None) -> Predictions:
    """Run ``fwd`` over ``loader``; with ``info`` gathers every rank's shard (rank order,
    then sorted by video id, windows of one video kept in order)."""
    ids, labels, logits = [], [], []
    for batch in DevicePrefetcher(loader, device, transform=transform):
        x = batch.clip
        step = chunk or x.shape[0]
        # logits and labels stay on the device until the split is done: one copy back, no
        # per-batch sync
        logits.append(torch.cat([fwd(x[i:i + step]).float() for i in range(0, x.shape[0], step)]))
        labels.append(batch.label)
        ids.append(batch.video_id.numpy())  # on the host
        if progress is not None:
            progress.update(1)
    part: tuple[np.ndarray, ...] = (np.concatenate(ids) if ids else np.zeros(0, np.int64),
            torch.cat(labels).cpu().numpy() if labels else np.zeros(0, np.int64),
            torch.cat(logits).cpu().numpy().astype(np.float64) if logits else np.zeros((0, 0)))
    skipped = list(dict.fromkeys(loader.skipped))
    if info is not None and info.distributed:
        parts = gather_arrays([part], info)
        part = tuple(np.concatenate([p[j] for p in parts if len(p[0])] or [part[j][:0]])
                     for j in range(3))
        skipped = list(dict.fromkeys(s for group in gather_arrays([skipped], info) for s in group))
    order = np.argsort(part[0], kind="stable")
    return Predictions(part[0][order], part[1][order], part[2][order], skipped)


# --------------------------------------------------------------------------- one split
@dataclass
class EvalSettings:
    """How a split is evaluated; ``evaluate.py`` reads these from the checkpoint."""

    clip_len: int
    size: int
    sampling: Strategy = "uniform"
    batch_size: int = 8
    num_workers: int = 2
    backend: LoaderBackend = "auto"
    frame_size: tuple[int, int] | None = None
    seed: int = 0
    # The model's normalisation (models.resolve_data_config(model)): train.py records it in the
    # checkpoint, evaluate.py reads it back; the defaults serve direct construction only.
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    video_level: bool = True
    video_stride: int | None = None
    window_stride: int | None = None
    max_windows: int | None = 16
    rotate: bool = True  # frames as displayed (display matrix applied); False: as stored

    @classmethod
    def of_run(cls, cfg: TrainConfig, sampling: Strategy, *, mean: Sequence[float], std: Sequence[float],
               video_level: bool) -> EvalSettings:
        """How a training run (``cfg``, set-up done) reads validation or test clips."""
        assert cfg.clip_len and cfg.size and cfg.decode_size, "set-up fills in the model's input"
        return cls(clip_len=cfg.clip_len, size=cfg.size, sampling=sampling,
                   batch_size=cfg.eval_batch_size or cfg.batch_size, num_workers=cfg.num_workers,
                   backend=cfg.decoder, frame_size=(cfg.decode_size, cfg.decode_size), seed=cfg.seed,
                   mean=mean, std=std, video_level=video_level, video_stride=cfg.video_stride,
                   window_stride=cfg.window_stride, max_windows=cfg.max_windows, rotate=cfg.autorotate)


def clip_loader(manifest: Manifest, s: EvalSettings, sampler: Sampler | None = None
                ) -> ClipBatchLoader:
    loader = build_loader(manifest, batch_size=s.batch_size, clip_len=s.clip_len, strategy=s.sampling,
                          frame_size=s.frame_size, backend=s.backend, num_workers=s.num_workers,
                          shuffle=False, sampler=sampler, drop_last=False, persistent_workers=False,
                          seed=s.seed, decode=DecodeOptions(rotate=s.rotate))
    loader.set_epoch(0)
    return loader


def evaluate_clips(fwd, manifest: Manifest, s: EvalSettings, device: torch.device, *,
                   info: DistInfo | None = None, progress=None) -> Predictions:
    sampler = ShardSampler(len(manifest), rank=info.rank, world_size=info.world_size) \
        if info is not None and info.distributed else None
    transform = ClipTransform(s.size, train=False, mean=tuple(s.mean), std=tuple(s.std))
    return predict(fwd, clip_loader(manifest, s, sampler), device, transform, info=info,
                   progress=progress)


def evaluate_videos(fwd, manifest: Manifest, s: EvalSettings, device: torch.device, *,
                    info: DistInfo | None = None, progress=None) -> Predictions:
    sampler = ShardSampler(len(manifest), rank=info.rank, world_size=info.world_size) \
        if info is not None and info.distributed else None
    loader = build_window_loader(manifest, clip_len=s.clip_len,
                                 videos_per_batch=max(1, s.batch_size // 2), stride=s.video_stride,
                                 window_stride=s.window_stride, max_windows=s.max_windows,
                                 frame_size=s.frame_size, backend=s.backend,
                                 num_workers=s.num_workers, sampler=sampler, rotate=s.rotate)
    transform = ClipTransform(s.size, train=False, mean=tuple(s.mean), std=tuple(s.std))
    return predict(fwd, loader, device, transform, chunk=s.batch_size, info=info, progress=progress)


def evaluate_split(fwd, manifest: Manifest, s: EvalSettings, device: torch.device, *,
                   info: DistInfo | None = None, progress_factory=None) -> dict:
    """Clip-level (and video-level) metrics of ``manifest``: ``{"clip": metrics, "video":
    metrics, "skipped": [[path, reason]], "_predictions": {...}}`` (the underscore entry holds
    arrays for plots and CSVs; it is not JSON)."""
    classes = manifest.classes
    bar = progress_factory(len(manifest) and math.ceil(len(manifest) / s.batch_size), "clips") \
        if progress_factory else None
    clips = evaluate_clips(fwd, manifest, s, device, info=info, progress=bar)
    if bar is not None:
        bar.close()
    report: dict = {"clip": {"sampling": s.sampling, **classification_metrics(clips.labels, clips.logits, classes)}}
    skipped = list(clips.skipped)
    preds = {"clip": clips}
    if s.video_level:
        bar = progress_factory(math.ceil(len(manifest) / max(1, s.batch_size // 2)), "videos") \
            if progress_factory else None
        wins = evaluate_videos(fwd, manifest, s, device, info=info, progress=bar)
        if bar is not None:
            bar.close()
        ids, mean_logits, labels = aggregate_by_video(wins.video_ids, wins.logits, wins.labels) \
            if len(wins.video_ids) else (np.zeros(0, np.int64), np.zeros((0, len(classes))), np.zeros(0, np.int64))
        report["video"] = {"windows": int(len(wins.video_ids)),
                           "windows_per_video": float(len(wins.video_ids) / max(1, len(ids))),
                           **classification_metrics(labels, mean_logits, classes)}
        preds["video"] = Predictions(ids, labels, mean_logits)
        skipped += [s_ for s_ in wins.skipped if s_ not in skipped]
    report["skipped"] = [list(x) for x in skipped]
    report["num_skipped"] = len(skipped)
    report["_predictions"] = preds
    return report


# --------------------------------------------------------------------------- report files
def write_report_files(report: dict, manifest: Manifest, out_dir: str | Path, *,
                       prefix: str = "test") -> list[Path]:
    """Plots (confusion matrix, ROC, per-class accuracy; clip and video level) and a
    ``{prefix}_predictions.csv`` with one row per video (paths byte for byte as on disk)."""
    from .plots import plot_confusion_matrix, plot_per_class_accuracy, plot_roc

    out_dir = Path(out_dir)
    classes = manifest.classes
    written = []
    for level, preds in report["_predictions"].items():
        m = report[level]
        if not m.get("n"):
            continue
        tag = prefix if level == "clip" else f"{prefix}_video"
        what = f"{prefix} ({level} level)"
        written.append(plot_confusion_matrix(m["confusion_matrix"], classes,
                                             out_dir / f"{tag}_confusion_matrix.png",
                                             title=f"{what}: confusion matrix"))
        written.append(plot_roc(preds.labels, softmax(preds.logits), classes,
                                out_dir / f"{tag}_roc_curve.png", title=f"{what}: ROC"))
        written.append(plot_per_class_accuracy([m["per_class"][c]["accuracy"] for c in classes],
                                               classes, out_dir / f"{tag}_per_class_accuracy.png",
                                               title=f"{what}: per-class accuracy"))
    path = out_dir / f"{prefix}_predictions.csv"
    # UTF-8, except that a file name which is not UTF-8 on disk (it reaches Python with
    # surrogate escapes) is written as its own bytes: the column names the file exactly.
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        levels = list(report["_predictions"])
        w.writerow(["video_id", "path", "label"] + [f"{lv}_pred" for lv in levels]
                   + [f"{lv}_prob_{c}" for lv in levels for c in classes])
        rows: dict[int, dict] = {}
        for lv in levels:
            p = report["_predictions"][lv]
            probs = softmax(p.logits) if len(p.logits) else p.logits
            for vid, lab, pr in zip(p.video_ids.tolist(), p.labels.tolist(), probs):
                r = rows.setdefault(vid, {"label": lab})
                r[lv] = pr
        for vid in sorted(rows):
            r = rows[vid]
            preds_ = [classes[int(np.argmax(r[lv]))] if lv in r else "" for lv in levels]
            probs_ = [f"{r[lv][c]:.6f}" if lv in r else "" for lv in levels for c in range(len(classes))]
            w.writerow([vid, manifest.items[vid].path, classes[r["label"]], *preds_, *probs_])
    written.append(path)
    return written


def public(report: dict) -> dict:
    """The JSON part of a report (drops the prediction arrays)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def summary_line(name: str, m: dict) -> str:
    def f(key):
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    return (f"{name}: n={m.get('n', 0)} accuracy={f('accuracy')} balanced={f('balanced_accuracy')} "
            f"f1_macro={f('f1_macro')} auroc={f('auroc')} loss={f('loss')}")


def summary_lines(report: dict, split: str = "test") -> list[str]:
    """The clip-level line of an :func:`evaluate_split` report, and the video-level one if any."""
    lines = [summary_line(f"{split} clip-level", report["clip"])]
    if "video" in report:
        lines.append(summary_line(f"{split} video-level ({report['video']['windows_per_video']:.1f} "
                                  "windows/video)", report["video"]))
    return lines
