"""``--verify N``: the same random clip of N sampled files from every available decoder.

PyAV is the reference (the readers hand it every file the others would read wrongly).
8-bit sources of codecs with a normative bit-exact decoder (H.264, HEVC, VP8, VP9, AV1) must
agree bit for bit; others (more than 8 bits, or MPEG-1/2/4 Part 2, whose decoders differ
between FFmpeg builds by a level or two) within :data:`TOLERANCE` levels. Every mismatch is
listed with its file, decoder and frame indices.

DALI joins where it runs: on the GPU (NVDEC) where CUDA is present, else on its CPU decoder
(VP8/VP9/MJPEG only), for the files its route (:func:`~accel.data.dali.probe.dali_route`)
leaves to it. DALI converts YUV to RGB its own way, so its frames are held to the tolerance
the project states for it: a mean |difference| per frame of at most :data:`DALI_MEAN_TOLERANCE`.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..cli import one_line
from ..data.sampling import mix_seed, sample_indices
from ..io.backends import open_video

BIT_EXACT_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1"})
TOLERANCE = 2  # levels of 255, where bit-exactness is not promised
REFERENCE = "pyav"
DALI_MEAN_TOLERANCE = 6.0  # tests/data/test_dali.py's TOL_TEXTURE_MEAN (DALI's own RGB conversion)


def dali_device() -> str | None:
    """Where DALI decodes here: "gpu" (NVDEC), "cpu" (its CPU decoder), or None (not at all)."""
    from ..data.dali.install import dali_unavailable_reason

    for device in ("gpu", "cpu"):
        if dali_unavailable_reason(device) is None:
            return device
    return None


def dali_takes(record: dict, device: str) -> bool:
    """Whether the DALI loader on ``device`` decodes this file itself (no CPU fallback)."""
    from ..data.dali.probe import VideoProbe, dali_route
    from .problems import gpu_capability

    if record.get("dali_cpu_reason"):
        return False
    probe = VideoProbe(record["frames"], record["codec"], record["height"], record["width"])
    return dali_route(probe, device, gpu_capability()[0] if device == "gpu" else None) is None


def compare_dali(record: dict, indices: list[int], reference: np.ndarray, device: str) -> list[dict]:
    """DALI's frames of ``indices`` against PyAV's, within :data:`DALI_MEAN_TOLERANCE`."""
    from ..data.dali.pipeline import decode_frames

    entry = {"path": record["path"], "decoder": f"dali_{device}", "reference": REFERENCE}
    try:
        frames = decode_frames([(record["path"], indices)], device=device)[0].numpy().astype(np.int16)
    except Exception as e:  # noqa: BLE001 - DALI's own errors: a mismatch to list
        return [{**entry, "frames": indices, "error": one_line(e, typed=True)}]
    if frames.shape != reference.shape:
        return [{**entry, "frames": indices, "error": f"shape {frames.shape} vs {reference.shape}"}]
    mean = np.abs(frames - reference).reshape(len(indices), -1).mean(axis=1)
    bad = [indices[i] for i in np.flatnonzero(mean > DALI_MEAN_TOLERANCE)]
    return [{**entry, "frames": bad, "mean_abs_diff": round(float(mean.max()), 2),
             "tolerance": DALI_MEAN_TOLERANCE}] if bad else []


def tolerance_of(record: dict) -> int:
    exact = record.get("bit_depth") == 8 and record.get("codec") in BIT_EXACT_CODECS
    return 0 if exact else TOLERANCE


def decode(path: str, backend: str, indices: list[int]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hand-overs to PyAV are reported as problems
        with open_video(path, backend) as reader:
            return reader.get_frames(indices).numpy()


def compare_file(record: dict, backends: list[str], clip_len: int, seed: int,
                 dali: str | None = None) -> tuple[list[dict], int]:
    """Mismatches of each decoder (and DALI on ``dali``) against PyAV on one random clip of
    ``record``'s file, and the number of clips compared."""
    generator = torch.Generator().manual_seed(mix_seed(seed, record["path"]))
    indices = sample_indices(record["frames"], clip_len, "random", generator=generator)
    try:
        reference = decode(record["path"], REFERENCE, indices).astype(np.int16)
    except Exception as e:  # noqa: BLE001 - the reference itself fails: nothing to compare with
        return [{"path": record["path"], "decoder": REFERENCE, "reference": REFERENCE,
                 "frames": indices, "error": one_line(e, typed=True)}], 0
    tol = tolerance_of(record)
    found = []
    for backend in backends:
        if backend == REFERENCE:
            continue
        try:
            frames = decode(record["path"], backend, indices).astype(np.int16)
        except Exception as e:  # noqa: BLE001 - any failure of one decoder is a mismatch to list
            found.append({"path": record["path"], "decoder": backend, "reference": REFERENCE,
                          "frames": indices, "error": one_line(e, typed=True)})
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
    clips = len([b for b in backends if b != REFERENCE])
    if dali and dali_takes(record, dali):
        found += compare_dali(record, indices, reference, dali)
        clips += 1
    return found, clips


def verify(records: list[dict], n: int, backends: list[str], *, clip_len: int, seed: int = 0,
           with_dali: bool = True, progress=None) -> dict:
    """``{files, clips, mismatches, details, decoders, tolerance}`` over ``n`` sampled files."""
    videos = [r for r in records if "skipped" not in r and r.get("container") != "frames"]
    rng = np.random.default_rng(seed)
    chosen = [videos[i] for i in sorted(rng.choice(len(videos), min(n, len(videos)), replace=False))]
    details: list[dict] = []
    dali = dali_device() if with_dali else None
    clips = 0
    for record in chosen:
        found, compared = compare_file(record, backends, clip_len, seed, dali)
        details += found
        clips += compared
        if progress is not None:
            progress.update(1)
    compared_names = [b for b in backends if b != REFERENCE] + ([f"dali_{dali}"] if dali else [])
    return {"files": len(chosen), "clips": clips, "mismatches": len(details),
            "details": details, "decoders": [REFERENCE, *compared_names],
            "tolerance": {"bit_exact": sorted(BIT_EXACT_CODECS), "other_levels": TOLERANCE,
                          "dali_mean": DALI_MEAN_TOLERANCE}}
