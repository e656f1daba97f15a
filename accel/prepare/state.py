"""Resuming: ``DST/.prepare/done.jsonl`` records each finished output with its source's size and
mtime and the encoding settings; an output is kept while all three are unchanged."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .options import PrepareOptions
from .plan import Job

STATE_DIR = ".prepare"


def source_key(path: str | Path) -> dict:
    """What says a source is unchanged: size and mtime (of every file, for a frame folder)."""
    p = Path(path)
    stats = [f.stat() for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [p.stat()]
    return {"size": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            "files": len(stats)}


class DoneRecord:
    """``DST/.prepare/done.jsonl``: one line per finished output, appended as it finishes
    (the last line of a killed run may be cut: unreadable lines are ignored)."""

    def __init__(self, dst: Path):
        self.path = dst / STATE_DIR / "done.jsonl"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["path"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def is_done(self, job: Job, options: PrepareOptions) -> dict | None:
        entry = self.entries.get(job.rel)
        if entry is None or not Path(job.src).exists() or not Path(job.dst).exists():
            return None
        if entry.get("source") != source_key(job.src):
            return None
        if not job.is_frames and (entry.get("options") != options.encoding()
                                  or Path(job.dst).stat().st_size != entry.get("output_bytes")):
            return None
        return entry

    def add(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["path"]] = entry
