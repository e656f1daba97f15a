"""python -m benchmarks.decode_child: bare reader, in-process dataset and decode child timed on
the same clips (a tiny run; the figures are in the README's "What the watched decode costs")."""
from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.decode_child import KINDS, make_files, measure


def test_measure_times_every_mode_on_the_same_clips(tmp_path):
    data = make_files(tmp_path, "tiny", videos=2)
    assert len(list((data / "train" / "a").glob("*.mp4"))) == 2
    row = measure(data, "tiny", "pyav", clips=4, warmup=1)
    assert row["kind"] == "tiny" and row["backend"] == "pyav" and row["clips"] == 4
    for mode in ("bare", "in_process", "child"):
        assert row[f"{mode}_ms"] > 0 and row[f"{mode}_cpu_ms"] > 0
    # the child's CPU is counted on top of the reading process's
    assert row["child_cpu_ms"] is not None and row["child_cpu_ms"] > 0
    assert row["child_over_in_process_ms"] == pytest.approx(row["child_ms"] - row["in_process_ms"], abs=0.02)


def test_the_command_prints_a_row_per_kind_and_backend_and_refuses_an_unknown_kind(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.decode_child", "--cache", str(tmp_path), "--clips", "2"]
    r = subprocess.run([*cmd, "--kinds", "tiny", "--backends", "pyav"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1 and rows[0].startswith("| tiny | pyav |")
    r = subprocess.run([*cmd, "--kinds", "huge"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"unknown 'huge' (choose from {', '.join(KINDS)})" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
