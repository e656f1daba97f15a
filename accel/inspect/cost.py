"""What a clip costs to decode, per group and CPU decoder, measured on a small sample.

A clip is read the way the loaders benchmark's bare-decoder rows (``raw_<backend>``) read
one: open, pick the frames of ``--sampling`` with the loaders' seed for that position, decode,
close, resize to ``--size``; so the two measure the same thing. One clip per decoder is read
first and not counted (imports, first open). The speed-up from :mod:`accel.prepare` is
measured too: a few sample files per group are prepared with the suggested settings and the
same clips are read from both, back to back, alternating which goes first.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cli import one_line
from ..data.dataset import resize_frames
from ..data.reading import READ_ERRORS, SkippedSample, read_frames
from ..data.sampling import Strategy, clip_seed, sample_indices

SEED = 0  # the loaders' seed: clip ``i`` is drawn with clip_seed(SEED, 0, i), as they draw it


@dataclass(frozen=True)
class CostOptions:
    clip_len: int = 16
    size: int = 112
    sampling: Strategy = "uniform"
    sample: int = 8        # clips per group and decoder, over up to this many files
    prepare_files: int = 1  # files per group prepared to measure accel.prepare's speed-up


def time_clip(path: str, position: int, backend: str, options: CostOptions) -> float:
    """Milliseconds to read one clip (open, sample, decode, close, resize)."""
    generator = torch.Generator().manual_seed(clip_seed(SEED, 0, position))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hand-overs to PyAV are reported as problems
        read = read_frames(path, backend, lambda n: sample_indices(
            n, options.clip_len, options.sampling, generator=generator), on_error="raise")
    if isinstance(read, SkippedSample):  # on_error="raise" never returns one
        raise RuntimeError(f"{path}: {read.reason}")
    clip = read[0]
    if options.size:
        clip = resize_frames(clip, (options.size, options.size))
    return (time.perf_counter() - t0) * 1e3


def sample_files(members: list[dict], n: int) -> list[dict]:
    """Up to ``n`` files of a group, spread over it (its order is the manifest's)."""
    if len(members) <= n:
        return members
    return [members[int(i)] for i in np.linspace(0, len(members) - 1, n).round()]


def decoder_cost(files: list[dict], backend: str, options: CostOptions) -> dict:
    """Per-clip times of ``backend`` on ``options.sample`` clips cycling through ``files``;
    a clip that fails to decode is counted in ``failed`` (the problems name such files)."""
    times, failed = [], []
    for k in range(-1, options.sample):  # clip -1: the warm-up (imports, first open), not counted
        path = files[max(k, 0) % len(files)]["path"]
        try:
            ms = time_clip(path, max(k, 0), backend, options)
        except READ_ERRORS as e:
            failed.append(f"{path}: {one_line(e)}")
            continue
        if k >= 0:
            times.append(ms)
    handed = sum(1 for f in files if (f.get("pyav_reason") or {}).get(backend))
    row = {"clips": len(times), "failed": failed, "files_handed_to_pyav": handed}
    if not times:
        return {**row, "ms_p50": None}
    p50 = float(np.median(times))
    cores = os.cpu_count() or 1
    return {**row, "ms_p50": round(p50, 2), "ms_mean": round(float(np.mean(times)), 2),
            "clips_per_s_1core": round(1e3 / p50, 1), "clips_per_s_all_cores": round(cores * 1e3 / p50, 1),
            "cores": cores}


def prepare_speedup(files: list[dict], backend: str, options: CostOptions) -> dict:
    """accel.prepare's speed-up on these files: median over clips of original / prepared time."""
    from ..prepare import PrepareError, PrepareOptions, prepare_video

    settings = PrepareOptions(short_side=max(16, options.size or 128))
    ratios, failed = [], []
    with tempfile.TemporaryDirectory(prefix="inspect_prepare_") as tmp:
        for k, record in enumerate(files):
            dst = str(Path(tmp) / f"{k}.mp4")
            try:
                prepare_video(record["path"], dst, settings)
            except (PrepareError, OSError, ValueError, RuntimeError) as e:
                failed.append(f"{record['path']}: {one_line(e)}")
                continue
            time_clip(dst, k, backend, options)  # warm the prepared file's first open too
            pair = [record["path"], dst]
            for rep in range(max(2, options.sample // max(1, len(files)))):
                times = {p: time_clip(p, k + rep, backend, options)
                         for p in (pair if rep % 2 == 0 else pair[::-1])}
                ratios.append(times[record["path"]] / times[dst])
    return {"decoder": backend, "files": len(files) - len(failed), "failed": failed,
            "settings": {"short_side": settings.short_side, "gop": settings.gop,
                         "bframes": settings.bframes, "crf": settings.crf},
            "speedup": round(float(np.median(ratios)), 2) if ratios else None}


def measure_costs(groups: dict[str, list[dict]], backends: list[str], options: CostOptions,
                  *, progress=None) -> list[dict]:
    """One row per group: each decoder's per-clip cost and the prepared speed-up."""
    rows = []
    for name, members in groups.items():
        files = sample_files(members, options.sample)
        row: dict = {"group": name, "files_sampled": len(files), "decoders": {}}
        # Frame folders are read by one image reader whichever decoder is asked.
        frames = members[0].get("container") == "frames"
        for backend in backends[:1] if frames else backends:
            row["decoders"][backend] = decoder_cost(files, backend, options)
            if progress is not None:
                progress.update(1)
        timed = [b for b in row["decoders"] if row["decoders"][b]["ms_p50"] is not None]
        fastest = min(timed, key=lambda b: row["decoders"][b]["ms_p50"]) if timed else None
        row["fastest"] = fastest
        if options.prepare_files and not frames and fastest:
            row["prepare"] = prepare_speedup(files[:options.prepare_files], fastest, options)
        rows.append(row)
    return rows
