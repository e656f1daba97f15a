"""Mid-epoch checkpoints kept K at a time, and ``--resume auto``: the newest readable
checkpoint of a folder (``step-eEPOCH-sSAMPLES.pt`` files and the end-of-epoch ``last.pt``).

A checkpoint's place in the run is ``(epoch, samples)``: the epoch it was written in and
how many of that epoch's samples (of each rank's order) were trained; ``last.pt`` of epoch
``e`` is ``(e + 1, 0)``. Newer means a later place, whatever the files' times say.
"""
from __future__ import annotations

import re
from pathlib import Path

from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint

STEP_PATTERN = re.compile(r"^step-e(\d+)-s(\d+)\.pt$")


def step_name(epoch: int, samples: int) -> str:
    return f"step-e{epoch:04d}-s{samples:09d}.pt"


def step_files(folder: str | Path) -> list[tuple[tuple[int, int], Path]]:
    """The folder's mid-epoch checkpoints, newest first, with their place."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_PATTERN.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return sorted(found, reverse=True)


class RollingCheckpoints:
    """Writes ``step-*.pt`` files atomically into ``folder`` and keeps the newest ``keep``."""

    def __init__(self, folder: str | Path, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (checkpoints kept), got {keep}")
        self.folder, self.keep = Path(folder), keep

    def save(self, state: dict, epoch: int, samples: int) -> Path:
        """Write; only then delete the oldest beyond ``keep`` (a failed write removes nothing)."""
        path = save_checkpoint(state, self.folder / step_name(epoch, samples))
        for _, old in step_files(self.folder)[self.keep:]:
            old.unlink(missing_ok=True)
        return path


def place(ck: dict) -> tuple[int, int]:
    """Where a checkpoint stands in its run: (epoch, samples trained in it)."""
    partial = ck.get("in_epoch")
    if partial:
        return int(partial["epoch"]), int(partial["ranks"][0]["samples"])
    return int(ck["epoch"]) + 1, 0


def newest_checkpoint(folder: str | Path, *, require: tuple[str, ...]) -> tuple[Path | None, dict | None, list[str]]:
    """The newest readable checkpoint in ``folder``: (path, checkpoint, lines saying which
    files were unreadable and passed over); (None, None, lines) when there is none."""
    folder = Path(folder)
    candidates: list[tuple[tuple[int, int], Path, dict | None]] = [(k, p, None) for k, p in step_files(folder)]
    lines: list[str] = []
    last = folder / "last.pt"
    if last.is_file():
        try:
            last_ck = read_checkpoint(last, require=require)
            candidates.append((place(last_ck), last, last_ck))
        except CheckpointError as e:
            lines.append(f"{e}: passed over")
    candidates.sort(key=lambda c: c[0], reverse=True)
    for i, (_, path, ck) in enumerate(candidates):
        if ck is None:
            try:
                ck = read_checkpoint(path, require=require)
            except CheckpointError as e:
                later = f"falling back to {candidates[i + 1][1].name}" if i + 1 < len(candidates) else \
                    "no older checkpoint"
                lines.append(f"{e}: {later}")
                continue
        return path, ck, lines
    return None, None, lines
