"""The PyAV reader: the fallback every other decoder hands hard files to, and the one
that reads AVI B-frame streams by decode order."""
from __future__ import annotations

import bisect

import numpy as np
import torch

from .index import StreamIndex, VideoDecodeError, open_container
from .index_store import index_stream
from .reader import VideoReader


class PyAVReader(VideoReader):
    """PyAV: index the packets once (demux only, no decode), then seek + decode forward.

    Frames whose container has no presentation times (AVI with B-frames, packed or not) are
    identified by decode order: FFmpeg's decoder puts out one frame per AVI chunk, a fixed
    delay after it, so a frame's index is its packet dts minus that delay.
    """

    backend = "pyav"
    known_index: StreamIndex | None = None  # a scan another reader made of this file and stream

    def _open(self) -> None:
        index = self._set_index(self.known_index or index_stream(self.path, self.stream))
        pooled = self._pooled()
        if pooled is not None:  # another reader's open demuxer and decoder (see accel.io.handles)
            self._container, self._stream = pooled
        else:
            self._container = open_container(self.path)
            try:
                self._prepare_stream()
            except BaseException:
                self._container.close()
                raise
        self._delay = self._decoder_delay() if index.decode_order else 0

    def _prepare_stream(self) -> None:
        index = self._index
        self._stream = stream = self._container.streams[index.stream]
        # Decode-order indexing needs the decoder's delay fixed: single-threaded there.
        threads = 1 if index.decode_order else self.threads
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"

    def _reopen(self) -> None:
        """Back to the file's first packet (a fresh demuxer: seeking to the start is not
        reliable in containers whose timestamps start late, such as MPEG-TS)."""
        self._container.close()
        self._container = open_container(self.path)
        self._prepare_stream()

    def _frame_at(self, key: int) -> int | None:
        """The frame index whose key (pts, or dts in decode order) is ``key``; None if none."""
        keys = self._index.keys
        i = int(np.searchsorted(keys, key))
        return i if i < keys.size and keys[i] == key else None

    def _decoder_delay(self) -> int:
        """dts ticks between the first packet and the first frame the decoder puts out."""
        for _, frame in self._frames_from(0, frozenset(), raw=True):
            return int(frame.dts) - int(self._index.keys[0])
        raise VideoDecodeError(self.path, "no video frames")

    def close(self) -> None:
        if self._opened:
            self._keep((self._container, self._stream), lambda handle: handle[0].close())
            self._container = self._stream = None
        super().close()

    def _keyframe_before(self, index: int) -> int:
        """The last keyframe at or before ``index``; frame 0 before the first keyframe."""
        keyframes = self._index.keyframes
        i = bisect.bisect_right(keyframes, index) - 1
        return keyframes[i] if i >= 0 else 0

    def _frames_from(self, keyframe: int, wanted: frozenset = frozenset(), *, raw: bool = False):
        """Frames from ``keyframe`` on, as (index, av.VideoFrame) in presentation order.

        With ``wanted`` (keys of wanted frames), packets of other frames are decoded with
        ``skip_frame=NONREF``: the decoder drops them if no other frame references them
        (most B-frames), which is free to skip on the way to a wanted frame. Single-threaded
        decoding only, where the option applies to exactly the packet it is set for; never
        in decode order, where a packet's key does not name the frame it puts out.
        """
        keys = self._index.keys
        decode_order = self._index.decode_order
        skip = bool(wanted) and self.threads == 1 and not decode_order
        ctx = self._stream.codec_context
        ctx.skip_frame = "DEFAULT"  # a reused decoder may have been left skipping
        previous = None  # decode order: index of the last frame put out
        fed = int(keys[keyframe])  # decode order: dts of the last packet fed
        for packet in self._packets_from(keyframe):
            if skip:
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            if packet.dts is not None:
                fed = int(packet.dts)
            for frame in ctx.decode(packet):
                if raw:
                    yield None, frame
                    continue
                if not decode_order:
                    index = self._frame_at(frame.pts) if frame.pts is not None else None
                elif frame.dts is not None:
                    index = self._frame_at(int(frame.dts) - self._delay)
                else:  # flushed at the end of the stream: they follow the last packet's frame
                    index = (previous if previous is not None else fed - self._delay) + 1
                if index is None:
                    raise VideoDecodeError(self.path, f"decoded a frame with unindexed timestamp "
                                                      f"{frame.dts if decode_order else frame.pts}")
                previous = index
                yield index, frame

    def _packets_from(self, keyframe: int):
        """The stream's packets from frame ``keyframe``'s own packet on (the decoder flushed).

        A seek lands on a keyframe at or before the timestamp in containers with a seek
        table (MP4, MKV). Containers sought by byte position (MPEG-TS/PS) may land past it
        or mid-GOP: packets before the keyframe's are dropped, and a landing past it (a
        packet later than the keyframe shows up first) seeks from the keyframe before, then
        from the file's start.
        """
        keys, keyframes = self._index.keys, self._index.keyframes
        target = int(keys[keyframe])
        end = bisect.bisect_right(keyframes, keyframe)
        starts: list[int | None] = [int(keys[k]) for k in keyframes[max(0, end - 3):end][::-1]]
        for start in [*starts, None]:
            if start is None:
                self._reopen()
            else:  # (PyAV's seek flushes the decoder)
                self._container.seek(start, stream=self._stream, backward=True, any_frame=False)
            packets = self._container.demux(self._stream)
            first = True
            for packet in packets:
                key = packet.dts if self._index.decode_order or packet.pts is None else packet.pts
                if key is None:
                    continue
                if key == target:
                    yield packet
                    yield from packets
                    return
                if start is not None and key > target and (first or packet.is_keyframe):
                    break  # landed past the keyframe: start earlier
                first = False
        raise VideoDecodeError(self.path, f"cannot find the packet of keyframe {keyframe} "
                                          f"(timestamp {target}): the file changed or is damaged")

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        out = None
        wanted = frozenset(self._index.keys[indices].tolist())
        frames = None  # the current forward decode, restarted at a keyframe when that is cheaper
        position = -1  # index of the last frame taken from ``frames``
        for slot, want in enumerate(indices.tolist()):
            keyframe = self._keyframe_before(want)
            if frames is None or keyframe > position:
                frames = self._frames_from(keyframe, wanted)
            index, frame = _first_at_or_after(frames, want)
            while index is not None and index > want and keyframe > 0:
                # Landed past the frame (an open GOP's leading B-frames need the keyframe
                # before, or the container's seek overshot): start one keyframe earlier.
                keyframe = self._keyframe_before(keyframe - 1)
                frames = self._frames_from(keyframe, wanted)
                index, frame = _first_at_or_after(frames, want)
            if index != want:
                raise VideoDecodeError(self.path, f"stream ended before frame {want} of "
                                                  f"{self._index.num_frames} (file truncated?)")
            position = index
            array = self._to_rgb(frame)
            if out is None:
                out = np.empty((len(indices), *array.shape), dtype=np.uint8)
            out[slot] = array
        return torch.from_numpy(out)

    def _to_rgb(self, frame) -> np.ndarray:
        if self._index.plain_colour:
            return frame.to_ndarray(format="rgb24")
        return shared_rgb(frame)


def shared_rgb(frame) -> np.ndarray:
    """The one RGB conversion for >8-bit, full-range and non-4:2:0 sources, every backend.

    FFmpeg's swscale, told the frame's own colour matrix and range, with bicubic chroma
    upsampling (the FFmpeg command line's default).
    """
    return frame.to_ndarray(format="rgb24", interpolation="BICUBIC",
                            src_colorspace=frame.colorspace or None,
                            src_color_range=frame.color_range or None)


def _first_at_or_after(frames, want: int):
    """Advance a decode to the first frame whose index is >= ``want``; (None, None) at the end."""
    for index, frame in frames:
        if index >= want:
            return index, frame
    return None, None
