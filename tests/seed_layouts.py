"""The five seed projects' data layouts, built small: real H.264 videos or JPEG frames.

Each builder writes the layout its seed's README describes (folder names, CSV headers,
label spellings) with learnable temporal classes from :mod:`accel.synth`, a few samples
per class and split, 32x32 pixels, so a run of the seed's command takes seconds.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from accel.synth import TEMPORAL_CLASSES, temporal_frames, write_video

FRAMES, SIZE = 16, 32
CLASS_SHAPES = list(TEMPORAL_CLASSES)  # temporal patterns; each seed gives them its own names


def _frames(shape: int, seed: int) -> np.ndarray:
    return temporal_frames(CLASS_SHAPES[shape], FRAMES, SIZE, SIZE, np.random.default_rng(seed))


def _video(path: Path, shape: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, _frames(shape, seed), fps=16, gop=8)


def _frame_folder(folder: Path, shape: int, seed: int) -> Path:
    from torchvision.io import write_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(_frames(shape, seed)):
        write_jpeg(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), str(folder / f"{i:05d}.jpg"),
                   quality=95)
    return folder


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def seed000_laryngoscopy(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """``dataset/{train,val,test}/{referral,non_referral}/*.mp4`` (class folders of videos)."""
    per_class = per_class or {"train": 4, "val": 2, "test": 2}
    n = 0
    for split, count in per_class.items():
        for c, name in enumerate(("non_referral", "referral")):
            for i in range(count):
                _video(root / split / name / f"{name}_{i}.mp4", c, n := n + 1)
    return root


def seed001_laparoscopy(root: Path, classes: int = 3) -> Path:
    """``train.csv``, ``val.csv``, ``test.csv`` beside a ``clips/`` folder; ``clip_path,label``
    rows with the action names."""
    names = ["AbdominalEntry", "UseClipper", "HookCut", "Suturing", "PanoView", "LocPanoView", "Suction"]
    n = 0
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        rows = []
        for c in range(classes):
            for i in range(count):
                rel = f"clips/{split}_{names[c]}_{i}.mp4"
                _video(root / rel, c, n := n + 1)
                rows.append([rel, names[c]])
        _write_csv(root / f"{split}.csv", ["clip_path", "label"], rows)
    return root


def seed002_deepfake(root: Path) -> Path:
    """``Data/Gobal_metadata.csv`` (``filename,label`` with REAL/FAKE, bare file names) and the
    videos in another folder, ``videos/``."""
    rows, n = [], 0
    for c, label in enumerate(("REAL", "FAKE")):
        for i in range(6):
            name = f"{label.lower()}_{i:03d}.mp4"
            _video(root / "videos" / name, c, n := n + 1)
            rows.append([name, label])
    _write_csv(root / "Data" / "Gobal_metadata.csv", ["filename", "label"], rows)
    return root


def seed003_sequences(root: Path) -> Path:
    """``Data/{train,validation,test}/sequences/seq_#####/#####.jpg`` with ``train.csv``,
    ``validation.csv``, ``test.csv`` of ``sequence,label`` (0/1) inside each split folder."""
    n = 0
    for split, count in (("train", 4), ("validation", 2), ("test", 2)):
        rows = []
        for c in range(2):
            for _ in range(count):
                seq = f"seq_{(n := n + 1):05d}"
                _frame_folder(root / "Data" / split / "sequences" / seq, c, n)
                rows.append([seq, c])
        _write_csv(root / "Data" / split / f"{split}.csv", ["sequence", "label"], rows)
    return root / "Data"


def seed004_frame_folders(root: Path) -> Path:
    """``root/{train,val,test}/{class}/{sample}/*.jpg`` (frame folders per sample)."""
    n = 0
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for c, name in enumerate(("class0", "class1")):
            for i in range(count):
                _frame_folder(root / split / name / f"sample{i}", c, n := n + 1)
    return root
