"""Many byte strings kept as one buffer plus int64 offsets (a manifest's paths).

A million paths as Python ``str`` objects cost ~100 bytes each and, worse, every forked
DataLoader worker that reads them copies the pages they live on (reading an object writes
its reference count). One buffer and one offsets array are read without being written, so
workers share them with the parent, and they pickle as two flat blocks.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

# Bytes gathered per numpy step: bounds the int64 index array of gather_ranges (8x this).
_GATHER_CHUNK = 1 << 22


def pack(strings: Iterable[bytes]) -> tuple[bytes, np.ndarray]:
    """``(buffer, offsets)``: string ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``."""
    parts = list(strings)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return b"".join(parts), offsets


def gather_ranges(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """``source[starts[k]:starts[k] + lengths[k]]`` for every k, concatenated (vectorised)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    index_type = np.int32 if max(len(source), len(out)) < 2**31 else np.int64  # half the traffic
    first = 0
    while first < len(lengths):
        # the ranges whose output fits in one chunk (at least one range)
        last = max(first + 1, int(np.searchsorted(ends, ends[first] - lengths[first] + _GATHER_CHUNK,
                                                  side="right")))
        lens, out_start = lengths[first:last], ends[first:last] - lengths[first:last]
        index = np.arange(out_start[0], ends[last - 1], dtype=index_type)
        index += np.repeat((starts[first:last] - out_start).astype(index_type), lens)
        out[out_start[0]:ends[last - 1]] = source[index]
        first = last
    return out.tobytes()


def prefixed(source: np.ndarray, starts: np.ndarray, ends: np.ndarray, prefix: bytes,
             where: np.ndarray | None = None) -> tuple[bytes, np.ndarray]:
    """Packed ``prefix + source[starts[k]:ends[k]]``, the prefix only where ``where[k]``
    (everywhere when None)."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64) - starts
    where = np.ones(len(starts), dtype=bool) if where is None else where.astype(bool)
    head = where * len(prefix)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths + head, out=offsets[1:])
    width = len(prefix) + (int(lengths.max()) if len(lengths) else 0)
    if len(lengths) * width <= 2 * offsets[-1] + _GATHER_CHUNK:  # similar lengths (paths are)
        return _rows_gather(source, starts, lengths, prefix, where, width), offsets
    # two ranges per string, the prefix (at 0 of the joined source) and the field
    segment_starts = np.column_stack([np.zeros_like(starts), starts + len(prefix)]).ravel()
    segment_lengths = np.column_stack([head, lengths]).ravel()
    joined = np.concatenate([np.frombuffer(prefix, dtype=np.uint8), source])
    return gather_ranges(joined, segment_starts, segment_lengths), offsets


def row_windows(source: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``source[starts[k]:starts[k] + width]`` as rows of a (len(starts), width) uint8 matrix,
    zero past the end of ``source``: one contiguous copy per row, no padded copy of ``source``
    (only its last ``width`` bytes are padded, for the rows that start there)."""
    width = max(width, 1)
    out = np.empty((len(starts), width), dtype=np.uint8)
    near_end = starts > len(source) - width
    if len(source) >= width:
        out[~near_end] = np.lib.stride_tricks.sliding_window_view(source, width)[starts[~near_end]]
    if near_end.any():
        base = max(len(source) - width, 0)
        tail = np.concatenate([source[base:], np.zeros(width, dtype=np.uint8)])
        out[near_end] = np.lib.stride_tricks.sliding_window_view(tail, width)[starts[near_end] - base]
    return out


def _rows_gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray, prefix: bytes,
                 where: np.ndarray, width: int) -> bytes:
    """:func:`prefixed`'s bytes through (rows, width) matrices: each row one contiguous copy,
    then a mask keeps each row's prefix and field (cheaper than a per-byte index). Rows go in
    blocks so that the temporaries stay small and are reused."""
    field_width = width - len(prefix)
    head = np.frombuffer(prefix, dtype=np.uint8)
    small = np.int16 if width < 2**15 else np.int64  # a narrower mask computes faster
    column = np.arange(width, dtype=small)
    total = lengths + where * len(prefix)
    out = np.empty(int(total.sum()), dtype=np.uint8)
    step, at = max(1, _GATHER_CHUNK // max(width, 1)), 0
    for first in range(0, len(starts), step):
        rows = slice(first, first + step)
        matrix = np.empty((len(starts[rows]), width), dtype=np.uint8)
        matrix[:, :len(prefix)] = head
        matrix[:, len(prefix):] = row_windows(source, starts[rows], field_width)[:, :field_width]
        keep = column < (len(prefix) + lengths[rows]).astype(small)[:, None]
        if not where[rows].all():
            keep &= (column >= len(prefix)) | where[rows, None]
        block = matrix[keep]
        out[at:at + len(block)] = block
        at += len(block)
    return out.tobytes()


def take(buffer: bytes, offsets: np.ndarray, positions: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The packed strings at ``positions``, in that order, packed anew."""
    positions = np.asarray(positions, dtype=np.int64)
    source = np.frombuffer(buffer, dtype=np.uint8)
    return prefixed(source, offsets[:-1][positions], offsets[1:][positions], b"")
