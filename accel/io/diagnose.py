"""Why a file was skipped, in words a user can act on: :func:`explain_skip` looks at the file
itself (there, empty, a container's signature, a video stream) beyond the decoder's message."""
from __future__ import annotations

import os
import re

_CPP_LOCATION = re.compile(r"[\w./\\-]+\.(?:cpp|cc|cxx|cu|h|hpp):\d+,?\s*")
_MAGIC_MP4 = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _has_container_signature(head: bytes) -> bool:
    return (head[4:8] in _MAGIC_MP4 or head.startswith(b"\x1a\x45\xdf\xa3")  # mp4/mov, mkv/webm
            or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
            or head.startswith(b"\x00\x00\x01\xba") or head[:1] == b"\x47")   # MPEG-PS, MPEG-TS


def _has_video_stream(path: str) -> bool | None:
    """PyAV's answer where PyAV is installed and the file opens, else None (unknown)."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as c:
            return bool(c.streams.video)
    except Exception:  # noqa: BLE001 - any failure means "cannot tell"
        return None


def explain_skip(path: str, reason: str) -> str:
    """A decoder's reason for a skipped file as one the user can act on: missing, empty,
    not a video, no video stream, truncated or corrupt, timed out; no C++ source paths."""
    detail = " ".join(_CPP_LOCATION.sub("", reason).split())
    if os.path.isdir(path):
        return f"unreadable frame folder ({detail})"
    if not os.path.exists(path):
        return "missing (no such file)"
    size = os.path.getsize(path)
    if size == 0:
        return "empty file (0 bytes)"
    if "longer than" in reason:
        return f"timed out ({detail})"
    with open(path, "rb") as f:
        head = f.read(16)
    if not _has_container_signature(head):
        return f"not a video (no video container signature; the file starts with {head[:12]!r})"
    has_video = _has_video_stream(path)
    if has_video is False or "no video stream" in reason or "video stream is unknown" in reason:
        return "no video stream (an audio-only or data file)"
    return f"truncated or corrupt ({size} bytes; {detail})"
