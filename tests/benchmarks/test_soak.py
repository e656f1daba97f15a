"""python -m benchmarks loaders --soak: memory growth rows per backend (a tiny run; the real
10k-clip figures are in benchmarks/results/loaders_soak_cpu.md)."""
from __future__ import annotations

import json
import subprocess
import sys


def test_soak_writes_memory_rows(tmp_path, temporal_dataset):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--soak", "--data",
                        str(temporal_dataset), "--split", "train", "--backends", "pyav", "--clips", "32",
                        "--soak-samples", "2", "--clip-len", "4", "--workers", "2", "--batch-size", "4",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["mode"]: row for row in json.loads(out.read_text())["records"]}
    assert set(rows) == {"raw", "loader_no_recycling", "loader_recycled"}
    assert rows["raw"]["clips"] == 32 and rows["raw"]["workers"] == 0
    for row in rows.values():
        assert row["backend"] == "pyav" and row["status"] == "ok" and row["skipped"] == 0
        assert 0 < row["start_mb"] <= row["max_mb"] and len(row["samples"]) >= 2
        assert row["growth_mb"] == row["end_mb"] - row["start_mb"]
    assert rows["loader_recycled"]["clips"] == 32  # 2 epochs of the 16 training videos


def _dies(queue):
    raise SystemExit(3)


def test_a_soak_child_that_dies_is_reported_not_waited_for():
    import pytest

    from benchmarks.loaders import in_child

    with pytest.raises(RuntimeError, match="exit code 3"):
        in_child(_dies)
