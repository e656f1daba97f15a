"""One file's facts from its headers and packets, no decode; many files in worker processes.

Packet-level facts (frames, keyframes, timestamps, fps, codec, pixel format, size, streams)
come from the project's one stream index, :func:`accel.io.index.index_stream` (so scanning
builds the dataset index on the way); what the index does not keep (profile, audio streams,
bitrate, B-frames, edit lists, DivX packed B-frames, a hash of the first packets) from one
cheap PyAV header open. A file the loaders would skip is recorded with the reason they give.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import re
import struct
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..data.dali.probe import probe_video
from ..data.reading import time_limit
from ..io import index_stream
from ..io.decord import decord_reason
from ..io.diagnose import explain_skip
from ..io.fallback import pyav_only_reason
from ..io.frames import FRAME_EXTENSIONS
from ..io.index import StreamIndex, VideoDecodeError
from .layout import Entry

SCAN_TIMEOUT_S = 120.0  # one file's scan; past it the file is reported as timed out
HASH_PACKETS = 8  # first packets hashed: the content key for duplicates and split leaks
# DivX's user data ends in "p" when B-frames are packed (FFmpeg's mpeg4_unpack_bframes).
_PACKED = re.compile(rb"DivX\d+(?:b|Build)\d+p")
_MOV_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2",)


def keyframe_intervals(index: StreamIndex) -> np.ndarray:
    """Frames from each keyframe to the next (the last to the end of the stream)."""
    return np.diff(np.asarray([*index.keyframes, index.num_frames], dtype=np.int64))


def is_vfr(index: StreamIndex) -> bool:
    """Whether frame intervals vary by more than a tick and 5% of the typical one."""
    steps = np.diff(index.keys)
    if steps.size < 2 or index.decode_order:  # AVI: one tick per frame by construction
        return False
    return bool(steps.max() - steps.min() > max(1.0, 0.05 * float(np.median(steps))))


def mov_edit_list(path: str) -> bool:
    """Whether an MP4/MOV has an edit list that moves or cuts its media (not the identity)."""
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        at = 0
        while at + 8 <= end:
            f.seek(at)
            size, kind = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", f.read(8))[0], 16
            size = size or end - at
            if size < header:
                return False
            if kind == b"moov":
                return _has_edits(f.read(size - header))
            at += size
    return False


def _has_edits(moov: bytes) -> bool:
    for m in re.finditer(b"elst", moov):
        body = moov[m.end():]
        if len(body) < 8:
            continue
        version, count = body[0], struct.unpack(">I", body[4:8])[0]
        fmt = ">Qq" if version == 1 else ">Ii"
        step = struct.calcsize(fmt) + 4
        entries = [struct.unpack(fmt, body[8 + k * step: 8 + k * step + step - 4])
                   for k in range(min(count, 4)) if len(body) >= 8 + (k + 1) * step]
        if count > 1 or any(media_time != 0 for _, media_time in entries):
            return True
    return False


def header_facts(path: str, stream: int) -> dict:
    """What one PyAV header open tells beyond the index, and the hash of the first packets."""
    import av

    with av.open(path) as container:
        video = next(s for s in container.streams.video if s.index == stream)
        ctx = video.codec_context
        digest = hashlib.blake2b(digest_size=10)
        packed = False
        for k, packet in enumerate(container.demux(video)):
            if k >= HASH_PACKETS:
                break
            data = bytes(packet)
            digest.update(data)
            packed = packed or bool(_PACKED.search(data))
        return {"profile": ctx.profile, "b_frames": bool(ctx.has_b_frames),
                "audio_streams": len(container.streams.audio),
                "bitrate": int(container.bit_rate or 0), "packed_bframes": packed,
                "first_packets": digest.hexdigest()}


def bit_depth(pix_fmt: str | None) -> int | None:
    if not pix_fmt:
        return None
    import av

    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def video_record(path: str) -> dict:
    """The per-file record of a video (raises VideoDecodeError where the loaders would skip)."""
    index = index_stream(path)
    extra = header_facts(path, index.stream)
    gaps = keyframe_intervals(index)
    duration = index.num_frames / index.fps if index.fps else 0.0
    size = os.path.getsize(path)
    probe = probe_video(path)
    return {
        "container": index.container.split(",")[0], "codec": index.codec,
        "profile": extra["profile"], "pix_fmt": index.pix_fmt, "bit_depth": bit_depth(index.pix_fmt),
        "color_range": "full" if index.full_range else "limited",
        "width": index.width, "height": index.height, "fps": round(index.fps, 3),
        "vfr": is_vfr(index), "duration_s": round(duration, 3), "frames": index.num_frames,
        "keyframe_interval_mean": round(float(gaps.mean()), 2),
        "keyframe_interval_max": int(gaps.max()),
        "b_frames": extra["b_frames"] or index.decode_order,
        "video_streams": index.video_streams, "audio_streams": extra["audio_streams"],
        "size_bytes": size,
        "bitrate": extra["bitrate"] or (int(size * 8 / duration) if duration else 0),
        "packed_bframes": extra["packed_bframes"],
        "edit_list": index.container in _MOV_CONTAINERS and mov_edit_list(path),
        "decode_order": index.decode_order, "stream": index.stream,
        "content_hash": f"{index.codec}:{index.num_frames}:{extra['first_packets']}",
        "pyav_reason": {"torchcodec": pyav_only_reason(index),
                        "decord": pyav_only_reason(index) or decord_reason(index)},
        "dali_cpu_reason": probe.cpu_reason,
    }


def frames_record(path: str) -> dict:
    """A frame folder: its images are the frames; no codec or container facts."""
    images = [p for p in Path(path).iterdir() if p.suffix.lower() in FRAME_EXTENSIONS]
    return {"container": "frames", "codec": "image", "frames": len(images),
            "size_bytes": sum(p.stat().st_size for p in images), "video_streams": 0,
            "audio_streams": 0, "content_hash": None}


def scan_entry(entry: Entry) -> dict:
    """The record of one sample: its facts, or ``skipped`` with the loaders' reason."""
    t0 = time.process_time()
    record: dict = {"path": entry.path, "split": entry.split, "label": entry.label}
    try:
        with time_limit(SCAN_TIMEOUT_S, entry.path):  # a demuxer that loops must not stall the scan
            record.update(frames_record(entry.path) if os.path.isdir(entry.path)
                          else video_record(entry.path))
    except (VideoDecodeError, OSError, ValueError, StopIteration) as e:
        reason = e.reason if isinstance(e, VideoDecodeError) else f"{type(e).__name__}: {e}"
        record["skipped"] = skip_reason(entry.path, reason)
    record["scan_cpu_ms"] = round((time.process_time() - t0) * 1e3, 2)  # load-independent cost
    return record


def skip_reason(path: str, reason: str) -> str:
    """The loaders' reason (:func:`explain_skip`), except that a video container FFmpeg
    cannot parse (an MP4 cut before its index) is truncated, not a file without video."""
    explained = explain_skip(path, reason)
    if explained.startswith("no video stream") and "FFmpeg cannot read" in reason:
        return f"truncated or corrupt ({os.path.getsize(path)} bytes; FFmpeg cannot read it)"
    return explained


def _context():
    """forkserver where there is one: workers fork from a clean process that imported this
    module once, instead of each importing torch again (spawn) or inheriting threads (fork)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["accel.inspect.scan"])
    return ctx


CHUNK = 64  # files per task sent to a worker


def scan_workers(workers: int, files: int) -> int:
    """The processes a scan of ``files`` uses: this one alone for a few files."""
    return 1 if files < 2 * CHUNK else workers


def scan(entries: list[Entry], *, workers: int, chunk: int = CHUNK) -> Iterator[dict]:
    """Records of ``entries`` in their order; ``workers`` processes (1: in this process)."""
    if scan_workers(workers, len(entries)) <= 1:
        yield from map(scan_entry, entries)
        return
    with cf.ProcessPoolExecutor(workers, mp_context=_context()) as pool:
        yield from pool.map(scan_entry, entries, chunksize=chunk)


def scan_with_progress(entries: list[Entry], *, workers: int, quiet: bool = False) -> list[dict]:
    from tqdm import tqdm

    records: Iterable[dict] = scan(entries, workers=workers)
    return list(tqdm(records, total=len(entries), desc="scanning", unit="file", disable=quiet))
