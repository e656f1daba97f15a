"""Manifests at the scale of a million clips: rows are packed arrays, a CSV loads in seconds,
and a forked worker reading every row copies (almost) nothing."""
from __future__ import annotations

import csv
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accel.data.manifests import Manifest, ManifestError, VideoItem, csv_manifest, stratified_split
from benchmarks.manifests import fork_growth_mb, write_manifest_csv

LATIN1 = os.fsdecode(b"/data/caf\xe9.mp4")  # not UTF-8 on disk: a surrogate-escaped str


def reference_rows(csv_path: Path) -> list[tuple[str, str]]:
    """(path, label) per non-blank row, read with the csv module as manifests always did."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(x.strip() for x in r)]
    return [(os.path.join(csv_path.parent, r[0].strip()), r[1].strip()) for r in rows[1:]]


def test_rows_are_arrays_and_items_a_view(tmp_path):
    f = write_manifest_csv(tmp_path / "m.csv", 1000)
    m = csv_manifest(f)
    assert isinstance(m.path_buffer, bytes) and m.path_offsets.dtype == np.int64
    assert m.path_offsets.shape == (1001,) and m.label_array.shape == (1000,)
    assert not [k for k, v in vars(m).items() if isinstance(v, (list, tuple)) and len(v) == len(m)]
    expected = reference_rows(f)
    assert [(i.path, m.classes[i.label]) for i in m.items] == expected
    assert m.items[-1] == VideoItem(m.path(999), m.label(999)) == m.items[999]
    assert m.items[2:4] == [m.items[2], m.items[3]] and len(m.items) == 1000
    assert m.labels == m.label_array.tolist() and sum(m.class_counts()) == 1000
    with pytest.raises(IndexError):
        m.path(1000)
    with pytest.raises(ValueError, match="3 labels but 2 paths"):
        Manifest.from_arrays(b"ab", np.array([0, 1, 2]), np.zeros(3), ["x"])


@pytest.mark.parametrize("variant", ["plain", "absolute", "crlf", "quoted", "spaces", "blank_rows",
                                     "unicode_edges"])
def test_every_csv_form_reads_like_the_csv_module(tmp_path, variant):
    """The numpy reader and the csv-module reader give the rows the csv module gives."""
    rows = [(f"v{i}/clip {i}.mp4", ["run", "jump", "s\u00e9ance"][i % 3]) for i in range(40)]
    text = {
        "plain": lambda p, lb: f"{p},{lb}\n",
        "absolute": lambda p, lb: f"{'/abs/' if len(p) % 2 else ''}{p},{lb}\n",
        "crlf": lambda p, lb: f"{p},{lb}\r\n",
        "quoted": lambda p, lb: f'"{p}","{lb}"\n',
        "spaces": lambda p, lb: f"  {p} ,\t{lb}  \n",
        "blank_rows": lambda p, lb: f"{p},{lb}\n\n , \n",
        "unicode_edges": lambda p, lb: f"\u00a0{p}\u3000,\u00e9{lb}\u00e9\n",
    }[variant]
    f = tmp_path / "m.csv"
    f.write_text("path,label\n" + "".join(text(p, lb) for p, lb in rows), encoding="utf-8", newline="")
    m = csv_manifest(f)
    assert [(i.path, m.classes[i.label]) for i in m.items] == reference_rows(f)
    assert len(m) == 40


def test_errors_name_the_first_bad_line_of_a_big_csv(tmp_path):
    f = write_manifest_csv(tmp_path / "m.csv", 20_000)
    lines = f.read_text().splitlines(keepends=True)
    bad = lines.copy()
    bad[15_000] = "x.mp4,1.5,train\n"
    bad[17_000] = "y.mp4,,train\n"
    (tmp_path / "bad.csv").write_text("".join(bad))
    with pytest.raises(ManifestError, match=r"bad.csv:15001: label '1.5' is neither"):
        csv_manifest(tmp_path / "bad.csv")
    bad[15_000] = lines[15_000]
    (tmp_path / "bad.csv").write_text("".join(bad))
    with pytest.raises(ManifestError, match=r"bad.csv:17001: no 'label' value in this row"):
        csv_manifest(tmp_path / "bad.csv")
    bad[17_000], bad[18_000] = lines[17_000], "z.mp4,idle,holdout\n"
    (tmp_path / "bad.csv").write_text("".join(bad))
    with pytest.raises(ManifestError, match=r"bad.csv:18001: split 'holdout' is not a split name"):
        csv_manifest(tmp_path / "bad.csv", "train")
    first = lines[1].split(",")[1]
    with pytest.raises(ManifestError, match=rf"m.csv:2: label '{first}' is not one of the classes"):
        csv_manifest(f, classes=["run", "jump"])


def test_split_rows_and_subsets_keep_paths_and_labels(tmp_path):
    f = write_manifest_csv(tmp_path / "m.csv", 3000)
    whole = csv_manifest(f)
    splits = {r[0]: r[2] for r in csv.reader(f.open()) if r[2] != "split"}
    train = csv_manifest(f, "train")
    assert [i.path for i in train.items] == [os.path.join(tmp_path, p) for p, s in splits.items()
                                             if s == "train"]
    keep, held = stratified_split(whole, 0.25, seed=1)
    assert len(keep) + len(held) == 3000
    assert set(keep.items) | set(held.items) == set(whole.items)
    positions = [2999, 0, 7, 7]
    assert whole.subset(positions).items[:] == [whole.items[i] for i in positions]
    assert whole.subset([]).path_buffer == b"" and len(whole.subset([])) == 0


def test_non_utf8_paths_are_kept_exactly_and_pickle_cheaply(tmp_path):
    m = Manifest([VideoItem(LATIN1, 1), VideoItem("/data/b.mp4", 0)], ["a", "b"], "src")
    assert m.items[0].path == LATIN1 and os.fsencode(m.path(0)) == b"/data/caf\xe9.mp4"
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.items[0] == (LATIN1, 1) and m.subset([0]).path(0) == LATIN1
    big = csv_manifest(write_manifest_csv(tmp_path / "m.csv", 50_000))
    data = pickle.dumps(big, protocol=pickle.HIGHEST_PROTOCOL)
    # three flat blocks: the paths' bytes, 8 bytes of offset and 8 of label per row; no object
    # per row (what a worker's start-up unpickles), so nothing grows with rows but the blocks
    assert len(data) < len(big.path_buffer) + 16 * len(big) + 4096
    assert pickle.loads(data) == big and b"VideoItem" not in data


def test_a_forked_reader_of_every_row_copies_almost_nothing(tmp_path):
    """100k rows (a tenth of the acceptance's million: 2 MiB of its 20): the child's unique
    memory after reading every path and label; the same rows as objects show the cost."""
    m = csv_manifest(write_manifest_csv(tmp_path / "m.csv", 100_000))
    packed = fork_growth_mb(m)
    objects = fork_growth_mb(list(m.items))
    assert packed <= 2.0, f"a forked reader grew {packed:.1f} MiB reading packed rows"
    assert objects > 8 * max(packed, 1.0), (packed, objects)  # the measurement sees copies


def python_calls(fn) -> int:
    """How many Python and C functions ``fn()`` calls (sys.setprofile: exact, not timed)."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_loading_does_no_python_work_per_row(tmp_path):
    """The speed of a load (``python -m benchmarks manifests``: a million rows, against csv.reader
    alone) comes from doing no Python work per row. Counted, not timed (shared CI cores): the
    function calls of a 100k-row load are those of a 1k-row load, give or take a few per class;
    the same rows quoted (the csv-module path) make calls per row, which this count sees."""
    small, large = (write_manifest_csv(tmp_path / f"m{n}.csv", n) for n in (1_000, 100_000))
    loaded = []
    small_calls = python_calls(lambda: loaded.append(csv_manifest(small)))
    large_calls = python_calls(lambda: loaded.append(csv_manifest(large)))
    assert [len(m) for m in loaded] == [1_000, 100_000]
    assert large_calls < small_calls + 200, (small_calls, large_calls)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("path,label\n" + "".join(f'"v/c{i}.mp4",run\n' for i in range(1_000)))
    assert python_calls(lambda: csv_manifest(quoted)) > 10 * small_calls


@pytest.mark.slow
def test_a_million_rows_load_in_3_s_and_a_reader_grows_under_20_mb(tmp_path):
    f = write_manifest_csv(tmp_path / "m.csv", 1_000_000)
    t0 = time.perf_counter()
    m = csv_manifest(f)
    load = time.perf_counter() - t0
    assert len(m) == 1_000_000 and load <= 3.0, f"{load:.2f} s"
    assert fork_growth_mb(m) <= 20.0


@pytest.mark.parametrize("chunk", [None, 64])
def test_packing_matches_python_for_any_lengths_and_prefixes(monkeypatch, chunk):
    """Both ways of packing (a row matrix; a per-byte index, chunked) against plain Python."""
    from accel.data import packed

    if chunk:  # a small chunk: rows of mixed lengths go the per-byte way, many chunks each
        monkeypatch.setattr(packed, "_GATHER_CHUNK", chunk)
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, 20_000, dtype=np.uint8)
    starts = np.sort(rng.choice(19_000, 300, replace=False))
    ends = starts + rng.integers(0, 40, 300)
    ends[7] = starts[7] + 900  # one long string
    where = rng.random(300) < 0.7
    data = source.tobytes()
    expected = [(b"/root/" if w else b"") + data[s:e] for s, e, w in zip(starts, ends, where)]
    buffer, offsets = packed.prefixed(source, starts, ends, b"/root/", where)
    assert [buffer[a:b] for a, b in zip(offsets[:-1], offsets[1:])] == expected
    assert packed.gather_ranges(source, starts, ends - starts) == \
        b"".join(data[s:e] for s, e in zip(starts, ends))
    picked, picked_offsets = packed.take(buffer, offsets, np.array([299, 7, 0, 7]))
    assert [picked[a:b] for a, b in zip(picked_offsets[:-1], picked_offsets[1:])] == \
        [expected[i] for i in (299, 7, 0, 7)]
