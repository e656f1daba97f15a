"""Where a run's numbers go: CSV log, TensorBoard events, Weights & Biases, JSON files.

Only the main process (rank 0) writes; on other ranks a :class:`RunLogger` is built with
``enabled=False`` and every call is a no-op. TensorBoard and W&B are imported lazily.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping


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
        raise ImportError("--wandb needs the wandb package: pip install 'vidaccel[wandb]' "
                          "(or drop --wandb)") from None
    options = dict(options)
    options.setdefault("dir", str(log_dir))
    return wandb.init(config=config, **options)
