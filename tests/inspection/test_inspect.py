"""``python -m accel.inspect`` on a mixed dataset of real files: every case named with its
reason, the JSON's per-file fields, the report files, --verify, bad input, and the cost
section against ``benchmarks loaders`` on the same files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inspect_mixed import EXPECTED, make_mixed_dataset

from accel.inspect.cli import main
from accel.inspect.cost import CostOptions, measure_costs
from accel.inspect.groups import members
from accel.inspect.verify import verify
from accel.io.backends import available_backends
from accel.synth import write_index_video

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("path, split, label, container, codec, profile, pix_fmt, bit_depth, color_range, width, "
          "height, fps, vfr, duration_s, frames, keyframe_interval_mean, keyframe_interval_max, "
          "b_frames, video_streams, audio_streams, size_bytes, bitrate, problems").split(", ")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict]:
    """The mixed dataset and the report of one run (cost on 2 clips, --verify on 6 files)."""
    root = make_mixed_dataset(tmp_path_factory.mktemp("mixed"))
    out = root.parent / "out"
    assert main([str(root), "--out_dir", str(out), "--sample", "2", "--prepare", "0",
                 "--verify", "6", "--quiet"]) == 0
    return out, json.loads((out / "inspect.json").read_text())


def _record(report: dict, rel: str) -> dict:
    return next(r for r in report["files"] if r["path"].endswith(rel))


def test_every_case_is_named_with_its_reason(mixed):
    _, report = mixed
    assert len(report["files"]) == len(EXPECTED)
    for rel, expected in EXPECTED.items():
        problems = _record(report, rel)["problems"]
        if expected is None:
            assert problems == [], (rel, problems)
            continue
        kind, word = expected
        assert any(p.startswith(kind + ":") and word in p for p in problems), (rel, problems)
    # Grouped with counts and paths, as the terminal shows them.
    kinds = {(p["kind"], p["count"]) for p in report["problems"]}
    assert ("split_leak", 2) in kinds and ("duplicate", 4) in kinds


def test_per_file_facts(mixed):
    _, report = mixed
    gop12, gop250 = _record(report, "h264_gop12.mp4"), _record(report, "h264_gop250.mp4")
    assert gop12["keyframe_interval_max"] == 12 and gop250["keyframe_interval_max"] == 250
    hevc = _record(report, "hevc10.mp4")
    assert (hevc["codec"], hevc["bit_depth"], hevc["profile"]) == ("hevc", 10, "Main 10")
    avi = _record(report, "packed.avi")
    assert avi["container"] == "avi" and avi["packed_bframes"] and avi["b_frames"]
    assert not _record(report, "h264_b.mp4")["packed_bframes"]
    assert _record(report, "h264_b.mp4")["b_frames"] and not gop12["b_frames"]
    assert _record(report, "vfr.mp4")["vfr"] and not gop12["vfr"]
    assert _record(report, "two_streams.mkv")["video_streams"] == 2
    assert _record(report, "vp9.webm")["codec"] == "vp9"
    assert _record(report, "audio_only.mp4")["problems"][0].startswith("skipped: no video stream")
    assert gop250["frames"] == 260 and gop250["duration_s"] == pytest.approx(260 / 25)
    for r in report["files"]:
        wanted = FIELDS if "skipped" not in r else ("path", "split", "label", "problems")
        assert not [f for f in wanted if f not in r], r["path"]


def test_summary_groups_and_balance(mixed):
    _, report = mixed
    names = {g["group"]: g["files"] for g in report["groups"]}
    assert names["h264 <=144p gop<=16"] == 3  # gop 12, its copy, and the 8-frame file
    assert names["h264 <=144p gop<=256"] == 1 and names["mpeg4 <=144p gop<=16"] == 1
    assert sum(names.values()) == len(EXPECTED) - 2  # the two skipped files are in no group
    assert report["balance"] == {"train": {"a": 4, "b": 6}, "val": {"a": 1, "b": 2}}


def test_outputs_and_verify_on_8_bit_files(mixed):
    out, report = mixed
    md = (out / "inspect.md").read_text()
    assert "## Summary" in md and "| h264 <=144p gop<=256 |" in md and "split_leak" in md
    png = (out / "inspect.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    v = report["verify"]
    assert {"files", "clips", "mismatches", "details"} <= set(v)
    assert v["files"] == 6 and v["mismatches"] == 0 and v["details"] == []
    assert v["clips"] >= 6 * (len(available_backends()) - 1)  # DALI adds the files it decodes


def test_verify_shows_a_broken_reader(mixed, monkeypatch):
    _, report = mixed
    others = [b for b in available_backends() if b != "pyav"]
    if not others:
        pytest.skip("only PyAV is installed: nothing to compare")
    backend = others[0]
    from accel.io.backends import open_video

    reader_type = type(open_video(_record(report, "h264_gop12.mp4")["path"], backend))
    original = reader_type._read_sorted

    def broken(self, indices):  # the first frame asked for comes back one level brighter
        frames = original(self, indices).clone()
        frames[0] = frames[0].clamp(max=254) + 1
        return frames

    monkeypatch.setattr(reader_type, "_read_sorted", broken)
    eight_bit = [r for r in report["files"] if r["path"].endswith(("gop12.mp4", "vp9.webm"))]
    v = verify(eight_bit, 2, available_backends(), clip_len=8)
    assert v["mismatches"] == 2, v
    for d in v["details"]:
        assert d["decoder"] == backend and d["max_abs_diff"] == 1 and len(d["frames"]) >= 1
        assert d["path"] in {r["path"] for r in eight_bit}


@pytest.mark.parametrize("case", ["missing", "empty", "csv_without_path"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    data = tmp_path / "nothing_here"
    if case == "empty":
        data.mkdir()
    elif case == "csv_without_path":
        data = tmp_path / "labels.csv"
        data.write_text("name,label\na.mp4,cat\n")
    with pytest.raises(SystemExit) as e:
        main([str(data), "--out_dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and str(data) in err, err
    assert {"missing": "no such file", "empty": "empty folder",
            "csv_without_path": "no path column"}[case] in err


def test_the_command_line_exits_2_on_a_missing_folder(tmp_path):
    run = subprocess.run([sys.executable, "-m", "accel.inspect", str(tmp_path / "gone")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no such file" in run.stderr


def test_cost_agrees_with_the_loaders_benchmark(tmp_path):
    """The per-clip decode time of the cost section and ``benchmarks loaders``' bare-decoder
    row (``raw_pyav``) on the same files: the same measurement, so within one run's noise."""
    from benchmarks.__main__ import main as benchmarks_main

    data = tmp_path / "data"
    for i in range(3):
        write_index_video(data / "c" / f"v{i}.mp4", 150, width=160, height=96, gop=50, bframes=2,
                          seed=i)
    records = [{"path": str(p), "codec": "h264", "width": 160, "height": 96, "container": "mov",
                "keyframe_interval_mean": 50.0} for p in sorted((data / "c").glob("*.mp4"))]
    options = CostOptions(clip_len=16, size=112, sampling="uniform", sample=12, prepare_files=0)

    def ours() -> float:
        return measure_costs(members(records), ["pyav"], options)[0]["decoders"]["pyav"]["ms_p50"]

    # Ours before and after the benchmark: the machine is shared, and the mean of the two
    # cancels load that drifts steadily while they run one after the other.
    before = ours()
    out = tmp_path / "loaders.json"
    assert benchmarks_main(["loaders", "--data", str(data), "--backends", "pyav", "--clips", "12",
                            "--workers", "0", "--no-overhead", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["records"]
    theirs = next(r for r in rows if r["backend"] == "raw_pyav")["p50_ms"]
    after = ours()
    ratio = (before + after) / 2 / theirs
    print(f"inspect cost {before:.1f} / {after:.1f} ms/clip (before / after) vs benchmarks loaders "
          f"raw_pyav {theirs:.1f} ms/clip: ratio {ratio:.2f}")
    assert 0.5 < ratio < 2.0, ratio
    assert np.isfinite(theirs)


@pytest.mark.slow
def test_ten_thousand_tiny_files(tmp_path):
    """10 000 tiny videos: all scanned (index included) by 2 workers; the wall time is printed.
    On this shared machine wall time follows the other jobs' load, so the bound is on what
    the run costs: the workers' CPU-seconds over 2 cores plus this process's own."""
    import time

    from accel.synth import write_video

    root = tmp_path / "tiny"
    for i in range(10_000):
        frames = np.random.default_rng(i).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
        write_video(root / f"c{i % 10}" / f"v{i:05d}.mp4", list(frames), gop=4)
    wall, cpu = time.perf_counter(), time.process_time()
    assert main([str(root), "--out_dir", str(tmp_path / "out"), "--sample", "0", "--workers", "2",
                 "--quiet"]) == 0
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scan = json.loads((tmp_path / "out" / "inspect.json").read_text())["scan"]
    assert scan["files"] == scan["readable"] == 10_000
    projected = scan["cpu_seconds"] / 2 + cpu
    print(f"10000 tiny files: {wall:.1f} s wall (scan {scan['seconds']:.1f} s), workers "
          f"{scan['cpu_seconds']:.1f} CPU-s, main process {cpu:.1f} CPU-s: {projected:.1f} s on 2 "
          f"free cores")
    assert projected < 60, projected


def test_frame_folders_and_a_csv_with_a_split_column(tmp_path):
    from PIL import Image

    for folder, n in (("train/a/s1", 20), ("train/b/s2", 8), ("val/a/s3", 20)):
        (tmp_path / "frames" / folder).mkdir(parents=True)
        for i in range(n):
            image = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "frames" / folder / f"{i:03d}.jpg")
    assert main([str(tmp_path / "frames"), "--out_dir", str(tmp_path / "o1"), "--sample", "1",
                 "--prepare", "0", "--quiet"]) == 0
    report = json.loads((tmp_path / "o1" / "inspect.json").read_text())
    assert [r["frames"] for r in report["files"]] == [20, 8, 20]
    assert [p["kind"] for p in report["problems"]] == ["shorter_than_clip"]
    assert list(report["cost"][0]["decoders"]) == available_backends()[:1]  # one image reader

    a = write_index_video(tmp_path / "v/a.mp4", 20, seed=1)
    b = write_index_video(tmp_path / "v/b.mp4", 20, seed=2)
    (tmp_path / "v/labels.csv").write_text(f"path,label,split\n{a},x,train\na.mp4,x,val\n"
                                           f"{b},y,train\n")
    assert main([str(tmp_path / "v/labels.csv"), "--out_dir", str(tmp_path / "o2"), "--sample", "0",
                 "--quiet"]) == 0
    report = json.loads((tmp_path / "o2" / "inspect.json").read_text())
    leaks = [p for p in report["problems"] if p["kind"] == "split_leak"]
    assert len(leaks) == 1 and leaks[0]["count"] == 2, report["problems"]
    assert report["balance"] == {"train": {"x": 1, "y": 1}, "val": {"x": 1}}


def test_a_clip_that_fails_to_decode_is_counted_not_fatal(tmp_path, monkeypatch):
    import accel.inspect.cost as cost
    from accel.io import VideoDecodeError

    good = write_index_video(tmp_path / "good.mp4", 20, seed=1)
    bad = write_index_video(tmp_path / "bad.mp4", 20, seed=2)
    real = cost.read_frames

    def failing(path, *args, **kwargs):
        if path == str(bad):
            raise VideoDecodeError(path, "decode failed (broken packet)")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cost, "read_frames", failing)
    row = cost.decoder_cost([{"path": str(good)}, {"path": str(bad)}], "pyav",
                            CostOptions(sample=4, size=0))
    assert row["clips"] == 2 and len(row["failed"]) == 2 and "broken packet" in row["failed"][0]
    assert row["ms_p50"] > 0
    only_bad = cost.decoder_cost([{"path": str(bad)}], "pyav", CostOptions(sample=2, size=0))
    assert only_bad["clips"] == 0 and only_bad["ms_p50"] is None


def test_verify_compares_dali_where_it_runs(mixed):
    """DALI's CPU decoder (VP9 only) here, NVDEC on a GPU: the same clip against PyAV."""
    from accel.inspect.verify import dali_device

    device = dali_device()
    if device is None:
        pytest.skip("DALI does not run here")
    _, report = mixed
    vp9, avi = _record(report, "train/b/vp9.webm"), _record(report, "packed.avi")
    v = verify([vp9, avi], 2, ["pyav"], clip_len=8)
    # The AVI goes to DALI's CPU fallback (decode-order frames), so only the VP9 file is DALI's.
    assert v["decoders"] == ["pyav", f"dali_{device}"] and v["clips"] == 1, v
    assert v["mismatches"] == 0, v["details"]


def test_a_file_whose_scan_hangs_is_reported_timed_out(tmp_path, monkeypatch):
    import time

    import accel.inspect.scan as scan
    from accel.inspect.layout import Entry

    path = write_index_video(tmp_path / "v.mp4", 8, seed=1)
    monkeypatch.setattr(scan, "SCAN_TIMEOUT_S", 0.3)
    monkeypatch.setattr(scan, "video_record", lambda p: time.sleep(5))
    t0 = time.perf_counter()
    record = scan.scan_entry(Entry(str(path), "train", "a"))
    assert time.perf_counter() - t0 < 3
    assert record["skipped"].startswith("timed out"), record
