"""Decoding: exact frames by index from a video file or a frame folder.

One module per decoder backend (:mod:`.pyav`, :mod:`.decord`, :mod:`.torchcodec`,
:mod:`.frames`), the hand-over to PyAV decord and torchcodec build on (:mod:`.fallback`), the
stream index they all share (:mod:`.index`), the backend choice (:mod:`.backends`), the
watched child process decodes run in (:mod:`.watchdog`) and why a file was skipped
(:mod:`.diagnose`).
"""
from .backends import AUTO_ORDER, BACKENDS, available_backends, backend_available, open_video, resolve_backend
from .frames import FRAME_EXTENSIONS, FrameFolderReader, open_sample
from .index import StreamIndex, VideoDecodeError
from .index_store import index_dir, index_stream
from .reader import VideoReader

__all__ = ["open_video", "open_sample", "VideoReader", "FrameFolderReader", "VideoDecodeError",
           "StreamIndex", "index_stream", "index_dir", "BACKENDS", "AUTO_ORDER", "FRAME_EXTENSIONS",
           "available_backends", "backend_available", "resolve_backend"]
