"""Where a run's numbers go: CSV log, TensorBoard events, Weights & Biases, JSON files,
and the reports made of them (each epoch's line, ``metrics.json``, the plots, skipped files).

Only the main process (rank 0) writes; on other ranks a :class:`RunLogger` is built with
``enabled=False`` and every call is a no-op. TensorBoard and W&B are imported lazily.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..data.manifests import skipped_summary
from ..io.diagnose import explain_skip
from .distributed import DistInfo, all_gather_objects
from .selection import ModelSelector


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class RunLogger:
    """CSV rows (``log.csv``), TensorBoard scalars (``tensorboard/``) and optional W&B.

    ``tensorboard``: ``True`` requires it, ``None`` uses it when installed, ``False`` skips it.
    ``wandb``: a dict of ``wandb.init`` arguments (``mode`` "offline" works without network),
    or ``None``.
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, tensorboard: bool | None = None,
                 wandb: dict | None = None, config: dict | None = None) -> None:
        self.enabled = enabled
        self.log_dir = Path(log_dir)
        self.csv_path = self.log_dir / "log.csv"
        self.notes: list[str] = []
        self._fields: list[str] | None = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.csv_path.exists():
            self.csv_path.unlink()
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard:
                    raise ImportError("TensorBoard logging needs tensorboard: "
                                      "pip install 'vidaccel[tensorboard]'") from None
                self.notes.append("tensorboard not installed: no event files")
            else:
                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))
        if wandb is not None:
            self._wandb = init_wandb(wandb, config or {}, self.log_dir)

    def log(self, record: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """One row of scalars (non-numeric values go to the CSV only)."""
        if not self.enabled:
            return
        self._csv(record)
        scalars = _scalars(record)
        if self._tb is not None:
            for k, v in scalars.items():
                if k != "epoch":
                    self._tb.add_scalar(f"{prefix}{k}", v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"{prefix}{k}": v for k, v in scalars.items()}, step=step)

    def _csv(self, record: Mapping[str, Any]) -> None:
        row = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
        if self._fields is None:
            self._fields = list(row)
            with self.csv_path.open("w", newline="") as f:
                csv.DictWriter(f, self._fields).writeheader()
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, self._fields, extrasaction="ignore").writerow(row)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers (test metrics) to W&B's run summary and TensorBoard text."""
        if not self.enabled:
            return
        scalars = _scalars(values)
        if self._wandb is not None:
            for k, v in scalars.items():
                self._wandb.summary[k] = v
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, 0)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def init_wandb(options: dict, config: dict, log_dir: Path):
    """Start a W&B run; ``mode="offline"`` writes under ``log_dir/wandb`` with no network."""
    try:
        import wandb
    except ImportError:
        raise ImportError("Weights & Biases logging needs the wandb package: "
                          "pip install 'vidaccel[wandb]'", name="wandb") from None
    options = dict(options)
    options.setdefault("dir", str(log_dir))
    return wandb.init(config=config, **options)


# --------------------------------------------------------------------------- reports
def progress_bar(enabled: bool) -> Callable[..., Any]:
    """``make(total, desc, leave=False)``: a tqdm bar on stderr (disabled when not ``enabled``)."""
    from tqdm import tqdm

    def make(total, desc, leave=False):
        return tqdm(total=total, desc=desc, leave=leave, disable=not enabled, dynamic_ncols=True,
                    file=sys.stderr, mininterval=0.5)
    return make


def epoch_record(info: DistInfo, epoch: int, *, lr: float, stats: dict, val: dict, score: float, best: bool,
                 epoch_time_s: float) -> dict:
    """One epoch's record (the history's entry): train loss and accuracy over every rank's clips
    (``stats``: this rank's ``train_one_epoch`` stats; gathered here), validation ``val``."""
    totals = all_gather_objects((stats["loss_sum"], stats["correct"], stats["clips"], stats["nonfinite"],
                                 stats["step_losses"]), info)
    n = sum(t[2] for t in totals)
    return {
        "epoch": epoch, "lr": lr,
        "train_loss": sum(t[0] for t in totals) / n, "train_accuracy": sum(t[1] for t in totals) / n,
        "train_clips": n, "train_clips_per_s": stats["clips_per_s"] * info.world_size,
        "train_data_wait": stats["data_wait"], "train_time_s": stats["time_s"],
        "val_loss": val.get("loss"), "val_accuracy": val.get("accuracy"),
        "val_balanced_accuracy": val.get("balanced_accuracy"), "val_f1_macro": val.get("f1_macro"),
        "val_auroc": val.get("auroc"), "score": score, "best": best, "epoch_time_s": epoch_time_s, "val": val,
        "train_nonfinite": sum(t[3] for t in totals), "train_step_losses": step_means([t[4] for t in totals]),
    }


def shard_record(info: DistInfo, video_ids: list, batches: int) -> dict:
    """How an epoch's clips fell on the ranks (``video_ids``: those this rank read)."""
    seen = all_gather_objects(video_ids, info)
    return {"batches_per_rank": all_gather_objects(batches, info), "clips_per_rank": [len(x) for x in seen],
            # clips read on two or more ranks (pairwise, for any number of ranks)
            "overlap": len({i for a, b in itertools.combinations(map(set, seen), 2) for i in a & b})}


def step_means(per_rank: list[list]) -> list:
    """Each step's loss, the mean over the ranks (None for a skipped, non-finite step)."""
    out = []
    for losses in itertools.zip_longest(*per_rank):
        finite = [v for v in losses if v is not None]
        out.append(sum(finite) / len(finite) if finite and len(finite) == len(losses) else None)
    return out


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch's record as the line a run prints."""
    val_loss = record["val_loss"] if record["val_loss"] is not None else math.inf
    auroc = "n/a" if record["val_auroc"] is None else f"{record['val_auroc']:.3f}"
    return (f"epoch {record['epoch'] + 1}/{epochs}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.3f} | val loss {val_loss:.4f} acc "
            f"{record['val_accuracy'] or 0:.3f} auroc {auroc} | score {record['score']:.4f}"
            f"{' (best)' if record['best'] else ''} | {record['train_clips_per_s']:.1f} clips/s, "
            f"data wait {record['train_data_wait']:.0%}, {record['epoch_time_s']:.1f} s"
            + (f" | {record['train_nonfinite']} non-finite losses skipped" if record["train_nonfinite"] else ""))


def first_reason(skipped: Iterable) -> str:
    """The first skipped file and why, for a one-line error ("no reason recorded" without one)."""
    skipped = list(skipped)
    if not skipped:
        return "no reason recorded"
    path, reason = skipped[0]
    return f"first: {path}: {explain_skip(path, reason)}"


def gather_skipped(info: DistInfo, train_skipped: Iterable, val_skipped: Iterable,
                   missing: Mapping[str, list]) -> dict:
    """{split: [[path, reason]]}: files missing at start-up, then those skipped on any rank
    (``train_skipped``: this rank's, gathered; ``val_skipped``: already every rank's)."""
    train = sorted({tuple(x) for part in all_gather_objects(list(train_skipped), info) for x in part})
    skipped = {"train": [list(x) for x in train], "val": [list(x) for x in val_skipped]}
    for name, gone in missing.items():
        skipped.setdefault(name, [])[:0] = [list(x) for x in gone]
    return skipped


def write_metrics(log_dir: Path, config: dict, classes, history, selector: ModelSelector, shards,
                  *, test, skipped) -> None:
    """``metrics.json``: the options, every epoch's record, the best, the test and what was skipped."""
    best = selector.best_epoch
    doc = {
        "model": config["model"], "classes": classes, "config": config,
        "epochs": history, "best_epoch": best, "best_score": selector.best_score if best >= 0 else None,
        "best_val": next((h["val"] for h in history if h["epoch"] == best), None),
        "ddp": shards, "distributed": config.get("distributed"), "test": test,
    }
    if skipped is not None:
        doc["skipped"] = skipped
        doc["num_skipped"] = len({tuple(x) for v in skipped.values() for x in v})
    write_json(doc, log_dir / "metrics.json")


def plot_history(log_dir: Path, history: list[dict]) -> None:
    """Loss and accuracy curves so far (PNG files in ``log_dir``)."""
    from .plots import plot_curves

    if not history:
        return
    plot_curves(history, ["train_loss", "val_loss"], log_dir / "loss_curves.png", title="loss", ylabel="loss")
    plot_curves(history, ["train_accuracy", "val_accuracy", "val_auroc"], log_dir / "accuracy_curves.png",
                title="accuracy", ylabel="accuracy / AUROC")


def write_reports(log_dir: Path, config: dict, classes, history: list[dict], selector: ModelSelector,
                  shards: dict, *, test: dict | None, skipped: dict) -> list[str]:
    """The final ``metrics.json`` (skipped files explained) and plots; returns the lines that
    list the skipped files."""
    skipped = {k: [[p, explain_skip(p, r)] for p, r in v] for k, v in skipped.items()}
    unique = list(dict.fromkeys((p, r) for v in skipped.values() for p, r in v))
    write_metrics(log_dir, config, classes, history, selector, shards, test=test, skipped=skipped)
    plot_history(log_dir, history)
    return list(skipped_summary(unique, f"{log_dir / 'metrics.json'}, key \"skipped\""))
