"""predict.py: block-mode logits equal evaluation's for the same windows; a live H.264 MPEG-TS
over UDP on 127.0.0.1 (the sender killed mid-stream); an MPEG-TS on stdin; bad inputs."""
from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["left", "still", "right"]
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")


def predict(*args, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *map(str, args), "--no_progress",
                           "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A cnn_lstm checkpoint as train.py writes one (model, name, classes, eval settings), 4x32."""
    from accel.train.evaluation import EvalSettings
    from models import create_model

    torch.manual_seed(0)
    model = create_model("cnn_lstm", num_classes=len(CLASSES))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": model.state_dict(), "model_name": "cnn_lstm", "classes": CLASSES, "epoch": 0,
                "model_kwargs": {}, "eval": dataclasses.asdict(EvalSettings(clip_len=4, size=32))}, path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from accel.synth import write_index_video

    return write_index_video(tmp_path_factory.mktemp("video") / "case.mp4", 24, width=48, height=40)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def evaluation_window_logits(checkpoint: Path, video: Path) -> np.ndarray:
    """evaluate.py's logits for every 4-frame window at stride 1 (its video-level path)."""
    from accel.data.manifests import Manifest, VideoItem
    from accel.train.checkpoint import read_checkpoint
    from accel.train.evaluation import EvalSettings, evaluate_videos
    from models.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(read_checkpoint(checkpoint))
    s = EvalSettings(clip_len=4, size=32, num_workers=0, batch_size=8, video_stride=1, window_stride=1,
                     max_windows=None)
    preds = evaluate_videos(model, Manifest([VideoItem(str(video), 0)], CLASSES), s, torch.device("cpu"))
    return preds.logits


def test_block_mode_logits_equal_evaluation_and_outputs_are_written(checkpoint, video, tmp_path):
    r = predict(video, "--checkpoint", checkpoint, "--out_dir", tmp_path, "--device", "cpu", "--save_logits",
                "--deadline_ms", "100000")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "case"
    rows = read_jsonl(out / "predictions.jsonl")
    assert [row["index"] for row in rows] == list(range(3, 24))    # every frame once the ring is full
    assert [row["pts_s"] for row in rows] == pytest.approx([k / 25 for k in range(3, 24)])
    ours = np.array([row["logits"] for row in rows])
    ref = evaluation_window_logits(checkpoint, video)
    assert ref.shape == ours.shape == (21, 3)
    assert np.abs(ours - ref).max() <= 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path"] == "incremental" and summary["policy"] == "block" and summary["ended"] == "end"
    assert summary["inferred"] == 21 and summary["dropped"] == 0 and summary["frames"] == 24
    assert summary["frames_encoded"] == 24 and summary["late"] == 0
    assert sum(summary["frames_per_class"].values()) == 21
    assert (out / "timeline.png").stat().st_size > 5000
    assert "p99.9 ms" in r.stdout and "incremental" in r.stdout


@pytest.mark.parametrize("flag, channels_last", [([], True), (["--no_channels_last"], False)])
def test_the_model_is_loaded_with_the_clips_layout(checkpoint, flag, channels_last):
    """The live clips and frames are channels-last; a frame encoder with contiguous weights
    then runs about 2x slower on CPU (measured: 22 ms against 12 ms at 112 px, 2 threads)."""
    sys.path.insert(0, str(ROOT))
    import predict as script

    args = script.get_args_parser().parse_args(["x.mp4", "--checkpoint", str(checkpoint), *flag])
    model, s = script.load_model(args, torch.device("cpu"))
    conv = model.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert s["clip_len"] == 4 and s["classes"] == CLASSES


@pytest.mark.parametrize("runtime, extra, expected", [
    ("eager", [], ("incremental", None)),
    ("onnx", [], ("incremental", "encoder")),          # the encoder exported, the head eager
    ("onnx", ["--exported", "m.onnx"], ("window", "model")),  # a whole-window artifact
    ("onnx", ["--no_incremental"], ("window", "model")),
])
def test_the_runtime_runs_the_encoder_or_the_window(checkpoint, runtime, extra, expected, monkeypatch, tmp_path):
    """Which callable each runtime gets (evaluate.build_runner stubbed: no export here); the
    encoder's stand-in is the eager clip-shaped wrapper, so the windows equal the eager ones."""
    sys.path.insert(0, str(ROOT))
    import evaluate
    import predict as script
    from accel.deploy.live import FramesAsClips

    built = []

    def fake_build_runner(ev, model, settings, device, log_dir, amp, *, stem="model"):
        built.append((stem, type(model).__name__, settings.clip_len, ev.exported))
        return model

    monkeypatch.setattr(evaluate, "build_runner", fake_build_runner)
    args = script.get_args_parser().parse_args(["x.mp4", "--checkpoint", str(checkpoint), "--runtime", runtime,
                                                *extra])
    model, s = script.load_model(args, torch.device("cpu"))
    path = script.build_model_path(args, model, s, torch.device("cpu"), tmp_path)
    live = script.build_classifier(args, path, s, torch.device("cpu"), "block")
    assert (live.path, built[0][0] if built else None) == expected
    if expected[1] == "encoder":
        assert built == [("encoder", FramesAsClips.__name__, 1, None)]
    clip = torch.rand(1, 3, 4, 32, 32)
    frames = [(f.permute(1, 2, 0) * 255).to(torch.uint8).numpy() for f in clip[0].permute(1, 0, 2, 3)]
    results = [live.submit(f, index=k, arrival_s=0.0) for k, f in enumerate(frames)]
    with torch.inference_mode():
        reference = model(live.ring.clip())
    assert results[-1] is not None
    assert np.allclose(results[-1].probs, torch.softmax(reference, 1)[0].numpy(), atol=1e-5)


@pytest.mark.slow  # the exports take 20-50 s each here
@pytest.mark.parametrize("runtime, artifact", [("onnx", "encoder.onnx"), ("aoti", "encoder.pt2")])
def test_exported_encoders_give_the_eager_incremental_windows(checkpoint, video, tmp_path, runtime, artifact):
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    runs = {}
    for name in ("eager", runtime):
        r = predict(video, "--checkpoint", checkpoint, "--out_dir", tmp_path / name, "--device", "cpu",
                    "--runtime", name, "--save_logits")
        assert r.returncode == 0, r.stderr[-3000:]
        out = tmp_path / name / "case"
        runs[name] = (json.loads((out / "summary.json").read_text()),
                      np.array([row["logits"] for row in read_jsonl(out / "predictions.jsonl")]))
    (eager, eager_logits), (exported, exported_logits) = runs["eager"], runs[runtime]
    assert (eager["path"], exported["path"], exported["runtime"]) == ("incremental", "incremental", runtime)
    assert exported_logits.shape == eager_logits.shape == (21, 3)
    assert np.abs(exported_logits - eager_logits).max() <= 1e-4
    assert (tmp_path / runtime / artifact).stat().st_size > 0  # exported once, for every source


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SENDER = ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25",
          "-t", "10", "-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"]


def test_live_udp_stream_survives_a_restart_then_the_sender_dies(checkpoint, tmp_path):
    port = free_udp_port()
    recv = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), f"udp://127.0.0.1:{port}",
                             "--checkpoint", checkpoint, "--out_dir", tmp_path, "--device", "cpu",
                             "--deadline_ms", "40", "--reconnect_s", "3", "--read_timeout_s", "1",
                             "--open_timeout_s", "60", "--no_progress", "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    header = recv.stdout.readline()                         # the model is loaded: the receiver is up
    assert "cnn_lstm from" in header, recv.stderr.read()[-3000:] if recv.poll() is not None else header
    target = [*SENDER, "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    senders = [subprocess.Popen(target, stdin=subprocess.DEVNULL)]
    try:
        time.sleep(4)                                       # 4 s of the stream, then the sender dies...
        senders[0].kill()
        time.sleep(1.8)                                     # ...past the 1 s read timeout: a stall
        senders.append(subprocess.Popen(target, stdin=subprocess.DEVNULL))  # back within --reconnect_s
        time.sleep(3)
        senders[1].kill()                                   # gone for good: the stall message
        out, err = recv.communicate(timeout=120)
        out = header + out
    finally:
        for sender in senders:
            sender.kill()
        recv.kill()
    assert recv.returncode == 0, err[-3000:]
    assert "stalled, no frame for" in out and "stopping" in out
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert summary["ended"] == "stalled" and summary["policy"] == "busy-drop" and summary["kind"] == "url"
    assert summary["reconnects"] >= 1, summary
    assert summary["inferred"] > 5 and summary["latency_p50_ms"] > 0 and summary["latency_p99_ms"] > 0
    assert {"dropped", "late", "drop_pct"} <= set(summary) and summary["warmup_ms"] > 0
    rows = read_jsonl(next(tmp_path.glob("*/predictions.jsonl")))
    assert len(rows) == summary["inferred"] + summary["dropped"]
    pts, idx = np.array([r["pts_s"] for r in rows]), np.array([r["index"] for r in rows])
    # the second sender's stream starts its clock again: one run of results before, one after
    restart = np.flatnonzero(np.diff(pts) < 0) + 1
    assert len(restart) == 1, pts
    for part in np.split(np.arange(len(rows)), restart):
        assert len(part) > 5
        # every result carries its frame's stream pts: on the 25 fps grid, one index per 1/25 s
        assert np.allclose(np.diff(pts[part]), np.diff(idx[part]) / 25, atol=1e-6)
        assert np.allclose(pts[part] * 25, np.round(pts[part] * 25), atol=1e-3)
    assert next(tmp_path.glob("*/timeline.png")).stat().st_size > 5000


def test_a_finished_hls_recording_over_http(checkpoint, served):
    """The playlist as a user pastes its URL: every frame once, paced at 25 fps (HTTP hands
    over a segment's frames at once), and the end of the playlist is the end (exit 0)."""
    folder, url = served
    recording = [a if a != "10" else "3" for a in SENDER if a != "-re"]  # 3 s, written at once
    subprocess.run([*recording, "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
                    str(folder / "case.m3u8")], check=True, timeout=60)
    r = predict(f"{url}/case.m3u8", "--checkpoint", checkpoint, "--out_dir", folder / "out", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(next((folder / "out").glob("*/summary.json")).read_text())
    assert summary["kind"] == "url" and summary["ended"] == "end" and summary["reconnects"] == 0
    rows = read_jsonl(next((folder / "out").glob("*/predictions.jsonl")))
    assert summary["frames"] == 75 and len(rows) == summary["inferred"] + summary["dropped"] == 72
    pts, arrival = (np.array([r[k] for r in rows]) for k in ("pts_s", "arrival_s"))
    # paced: unpaced, the 72 frames came within a few tenths of a second (2 inferred)
    assert np.allclose(np.diff(pts), 1 / 25) and arrival[-1] - arrival[0] > (pts[-1] - pts[0]) / 2


def test_mpeg_ts_on_stdin(checkpoint, video, tmp_path):
    feed = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-c:v", "libx264", "-bf", "0",
                           "-f", "mpegts", "-"], capture_output=True, check=True, timeout=60).stdout
    r = subprocess.run([sys.executable, str(ROOT / "predict.py"), "-", "--checkpoint", str(checkpoint),
                        "--out_dir", str(tmp_path), "--device", "cpu", "--policy", "block", "--no_progress",
                        "--threads", "1"],
                       cwd=ROOT, input=feed, capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:].decode()
    summary = json.loads((tmp_path / "stdin" / "summary.json").read_text())
    assert summary["kind"] == "stdin" and summary["ended"] == "end"
    assert summary["frames"] == 24 and summary["inferred"] == 21 and summary["dropped"] == 0


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory) -> Path:
    from accel.synth import write_audio_only

    return write_audio_only(tmp_path_factory.mktemp("audio") / "voice.wav")


@pytest.mark.parametrize("case, needle", [
    ("missing", "no such file, folder or stream"),
    ("url", "cannot open"),
    ("model", "--model tsm_resnet18: "),
    ("clip_len", "--clip_len 8: "),
    ("audio", "has no video stream"),
    ("checkpoint", "no such checkpoint file"),
])
def test_bad_input_is_one_line_and_exit_2(case, needle, checkpoint, video, audio_only, tmp_path, capsys):
    from tests.conftest import load_script

    args = {"missing": [tmp_path / "nope.mp4"], "url": ["rtsp://127.0.0.1:9/none", "--open_timeout_s", "1"],
            "model": [video, "--model", "tsm_resnet18"], "clip_len": [video, "--clip_len", "8"],
            "audio": [audio_only], "checkpoint": [video]}[case]
    ck = tmp_path / "none.pt" if case == "checkpoint" else checkpoint
    mod = load_script("predict")   # in this process: the same main(), without a torch import per case
    argv = [str(a) for a in args] + ["--checkpoint", str(ck), "--out_dir", str(tmp_path), "--device", "cpu",
                                     "--no_progress"]
    try:
        rc = mod.main(mod.get_args_parser().parse_args(argv))
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err
    assert err.strip().count("\n") == 0, err


def test_ctrl_c_flushes_the_outputs_and_prints_the_summary(checkpoint, tmp_path):
    import signal

    long_video = tmp_path / "long.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
                    "-t", "30", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(long_video)], check=True, timeout=60)
    proc = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), str(long_video), "--checkpoint",
                             str(checkpoint), "--out_dir", str(tmp_path / "out"), "--device", "cpu", "--realtime",
                             "--no_progress", "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = proc.stdout.readline()
        assert "cnn_lstm from" in header
        time.sleep(4)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads((tmp_path / "out" / "long" / "summary.json").read_text())
    assert summary["ended"] == "interrupted" and 0 < summary["frames"] < 750
    rows = read_jsonl(tmp_path / "out" / "long" / "predictions.jsonl")
    assert len(rows) == summary["inferred"] + summary["dropped"] > 0
    assert (tmp_path / "out" / "long" / "timeline.png").is_file()
    assert "p99.9 ms" in out and "Traceback" not in err
