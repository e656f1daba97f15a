"""Frame sources for live inference, read sequentially with PyAV (every frame, in order).

A SOURCE is a video file, a folder (its videos, sorted) or a glob; a network stream FFmpeg
opens (``udp://``, ``rtp://``, ``rtsp://``, ``srt://``, ``http(s)://`` HLS, ``tcp://``,
``rtmp://``); a V4L2 device (``/dev/video0``); or ``-``, an MPEG-TS on standard input.

Live sources (network, device, stdin) are decoded by a reader thread that stamps each
frame's arrival as it is decoded, so a busy consumer sees how old a frame is. A stalled
network stream (no packet for ``read_timeout_s``) is reopened with exponential backoff until
``reconnect_s`` have passed without a frame; then ``stall_message`` says so and the source
ends. An HTTP stream (HLS, a file served over HTTP) is not reopened, which would repeat what
was read: FFmpeg's HTTP client resumes a dropped transfer for up to ``reconnect_s``; a clean end
(``#EXT-X-ENDLIST``, a file's last byte) ends the source; an HLS wait for the next segment is
allowed 1.5 target durations on top of ``read_timeout_s``. A clean end on other protocols is a
sender gone, retried like a stall.
``realtime=True`` paces a file at its own timestamps on the same thread; HTTP streams are
always paced so (HLS delivers a segment's frames at once), their schedule restarted when the
transfer falls ``REBUFFER_S`` behind or pts jump. Corrupt packets are skipped and counted. A
source that cannot be opened raises :class:`SourceError` with one line naming it and saying why.
"""
from __future__ import annotations

import glob
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..cli import one_line
from ..io.index import choose_stream

__all__ = ["SourceError", "SourceFrame", "VideoSource", "expand_sources", "source_kind", "LIVE_SCHEMES",
           "VIDEO_SUFFIXES"]

LIVE_SCHEMES = ("udp", "rtp", "rtsp", "srt", "http", "https", "tcp", "rtmp")
# HTTP streams are never reopened by us: a reopened HLS playlist or file starts again from a
# segment or byte already read (repeated frames). FFmpeg's HTTP client reconnects instead, at
# the byte it had reached, and a clean end is the stream's end (HLS #EXT-X-ENDLIST, a file's
# last byte). Elsewhere a clean end is a sender gone (a TCP peer closed, an RTSP teardown),
# reopened like a stall.
HTTP_SCHEMES = ("http", "https")
REBUFFER_S = 0.5  # an HTTP stream this far off its pts schedule restarts the schedule
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


class SourceError(RuntimeError):
    """A source that cannot be opened or read at all (one line: the source and why)."""


@dataclass
class SourceFrame:
    index: int
    pts_s: float | None
    arrival_s: float  # time.perf_counter() when it was decoded (live) or released (paced)
    image: np.ndarray  # RGB uint8 (H, W, 3)


def source_kind(spec: str) -> str:
    """``"stdin"``, ``"url"``, ``"device"`` or ``"file"``."""
    if spec == "-":
        return "stdin"
    if "://" in spec and spec.split("://", 1)[0].lower() in LIVE_SCHEMES:
        return "url"
    if spec.startswith("/dev/video"):
        return "device"
    return "file"


def expand_sources(spec: str) -> list[str]:
    """A folder's videos (sorted, recursive), a glob's matches, or the source itself."""
    if source_kind(spec) != "file":
        return [spec]
    path = Path(spec)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise SourceError(f"{spec}: folder holds no videos ({', '.join(VIDEO_SUFFIXES)})")
        return found
    if any(c in spec for c in "*?["):
        found = sorted(glob.glob(spec, recursive=True))
        if not found:
            raise SourceError(f"{spec}: the pattern matches no file")
        return found
    if not path.is_file():
        raise SourceError(f"{spec}: no such file, folder or stream")
    return [spec]


def hls_target_duration(url: str, timeout_s: float) -> float | None:
    """An HLS playlist's ``#EXT-X-TARGETDURATION`` (longest segment, s), through a master
    playlist's first variant; None when it cannot be read."""
    from urllib.parse import urljoin
    from urllib.request import urlopen

    for _ in range(2):  # a master playlist, then its first media playlist
        try:
            with urlopen(url, timeout=timeout_s) as reply:
                lines = [line.strip() for line in reply.read(1 << 20).decode("utf-8", "replace").splitlines()]
        except (OSError, ValueError):
            return None
        for line in lines:
            if line.startswith("#EXT-X-TARGETDURATION:"):
                try:
                    return float(line.split(":", 1)[1])
                except ValueError:
                    return None
        variants = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.startswith("#EXT-X-STREAM-INF")]
        if not variants:
            return None
        url = urljoin(url, variants[0])
    return None


class VideoSource:
    """Iterate a source's frames as :class:`SourceFrame`; see the module's docstring.

    After iteration: ``corrupt`` (packets skipped), ``reconnects``, ``stall_message`` (None
    unless the source stalled for good), ``frames`` (how many were read), ``packets`` (video
    packets with data demuxed).
    """

    def __init__(self, spec: str, *, realtime: bool = False, reconnect_s: float = 10.0,
                 read_timeout_s: float = 2.0, open_timeout_s: float = 10.0):
        if reconnect_s < 0 or read_timeout_s <= 0 or open_timeout_s <= 0:
            raise ValueError(f"reconnect_s must be >= 0 and the timeouts > 0, got {reconnect_s}, "
                             f"{read_timeout_s}, {open_timeout_s}")
        self.spec, self.kind = spec, source_kind(spec)
        self.http = self.kind == "url" and spec.split("://", 1)[0].lower() in HTTP_SCHEMES
        self.stream_timeout_s = read_timeout_s  # no packet this long ends a read (see _open_url)
        self.packet_at = time.perf_counter()  # when the last packet with data was read
        self.live = self.kind != "file"
        self.realtime = realtime or self.live
        # Released at their timestamps: a file rehearsing a live case, and HTTP, which delivers
        # an HLS segment's frames at once (busy-drop would keep one or two of each segment).
        self.paced = self.realtime and (not self.live or self.http)
        self.reconnect_s, self.read_timeout_s, self.open_timeout_s = reconnect_s, read_timeout_s, open_timeout_s
        self.corrupt = self.reconnects = self.frames = self.packets = 0
        self.stall_message: str | None = None
        self.container: Any = None
        self.stream: Any = None  # the video stream read (set by each open)
        self.stop = threading.Event()
        self.container = self.open()
        stream: Any = self.stream  # set by open()
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.width, self.height = stream.codec_context.width, stream.codec_context.height

    # ------------------------------------------------------------------ opening
    def open(self):
        """The opened container; a network stream is retried until ``open_timeout_s`` (a
        live sender may start after the receiver)."""
        deadline = time.perf_counter() + self.open_timeout_s
        while True:
            try:
                return self._open_once()
            except SourceError:
                if self.kind != "url" or time.perf_counter() >= deadline or self.stop.is_set():
                    raise
                self.stop.wait(0.1)

    def _open_once(self):
        import av

        if self.kind == "device" and not Path(self.spec).exists():
            raise SourceError(f"{self.spec}: no such V4L2 device")
        try:
            if self.kind == "stdin":
                container = av.open(sys.stdin.buffer, mode="r", format="mpegts")
            elif self.kind == "device":
                container = av.open(self.spec, format="v4l2")
            elif self.kind == "url":
                container = self._open_url(self.stream_timeout_s)
                if container.format.name == "hls":
                    # The demuxer waits up to a segment for the next one: a read timeout below
                    # that would end every wait, so the wait is allowed on top of it.
                    segment_s = hls_target_duration(self.spec, self.open_timeout_s)
                    if segment_s and self.stream_timeout_s < self.read_timeout_s + 1.5 * segment_s:
                        self.stream_timeout_s = self.read_timeout_s + 1.5 * segment_s
                        container.close()
                        container = self._open_url(self.stream_timeout_s)
            else:
                container = av.open(self.spec)
        except Exception as e:  # PyAV raises FFmpegError subclasses and OSError
            raise SourceError(f"{self.spec}: cannot open ({one_line(e)})") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.spec}: has no video stream (audio only?)")
        # The stream training reads; of an HLS ladder (FFmpeg's best is its first rung) the
        # sharpest variant. The others are discarded: HLS then fetches one rung's segments.
        from av.stream import Discard

        if container.format.name == "hls":
            self.stream = max(container.streams.video, key=lambda v: (
                v.codec_context.width * v.codec_context.height, int(v.metadata.get("variant_bitrate", 0))))
        else:
            self.stream = choose_stream(container, self.spec, None)
        for other in container.streams:
            if other.index != self.stream.index:
                other.discard = Discard.all
        # Frame threads hold back a frame per thread but one (FFmpeg runs cores + 1, up to 16),
        # before the arrival is stamped, so no latency figure would show it. Live sources use
        # slice threads, which return each frame as soon as its packet is in.
        self.stream.thread_type = "SLICE" if self.kind != "file" else "AUTO"
        return container

    def _open_url(self, packet_wait_s: float):
        """Open a URL: FFmpeg's socket timeouts are ``read_timeout_s``; one whole read (PyAV's
        interrupt) may wait ``packet_wait_s``, plus ``reconnect_s`` over HTTP (FFmpeg's retries)."""
        import av

        us = str(int(self.read_timeout_s * 1e6))  # FFmpeg's protocol timeouts are in µs
        options = {"timeout": us, "rw_timeout": us}
        if self.http:  # FFmpeg resumes a dropped transfer at its byte, for up to reconnect_s
            options.update(reconnect="1", reconnect_streamed="1", reconnect_on_network_error="1",
                           reconnect_on_http_error="5xx", reconnect_delay_max=str(max(1, int(self.reconnect_s))))
            packet_wait_s += self.reconnect_s
        return av.open(self.spec, options=options, timeout=(self.open_timeout_s, packet_wait_s))

    # ------------------------------------------------------------------ decoding
    def _decoded(self) -> Iterator[tuple[float | None, np.ndarray]]:
        """(pts in s, RGB frame) until the container ends; corrupt packets skipped, counted.
        A demuxer error (a stall's timeout, a dropped connection) propagates."""
        import av

        for packet in self.container.demux(self.stream):
            if packet.size:  # not the flush at the end, which releases frames the decoder held
                self.packets += 1
                self.packet_at = time.perf_counter()
            if packet.is_corrupt:
                self.corrupt += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.corrupt += 1
                continue
            for frame in frames:
                yield frame.time, frame.to_ndarray(format="rgb24")

    def _reopen(self, last_frame_at: float) -> bool:
        """Reopen a stalled network source with backoff; False once ``reconnect_s`` have
        passed since the last frame."""
        delay = 0.25
        while not self.stop.is_set():
            waited = time.perf_counter() - last_frame_at
            if self.kind != "url" or waited >= self.reconnect_s:
                self.stall_message = (f"{self.spec}: stalled, no frame for {waited:.1f} s "
                                      f"({self.reconnects} reconnects); stopping")
                return False
            self.stop.wait(min(delay, max(0.0, self.reconnect_s - waited)))
            delay = min(delay * 2, 4.0)
            try:
                self.container.close()
                self.container = self._open_once()
                self.reconnects += 1
                return True
            except SourceError:
                continue
        return False

    def _read_all(self) -> Iterator[tuple[float, float | None, np.ndarray]]:
        """(arrival, pts, frame) across stalls and reconnects; paced when ``realtime``."""
        last = start = time.perf_counter()
        pts0: float | None = None  # (pts0, start): the first frame's pts and release time
        scheduled = False
        while not self.stop.is_set():
            error = ""
            try:
                for pts, image in self._decoded():
                    now = time.perf_counter()
                    if self.paced:
                        if not scheduled:  # the schedule starts at the first frame's release
                            pts0, start, scheduled = pts, now, True
                        offset = pts - pts0 if pts is not None and pts0 is not None else self.frames / self.fps
                        wait = start + offset - now
                        if self.http and not -REBUFFER_S < wait < REBUFFER_S + 1 / self.fps:
                            # behind (a slow transfer) or a jump in pts: start the schedule again
                            # from this frame, as a player does after rebuffering
                            start, wait = now - offset, 0.0
                        if wait > 0 and self.stop.wait(wait):
                            return
                        now = time.perf_counter()
                    last = now
                    self.frames += 1
                    yield now, pts, image
                    if self.stop.is_set():
                        return
                if self.kind != "url":
                    return  # a file or stdin ended
                if self.http and time.perf_counter() - self.packet_at < self.stream_timeout_s:
                    # ended (FFmpeg's HLS demuxer reports an interrupted wait as an end too),
                    # unless a file's header promised frames that never came
                    expected = self.stream.frames
                    if expected and self.frames < expected:
                        self.stall_message = (f"{self.spec}: the transfer ended after {self.frames} of "
                                              f"{expected} frames (the server stopped sending); stopping")
                    return
            except Exception as e:  # a demuxer error: a file's is the end, a stream's a stall
                if self.kind != "url":
                    self.stall_message = f"{self.spec}: read error after {self.frames} frames ({one_line(e)})"
                    return
                error = f" ({one_line(e)})"
            if self.http:  # FFmpeg's HTTP client has already retried for reconnect_s
                self.stall_message = (f"{self.spec}: stalled, no frame for "
                                      f"{time.perf_counter() - last:.1f} s{error}; stopping")
                return
            if not self._reopen(last):
                return

    def __iter__(self) -> Iterator[SourceFrame]:
        if not self.realtime:  # offline: decoded on demand, the arrival is when it was asked for
            for k, (arrival, pts, image) in enumerate(self._read_all()):
                yield SourceFrame(k, pts, arrival, image)
            return
        yield from self._threaded()

    def _threaded(self) -> Iterator[SourceFrame]:
        """Read on a thread so frames keep arriving (and are stamped) while the consumer works."""
        q: queue.Queue = queue.Queue()

        def run() -> None:
            try:
                for item in self._read_all():
                    q.put(item)
            except BaseException as e:  # surface it in the consumer, not as a silent hang
                q.put(e)
            finally:
                q.put(None)

        thread = threading.Thread(target=run, name="video-source", daemon=True)
        thread.start()
        try:
            k = 0
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise SourceError(f"{self.spec}: {one_line(item)}") from None
                yield SourceFrame(k, item[1], item[0], item[2])
                k += 1
        finally:
            self.stop.set()
            thread.join(timeout=self.read_timeout_s + 1)

    def close(self) -> None:
        self.stop.set()
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass
