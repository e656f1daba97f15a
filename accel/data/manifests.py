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

import csv
import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..io.frames import FRAME_EXTENSIONS

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


class VideoItem(NamedTuple):
    path: str
    label: int


@dataclass
class Manifest:
    """The samples of one split and the class names their labels index."""

    items: list[VideoItem]
    classes: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()

    def subset(self, positions: Sequence[int]) -> "Manifest":
        return Manifest([self.items[i] for i in positions], self.classes, self.source)


class ManifestError(ValueError):
    """A dataset layout that cannot be used; the message names the place and the problem."""


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
def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows; encoding and syntax problems name the line."""
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ManifestError(f"{csv_path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                            "save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except csv.Error as e:
        raise ManifestError(f"{csv_path}:{reader.line_num}: not a readable CSV ({e})") from None
    if not header:
        raise ManifestError(f"{csv_path}: empty file (expected a header such as path,label)")
    return [h.strip() for h in header], rows


def _find_column(header: list[str], given: str | None, names: Sequence[str], what: str,
                 flag: str, csv_path: Path) -> int:
    lower = [h.lower() for h in header]
    if given is not None:
        if given.lower() not in lower:
            raise ManifestError(f"{csv_path}: no column {given!r} ({flag}); the header is {header}")
        return lower.index(given.lower())
    for name in names:
        if name in lower:
            return lower.index(name)
    raise ManifestError(f"{csv_path}: no {what} column (looked for {', '.join(names[:6])}); the header "
                        f"is {header}; name it with {flag}")


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


def csv_manifest(csv_path: str | Path, split: str | None = None, *,
                 classes: Sequence[str] | None = None, root: str | Path | None = None,
                 path_column: str | None = None, label_column: str | None = None) -> Manifest:
    """Rows with a path and a label column (found by name, or named), optionally a ``split``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: no such file")
    header, rows = _read_csv_rows(csv_path)
    pcol = _find_column(header, path_column, PATH_COLUMNS, "path", "--path_column", csv_path)
    lcol = _find_column(header, label_column, LABEL_COLUMNS, "label", "--label_column", csv_path)
    if split is not None:
        by_split = _rows_by_split(csv_path, header, rows)
        if by_split is None:
            raise ManifestError(f"{csv_path}: split {split!r} asked for but the CSV has no split column")
        rows = by_split[split]
        if not rows:
            counts = {s: len(r) for s, r in by_split.items()}
            raise ManifestError(f"{csv_path}: no rows with split {split!r} ({describe_splits(counts)})")
    if not rows:
        raise ManifestError(f"{csv_path}: has a header but no rows")
    paths, labels = [], []
    for line, row in rows:
        for col in (pcol, lcol):
            if col >= len(row) or not row[col].strip():
                raise ManifestError(f"{csv_path}:{line}: no {header[col]!r} value in this row")
        lbl = row[lcol].strip()
        if _NUMBERISH.fullmatch(lbl) and not _CLASS_ID.fullmatch(lbl):
            raise ManifestError(f"{csv_path}:{line}: label {lbl!r} is neither a class name nor a "
                                f"class id (an integer in [0, {MAX_CLASS_ID}))")
        paths.append(row[pcol].strip())
        labels.append(lbl)
    labels = [_canonical(x) for x in labels]
    classes = list(classes) if classes is not None else _classes_from_labels(labels)
    index = {name: i for i, name in enumerate(classes)}
    base = Path(root) if root is not None else csv_path.parent
    sequences = base / "sequences" if (base / "sequences").is_dir() else None
    items = []
    for (line, _), text, lbl in zip(rows, paths, labels):
        label = index.get(lbl)
        if label is None and lbl.isdigit() and int(lbl) < len(classes):
            label = int(lbl)  # a class id into given named classes (train read from folders)
        if label is None:
            shown = classes if len(classes) <= 10 else classes[:10] + ["..."]
            raise ManifestError(f"{csv_path}:{line}: label {lbl!r} is not one of the classes {shown}")
        items.append(VideoItem(_resolve(base, text, sequences), label))
    return Manifest(items, classes, str(csv_path))


def _rows_by_split(csv_path: Path, header: list[str], rows: list[tuple[int, list[str]]]
                   ) -> dict[str, list[tuple[int, list[str]]]] | None:
    """The rows of each split when the CSV has a ``split`` column, else None. Each value is
    read by :data:`SPLIT_NAMES` in any case (``Training``, ``dev``...); a value that names
    no split (or none) stops with the file, the line and the values found, so that rows
    of one split are never read as another's, nor all of them as training data."""
    names = [h.lower() for h in header]
    if "split" not in names:
        return None
    col = names.index("split")
    by_split: dict[str, list[tuple[int, list[str]]]] = {s: [] for s in SPLITS}
    unknown: dict[str, int] = {}
    for line, row in rows:
        value = row[col].strip() if col < len(row) else ""
        split = _SPLIT_OF.get(value.lower())
        if split is None:
            unknown.setdefault(value, line)
        else:
            by_split[split].append((line, row))
    if unknown:
        value, line = next(iter(unknown.items()))
        values = sorted({r[col].strip() for _, r in rows if col < len(r)})
        raise ManifestError(
            f"{csv_path}:{line}: split {value!r} is not a split name (values found: {values}; "
            "accepted: " + "; ".join(f"{s}: {'/'.join(n)}" for s, n in SPLIT_NAMES.items()) + ")")
    return by_split


def describe_splits(counts: dict[str, int]) -> str:
    """``"found 12 val, 3 test"``: the rows per split of :func:`csv_splits`."""
    return "found " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no rows")


def csv_splits(csv_path: Path) -> dict[str, int] | None:
    """Rows per split (``{"train": 80, "val": 10, "test": 10}``) of a CSV with a ``split``
    column, or None when it has none; a value that names no split raises ManifestError."""
    header, rows = _read_csv_rows(csv_path)
    by_split = _rows_by_split(csv_path, header, rows)
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
    keep, held = [], []
    labels = np.asarray(manifest.labels)
    for c in range(len(manifest.classes)):
        pos = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(fraction * len(pos)))) if len(pos) > 1 else 0
        held.extend(pos[:n].tolist())
        keep.extend(pos[n:].tolist())
    return manifest.subset(sorted(keep)), manifest.subset(sorted(held))


# --------------------------------------------------------------------------- file checks
def drop_missing(manifest: Manifest) -> tuple[Manifest, list[str]]:
    """The manifest without the listed files that do not exist, and those paths."""
    keep, missing = [], []
    for i, item in enumerate(manifest.items):
        if os.path.exists(item.path):
            keep.append(i)
        else:
            missing.append(item.path)
    return manifest.subset(keep), missing


def check_present(manifest: Manifest, *, what: str = "", strict: bool = False
                  ) -> tuple[Manifest, list[tuple[str, str]], str | None]:
    """Drop the listed files that do not exist, before any decoding.

    Returns the manifest of those present, ``(path, "missing (no such file)")`` for the
    others, and a warning line naming them (None when all are there). None present, or any
    missing with ``strict`` (``--on_error raise``), is a one-line :class:`ManifestError`.
    ``what`` prefixes the messages (a split name).
    """
    present, gone = drop_missing(manifest)
    if not gone:
        return manifest, [], None
    prefix = f"{what}: " if what else ""
    hint = (" (CSV paths are relative to the CSV's folder, or to --video_root)"
            if manifest.source.lower().endswith(".csv") else "")
    if not len(present):
        raise ManifestError(f"{prefix}none of the {len(manifest)} files listed in {manifest.source} exist "
                            f"({first_few(gone)}){hint}")
    if strict:
        raise ManifestError(f"{prefix}{len(gone)} of the {len(manifest)} files listed in {manifest.source} "
                            f"do not exist ({first_few(gone)}){hint}")
    warning = (f"warning: {prefix}{len(gone)} of the {len(manifest)} files listed in {manifest.source} do "
               f"not exist and are skipped: {first_few(gone)}{hint}")
    return present, [(p, "missing (no such file)") for p in gone], warning


def first_few(paths: Sequence[str], n: int = 3) -> str:
    """'a, b, c and 7 more' (for one-line reports)."""
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


# --------------------------------------------------------------------------- skip reasons
_CPP_LOCATION = re.compile(r"[\w./\\-]+\.(?:cpp|cc|cxx|cu|h|hpp):\d+,?\s*")
_MAGIC_MP4 = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _has_container_signature(head: bytes) -> bool:
    return (head[4:8] in _MAGIC_MP4 or head.startswith(b"\x1a\x45\xdf\xa3")  # mp4/mov, mkv/webm
            or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
            or head.startswith(b"\x00\x00\x01\xba") or head[:1] == b"\x47")   # MPEG-PS, MPEG-TS


def _has_video_stream(path: str) -> bool | None:
    """PyAV's answer where PyAV is installed and the file opens, else None (unknown)."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as c:
            return bool(c.streams.video)
    except Exception:  # noqa: BLE001 - any failure means "cannot tell"
        return None


def explain_skip(path: str, reason: str) -> str:
    """A decoder's reason for a skipped file as one the user can act on: missing, empty,
    not a video, no video stream, truncated or corrupt, timed out; no C++ source paths."""
    detail = " ".join(_CPP_LOCATION.sub("", reason).split())
    if os.path.isdir(path):
        return f"unreadable frame folder ({detail})"
    if not os.path.exists(path):
        return "missing (no such file)"
    size = os.path.getsize(path)
    if size == 0:
        return "empty file (0 bytes)"
    if "longer than" in reason:
        return f"timed out ({detail})"
    with open(path, "rb") as f:
        head = f.read(16)
    if not _has_container_signature(head):
        return f"not a video (no video container signature; the file starts with {head[:12]!r})"
    has_video = _has_video_stream(path)
    if has_video is False or "no video stream" in reason or "video stream is unknown" in reason:
        return "no video stream (an audio-only or data file)"
    return f"truncated or corrupt ({size} bytes; {detail})"


def skipped_summary(skipped: Sequence[Sequence[str]], where: str, n: int = 3) -> list[str]:
    """Console lines for the skipped files: a count, the first few with reasons, where the rest is."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} (full list: {where}):"]
    lines += [f"  {path}: {reason}" for path, reason in list(skipped)[:n]]
    if len(skipped) > n:
        lines.append(f"  ... and {len(skipped) - n} more")
    return lines
