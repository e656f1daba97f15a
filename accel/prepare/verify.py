"""Checking an output against its source: frame count, timestamps, PSNR of a few frames."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..io.index import choose_stream
from .options import PrepareError, PrepareOptions


def frame_times(path: str | Path) -> tuple[list[int], Fraction]:
    """Sorted packet pts of the best video stream and its time base (a demux scan, no decode).

    The same frames, in the same order, as :class:`accel.io.pyav.PyAVReader` indexes: frame ``i``
    of the project's readers is the frame with the i-th smallest pts.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise PrepareError("no video stream")
        stream = choose_stream(container, str(path), None)  # the readers' stream: FFmpeg's best
        pts = sorted(p.pts for p in container.demux(stream)
                     if p.size and p.pts is not None and not p.is_discard)
        return pts, stream.time_base


def check_indices(num_frames: int, k: int) -> list[int]:
    """The ``k`` frames (at most) the PSNR check compares, spread over the video."""
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(k, num_frames))})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (100 for identical ones, so JSON stays finite)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0 ** 2 / mse))


def verify_output(tmp: Path, options: PrepareOptions, src_pts: list[int], src_tb: Fraction,
                  reference: dict[int, np.ndarray]) -> list[float]:
    """Same frame count and times as the source; PSNR of the reference frames read back."""
    from ..io.pyav import PyAVReader

    out_pts, out_tb = frame_times(tmp)
    if len(out_pts) != len(src_pts):
        raise PrepareError(f"output has {len(out_pts)} frames, source {len(src_pts)}")
    # Times relative to the first frame (muxers may shift the start with an edit list); one
    # tick of the coarser time base is the most rounding can move a timestamp.
    tol = float(max(src_tb, out_tb))
    src_t = (np.asarray(src_pts, dtype=np.float64) - src_pts[0]) * float(src_tb)
    out_t = (np.asarray(out_pts, dtype=np.float64) - out_pts[0]) * float(out_tb)
    worst = int(np.argmax(np.abs(src_t - out_t)))
    if abs(src_t[worst] - out_t[worst]) > tol:
        raise PrepareError(f"frame {worst} is at {out_t[worst]:.4f} s in the output, "
                           f"{src_t[worst]:.4f} s in the source")
    indices = sorted(reference)
    with PyAVReader(tmp) as reader:
        frames = reader.get_frames(indices).numpy()
    values = [round(float(psnr(f, reference[i])), 2) for f, i in zip(frames, indices)]
    if min(values) < options.min_psnr:
        bad = indices[int(np.argmin(values))]
        raise PrepareError(f"frame {bad} has PSNR {min(values):.1f} dB against the resized source "
                           f"(< {options.min_psnr:g}): wrong frame or broken encode")
    return values
