"""One output: a video transcoded and checked (:func:`prepare_video`), or a frame folder linked
as it is (:func:`link_frames`). Written to ``<name>.part`` and renamed once checked."""
from __future__ import annotations

import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..io import index_stream
from ..io.index import choose_stream
from .options import CODECS, PrepareError, PrepareOptions
from .verify import check_indices, frame_times, verify_output

# Containers that carry H.264/HEVC with per-frame timestamps keep their own muxer; the rest
# (AVI cannot carry variable frame rates, WebM cannot carry H.264, MPEG-PS is awkward) get MP4
# content under their original name: every decoder here probes the content, not the name.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side exactly ``short_side`` (even, for 4:2:0 chroma;
    never upscaled) and the long side following the aspect ratio, rounded to a multiple of 32
    (the decoders need 16; torchcodec converts widths that are multiples of 32 with swscale,
    others through a filter graph, 5-6x slower per clip here), never past the source's:
    640x360 -> 224x128, 360x640 -> 128x224.
    """
    even = lambda v: max(2, int(v) // 2 * 2)  # noqa: E731
    landscape = width >= height
    long_in, short_in = (width, height) if landscape else (height, width)
    short = even(min(short_side, short_in))
    target = long_in * short / short_in
    if target >= 32:
        long = int(round(target / 32)) * 32
        long = long - 32 if long > long_in else long
    else:
        long = even(round(target))
    long = max(long, short)  # rounding never makes the long side the short one
    return (long, short) if landscape else (short, long)


def _encoder_options(options: PrepareOptions) -> dict[str, str]:
    common = f"keyint={options.gop}:min-keyint={options.gop}:scenecut=0:bframes={options.bframes}"
    enc = {"crf": str(options.crf), "preset": options.preset}
    if options.tune != "none":
        enc["tune"] = options.tune
    if options.codec == "h264":
        # One thread per encoder: parallelism comes from worker processes, and the output
        # does not depend on how many cores the machine has.
        enc["x264-params"] = f"{common}:open-gop=0:threads=1"
    else:
        enc["x265-params"] = f"{common}:open-gop=0:pools=1:frame-threads=1:log-level=error"
    return enc


def _encode(src: str, tmp: Path, container_format: str, options: PrepareOptions,
            src_pts: list[int], check: list[int]) -> dict[int, np.ndarray]:
    """Decode ``src`` in presentation order, resize, encode with the source's timestamps.

    Returns the resized source frames at ``check`` (RGB), the reference for the PSNR check.
    """
    import av

    reference: dict[int, np.ndarray] = {}
    wanted = set(check)
    with av.open(src) as inp, av.open(str(tmp), "w", format=container_format) as out:
        ist = choose_stream(inp, src, None)  # the stream training reads
        ist.codec_context.thread_count = 1
        time_base = ist.time_base
        width, height = output_size(ist.codec_context.width, ist.codec_context.height,
                                    options.short_side)
        rate = ist.average_rate or ist.guessed_rate or Fraction(25)
        ost = out.add_stream(CODECS[options.codec], rate=rate, options=_encoder_options(options))
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.codec_context.time_base = time_base  # the source's ticks reach the encoder unchanged
        ost.time_base = time_base
        ost.codec_context.gop_size = options.gop
        ost.codec_context.max_b_frames = options.bframes
        i = 0
        for frame in inp.decode(ist):
            if i >= len(src_pts) or frame.pts != src_pts[i]:
                got = "an extra frame" if i >= len(src_pts) else f"pts {frame.pts}"
                raise PrepareError(f"decoded frame {i} has {got}, expected pts "
                                   f"{src_pts[i] if i < len(src_pts) else None} (corrupt or out-of-order stream)")
            small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            small.pts, small.time_base = frame.pts, time_base
            # The decoder marks the source's keyframes, and x264 would force those too.
            small.pict_type = av.video.frame.PictureType.NONE
            if i in wanted:
                reference[i] = small.to_ndarray(format="rgb24")
            for packet in ost.encode(small):
                out.mux(packet)
            i += 1
        for packet in ost.encode():
            out.mux(packet)
    if i != len(src_pts):
        raise PrepareError(f"decoded {i} of {len(src_pts)} frames (truncated or corrupt)")
    return reference


def prepare_video(src: str, dst: str, options: PrepareOptions) -> dict:
    """Transcode one video to ``dst`` (via ``dst.part``) and check it; the result record."""
    t0 = time.perf_counter()
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_path.with_name(dst_path.name + ".part")
    try:
        src_pts, src_tb = frame_times(src)
        if not src_pts:
            raise PrepareError("no video frames")
        check = check_indices(len(src_pts), options.check_frames)
        reference = _encode(src, tmp, _MUXERS.get(dst_path.suffix.lower(), "mp4"), options,
                            src_pts, check)
        values = verify_output(tmp, options, src_pts, src_tb, reference)
        os.replace(tmp, dst_path)
        index_stream(dst_path)  # the output's stream index, so its first clip needs no scan
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"frames": len(src_pts), "output_bytes": dst_path.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 3), "psnr_db": values,
            "psnr_frames": sorted(reference)}


def link_frames(src: str, dst: str) -> dict:
    """A frame folder as it is: hard links (a copy across file systems), renamed into place."""
    t0 = time.perf_counter()
    dst_path = Path(dst)
    tmp = dst_path.with_name(dst_path.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    dst_path.parent.mkdir(parents=True, exist_ok=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link)
    shutil.rmtree(dst_path, ignore_errors=True)
    os.replace(tmp, dst_path)
    files = [p for p in dst_path.rglob("*") if p.is_file()]
    return {"frames": len(files), "output_bytes": sum(p.stat().st_size for p in files),
            "seconds": round(time.perf_counter() - t0, 3)}
