"""The torchcodec reader: seeks through the shared stream index without torchcodec's own
whole-file scan; hands files it cannot read as they are to PyAV (see
:mod:`accel.io.fallback`)."""
from __future__ import annotations

import numpy as np
import torch

from .fallback import FallbackReader
from .index import StreamIndex


class TorchCodecReader(FallbackReader):
    """torchcodec on the shared index, NHWC, the chosen stream.

    Constant-rate streams are read in torchcodec's "approximate" mode, which opens in the time of the
    container's header however long the video: frames are asked for by time, the middle of
    each frame's display interval from our index, which names exactly one frame. Streams with
    open GOPs (frames decoded after a keyframe but shown before it: HEVC CRA, MPEG-2) defeat
    that mode's seeking, and in VFR streams it maps times to frames by the mean rate, so those
    are read in exact mode on our index as torchcodec's custom
    frame mappings (an O(frames) JSON per open). Every approximate read is checked: frames
    whose timestamps are not the ones asked for are read again in exact mode.
    """

    backend = "torchcodec"

    def _open_native(self, index: StreamIndex) -> str | None:
        self._exact = None
        exact = index.leading_frames or not index.constant_rate
        pooled = self._pooled()  # another reader's decoders of this file (see accel.io.handles)
        if pooled is not None:
            self._decoder, self._exact = pooled
        else:  # Exception: a codec the system FFmpeg lacks raises torchcodec's own types.
            self._decoder, why = self._make_native(index, Exception, lambda: self._make_decoder(exact=exact))
            if why:
                return why
            if exact:
                self._exact = self._decoder
        if getattr(self._decoder.metadata, "rotation", None) is not None:
            self._native_rotation = index.rotation  # torchcodec >= 0.8 applies the display matrix
        return None

    def _make_decoder(self, *, exact: bool):
        from torchcodec.decoders import VideoDecoder

        common = dict(stream_index=self._index.stream, dimension_order="NHWC",
                      num_ffmpeg_threads=self.threads, device="cpu")
        if exact:
            return VideoDecoder(self._native_path(), custom_frame_mappings=self._index.frame_mappings(),
                                **common)  # type: ignore[arg-type]
        return VideoDecoder(self._native_path(), seek_mode="approximate", **common)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._opened and self._delegate is None and self._decoder is not None:
            self._keep((self._decoder, self._exact), lambda handle: None)  # freed when dropped
        self._decoder = self._exact = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        if self._exact is not None:
            return self._exact.get_frames_at(indices=indices.tolist()).data
        batch = self._decoder.get_frames_played_at(seconds=self._index.display_midpoints(indices).tolist())
        expected = self._index.keys[indices] * float(self._index.time_base)
        if np.allclose(batch.pts_seconds.numpy(), expected, rtol=0, atol=1e-6):
            return batch.data
        self._exact = self._make_decoder(exact=True)  # the index missed an open GOP
        return self._exact.get_frames_at(indices=indices.tolist()).data
