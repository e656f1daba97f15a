"""What to prepare: one :class:`Job` per video file or frame folder that SRC's manifest lists."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..data.manifests import SPLITS, ManifestError, load_manifest


@dataclass(frozen=True)
class Job:
    src: str
    dst: str
    rel: str  # the output's path relative to DST, POSIX style: the report's and record's key

    @property
    def is_frames(self) -> bool:
        return Path(self.src).is_dir()


@dataclass
class Plan:
    jobs: list[Job]
    csv_out: Path | None = None        # the rewritten CSV, when SRC is one
    csv_rows: list[dict] = field(default_factory=list)
    csv_fields: list[str] = field(default_factory=list)
    rel_of_row: list[str] = field(default_factory=list)


def _rel_for_csv_path(path: Path, root: Path) -> str:
    """Where a CSV row's file goes under DST: its path below the CSV's folder, or, for a file
    elsewhere, ``external/<hash of its folder>/<name>`` (unique, stable between runs)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        digest = hashlib.blake2b(str(path.resolve().parent).encode(), digest_size=4).hexdigest()
        return f"external/{digest}/{path.name}"


def plan_csv(src: Path, dst: Path, splits: Sequence[str] | None) -> Plan:
    for split in splits or [None]:
        load_manifest(src, split)  # the same validation (and error messages) as every loader
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    if splits:
        rows = [r for r in rows if r.get("split") in splits]
    plan = Plan([], csv_out=dst / src.name, csv_rows=rows, csv_fields=fields)
    seen: dict[str, Job] = {}
    for row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else src.parent / path
        rel = _rel_for_csv_path(path, src.parent)
        plan.rel_of_row.append(rel)
        if rel not in seen:  # a file listed twice (two labels, two splits) is prepared once
            seen[rel] = Job(str(path), str(dst / rel), rel)
    plan.jobs = list(seen.values())
    return plan


def plan_folders(src: Path, dst: Path, splits: Sequence[str] | None) -> Plan:
    present = [s for s in SPLITS if (src / s).is_dir()]
    if splits:
        missing = [s for s in splits if s not in present]
        if missing:
            raise ManifestError(f"{src}: no split folders {missing} (found: {present or 'none'})")
        present = list(splits)
    manifests = [load_manifest(src, s) for s in present] if present else [load_manifest(src)]
    jobs = []
    for manifest in manifests:
        for item in manifest.items:
            rel = Path(item.path).relative_to(src).as_posix()
            jobs.append(Job(item.path, str(dst / rel), rel))
    return Plan(jobs)


def make_plan(src: Path, dst: Path, splits: Sequence[str] | None = None) -> Plan:
    """What to prepare: one job per video file or frame folder that SRC's manifest lists."""
    if not src.exists():
        raise ManifestError(f"{src}: no such file or folder")
    if src.resolve() == dst.resolve():
        raise ManifestError(f"{dst}: DST must differ from SRC")
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        raise ManifestError(f"{dst}: DST must not be inside SRC (its outputs would join SRC's manifest)")
    if src.suffix.lower() == ".csv":
        return plan_csv(src, dst, splits)
    return plan_folders(src, dst, splits)
