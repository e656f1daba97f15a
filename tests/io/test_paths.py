"""File names that are not UTF-8 on disk (a Latin-1 ``café.mp4``): every backend reads them,
train.py and evaluate.py train, evaluate and report them byte for byte."""
from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import CPU_BACKENDS, backend_param, load_script

from accel.data.manifests import folder_manifest
from accel.io.backends import open_video
from accel.synth import read_frame_index, write_index_video

ROOT = Path(__file__).resolve().parents[2]
LATIN1 = b"caf\xe9.mp4"  # 'café.mp4' in Latin-1: not valid UTF-8


def _script(name: str):
    return load_script(name, f"{name}_script_paths")


@pytest.mark.parametrize("backend", [backend_param(b) for b in CPU_BACKENDS])
def test_every_backend_reads_a_latin1_name(tmp_path, backend):
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/" + LATIN1)
    write_index_video(tmp_path / "v.mp4", 30, width=32, height=32, gop=10)
    os.rename(tmp_path / "v.mp4", os.fsencode(path))
    reader = open_video(path, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hand-over to PyAV warns: the backend itself must read it
        frames = reader.get_frames([3, 17, 17])
    assert [read_frame_index(f) for f in frames.numpy()] == [3, 17, 17]
    assert reader.decoder == backend
    reader.close()


@pytest.fixture(scope="module")
def latin1_dataset(tmp_path_factory, temporal_dataset):
    """The temporal dataset with one train and one test video renamed to Latin-1 bytes."""
    root = tmp_path_factory.mktemp("latin1") / "data"
    shutil.copytree(temporal_dataset, root)
    renamed = []
    for split in ("train", "test"):
        video = sorted((root / split).glob("*/*.mp4"))[0]
        target = os.fsencode(str(video.parent)) + b"/" + LATIN1
        os.rename(video, target)
        renamed.append(os.fsdecode(target))
    return root, renamed


def test_a_latin1_file_trains_and_evaluates(latin1_dataset, tmp_path):
    """One run with the default decoder (each backend's own reading is the test above)."""
    root, (train_file, test_file) = latin1_dataset
    assert train_file in [it.path for it in folder_manifest(root, "train").items]
    train, evaluate = _script("train"), _script("evaluate")
    out = tmp_path / "run"
    train.main(train.get_args_parser().parse_args([
        "--data_dir", str(root), "--out_dir", str(out), "--device", "cpu",
        "--model", "tsn_resnet18", "--clip_len", "4", "--size", "32", "--batch_size", "4",
        "--epochs", "1", "--num_workers", "0", "--no_progress", "--no_tensorboard",
        "--no_video_eval"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_skipped"] == 0, metrics["skipped"]  # the café file was read, not skipped
    assert metrics["test"]["clip"]["n"] == 4
    rows = _predictions(out / "test_predictions.csv")
    assert test_file in [r["path"] for r in rows]  # the same bytes as on disk

    ev = tmp_path / "eval"
    doc = evaluate.main(evaluate.get_args_parser().parse_args([
        "--checkpoint", str(out / "best.pt"), "--data_dir", str(root), "--log_dir", str(ev),
        "--device", "cpu", "--no_progress", "--no_video_eval"]))
    evaluated = json.loads((ev / "metrics.json").read_text())
    assert evaluated["num_skipped"] == 0 and doc["test"]["clip"] == metrics["test"]["clip"]
    assert evaluated["test"]["clip"] == metrics["test"]["clip"]
    assert test_file in [r["path"] for r in _predictions(ev / "test_predictions.csv")]


def _predictions(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))
