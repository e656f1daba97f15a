"""evaluate.py: rebuilds the model from the checkpoint and reproduces training's test metrics
bit for bit on CPU; video-level windows; errors; exported runtimes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def evaluate_mod():
    return load_script("evaluate")


def run_main(evaluate_mod, *argv) -> dict:
    """evaluate.py's main in this process (no interpreter start-up; test_an_error_in_a_real_process
    and the ONNX test run it as a command)."""
    return evaluate_mod.main(evaluate_mod.get_args_parser().parse_args([str(a) for a in argv]))


def test_reproduces_training_test_metrics_bit_for_bit(trained_run, evaluate_mod, capsys, temporal_dataset, tmp_path):
    out = tmp_path / "eval"
    run_main(evaluate_mod, "--checkpoint", trained_run.model / "best.pt", "--data_dir", temporal_dataset,
             "--log_dir", out, "--device", "cpu", "--no_progress", "--num_workers", "0")  # trained with 2
    train_test = json.loads((trained_run.log / "metrics.json").read_text())["test"]
    ev = json.loads((out / "metrics.json").read_text())
    assert ev["test"]["clip"] == train_test["clip"]      # exact float equality, every field
    assert ev["test"]["video"] == train_test["video"]
    assert ev["test"]["clip"]["sampling"] == "random"    # the checkpoint's test sampling
    assert (out / "test_predictions.csv").read_text() == (trained_run.log / "test_predictions.csv").read_text()
    for name in ("test_confusion_matrix.png", "test_roc_curve.png", "test_per_class_accuracy.png",
                 "test_video_confusion_matrix.png"):
        assert (out / name).is_file()
    assert "test clip-level: n=4 accuracy=" in capsys.readouterr().out


def test_test_dir_and_overrides(trained_run, evaluate_mod, temporal_dataset, tmp_path):
    run_main(evaluate_mod, "--checkpoint", trained_run.model / "last.pt", "--test-dir",
             temporal_dataset / "test", "--log-dir", tmp_path, "--test-sampling", "uniform",
             "--batch-size", "3", "--no-video-eval", "--no-progress")
    ev = json.loads((tmp_path / "metrics.json").read_text())
    assert ev["test"]["clip"]["n"] == 4 and "video" not in ev["test"]
    assert ev["settings"]["batch_size"] == 3 and ev["settings"]["sampling"] == "uniform"


def one_line_exit_2(evaluate_mod, capsys, argv) -> str:
    """evaluate.py's main in this process (no interpreter start-up per case): exit 2, one line."""
    with pytest.raises(SystemExit) as exc:
        run_main(evaluate_mod, *argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evaluate.py: error: "), err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--checkpoint", "/nonexistent/best.pt", "--data_dir", "."], "no such checkpoint"),
    (["--data_dir", "/nonexistent"], "--data_dir"),
    ([], "give --test_dir or --data_dir"),
    (["--runtime", "openvino"], "invalid choice"),
    (["--backend", "openvino"], "invalid choice"),
])
def test_errors_are_one_line(trained_run, evaluate_mod, capsys, argv, needle):
    args = argv if any(a == "--checkpoint" for a in argv) else ["--checkpoint", trained_run.model / "best.pt", *argv]
    assert needle in one_line_exit_2(evaluate_mod, capsys, args)


def test_an_error_in_a_real_process_is_one_line(trained_run):
    """Exit status 2, one line, no traceback, from the command line."""
    r = run_script("evaluate.py", "--checkpoint", trained_run.model / "best.pt", "--data_dir", "/nonexistent")
    assert r.returncode == 2 and "--data_dir" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_window_dataset_tiles_every_video(temporal_dataset):
    from accel.data.manifests import load_manifest
    from accel.data.windows import VideoWindowsDataset, collate_windows

    m = load_manifest(temporal_dataset, "test")
    ds = VideoWindowsDataset(m, clip_len=4)
    item = ds[0]
    # 24 frames, 4-frame windows: widest stride 7 -> span 22, windows at 0 and 2 (end-aligned)
    assert item["indices"].tolist() == [[0, 7, 14, 21], [2, 9, 16, 23]]
    assert item["clip"].shape == (2, 4, 32, 32, 3) and item["clip"].dtype == torch.uint8
    dense = VideoWindowsDataset(m, clip_len=4, stride=1, max_windows=3)
    assert len(dense[0]["indices"]) == 3
    batch = collate_windows([ds[0], ds[1]])
    assert batch.clip.shape == (4, 3, 4, 32, 32)
    assert batch.clip.is_contiguous(memory_format=torch.channels_last_3d)
    assert batch.video_id.tolist() == [0, 0, 1, 1]


@pytest.mark.compile
def test_onnx_runtime_matches_eager(trained_run, temporal_dataset, tmp_path):
    pytest.importorskip("onnxruntime")
    r = run_script("evaluate.py", "--checkpoint", trained_run.model / "best.pt", "--data_dir", temporal_dataset,
                   "--log_dir", tmp_path, "--runtime", "onnx", "--no_progress", "--no_video_eval",
                   timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "model.onnx").is_file() and "parity vs eager" in r.stdout
    ev = json.loads((tmp_path / "metrics.json").read_text())
    train_clip = json.loads((trained_run.log / "metrics.json").read_text())["test"]["clip"]
    assert ev["runtime"] == "onnx"
    assert abs(ev["test"]["clip"]["accuracy"] - train_clip["accuracy"]) <= 0.25  # one near-tie may flip
    assert ev["test"]["clip"]["loss"] == pytest.approx(train_clip["loss"], abs=1e-4)


def test_onnx_export_on_the_fly_uses_a_cpu_model_with_the_cpu_example(tmp_path, monkeypatch):
    """--runtime onnx without --exported on CUDA exported a CUDA model with a CPU example (a
    device-mismatch traceback). 'meta' stands in for the GPU here."""
    import importlib.util
    from types import SimpleNamespace

    from accel.deploy import export

    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    seen = {}

    def fake_export(model, example, path):
        seen["model"] = {p.device.type for p in model.parameters()}
        seen["example"] = example.device.type
        return SimpleNamespace(parity="ok")

    monkeypatch.setattr(export, "export_onnx", fake_export)
    monkeypatch.setattr(export, "load_exported", lambda path, device: ("runner", Path(path).name, device))
    model = torch.nn.Linear(4, 2)
    args = SimpleNamespace(runtime="onnx", exported=None, channels_last=False)
    settings = SimpleNamespace(batch_size=2, clip_len=4, size=8)
    runner = evaluate.build_runner(args, model, settings, torch.device("meta"), tmp_path, None)
    assert seen == {"model": {"cpu"}, "example": "cpu"}
    assert runner == ("runner", "model.onnx", torch.device("meta"))


def test_runtime_and_decoder_options(evaluate_mod, capsys):
    """--runtime (old name --backend) is the model runtime, --decoder the video decoder; a bad
    value of either stops with the allowed values."""
    from accel.data.loader import LOADER_BACKENDS

    ev = evaluate_mod
    p = ev.get_args_parser()
    base = ["--checkpoint", "best.pt"]
    a = p.parse_args([*base, "--runtime", "onnx", "--decoder", "pyav"])
    b = p.parse_args([*base, "--backend", "onnx", "--decoder", "pyav"])
    assert vars(a) == vars(b)
    assert (a.runtime, a.decoder) == ("onnx", "pyav") and not hasattr(a, "backend")
    assert p.parse_args(base).runtime == "eager" and p.parse_args(base).decoder is None
    assert p.get_default("runtime") == "eager"
    for flag, values in (("--runtime", ev.RUNTIMES), ("--backend", ev.RUNTIMES),
                         ("--decoder", LOADER_BACKENDS)):
        err = one_line_exit_2(ev, capsys, [*base, flag, "nope"])
        assert "invalid choice: 'nope'" in err
        assert all(repr(v) in err or v in err for v in values), err
    assert "onnx" in ev.RUNTIMES and "dali" not in ev.RUNTIMES and "dali" in LOADER_BACKENDS
