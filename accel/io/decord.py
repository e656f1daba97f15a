"""The decord reader (decord 0.6, unmaintained): batched reads, with the files it gets
wrong handed to PyAV."""
from __future__ import annotations

import numpy as np
import torch

from .fallback import FallbackReader, pyav_only_reason
from .index import StreamIndex


class DecordReader(FallbackReader):
    """decord: its own frame index and accurate seeking, batched ``get_batch``.

    decord 0.6 cannot choose a stream, converts colour its own way and mis-seeks in some
    streams; files where that matters go to PyAV (see :func:`decord_reason`).
    """

    backend = "decord"

    def _pyav_reason(self, index: StreamIndex) -> str | None:
        # The container-wide reason first (decode-order AVI), then decord's own, then the rest.
        return (pyav_only_reason(index) if index.decode_order else None) or decord_reason(index) \
            or pyav_only_reason(index)

    def _open_native(self, index: StreamIndex) -> str | None:
        import decord

        # decord scans the whole file on open: another reader's handle saves that (accel.io.handles)
        self._vr = self._pooled()
        if self._vr is None:
            # decord.DECORDError: e.g. no AV1 decoder in decord's bundled FFmpeg
            self._vr, why = self._make_native(index, decord.DECORDError, lambda: decord.VideoReader(
                self._native_path(), ctx=decord.cpu(0), num_threads=self.threads))
            if why:
                return why
        self._native_rotation = index.rotation  # decord 0.6 applies the display matrix itself
        return None

    def close(self) -> None:
        if self._opened and self._delegate is None and getattr(self, "_vr", None) is not None:
            self._keep(self._vr, lambda handle: None)  # freed when dropped
        self._vr = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._vr.get_batch(indices.tolist()).asnumpy())


def decord_reason(index: StreamIndex) -> str | None:
    """Why decord itself (beyond :func:`~accel.io.fallback.pyav_only_reason`) would not return
    this stream's exact frames, so the file goes to PyAV; None when decord reads it.
    Public for reports (``python -m accel.inspect``)."""
    if index.stream != index.best:
        return f"decord reads only the best video stream ({index.best}), not stream {index.stream}"
    if not index.keyframe_offsets_constant:
        # decord 0.6 maps decode to presentation time with the first keyframe's pts-dts
        # offset; where later keyframes differ (HEVC, MPEG-4 Part 2 with B-frames), its
        # seeks land up to a few frames off.
        return "decord mis-seeks in streams whose keyframes' pts-dts offsets vary"
    return None
