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
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import DecodesInChild, Manifest, SkippedSample, _skip_or_raise, open_sample, resize_frames
from .distributed import DistInfo, ShardSampler, gather_arrays
from .loader import ClipLoader, DevicePrefetcher, build_loader, choose_backend
from .metrics import aggregate_by_video, classification_metrics, softmax
from .sampling import sample_clips
from .transforms import ClipTransform
from .video import VideoDecodeError


# --------------------------------------------------------------------------- windows
@dataclass
class VideoWindowsDataset(DecodesInChild, Dataset):
    """Every window of a video: ``{"clip": uint8 (K, T, H, W, C), "label", "video_id",
    "indices": (K, T)}``.

    ``stride``: frames between a window's frames; ``None`` picks, per video, the largest
    stride whose window still fits in the video (so each window spans the video like a
    ``uniform`` clip, and the windows are its phase-shifted versions). ``window_stride``:
    frames between window starts (default: non-overlapping, plus one aligned to the end).
    ``max_windows``: evenly thin out longer lists (bounds the cost of long videos).
    Decoding runs in a watched child process, as in :class:`~accel.data.VideoClipDataset`.
    """

    manifest: Manifest
    clip_len: int
    stride: int | None = None
    window_stride: int | None = None
    max_windows: int | None = None
    backend: str = "auto"
    frame_size: tuple[int, int] | None = None
    on_error: str = "skip"
    decode_timeout_s: float | None = 60.0
    recycle_after_clips: int | None = 1000
    recycle_rss_growth_mb: float | None = 256.0
    isolate_decode: bool = True

    def __post_init__(self) -> None:
        self._check_decode_options()

    def __len__(self) -> int:
        return len(self.manifest)

    def windows(self, num_frames: int) -> list[list[int]]:
        stride = self.stride
        if stride is None:
            stride = max(1, (num_frames - 1) // max(1, self.clip_len - 1))
        wins = sample_clips(num_frames, self.clip_len, stride=stride, window_stride=self.window_stride)
        if self.max_windows and len(wins) > self.max_windows:
            keep = np.linspace(0, len(wins) - 1, self.max_windows).round().astype(int)
            wins = [wins[i] for i in keep]
        return wins

    def __getitem__(self, index: int) -> dict | SkippedSample:
        return self._isolated(self.manifest.items[index].path, index)

    def _load(self, index: int) -> dict | SkippedSample:
        item = self.manifest.items[index]
        try:
            reader = open_sample(item.path, self.backend)
            try:
                wins = self.windows(len(reader))
                flat = [i for w in wins for i in w]
                frames = reader.get_frames(flat)
            finally:
                reader.close()
        except (VideoDecodeError, OSError, ValueError, IndexError) as e:
            return _skip_or_raise(item.path, e, self.on_error)
        if self.frame_size is not None and tuple(frames.shape[1:3]) != tuple(self.frame_size):
            frames = resize_frames(frames, self.frame_size)
        k, t = len(wins), self.clip_len
        return {"clip": frames.reshape(k, t, *frames.shape[1:]), "label": item.label,
                "video_id": index, "indices": torch.tensor(wins, dtype=torch.int64)}


def collate_windows(samples: Sequence[dict | SkippedSample]) -> dict:
    """All windows of the batch's videos as one clip batch (channels_last_3d), one label and
    video id per window."""
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    skipped = [tuple(s) for s in samples if isinstance(s, SkippedSample)]
    if not good:
        return {"clip": None, "label": None, "video_id": None, "indices": None, "skipped": skipped}
    counts = [s["clip"].shape[0] for s in good]
    clips = torch.cat([s["clip"] for s in good])  # (N, T, H, W, C)
    return {
        "clip": clips.permute(0, 4, 1, 2, 3),
        "label": torch.tensor([s["label"] for s, n in zip(good, counts) for _ in range(n)]),
        "video_id": torch.tensor([s["video_id"] for s, n in zip(good, counts) for _ in range(n)]),
        "indices": torch.cat([s["indices"] for s in good]),
        "skipped": skipped,
    }


def build_window_loader(manifest: Manifest, *, clip_len: int, videos_per_batch: int,
                        stride: int | None = None, window_stride: int | None = None,
                        max_windows: int | None = None, frame_size=None, backend: str = "auto",
                        num_workers: int = 0, sampler: Sampler | None = None,
                        on_error: str = "skip") -> ClipLoader:
    chosen, why = choose_backend(backend)
    dataset = VideoWindowsDataset(manifest, clip_len, stride, window_stride, max_windows,
                                  backend=chosen, frame_size=frame_size, on_error=on_error)
    loader = DataLoader(dataset, batch_size=videos_per_batch, sampler=sampler, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_windows,
                        pin_memory=torch.cuda.is_available())
    return ClipLoader(dataset, loader, chosen, why)


# --------------------------------------------------------------------------- prediction
@dataclass
class Predictions:
    """Per-clip outputs in video-id order."""

    video_ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def predict(fwd: Callable[[torch.Tensor], torch.Tensor], loader: ClipLoader, device: torch.device,
            transform: ClipTransform, *, chunk: int | None = None, info: DistInfo | None = None,
            progress=None) -> Predictions:
    """Run ``fwd`` over ``loader``; with ``info`` gathers every rank's shard (rank order,
    then sorted by video id, windows of one video kept in order)."""
    ids, labels, logits = [], [], []
    for batch in DevicePrefetcher(loader, device, transform=transform):
        x = batch["clip"]
        step = chunk or x.shape[0]
        out = torch.cat([fwd(x[i:i + step]).float() for i in range(0, x.shape[0], step)])
        logits.append(out.cpu().numpy().astype(np.float64))
        ids.append(batch["video_id"].cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
        if progress is not None:
            progress.update(1)
    k = None
    if logits:
        k = logits[0].shape[1]
    part = (np.concatenate(ids) if ids else np.zeros(0, np.int64),
            np.concatenate(labels) if labels else np.zeros(0, np.int64),
            np.concatenate(logits) if logits else np.zeros((0, k or 0)))
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
    sampling: str = "uniform"
    batch_size: int = 8
    num_workers: int = 2
    backend: str = "auto"
    frame_size: tuple[int, int] | None = None
    seed: int = 0
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    video_level: bool = True
    video_stride: int | None = None
    window_stride: int | None = None
    max_windows: int | None = 16


def clip_loader(manifest: Manifest, s: EvalSettings, sampler: Sampler | None = None) -> ClipLoader:
    loader = build_loader(manifest, batch_size=s.batch_size, clip_len=s.clip_len, strategy=s.sampling,
                          frame_size=s.frame_size, backend=s.backend, num_workers=s.num_workers,
                          shuffle=False, sampler=sampler, drop_last=False, persistent_workers=False,
                          seed=s.seed)
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
                                 num_workers=s.num_workers, sampler=sampler)
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
    report = {"clip": {"sampling": s.sampling, **classification_metrics(clips.labels, clips.logits, classes)}}
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
