"""``--verify N``: the same random clip of N sampled files from every available decoder.

PyAV is the reference (the readers hand it every file the others would read wrongly).
8-bit sources of codecs with a normative bit-exact decoder (H.264, HEVC, VP8, VP9, AV1) must
agree bit for bit; others (more than 8 bits, or MPEG-1/2/4 Part 2, whose decoders differ
between FFmpeg builds by a level or two) within :data:`TOLERANCE` levels. Every mismatch is
listed with its file, decoder and frame indices.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..data.sampling import mix_seed, sample_indices
from ..io.backends import open_video

BIT_EXACT_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1"})
TOLERANCE = 2  # levels of 255, where bit-exactness is not promised
REFERENCE = "pyav"


def tolerance_of(record: dict) -> int:
    exact = record.get("bit_depth") == 8 and record.get("codec") in BIT_EXACT_CODECS
    return 0 if exact else TOLERANCE


def decode(path: str, backend: str, indices: list[int]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hand-overs to PyAV are reported as problems
        with open_video(path, backend) as reader:
            return reader.get_frames(indices).numpy()


def compare_file(record: dict, backends: list[str], clip_len: int, seed: int) -> list[dict]:
    """Mismatches of each decoder against PyAV on one random clip of ``record``'s file."""
    generator = torch.Generator().manual_seed(mix_seed(seed, record["path"]))
    indices = sample_indices(record["frames"], clip_len, "random", generator=generator)
    reference = decode(record["path"], REFERENCE, indices).astype(np.int16)
    tol = tolerance_of(record)
    found = []
    for backend in backends:
        if backend == REFERENCE:
            continue
        try:
            frames = decode(record["path"], backend, indices).astype(np.int16)
        except Exception as e:  # noqa: BLE001 - any failure of one decoder is a mismatch to list
            found.append({"path": record["path"], "decoder": backend, "reference": REFERENCE,
                          "frames": indices, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
            continue
        if frames.shape != reference.shape:
            found.append({"path": record["path"], "decoder": backend, "reference": REFERENCE,
                          "frames": indices, "error": f"shape {frames.shape} vs {reference.shape}"})
            continue
        diff = np.abs(frames - reference).reshape(len(indices), -1).max(axis=1)
        bad = [indices[i] for i in np.flatnonzero(diff > tol)]
        if bad:
            found.append({"path": record["path"], "decoder": backend, "reference": REFERENCE,
                          "frames": bad, "max_abs_diff": int(diff.max()), "tolerance": tol})
    return found


def verify(records: list[dict], n: int, backends: list[str], *, clip_len: int, seed: int = 0,
           progress=None) -> dict:
    """``{files, clips, mismatches, details, decoders, tolerance}`` over ``n`` sampled files."""
    videos = [r for r in records if "skipped" not in r and r.get("container") != "frames"]
    rng = np.random.default_rng(seed)
    chosen = [videos[i] for i in sorted(rng.choice(len(videos), min(n, len(videos)), replace=False))]
    details: list[dict] = []
    for record in chosen:
        details += compare_file(record, backends, clip_len, seed)
        if progress is not None:
            progress.update(1)
    compared = [b for b in backends if b != REFERENCE]
    return {"files": len(chosen), "clips": len(chosen) * len(compared), "mismatches": len(details),
            "details": details, "decoders": [REFERENCE, *compared],
            "tolerance": {"bit_exact": sorted(BIT_EXACT_CODECS), "other_levels": TOLERANCE}}
