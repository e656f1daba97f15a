"""Each seed project's data layout and commands, as its README (and ours, "Coming from ...") gives
them, plus only ``--epochs 1`` and small clip sizes: each trains, evaluates and writes metrics.

The commands are the README's strings, run with ``python`` = this interpreter from a temporary
folder holding the seed's layout (tests/seed_layouts.py).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import seed_layouts as layouts

ROOT = Path(__file__).resolve().parents[2]
SMALL = " --epochs 1 --clip_len 4 --size 32 --no_progress"  # appended to each training command


def run(cmd: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python SCRIPT args`` from the README, with this interpreter and this checkout's script."""
    argv = shlex.split(cmd)
    assert argv[0] == "python"
    argv = [sys.executable, str(ROOT / argv[1]), *argv[2:]]
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
    return r


def trained(log_dir: Path, classes: list[str], *, test: bool = True) -> dict:
    m = json.loads((log_dir / "metrics.json").read_text())
    assert m["classes"] == classes
    assert len(m["epochs"]) == 1 and m["epochs"][0]["val_loss"] is not None
    if test:
        assert m["test"]["clip"]["n"] > 0 and m["test"]["clip"]["accuracy"] is not None
    return m


def evaluated(log_dir: Path, n: int) -> dict:
    m = json.loads((log_dir / "metrics.json").read_text())
    assert m["test"]["clip"]["n"] == n and m["num_skipped"] == 0
    assert (log_dir / "test_predictions.csv").is_file()
    return m


@pytest.mark.slow  # ResNet-50 + LSTM, the seed's default model: ~40 s on 2 cores
def test_seed000_laryngoscopy(tmp_path):
    layouts.seed000_laryngoscopy(tmp_path / "dataset")
    r = run("python train.py --data_dir dataset --test_dir dataset/test --log_dir logs --model_dir models "
            "--train_sampling uniform --val_sampling uniform --test_sampling uniform" + SMALL, tmp_path)
    assert "resnet50_lstm" in r.stdout
    trained(tmp_path / "logs", ["non_referral", "referral"])
    assert (tmp_path / "models" / "best.pt").is_file()
    run("python evaluate.py --checkpoint models/best.pt --test_dir dataset/test --log_dir logs/eval "
        "--no_progress", tmp_path)
    evaluated(tmp_path / "logs" / "eval", 4)


def test_seed001_laparoscopy_csvs(tmp_path):
    layouts.seed001_laparoscopy(tmp_path / "data", classes=3)
    r = run("python train.py --data_dir data --model tsm_resnet --label_smoothing 0.1 --balanced_sampler "
            "--out_dir runs/laparoscopy --num_workers 0" + SMALL, tmp_path)
    assert "tsm_resnet18" in r.stdout and "train 12 / val 6 / test 6" in r.stdout
    trained(tmp_path / "runs/laparoscopy", ["AbdominalEntry", "HookCut", "UseClipper"])
    run("python evaluate.py --checkpoint runs/laparoscopy/best.pt --data_dir data --no_progress", tmp_path)
    evaluated(tmp_path / "runs/laparoscopy/eval_test", 6)


@pytest.mark.slow  # ResNeXt-50 + LSTM 2048 (57 M parameters): ~40 s on 2 cores
def test_seed002_deepfake_metadata_csv(tmp_path):
    layouts.seed002_deepfake(tmp_path)
    r = run("python train.py --data_dir Data/Gobal_metadata.csv --video_root videos --model resnext50_lstm "
            "--patience 5 --out_dir runs/deepfake --num_workers 0" + SMALL, tmp_path)
    assert "held out" in r.stdout
    trained(tmp_path / "runs/deepfake", ["FAKE", "REAL"], test=False)
    run("python evaluate.py --checkpoint runs/deepfake/best.pt --test_dir Data/Gobal_metadata.csv "
        "--video_root videos --no_progress", tmp_path)
    evaluated(tmp_path / "runs/deepfake/eval_test", 12)


def test_seed003_sequences_bce(tmp_path):
    data = layouts.seed003_sequences(tmp_path)
    assert (data / "validation" / "validation.csv").is_file()
    r = run("python train.py --data_dir Data --model resnet18_lstm --loss bce --batch_size 4 --lr 1e-4 "
            "--opt adam --patience 5 --out_dir runs/sequences --num_workers 0" + SMALL, tmp_path)
    assert "train 8 / val 4 / test 4" in r.stdout  # validation/ is the val split, not a hold-out
    assert "trunk is frozen but has random weights" in r.stdout and "--weights" in r.stdout
    trained(tmp_path / "runs/sequences", ["0", "1"])
    import torch

    ck = torch.load(tmp_path / "runs/sequences/best.pt", weights_only=True)
    assert ck["model_kwargs"] == {"binary_logit": True} and ck["model"]["head.3.weight"].shape[0] == 1
    run("python evaluate.py --checkpoint runs/sequences/best.pt --data_dir Data --no_progress", tmp_path)
    evaluated(tmp_path / "runs/sequences/eval_test", 4)


@pytest.mark.slow  # R3D-18 on 4 segments, 4 loader workers as the seed's command: ~40 s on 2 cores
def test_seed004_late_fusion_train_and_test_py(tmp_path):
    layouts.seed004_frame_folders(tmp_path / "data")
    # The README's command; --num_frames 16 -> 8 and --size 32 keep it small.
    r = run("python train.py --data_root data --num_frames 8 --segments 4 --epochs 1 --batch_size 8 "
            "--lr 1e-4 --wd 1e-4 --patience 5 --num_workers 4 --out_dir output --augment "
            "--size 32 --no_progress", tmp_path)
    assert "r3d_18_late_fusion" in r.stdout
    trained(tmp_path / "output", ["class0", "class1"])
    r = run("python test.py --data_root data --model_path output/best_model.pth --num_frames 8 --segments 4 "
            "--batch_size 8 --out_dir output_test --no_progress", tmp_path)
    assert "using output/best.pt" in r.stdout
    m = evaluated(tmp_path / "output_test", 4)
    assert (tmp_path / "output_test" / "test_per_class_accuracy.png").is_file()
    assert m["model"] == "r3d_18_late_fusion"
