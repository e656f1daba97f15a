"""python -m benchmarks loaders on CPU: the naive approach, each CPU backend and the loader."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from accel.io.backends import available_backends

DESIGN_FIELDS = {"backend", "workers", "clip_len", "size", "clips", "clips_per_s", "frames_per_s",
                 "p50_ms", "p95_ms", "cpu_util", "rss_mb", "nvdec_util", "skipped"}


def test_loaders_benchmark_on_demo_data(tmp_path, temporal_dataset):
    out = tmp_path / "loaders.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--data", str(temporal_dataset),
                        "--split", "train", "--clips", "12", "--clip-len", "8", "--size", "32",
                        "--workers", "2", "--batch-size", "4", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["command"].startswith("python -m benchmarks loaders")
    assert payload["environment"]["torch"]
    rows = {row["backend"]: row for row in payload["records"]}
    expected = ["naive", *available_backends()]
    for name in expected:
        for key in (name, f"raw_{name}"):
            row = rows[key]
            assert row["status"] == "ok" and DESIGN_FIELDS <= set(row), key
            assert row["clips"] == 12 and row["clips_per_s"] > 0
            assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 8)
            assert row["skipped"] == 0
        assert "overhead_vs_raw_pct" in rows[name] and rows[name]["speedup_vs_naive"] > 0
    assert rows["dali"]["status"] == "skipped" and rows["dali"]["reason"]
    assert (tmp_path / "loaders.csv").is_file() and "| naive |" in (tmp_path / "loaders.md").read_text()
    assert "fastest" in r.stdout and "skipped files: 0" in r.stdout


def test_loaders_benchmark_refuses_unknown_backend(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--backends", "naive,opencv",
                        "--json", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "opencv" in r.stderr and "naive" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bare_decoder_rows_read_the_loaders_clips(temporal_dataset):
    """raw_<backend> and <backend> rows are compared clip for clip: the same frames of the
    same videos, also for a random strategy (both seed clip k with clip_seed)."""
    from accel.data.manifests import load_manifest
    from benchmarks.loaders import benchmark_loader, build_parser, raw_clip

    manifest = load_manifest(temporal_dataset, "train")
    plan = [0, 3, 5, 3]
    args = build_parser("loaders").parse_args(["--clip-len", "4", "--strategy", "random", "--size", "0",
                                               "--batch-size", "2"])
    for backend in ("naive", "pyav"):
        loader = benchmark_loader(manifest, plan, backend, 0, args)
        from_loader = [row.tolist() for batch in loader for row in batch.indices]
        raw = [raw_clip(manifest.items[i].path, i, backend, args)[1] for i in plan]
        assert raw == from_loader, backend
    assert raw[1] == raw[3] and raw[0] != raw[1]  # a clip per entry, not per position in the plan


def test_prepared_pair_with_other_frames_is_refused(tmp_path, capsys):
    """--prepared pairs the same clip of both datasets: other frame counts are not a pair."""
    from accel.synth import make_dataset
    from benchmarks.__main__ import main as bench_main

    kw = dict(classes=2, videos_per_class=1, width=32, height=32, splits=(1.0, 0.0, 0.0))
    a, b = make_dataset(tmp_path / "a", frames=12, **kw), make_dataset(tmp_path / "b", frames=20, **kw)
    with pytest.raises(SystemExit) as e:
        bench_main(["loaders", "--data", str(a), "--prepared", str(b), "--split", "train", "--backends",
                    "pyav", "--clips", "2", "--clip-len", "4", "--size", "0", "--workers", "0",
                    "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "gives other frames than" in err and len(err.strip().splitlines()) == 1


def test_costs_mode_reports_every_layer_of_every_kind_against_the_floor(tmp_path):
    """``loaders --costs``: one row per (kind, backend, layer), CPU time per clip, the floor's
    ratio 1, the index build apart."""
    from accel.synth import write_index_video

    long = write_index_video(tmp_path / "long.mp4", 600, width=64, height=64, gop=250)
    out = tmp_path / "costs.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--costs", "--videos", "1",
                        "--seconds", "2", "--clips", "2", "--long", str(long), "--long-clips", "2",
                        "--cost-backends", "pyav", "--workers", "1", "--batch-size", "1",
                        "--cache", str(tmp_path / "cache"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["records"]
    import shutil

    kinds = ("original", "prepared", "long") + (("short_recording",) if shutil.which("ffmpeg") else ())
    assert {(row["kind"], row["layer"]) for row in rows} == {
        (kind, layer) for kind in kinds
        for layer in ("floor", "reader", "dataset_inprocess", "dataset", "loader_0", "loader_1")}
    for row in rows:
        assert row["cpu_ms_per_clip"] >= 0 and row["wall_ms_per_clip"] > 0
        if row["layer"] == "floor":
            assert row["vs_floor"] == 1 and row["index_build_ms"] > 0 and row["convert_ms"] > 0
