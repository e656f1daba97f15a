"""The stream index, built once per file: kept in each process (bounded) and on disk.

A demux scan reads every packet of a file, so scanning on every open makes a clip from an
hour-long recording cost what the whole recording costs. :func:`cached_index` builds a file's
:class:`~accel.io.index.StreamIndex` once and keeps it:

* **in this process**: the last :data:`MEMORY_ENTRIES` indexes, keyed by path, stream, size and
  modification time (each DataLoader worker has its own);
* **on disk**: one small file per video and stream in the index folder (:func:`index_dir`),
  shared by workers, epochs and runs: a JSON header (the file's path, size and mtime, the
  stream's scalars) and the per-frame arrays as raw little-endian int64, memory-mapped on load.

Rules:

* an entry is served only if the video's size and mtime (ns) still match: a changed file is
  re-indexed, never served stale;
* an entry that does not parse (truncated, foreign, another format version) is ignored with one
  warning naming it, and rebuilt;
* entries are written to a temporary name and renamed into place, so two processes building the
  same entry at once both succeed and a reader never sees half a file;
* a folder that cannot be written (read-only home, full disk) keeps the index in memory only,
  with one warning per process.

The folder is ``$VIDACCEL_INDEX_DIR`` if set, else ``$XDG_CACHE_HOME/vidaccel/index`` (default
``~/.cache/vidaccel/index``), outside the dataset so a read-only dataset works;
``VIDACCEL_INDEX_DIR=off`` keeps indexes in memory only. ``python -m accel.index`` builds a
dataset's entries ahead of time, lists and clears them.
"""
from __future__ import annotations

import fractions
import hashlib
import json
import mmap
import os
import struct
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from .index import StreamIndex, VideoDecodeError, scan_stream

FORMAT = "vidaccel-index-2"  # bump when StreamIndex's meaning changes: old entries rebuild
MAGIC = b"VAIDX\n"
MEMORY_ENTRIES = 512
ARRAYS = ("keys", "durations", "keyframes")
SUFFIX = ".vaidx"

_memory: OrderedDict[tuple, StreamIndex] = OrderedDict()  # this process's recent indexes
_warned: set[str] = set()  # folders already warned about, once per process


def index_dir() -> Path | None:
    """Where index entries live (see the module docstring); None: memory only."""
    configured = os.environ.get("VIDACCEL_INDEX_DIR", "").strip()
    if configured.lower() in ("off", "none", "0"):
        return None
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vidaccel" / "index"


def file_key(path: str) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns): what an entry is valid for."""
    st = os.stat(os.fsencode(path))
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def entry_path(folder: Path, abspath: str, stream: int | None) -> Path:
    digest = hashlib.sha1(os.fsencode(abspath) + f"\0{stream}".encode()).hexdigest()
    return folder / digest[:2] / f"{digest[2:]}{SUFFIX}"


def cached_index(path: str, stream: int | None, build: Callable[[], StreamIndex]) -> StreamIndex:
    """The index of ``path``'s stream: from memory, from disk, or ``build()`` (then stored)."""
    key = (*file_key(path), stream)
    found = _memory.get(key)
    if found is not None:
        _memory.move_to_end(key)
        return found
    folder = index_dir()
    entry = entry_path(folder, key[0], stream) if folder is not None else None
    index = read_entry(entry, key) if entry is not None else None
    if index is None:
        index = build()
        if entry is not None:
            write_entry(entry, key, index)
    _memory[key] = index
    if len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return index


def forget_memory() -> None:
    """Drop this process's in-memory indexes (the disk entries stay)."""
    _memory.clear()


# ------------------------------------------------------------------------- entry files
def encode_entry(key: tuple, index: StreamIndex) -> bytes:
    """One entry: magic, header length, JSON header, then the arrays (int64, 8-byte aligned)."""
    arrays = {"keys": index.keys, "durations": index.durations,
              "keyframes": np.asarray(index.keyframes, dtype=np.int64)}
    header = {
        "format": FORMAT, "path": os.fsencode(key[0]).decode("utf-8", "surrogateescape"),
        "size": key[1], "mtime_ns": key[2], "requested_stream": key[3],
        "lengths": {name: int(a.size) for name, a in arrays.items()},
        "time_base": [index.time_base.numerator, index.time_base.denominator],
        **{name: getattr(index, name) for name in SCALARS},
    }
    text = json.dumps(header, ensure_ascii=True).encode()
    text += b" " * (-(len(MAGIC) + 4 + len(text)) % 8)
    body = b"".join(np.ascontiguousarray(a, dtype="<i8").tobytes() for a in arrays.values())
    return MAGIC + struct.pack("<I", len(text)) + text + body


# StreamIndex fields stored in the header as they are.
SCALARS = ("stream", "best", "video_streams", "container", "codec", "pix_fmt", "full_range",
           "width", "height", "decode_order", "keyframe_offsets_constant", "fps", "rotation",
           "leading_frames", "constant_rate")


def decode_entry(buffer, key: tuple) -> StreamIndex:
    """The StreamIndex in an entry; ValueError (why) when it is not one for ``key``."""
    if bytes(buffer[:len(MAGIC)]) != MAGIC:
        raise ValueError("not a vidaccel index entry")
    (length,) = struct.unpack_from("<I", buffer, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(bytes(buffer[start:start + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header unreadable ({e})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}, expected {FORMAT!r}")
    if (header["path"], header["requested_stream"]) != (
            os.fsencode(key[0]).decode("utf-8", "surrogateescape"), key[3]):
        raise ValueError(f"made for {header['path']!r}, stream {header['requested_stream']}")
    if (header["size"], header["mtime_ns"]) != key[1:3]:
        raise StaleEntry
    offset, arrays = start + length, {}
    for name in ARRAYS:
        count = header["lengths"][name]
        if offset + 8 * count > len(buffer):
            raise ValueError("truncated")
        arrays[name] = np.frombuffer(buffer, dtype="<i8", count=count, offset=offset)
        offset += 8 * count
    return StreamIndex(keys=arrays["keys"], durations=arrays["durations"],
                       keyframes=tuple(arrays["keyframes"].tolist()),
                       time_base=fractions.Fraction(*header["time_base"]),
                       **{name: header[name] for name in SCALARS})


class StaleEntry(Exception):
    """The entry describes an older version of the file: rebuilt without a warning."""


def read_entry(entry: Path, key: tuple) -> StreamIndex | None:
    try:
        with open(entry, "rb") as f:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, ValueError):  # ValueError: an empty file cannot be mapped
        if entry.exists():
            warnings.warn(f"{entry}: index entry for {key[0]} is empty; rebuilding it", stacklevel=4)
        return None
    except OSError:
        return None
    try:
        return decode_entry(buffer, key)
    except StaleEntry:
        return None
    except (ValueError, KeyError, TypeError, struct.error) as e:
        warnings.warn(f"{entry}: ignoring a corrupt or foreign index entry for {key[0]} ({e}); "
                      f"rebuilding it", stacklevel=4)
        return None


def write_entry(entry: Path, key: tuple, index: StreamIndex) -> None:
    """Write atomically (temporary name, then rename); a folder that fails warns once."""
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(encode_entry(key, index))
        os.replace(tmp, entry)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        folder = str(entry.parent.parent)
        if folder not in _warned:
            _warned.add(folder)
            warnings.warn(f"{folder}: cannot store stream indexes there ({e.strerror or e}); they are "
                          f"kept in memory only (set VIDACCEL_INDEX_DIR to a writable folder)",
                          stacklevel=4)


def entry_source(entry: Path) -> str | None:
    """The video path an entry was made for (None: not a readable entry)."""
    try:
        with open(entry, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if head[:len(MAGIC)] != MAGIC:
                return None
            (length,) = struct.unpack_from("<I", head, len(MAGIC))
            return json.loads(f.read(length)).get("path")
    except (OSError, ValueError, struct.error):
        return None


def entries(folder: Path | None = None) -> list[Path]:
    """Every entry file in the index folder."""
    folder = folder or index_dir()
    return sorted(folder.glob(f"*/*{SUFFIX}")) if folder is not None and folder.is_dir() else []


def index_stream(path: str | os.PathLike, stream: int | None = None) -> StreamIndex:
    """The :class:`~accel.io.index.StreamIndex` of ``path``'s best video stream (or container
    stream ``stream``), scanned once per file and version and then served from the cache.

    Raises :class:`~accel.io.index.VideoDecodeError` naming the file when it has no video
    stream, no frames, or cannot be read (such files are not cached: they fail the same way
    each time, and a fixed file is read at once).
    """
    path = os.fsdecode(path)
    try:
        file_key(path)
    except OSError as e:
        raise VideoDecodeError(path, f"cannot open ({e.strerror or e})") from None
    return cached_index(path, stream, lambda: scan_stream(path, stream))
