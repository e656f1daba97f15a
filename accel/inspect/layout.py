"""Which files a dataset holds, with their split and label, read the way the loaders read it.

Every layout of :mod:`accel.data.manifests` (class folders, per-split folders or CSVs, one CSV
with a ``split`` column, frame folders): each split present is listed; a dataset without
splits is one split, ``all``. Labels are kept as class names, so splits that list different
classes are still counted apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.manifests import SPLITS, CsvOptions, ManifestError, describe_contents, load_manifest
from ..data.splits import has_split, split_manifest

NO_SPLIT = "all"


@dataclass(frozen=True)
class Entry:
    path: str
    split: str
    label: str


def list_entries(data: str | Path, options: CsvOptions = CsvOptions()) -> list[Entry]:
    """Every sample of ``data`` as (path, split, label); raises ManifestError with one line."""
    data = Path(data)
    if not data.exists():
        raise ManifestError(f"{data}: no such file or folder")
    if data.is_dir() and not any(data.iterdir()):
        raise ManifestError(f"{data}: empty folder (expected class folders, split folders or a CSV)")
    splits = [s for s in SPLITS if has_split(data, s)]
    manifests = [(s, split_manifest(data, s, None, options)) for s in splits]
    if not manifests:
        try:
            manifests = [(NO_SPLIT, load_manifest(data, options=options))]
        except ManifestError as e:
            if data.suffix.lower() == ".csv":
                raise
            raise ManifestError(f"{data}: no dataset layout found ({e}); it holds "
                                f"{describe_contents(data)}") from None
    entries = [Entry(item.path, split, m.classes[item.label])
               for split, m in manifests for item in m.items]
    if not entries:
        raise ManifestError(f"{data}: no videos or frame folders listed")
    return entries
