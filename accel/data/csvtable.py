"""A CSV manifest read into byte ranges per field, vectorised (a million rows in about a second).

Python's ``csv`` module builds a list of strings per row: 6 s for a million rows here before
any validation. A manifest without quotes (nearly all of them) is split with numpy instead:
newlines and commas are found in one pass over the bytes, every row must have the header's
number of fields, and each field is a (start, end) byte range. Only fields with spaces or
non-ASCII characters at their edges are stripped one by one in Python, exactly as
``str.strip`` would. Anything else (quoted fields, ragged rows, lone carriage returns) goes
through ``csv``, so its results and one-line errors are those of the csv module.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .packed import row_windows

# Field bytes in this range need no strip: printable ASCII other than space.
_PLAIN_LOW, _PLAIN_HIGH = 0x21, 0x7E
_NEWLINE, _COMMA, _CR = 10, 44, 13
_HASH_MAX_WIDTH = 64  # longer values are made unique with a dict instead of a byte matrix


class CsvSyntaxError(ValueError):
    """A CSV that cannot be read; the message starts with ``file:line:``."""


class CsvTable:
    """Header, each kept row's line number, and each field's byte range in ``data``.

    Blank rows (only spaces and commas) are dropped, as the csv reader's callers did. A field
    missing from a short row has an empty range, like an empty field.
    """

    def __init__(self, header: list[str], data: bytes, lines: np.ndarray, starts: np.ndarray,
                 ends: np.ndarray) -> None:
        self.header, self.data, self.lines = header, data, lines
        self.array = np.frombuffer(data, dtype=np.uint8)
        self._starts, self._ends = starts, ends  # (rows, columns); stripped on first use
        self._stripped: set[int] = set()

    def __len__(self) -> int:
        return len(self.lines)

    def ranges(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and end of column ``column``'s field in every row, stripped of white space."""
        if column not in self._stripped:
            strip_ranges(self.data, self.array, self._starts[:, column], self._ends[:, column])
            self._stripped.add(column)
        return self._starts[:, column], self._ends[:, column]

    def text(self, column: int, row: int) -> str:
        starts, ends = self.ranges(column)
        return self.data[starts[row]:ends[row]].decode("utf-8")

    def unique(self, column: int, rows: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        """The distinct values of a column (over ``rows``) and each row's index into them."""
        starts, ends = self.ranges(column)
        if rows is not None:
            starts, ends = starts[rows], ends[rows]
        values, inverse = unique_ranges(self.data, self.array, starts, ends)
        return [v.decode("utf-8") for v in values], inverse


def strip_ranges(data: bytes, array: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Narrow each range (in place) to its field without leading / trailing white space."""
    nonempty = ends > starts
    odd = ~nonempty
    first = array[np.minimum(starts, len(array) - 1)] if len(array) else starts
    last = array[np.maximum(ends - 1, 0)] if len(array) else ends
    for edge in (first, last):
        odd |= nonempty & ((edge < _PLAIN_LOW) | (edge > _PLAIN_HIGH))
    for k in np.flatnonzero(odd).tolist():
        raw = data[starts[k]:ends[k]].decode("utf-8")
        text = raw.strip()
        lead = len(raw[:len(raw) - len(raw.lstrip())].encode("utf-8"))
        starts[k] += lead
        ends[k] = starts[k] + len(text.encode("utf-8"))


def unique_ranges(data: bytes, array: np.ndarray, starts: np.ndarray, ends: np.ndarray
                  ) -> tuple[list[bytes], np.ndarray]:
    """Distinct byte strings among the ranges and each range's index into them."""
    lengths = ends - starts
    width = int(lengths.max()) if len(lengths) else 0
    if width > _HASH_MAX_WIDTH:
        seen: dict[bytes, int] = {}
        inverse = np.fromiter((seen.setdefault(data[s:e], len(seen))
                               for s, e in zip(starts.tolist(), ends.tolist())),
                              dtype=np.int64, count=len(starts))
        return list(seen), inverse
    keys = _words(array, starts, lengths, -(-max(width, 1) // 8))
    hashed = lengths.astype(np.uint64) << np.uint64(56)
    for w in range(keys.shape[1]):  # a polynomial hash; collisions are checked below
        hashed = hashed * np.uint64(0x100000001B3) ^ keys[:, w]
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not (keys == keys[first[inverse]]).all() or not (lengths == lengths[first[inverse]]).all():
        _, first, inverse = np.unique(keys.view(f"V{keys.shape[1] * 8}").ravel(), return_index=True,
                                      return_inverse=True)
    values = [data[s:e] for s, e in zip(starts[first].tolist(), ends[first].tolist())]
    return values, inverse.reshape(-1).astype(np.int64)


def _words(array: np.ndarray, starts: np.ndarray, lengths: np.ndarray, words: int) -> np.ndarray:
    """Each range's bytes, zero-padded, as ``words`` uint64 per row."""
    matrix = row_windows(array, starts, 8 * words)
    matrix[np.arange(8 * words, dtype=np.int16) >= lengths.astype(np.int16)[:, None]] = 0
    return matrix.view(np.uint64)


def read_table(csv_path: Path) -> CsvTable:
    """The CSV's table; not UTF-8 or unreadable is a :class:`CsvSyntaxError` naming the line."""
    data = csv_path.read_bytes()
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise CsvSyntaxError(f"{csv_path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                                 "save the CSV as UTF-8") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return fast_table(data) or csv_module_table(csv_path, data)


def _header(first_line: bytes) -> list[str]:
    return [h.strip() for h in next(csv.reader([first_line.decode("utf-8")]), [])]


def fast_table(data: bytes) -> CsvTable | None:
    """The table of a CSV with no quotes and the header's field count on every non-empty
    line, split with numpy; None for any other CSV."""
    if b'"' in data or b"\x00" in data or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n")):
        return None
    array = np.frombuffer(data, dtype=np.uint8)
    ends, commas = _positions(array, _NEWLINE), _positions(array, _COMMA)
    if len(array) and array[-1] != _NEWLINE:
        ends = np.append(ends, len(array))
    if not len(ends):
        return None
    starts = np.concatenate(([0], ends[:-1] + 1))
    has_cr = ends > starts
    has_cr[has_cr] = array[ends[has_cr] - 1] == _CR
    ends = ends - has_cr
    header = _header(data[starts[0]:ends[0]])
    columns = len(header)
    per_line = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    if not columns or per_line[0] != columns - 1:
        return None
    kept = np.flatnonzero(ends[1:] > starts[1:]) + 1
    if (per_line[kept] != columns - 1).any() or len(commas) != (columns - 1) * (len(kept) + 1):
        return None  # ragged rows, or blank rows of commas: the csv module's errors
    field_commas = commas[columns - 1:].reshape(len(kept), columns - 1)
    field_starts = np.column_stack([starts[kept], field_commas + 1])
    field_ends = np.column_stack([field_commas, ends[kept]])
    return drop_blank_rows(CsvTable(header, data, kept + 1, field_starts, field_ends))


def _positions(array: np.ndarray, byte: int, block: int = 1 << 22) -> np.ndarray:
    """Where ``byte`` occurs, found block by block (small, reused temporaries)."""
    found = [np.flatnonzero(array[at:at + block] == byte) + at for at in range(0, len(array), block)]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def drop_blank_rows(table: CsvTable) -> CsvTable:
    """The table without rows whose every field is blank (``,,`` or spaces)."""
    blank = np.ones(len(table), dtype=bool)
    for column in range(len(table.header)):
        starts, ends = table.ranges(column)
        blank &= ends == starts
        if not blank.any():
            return table
    keep = ~blank
    return CsvTable(table.header, table.data, table.lines[keep], table._starts[keep],
                    table._ends[keep])


def csv_module_table(csv_path: Path, data: bytes) -> CsvTable:
    """The table read by the csv module (quotes, ragged rows); fields are re-packed."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    try:
        header = [h.strip() for h in next(reader, None) or []]
        rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except csv.Error as e:
        raise CsvSyntaxError(f"{csv_path}:{reader.line_num}: not a readable CSV ({e})") from None
    columns = max(len(header), 1)
    fields = [(row[c].strip() if c < len(row) else "").encode("utf-8")
              for _, row in rows for c in range(columns)]
    lengths = np.array([len(f) for f in fields], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    lines = np.array([line for line, _ in rows], dtype=np.int64)
    table = CsvTable(header, b"".join(fields), lines, starts.reshape(-1, columns),
                     ends.reshape(-1, columns))
    table._stripped.update(range(columns))
    return table
