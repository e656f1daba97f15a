"""Train / val / test manifests of a dataset folder or CSV (:func:`load_splits`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .manifests import (
    CsvOptions,
    Manifest,
    ManifestError,
    csv_has_split,
    csv_splits,
    describe_splits,
    expected_layout,
    folder_manifest,
    near_miss_splits,
    read_source,
    split_source,
    stratified_split,
)


@dataclass
class Splits:
    train: Manifest
    val: Manifest
    test: Manifest | None
    notes: list[str]

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def has_split(source: Path, split: str) -> bool:
    """Whether a CSV has rows of ``split``, or a dataset folder a ``split`` folder or CSV."""
    if source.suffix.lower() == ".csv":
        return csv_has_split(source, split)
    return split_source(source, split) is not None


def split_manifest(source: Path, split: str | None, classes, options: CsvOptions) -> Manifest:
    """``split`` of a CSV or dataset folder; without ``split``, the whole CSV or class folders."""
    if split is not None and source.suffix.lower() != ".csv":
        found = split_source(source, split)
        if found is not None:
            return read_source(found, classes=classes, options=options)
    return read_source(source, split, classes=classes, options=options)


def load_other(source: str | Path, split: str, classes, options: CsvOptions = CsvOptions(),
               option: str = "test_dir") -> Manifest:
    """A separately given split (``val_dir``, ``test_dir``: ``option``, which its errors name):
    a dataset folder or CSV with that split, else a folder of class folders or a whole CSV."""
    source = Path(source)
    if not source.exists():
        raise ManifestError(f"{{option}} {source}: no such file or folder", option=option)
    counts = csv_splits(source) if source.suffix.lower() == ".csv" else None
    present = has_split(source, split)
    if counts is not None and not present:
        raise ManifestError(f"{{option}} {source}: no rows with split {split!r} in its split column "
                            f"({describe_splits(counts)})", option=option)
    return split_manifest(source, split if present else None, classes, options)


def _given_or_own(data_dir: Path, split: str, given: str | Path | None, option: str, classes,
                  options: CsvOptions) -> Manifest | None:
    """``split`` from its own option's source when given, else from ``data_dir``, else None."""
    if given is not None:
        return load_other(given, split, classes, options, option)
    if has_split(data_dir, split):
        return split_manifest(data_dir, split, classes, options)
    return None


def load_splits(data_dir: str | Path, test_dir: str | Path | None = None, *,
                val_dir: str | Path | None = None, val_fraction: float = 0.2, seed: int = 0,
                options: CsvOptions = CsvOptions()) -> Splits:
    """Train / val / test manifests from the layouts of :mod:`accel.data.manifests`.

    ``data_dir``: a folder with ``train/`` (and ``val/`` or ``validation/``, ``test/``; each a
    class-folder tree or holding its CSV), per-split CSVs ``train.csv`` / ``val.csv`` /
    ``test.csv``, a folder of class folders (all training data), or a CSV with an optional
    ``split`` column. Without a validation split (and no ``val_dir``), ``val_fraction`` of
    every class is split off the training data (stratified, seeded). ``test_dir``: default
    the ``test`` split of ``data_dir`` when it has one, else no test set.
    Raises :class:`ManifestError` with a one-line reason (its ``option``: the parameter at fault).
    """
    data_dir = Path(data_dir)
    notes: list[str] = []
    if not data_dir.exists():
        raise ManifestError(f"{{option}} {data_dir}: no such file or folder", option="data_dir")
    is_csv = data_dir.suffix.lower() == ".csv"
    for name in near_miss_splits(data_dir):
        notes.append(f"{data_dir / name}/ is not read as a split (name it train, val, validation or test)")
    if has_split(data_dir, "train"):
        train = split_manifest(data_dir, "train", None, options)
    elif not is_csv and (has_split(data_dir, "val") or has_split(data_dir, "test")):
        raise ManifestError(f"{data_dir}: has a val or test split but no train/ folder or train.csv")
    elif is_csv and (counts := csv_splits(data_dir)) is not None:  # never train on val and test rows
        raise ManifestError(f"{data_dir}: no rows with split 'train' in its split column "
                            f"({describe_splits(counts)})")
    elif is_csv:
        train = read_source(data_dir, options=options)
    else:
        try:
            train = folder_manifest(data_dir)
        except ManifestError:
            raise ManifestError(expected_layout(data_dir)) from None
    if len(train.classes) < 2:
        raise ManifestError(f"{train.source}: only one class ({train.classes[0]!r}); classification "
                            f"needs two or more. " + expected_layout(data_dir).split(": ", 1)[1])
    missing = [c for c, n in zip(train.classes, train.class_counts()) if not n]
    if missing:
        raise ManifestError(f"{train.source}: no training samples for classes {missing}")
    val = _given_or_own(data_dir, "val", val_dir, "val_dir", train.classes, options)
    if val is None:
        if not 0 < val_fraction < 1:
            raise ManifestError(f"{data_dir} has no val split and {{option}} {val_fraction} "
                                "is not in (0, 1)", option="val_fraction")
        train, val = stratified_split(train, val_fraction, seed=seed)
        notes.append(f"no val split in {data_dir}: held out {len(val)} of the training "
                     f"samples (stratified, {val_fraction:.0%})")
        if len(val) == 0:
            raise ManifestError(f"{data_dir}: too few training samples to hold out a validation set")
    test = _given_or_own(data_dir, "test", test_dir, "test_dir", train.classes, options)
    if test is None:
        notes.append(f"no test split in {data_dir} and no test set given: no final test")
    return Splits(train, val, test, notes)
