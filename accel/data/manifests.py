"""Manifests: which files, which labels, for each split (re-exported by :mod:`accel.data.dataset`).

Layouts read as they are (the seed projects' own):
  * class folders of videos: ``root/{train,val|validation,test}/{class}/*.mp4`` (or ``root/{class}/*``);
  * frame folders: ``root/{split}/{class}/{sample}/*.jpg``;
  * CSV manifests: one CSV with an optional ``split`` column, per-split CSVs beside each other
    (``train.csv``, ``val.csv`` / ``validation.csv``, ``test.csv``), or one CSV inside each split
    folder (``Data/train/train.csv`` next to ``Data/train/sequences/seq_x/*.jpg``).
    Split names have their usual synonyms (:data:`SPLIT_NAMES`: ``training``, ``dev``,
    ``testing``...), in a ``split`` column in any case; a value that names no split stops.
    The path column is found by name (``path, filename, file, video, clip, sequence``...) and
    the label column too (``label, class, target``), or named with ``path_column`` /
    ``label_column``; paths are relative to ``video_root``, else to the CSV's folder (a
    ``sequences/`` folder there is looked into as well).
Classes are the sorted folder names or CSV labels unless given; integer labels below
:data:`MAX_CLASS_ID` are class ids, other labels are names.

Every problem is a :class:`ManifestError` with one line naming the file (and row).
"""
from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence, overload

import numpy as np

from ..io.frames import FRAME_EXTENSIONS
from .csvtable import CsvSyntaxError, CsvTable, read_table
from .packed import pack, prefixed, take

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".vob", ".3gp", ".flv", ".wmv", ".ogv", ".y4m", ".mxf")
SPLITS = ("train", "val", "test")
# Names accepted for each split, in order of preference: split folders and per-split CSVs
# (``training/``, ``validation.csv``), and the values of a CSV's ``split`` column (in any case).
SPLIT_NAMES = {"train": ("train", "training", "trn"), "val": ("val", "validation", "valid", "dev"),
               "test": ("test", "testing", "tst")}
_SPLIT_OF = {name: split for split, names in SPLIT_NAMES.items() for name in names}
PATH_COLUMNS = ("path", "filename", "file", "video", "clip", "sequence", "video_path", "clip_path",
                "file_path", "filepath", "file_name", "video_name", "sequence_id", "seq")
LABEL_COLUMNS = ("label", "class", "target", "class_name", "category", "labels")
# Integer labels at or above this are names, not class ids (10^7 must not make 10^7 classes).
MAX_CLASS_ID = 10_000


# How os.fsdecode turns path bytes into str (non-UTF-8 bytes become lone surrogates), inlined
# for the per-row accessors.
_FS_DECODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


class VideoItem(NamedTuple):
    path: str
    label: int


class ManifestItems(Sequence[VideoItem]):
    """A manifest's rows as a read-only sequence; each access builds one :class:`VideoItem`
    (nothing per row is kept, see :class:`Manifest`)."""

    __slots__ = ("manifest",)

    def __init__(self, manifest: "Manifest") -> None:
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.manifest)

    @overload
    def __getitem__(self, index: int) -> VideoItem: ...
    @overload
    def __getitem__(self, index: slice) -> list[VideoItem]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return VideoItem(self.manifest.path(index), self.manifest.label(index))

    def __iter__(self) -> Iterator[VideoItem]:
        m, chunk = self.manifest, 4096  # a few rows' worth of Python ints at a time
        for first in range(0, len(m), chunk):
            offsets = m.path_offsets[first:first + chunk + 1].tolist()
            labels = m.label_array[first:first + chunk].tolist()
            for k, label in enumerate(labels):
                yield VideoItem(m.path_buffer[offsets[k]:offsets[k + 1]].decode(*_FS_DECODING), label)


class Manifest:
    """The samples of one split and the class names their labels index.

    Rows are compact arrays, not Python objects: the paths are one buffer of file-system
    bytes (``os.fsencode``, so non-UTF-8 names stay exact) with int64 ``path_offsets``, the
    labels one int64 array. A forked worker reading every row of a million-row manifest
    therefore copies nothing, and pickling one (spawned workers) moves three flat blocks.
    ``path(i)`` / ``label(i)`` are the cheap accessors; ``items[i]`` builds a
    :class:`VideoItem` (``.path``, ``.label``) on access.
    """

    def __init__(self, items: Iterable[VideoItem | tuple[str, int]] = (),
                 classes: Sequence[str] = (), source: str = "") -> None:
        rows = list(items)
        buffer, offsets = pack(os.fsencode(path) for path, _ in rows)
        self._set(buffer, offsets, np.array([label for _, label in rows], dtype=np.int64),
                  classes, source)

    @classmethod
    def from_arrays(cls, path_buffer: bytes, path_offsets: np.ndarray, labels: np.ndarray,
                    classes: Sequence[str], source: str = "") -> "Manifest":
        """A manifest over packed paths (see :mod:`accel.data.packed`) and int labels."""
        manifest = cls.__new__(cls)
        manifest._set(path_buffer, path_offsets, labels, classes, source)
        return manifest

    def _set(self, buffer: bytes, offsets: np.ndarray, labels: np.ndarray, classes: Sequence[str],
             source: str) -> None:
        offsets, labels = np.asarray(offsets, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        if len(offsets) != len(labels) + 1:
            raise ValueError(f"{source or 'manifest'}: {len(labels)} labels but "
                             f"{len(offsets) - 1} paths")
        offsets.flags.writeable = labels.flags.writeable = False
        self.path_buffer, self.path_offsets, self.label_array = buffer, offsets, labels
        self.classes, self.source = list(classes), source

    def __len__(self) -> int:
        return len(self.label_array)

    def path(self, index: int) -> str:
        """Row ``index``'s path (negative indices count from the end)."""
        n = len(self.label_array)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"manifest row {index} out of range ({n} rows)")
        offsets = self.path_offsets
        return self.path_buffer[offsets.item(index):offsets.item(index + 1)].decode(*_FS_DECODING)

    def label(self, index: int) -> int:
        """Row ``index``'s class id."""
        return self.label_array.item(index)

    @property
    def items(self) -> ManifestItems:
        return ManifestItems(self)

    @property
    def labels(self) -> list[int]:
        return self.label_array.tolist()

    def class_counts(self) -> list[int]:
        return np.bincount(self.label_array, minlength=len(self.classes)).tolist()

    def subset(self, positions: Sequence[int] | np.ndarray) -> "Manifest":
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        buffer, offsets = take(self.path_buffer, self.path_offsets, positions)
        return Manifest.from_arrays(buffer, offsets, self.label_array[positions], self.classes,
                                    self.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.classes == other.classes and self.source == other.source
                and self.path_buffer == other.path_buffer
                and np.array_equal(self.path_offsets, other.path_offsets)
                and np.array_equal(self.label_array, other.label_array))

    def __repr__(self) -> str:
        return f"Manifest({len(self)} rows, {len(self.classes)} classes, source={self.source!r})"


class OptionMessage:
    """A message that may concern one of the caller's options (a parameter such as
    ``path_column`` or ``test_dir``): ``option`` names it, and the text refers to it as
    ``{option}``. ``str()`` says the parameter's name; a script names its own flag with
    :meth:`naming` (``e.naming("--path_column")``)."""

    def __init__(self, text: str, *, option: str | None = None) -> None:
        self.text = text
        self.option = option
        super().__init__(self.naming(option or "the option"))  # type: ignore[call-arg]

    def naming(self, name: str) -> str:
        """The message with the option called ``name``."""
        return self.text.replace("{option}", name)

    def __reduce__(self):  # pickled whole (the fields are keyword-only)
        return _rebuild, (type(self), self.text, self.option)


def _rebuild(kind: type, text: str, option: str | None) -> OptionMessage:
    return kind(text, option=option)


class ManifestError(OptionMessage, ValueError):
    """A dataset layout that cannot be used; the message names the place and the problem."""


class MissingFilesWarning(OptionMessage, UserWarning):
    """Listed files that do not exist (returned by :func:`check_present`, not raised)."""


@dataclass(frozen=True)
class CsvOptions:
    """How CSV manifests are read: column names (None: found by name) and the video root."""

    path_column: str | None = None
    label_column: str | None = None
    video_root: str | None = None


# --------------------------------------------------------------------------- class folders
def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS


def _is_frame_folder(p: Path) -> bool:
    return p.is_dir() and any(f.suffix.lower() in FRAME_EXTENSIONS for f in p.iterdir())


def folder_manifest(root: str | Path, split: str | None = None, *,
                    classes: Sequence[str] | None = None) -> Manifest:
    """Class folders under ``root/split`` (or ``root``): videos or frame folders per class."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise ManifestError(f"{base}: no such folder")
    found = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ManifestError(f"{base}: no class folders (expected {base}/<class>/<video files>); "
                            f"found {describe_contents(base)}")
    if found == ["sequences"]:
        raise ManifestError(f"{base}: has sequences/ frame folders but no CSV with their labels "
                            f"(expected {base}/{base.name}.csv with columns sequence,label)")
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ManifestError(f"{base}: class folders {unknown} are not in the class list {classes}")
    items: list[VideoItem] = []
    for label, name in enumerate(classes):
        folder = base / name
        if not folder.is_dir():
            continue
        samples = [p for p in sorted(folder.iterdir()) if _is_video(p) or _is_frame_folder(p)]
        if not samples:
            raise ManifestError(f"{folder}: class {name!r} has no videos "
                                f"({', '.join(VIDEO_EXTENSIONS)}) or frame folders")
        items.extend(VideoItem(str(p), label) for p in samples)
    return Manifest(items, classes, str(base))


def describe_contents(folder: Path, limit: int = 6) -> str:
    """What a folder holds, for error messages: 'folders [a, b], files [x.csv]'."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        return f"nothing readable ({e.strerror})"
    dirs = [p.name for p in entries if p.is_dir()]
    files = [p.name for p in entries if not p.is_dir()]

    def few(names):
        return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    parts = ([f"folders [{few(dirs)}]"] if dirs else []) + ([f"files [{few(files)}]"] if files else [])
    return "; ".join(parts) or "nothing (empty folder)"


# --------------------------------------------------------------------------- CSV
def _read_table(csv_path: Path) -> CsvTable:
    """The CSV's header and fields; encoding and syntax problems name the line."""
    try:
        table = read_table(csv_path)
    except CsvSyntaxError as e:
        raise ManifestError(str(e)) from None
    if not table.header:
        raise ManifestError(f"{csv_path}: empty file (expected a header such as path,label)")
    return table


def _find_column(header: list[str], given: str | None, names: Sequence[str], what: str,
                 option: str, csv_path: Path) -> int:
    lower = [h.lower() for h in header]
    if given is not None:
        if given.lower() not in lower:
            raise ManifestError(f"{csv_path}: no column {given!r} ({{option}}); the header is {header}",
                                option=option)
        return lower.index(given.lower())
    for name in names:
        if name in lower:
            return lower.index(name)
    raise ManifestError(f"{csv_path}: no {what} column (looked for {', '.join(names[:6])}); the header "
                        f"is {header}; name it with {{option}}", option=option)


_CLASS_ID = re.compile(r"\d+(\.0*)?")          # 3, 03, 3.0 (pandas writes ints as floats)
_NUMBERISH = re.compile(r"[-+.\deE\s]+")      # -1, --1, 1.5, 1e3: numbers that are no class id


def _canonical(label: str) -> str:
    return str(int(float(label))) if _CLASS_ID.fullmatch(label) else label


def _classes_from_labels(labels: list[str]) -> list[str]:
    ids = [int(float(x)) for x in labels if _CLASS_ID.fullmatch(x)]
    if len(ids) == len(labels) and max(ids) < MAX_CLASS_ID:
        return [str(i) for i in range(max(ids) + 1)]
    names = set(labels)
    if len(ids) == len(labels):  # large integers: names, in numeric order
        return sorted(names, key=int)
    return sorted(names)


def _resolve(root: Path, text: str, sequences: Path | None) -> str:
    """``root/text``, or ``root/sequences/text`` when only that exists (seed 003's CSVs)."""
    if os.path.isabs(text):
        return text
    direct = os.path.join(root, text)
    if sequences is not None and not os.path.exists(direct) and os.path.exists(os.path.join(sequences, text)):
        return os.path.join(sequences, text)
    return direct


def _resolve_all(table: CsvTable, column: int, rows: np.ndarray, root: Path) -> tuple[bytes, np.ndarray]:
    """The packed paths of ``rows``: ``root/`` prepended to each relative one (vectorised),
    or looked up one by one when ``root/sequences/`` exists (see :func:`_resolve`)."""
    starts, ends = (r[rows] for r in table.ranges(column))
    if (root / "sequences").is_dir():
        return pack(os.fsencode(_resolve(root, table.data[s:e].decode("utf-8"), root / "sequences"))
                    for s, e in zip(starts.tolist(), ends.tolist()))
    relative = table.array[starts] != ord(os.sep)  # fields are non-empty (checked)
    return prefixed(table.array, starts, ends, os.fsencode(os.path.join(root, "")), relative)


def _check_values(csv_path: Path, table: CsvTable, pcol: int, lcol: int, rows: np.ndarray
                  ) -> tuple[list[str], np.ndarray]:
    """The distinct labels of ``rows`` and each row's index into them; the first row with no
    path, no label or a number that is no class id stops with its line."""
    starts, ends = table.ranges(pcol)
    values, inverse = table.unique(lcol, rows)
    bad = np.array([not v or bool(_NUMBERISH.fullmatch(v) and not _CLASS_ID.fullmatch(v))
                    for v in values], dtype=bool)
    no_path = ends[rows] == starts[rows]
    problem = no_path | bad[inverse]
    if problem.any():
        k = int(np.argmax(problem))
        line, value = table.lines[rows[k]], values[inverse[k]]
        if no_path[k] or not value:
            col = pcol if no_path[k] else lcol
            raise ManifestError(f"{csv_path}:{line}: no {table.header[col]!r} value in this row")
        raise ManifestError(f"{csv_path}:{line}: label {value!r} is neither a class name nor a "
                            f"class id (an integer in [0, {MAX_CLASS_ID}))")
    return values, inverse


def _class_ids(csv_path: Path, table: CsvTable, rows: np.ndarray, values: list[str],
               inverse: np.ndarray, classes: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """The class list (given, or from the labels) and each row's class id."""
    canonical = [_canonical(v) for v in values]
    classes = list(classes) if classes is not None else _classes_from_labels(canonical)
    index = {name: i for i, name in enumerate(classes)}
    ids = []
    for lbl in canonical:
        label = index.get(lbl)
        if label is None and lbl.isdigit() and int(lbl) < len(classes):
            label = int(lbl)  # a class id into given named classes (train read from folders)
        ids.append(-1 if label is None else label)
    labels = np.array(ids, dtype=np.int64)[inverse]
    if (labels < 0).any():
        k = int(np.argmax(labels < 0))
        shown = classes if len(classes) <= 10 else classes[:10] + ["..."]
        raise ManifestError(f"{csv_path}:{table.lines[rows[k]]}: label {canonical[inverse[k]]!r} "
                            f"is not one of the classes {shown}")
    return classes, labels


def csv_manifest(csv_path: str | Path, split: str | None = None, *,
                 classes: Sequence[str] | None = None, root: str | Path | None = None,
                 path_column: str | None = None, label_column: str | None = None) -> Manifest:
    """Rows with a path and a label column (found by name, or named), optionally a ``split``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: no such file")
    table = _read_table(csv_path)
    header = table.header
    pcol = _find_column(header, path_column, PATH_COLUMNS, "path", "path_column", csv_path)
    lcol = _find_column(header, label_column, LABEL_COLUMNS, "label", "label_column", csv_path)
    rows = np.arange(len(table), dtype=np.int64)
    if split is not None:
        by_split = _rows_by_split(csv_path, table)
        if by_split is None:
            raise ManifestError(f"{csv_path}: split {split!r} asked for but the CSV has no split column")
        rows = by_split[split]
        if not len(rows):
            counts = {s: len(r) for s, r in by_split.items()}
            raise ManifestError(f"{csv_path}: no rows with split {split!r} ({describe_splits(counts)})")
    if not len(rows):
        raise ManifestError(f"{csv_path}: has a header but no rows")
    values, inverse = _check_values(csv_path, table, pcol, lcol, rows)
    classes, labels = _class_ids(csv_path, table, rows, values, inverse, classes)
    buffer, offsets = _resolve_all(table, pcol, rows, Path(root) if root is not None else csv_path.parent)
    return Manifest.from_arrays(buffer, offsets, labels, classes, str(csv_path))


def _rows_by_split(csv_path: Path, table: CsvTable) -> dict[str, np.ndarray] | None:
    """The rows of each split when the CSV has a ``split`` column, else None. Each value is
    read by :data:`SPLIT_NAMES` in any case (``Training``, ``dev``...); a value that names
    no split (or none) stops with the file, the line and the values found, so that rows
    of one split are never read as another's, nor all of them as training data."""
    names = [h.lower() for h in table.header]
    if "split" not in names:
        return None
    values, inverse = table.unique(names.index("split"))
    split_of = np.array([SPLITS.index(_SPLIT_OF[v.lower()]) if v.lower() in _SPLIT_OF else -1
                         for v in values], dtype=np.int64)[inverse]
    if (split_of < 0).any():
        k = int(np.argmax(split_of < 0))
        raise ManifestError(
            f"{csv_path}:{table.lines[k]}: split {values[inverse[k]]!r} is not a split name (values "
            f"found: {sorted(values)}; accepted: "
            + "; ".join(f"{s}: {'/'.join(n)}" for s, n in SPLIT_NAMES.items()) + ")")
    return {s: np.flatnonzero(split_of == i) for i, s in enumerate(SPLITS)}


def describe_splits(counts: dict[str, int]) -> str:
    """``"found 12 val, 3 test"``: the rows per split of :func:`csv_splits`."""
    return "found " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no rows")


def csv_splits(csv_path: Path) -> dict[str, int] | None:
    """Rows per split (``{"train": 80, "val": 10, "test": 10}``) of a CSV with a ``split``
    column, or None when it has none; a value that names no split raises ManifestError."""
    by_split = _rows_by_split(csv_path, _read_table(csv_path))
    return None if by_split is None else {s: len(r) for s, r in by_split.items()}


def csv_has_split(csv_path: Path, split: str) -> bool:
    """Whether a CSV has a ``split`` column with rows of ``split`` (see :data:`SPLIT_NAMES`)."""
    return bool((csv_splits(csv_path) or {}).get(split))


def load_manifest(source: str | Path, split: str | None = None, *,
                  classes: Sequence[str] | None = None, options: CsvOptions = CsvOptions()) -> Manifest:
    """A CSV file (rows of ``split`` when given), or a dataset folder's ``split`` (see
    :func:`split_source`), or a folder of class folders."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_source(source, split, classes=classes, options=options)
    if split is not None:
        found = split_source(source, split)
        if found is None:
            raise ManifestError(f"{source}: no {split} split (expected {source}/{split}/ or "
                                f"{source}/{split}.csv); found {describe_contents(source)}")
        return read_source(found, None, classes=classes, options=options)
    return folder_manifest(source, classes=classes)


# --------------------------------------------------------------------------- split discovery
def _csv_in(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / f"{name}.csv").is_file():
            return folder / f"{name}.csv"
    csvs = sorted(folder.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def split_source(data_dir: Path, split: str) -> Path | None:
    """Where ``split`` lives in a dataset folder: ``data_dir/{name}/`` (its CSV when it has
    one, else its class folders) or ``data_dir/{name}.csv``, for each accepted name."""
    names = SPLIT_NAMES[split]
    for name in names:
        folder = data_dir / name
        if folder.is_dir():
            return _csv_in(folder, (name, *names)) or folder
    for name in names:
        if (data_dir / f"{name}.csv").is_file():
            return data_dir / f"{name}.csv"
    return None


def read_source(source: Path, split: str | None = None, *, classes: Sequence[str] | None = None,
                options: CsvOptions = CsvOptions()) -> Manifest:
    """A CSV (paths relative to ``options.video_root`` or its folder) or a class-folder tree."""
    if source.suffix.lower() == ".csv":
        return csv_manifest(source, split, classes=classes, root=options.video_root,
                            path_column=options.path_column, label_column=options.label_column)
    return folder_manifest(source, classes=classes)


def near_miss_splits(data_dir: Path) -> list[str]:
    """Folders whose names look like a split but are not one ('validatioon', 'Val')."""
    if not data_dir.is_dir():
        return []
    known = {n for names in SPLIT_NAMES.values() for n in names}
    out = []
    for p in sorted(data_dir.iterdir()):
        if p.is_dir() and p.name not in known and difflib.get_close_matches(
                p.name.lower(), sorted(known), n=1, cutoff=0.75):
            out.append(p.name)
    return out


def expected_layout(data_dir: Path) -> str:
    return (f"{data_dir}: expected train/ (and val/ or validation/, test/) split folders, "
            f"train.csv (val.csv, test.csv), or one folder per class; found {describe_contents(data_dir)}")


def stratified_split(manifest: Manifest, fraction: float, *, seed: int = 0) -> tuple[Manifest, Manifest]:
    """Split off ``fraction`` of every class (at least one sample each) as a second manifest."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    labels = manifest.label_array
    for c in range(len(manifest.classes)):
        pos = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(fraction * len(pos)))) if len(pos) > 1 else 0
        held.append(pos[:n])
        keep.append(pos[n:])
    return manifest.subset(np.sort(np.concatenate(keep))), manifest.subset(np.sort(np.concatenate(held)))


# --------------------------------------------------------------------------- file checks
def drop_missing(manifest: Manifest) -> tuple[Manifest, list[str]]:
    """The manifest without the listed files that do not exist, and those paths."""
    present = np.fromiter((os.path.exists(item.path) for item in manifest.items), dtype=bool,
                          count=len(manifest))
    missing = [manifest.path(i) for i in np.flatnonzero(~present).tolist()]
    return (manifest if present.all() else manifest.subset(np.flatnonzero(present))), missing


def check_present(manifest: Manifest, *, what: str = "", strict: bool = False
                  ) -> tuple[Manifest, list[tuple[str, str]], MissingFilesWarning | None]:
    """Drop the listed files that do not exist, before any decoding.

    Returns the manifest of those present, ``(path, "missing (no such file)")`` for the
    others, and a warning naming them (None when all are there; its ``str()`` is the line).
    None present, or any missing with ``strict`` (``on_error="raise"``), is a one-line
    :class:`ManifestError`. ``what`` prefixes the messages (a split name). Both point a CSV's
    paths to the ``video_root`` option.
    """
    present, gone = drop_missing(manifest)
    if not gone:
        return manifest, [], None
    prefix = f"{what}: " if what else ""
    is_csv = manifest.source.lower().endswith(".csv")
    hint = " (CSV paths are relative to the CSV's folder, or to {option})" if is_csv else ""
    option = "video_root" if is_csv else None
    if not len(present):
        raise ManifestError(f"{prefix}none of the {len(manifest)} files listed in {manifest.source} exist "
                            f"({first_few(gone)}){hint}", option=option)
    if strict:
        raise ManifestError(f"{prefix}{len(gone)} of the {len(manifest)} files listed in {manifest.source} "
                            f"do not exist ({first_few(gone)}){hint}", option=option)
    warning = MissingFilesWarning(f"warning: {prefix}{len(gone)} of the {len(manifest)} files listed in "
                                  f"{manifest.source} do not exist and are skipped: {first_few(gone)}{hint}",
                                  option=option)
    return present, [(p, "missing (no such file)") for p in gone], warning


def first_few(paths: Sequence[str], n: int = 3) -> str:
    """'a, b, c and 7 more' (for one-line reports)."""
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def skipped_summary(skipped: Sequence[Sequence[str]], where: str, n: int = 3) -> list[str]:
    """Console lines for the skipped files: a count, the first few with reasons, where the rest is."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} (full list: {where}):"]
    lines += [f"  {path}: {reason}" for path, reason in list(skipped)[:n]]
    if len(skipped) > n:
        lines.append(f"  ... and {len(skipped) - n} more")
    return lines
