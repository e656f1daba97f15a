"""The torchcodec reader: seeks exactly through the shared stream index; hands files it
cannot read as they are to PyAV (see :meth:`VideoReader._use_pyav`)."""
from __future__ import annotations

import numpy as np
import torch

from .index import index_stream
from .reader import VideoReader, pyav_only_reason


class TorchCodecReader(VideoReader):
    """torchcodec: exact seeking on the shared index (its frame mappings), NHWC, the chosen stream."""

    backend = "torchcodec"

    def _open(self) -> None:
        from torchcodec.decoders import VideoDecoder

        index = self._set_index(index_stream(self.path, self.stream))
        why = pyav_only_reason(index)
        if why:
            return self._use_pyav(why)
        # Our index as its frame mappings: exact seeking without torchcodec's own scan.
        # Exception: a codec the system FFmpeg lacks raises torchcodec's own types.
        self._decoder = self._native_or_pyav(index, Exception, lambda: VideoDecoder(
            self._native_path(), stream_index=index.stream, custom_frame_mappings=index.frame_mappings(),
            dimension_order="NHWC", num_ffmpeg_threads=self.threads, device="cpu"))

    def close(self) -> None:
        self._decoder = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return self._decoder.get_frames_at(indices=indices.tolist()).data
