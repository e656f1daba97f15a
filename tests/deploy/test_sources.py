"""VideoSource on real streams served on 127.0.0.1: HLS and MP4 over HTTP (a finished
recording, a live playlist, a sender that dies), and a live source's decoder latency."""
from __future__ import annotations

import http.server
import itertools
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from accel.deploy.sources import VideoSource, hls_target_duration
from tests.conftest import QuietHandler, http_server

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line")

FPS = 25
TESTSRC = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=96x64:rate={FPS}",
           "-c:v", "libx264", "-g", str(FPS), "-bf", "0", "-pix_fmt", "yuv420p"]


def read(source: VideoSource, limit: int) -> list:
    """At most ``limit`` frames: a source that replays itself would never end."""
    try:
        return list(itertools.islice(source, limit))
    finally:
        source.close()


def assert_one_pass(frames: list, expected: int) -> None:
    """Every frame once, in order, and none released before its time on the pts schedule
    (HTTP delivers an HLS segment's frames at once; they are paced like a live camera's)."""
    pts = np.array([f.pts_s for f in frames])
    arrival = np.array([f.arrival_s for f in frames])
    assert len(frames) == expected
    assert np.allclose(np.diff(pts), 1 / FPS, atol=1e-6), pts
    assert np.all(arrival - arrival[0] >= pts - pts[0] - 2e-3), (arrival - arrival[0], pts - pts[0])


def test_a_finished_hls_recording_is_read_once(served):
    """A VOD playlist (#EXT-X-ENDLIST) over HTTP: its 75 frames once, then the end. Reopened
    as a stall, it played again from the start, for ever."""
    folder, url = served
    subprocess.run([*TESTSRC, "-t", "3", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
                    str(folder / "vod.m3u8")], check=True, timeout=60)
    assert hls_target_duration(f"{url}/vod.m3u8", 5) == 1.0
    source = VideoSource(f"{url}/vod.m3u8", reconnect_s=2, read_timeout_s=1)
    assert_one_pass(read(source, 200), 75)
    assert source.reconnects == 0 and source.stall_message is None


def test_an_mp4_over_http_is_read_once(served):
    folder, url = served
    subprocess.run([*TESTSRC, "-t", "2", str(folder / "case.mp4")], check=True, timeout=60)
    source = VideoSource(f"{url}/case.mp4", reconnect_s=2, read_timeout_s=1)
    assert_one_pass(read(source, 200), 50)
    assert source.reconnects == 0 and source.stall_message is None


def test_live_hls_waits_for_segments_longer_than_the_read_timeout(served):
    """2-s segments written in real time, a 1-s read timeout: the demuxer's wait for the next
    segment is not a stall, and every frame comes once until the playlist's end."""
    folder, url = served
    sender = subprocess.Popen([*TESTSRC[:4], "-re", *TESTSRC[4:], "-t", "6", "-f", "hls", "-hls_time", "2",
                               "-hls_list_size", "0", str(folder / "live.m3u8")])
    try:
        source = VideoSource(f"{url}/live.m3u8", reconnect_s=1, read_timeout_s=1, open_timeout_s=30)
        assert source.stream_timeout_s == pytest.approx(1 + 1.5 * 2)
        frames = read(source, 400)
    finally:
        sender.kill()
    assert_one_pass(frames, 150)
    assert source.reconnects == 0 and source.stall_message is None


def test_a_live_hls_sender_that_dies_is_a_stall(served):
    """No #EXT-X-ENDLIST ever comes: the source ends with the stall message once the wait
    (read timeout + 1.5 segments + the HTTP client's reconnect time) has passed."""
    folder, url = served
    sender = subprocess.Popen([*TESTSRC[:4], "-re", *TESTSRC[4:], "-t", "60", "-f", "hls", "-hls_time", "1",
                               "-hls_list_size", "0", str(folder / "live.m3u8")])
    try:
        source = VideoSource(f"{url}/live.m3u8", reconnect_s=1, read_timeout_s=1, open_timeout_s=30)
        killer = threading.Timer(3.0, sender.kill)
        killer.start()
        t0 = time.perf_counter()
        frames = read(source, 2000)
        took = time.perf_counter() - t0
    finally:
        sender.kill()
    assert 25 <= len(frames) < 200 and source.stall_message, (len(frames), source.stall_message)
    assert "stalled, no frame for" in source.stall_message and source.reconnects == 0
    assert took < 60, took  # the 60-s stream did not play out


def test_a_live_source_returns_each_frame_with_its_packet(served):
    """Frame threads would hold frames back (FFmpeg's thread count, minus one) where the
    latency, stamped after decoding, cannot see them: a live source decodes frame k from
    its k-th packet (a stream without B-frames)."""
    folder, url = served
    subprocess.run([*TESTSRC, "-t", "1", str(folder / "case.mp4")], check=True, timeout=60)
    source = VideoSource(f"{url}/case.mp4", reconnect_s=1, read_timeout_s=1)
    try:
        packets_at_frame = [source.packets for _ in source._read_all()]  # the reader, unthreaded
    finally:
        source.close()
    assert packets_at_frame == list(range(1, 26))
    file_source = VideoSource(str(folder / "case.mp4"))
    assert file_source.container.streams.video[0].thread_type.name == "AUTO"  # a file: throughput
    file_source.close()


def test_an_http_schedule_restarts_after_a_jump_in_pts(served, monkeypatch):
    """pts 100 s ahead (a gap in the recording), then back to the start (a new encoder
    session): both restart the schedule from that frame, where waiting for the pts would hold
    the stream for 100 s."""
    folder, url = served
    subprocess.run([*TESTSRC, "-t", "1", str(folder / "case.mp4")], check=True, timeout=60)
    source = VideoSource(f"{url}/case.mp4", reconnect_s=1, read_timeout_s=1)
    image = np.zeros((64, 96, 3), np.uint8)
    pts = [0.0, 0.04, 0.08, 100.0, 100.04, 0.0, 0.04]
    monkeypatch.setattr(source, "_decoded", lambda: iter([(t, image) for t in pts]))
    monkeypatch.setattr(source, "packet_at", time.perf_counter() + 3600)  # a clean end, not a stall
    t0 = time.perf_counter()
    arrivals = [arrival for arrival, _, _ in source._read_all()]
    source.close()
    assert len(arrivals) == 7 and time.perf_counter() - t0 < 10
    gaps = np.diff(arrivals)
    assert np.all(gaps[[0, 1, 3, 5]] >= 0.04 - 2e-3)  # paced within each run of pts


class DroppingHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with Range support; the first response is cut off half way (the
    connection dropped). ``refuse_after_drop``: every later request gets 503."""

    body = b""
    refuse_after_drop = False
    requests: list = []

    def do_GET(self):
        cls = type(self)
        first = not cls.requests
        start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0] or 0)
        cls.requests.append(start)
        if not first and cls.refuse_after_drop:
            self.send_error(503)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(cls.body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(cls.body) - 1}/{len(cls.body)}")
        self.end_headers()
        end = len(cls.body) // 2 if first else len(cls.body)
        self.wfile.write(cls.body[start:end])
        self.wfile.flush()
        if first:  # the rest never comes: the connection drops
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


@pytest.fixture
def dropping_server(tmp_path):
    """A 4-s faststart MP4 served by DroppingHandler on 127.0.0.1; yields (handler class, URL)."""
    path = tmp_path / "case.mp4"
    subprocess.run([*TESTSRC, "-t", "4", "-movflags", "+faststart", str(path)], check=True, timeout=60)
    handler = type("Handler", (DroppingHandler,), {"body": path.read_bytes(), "requests": []})
    with http_server(handler) as server:
        yield handler, f"{server.url}/case.mp4"


def test_a_dropped_http_transfer_resumes_at_its_byte(dropping_server):
    """FFmpeg's HTTP client asks for the rest (a Range request from where it was): every frame
    once, where reopening the URL would have played the first half twice."""
    handler, url = dropping_server
    source = VideoSource(url, reconnect_s=2, read_timeout_s=2)
    assert_one_pass(read(source, 300), 100)
    assert handler.requests[0] == 0 and len(handler.requests) >= 2 and handler.requests[-1] > 0
    assert source.stall_message is None and source.reconnects == 0


def test_an_http_server_gone_for_good_ends_with_how_much_came(dropping_server):
    """503 to every request after the drop: FFmpeg retries for reconnect_s, then the source ends
    with a line naming the URL and how much of the file came."""
    handler, url = dropping_server
    handler.refuse_after_drop = True
    source = VideoSource(url, reconnect_s=1, read_timeout_s=1)
    frames = read(source, 300)
    assert 0 < len(frames) < 100 and len(handler.requests) >= 2, (len(frames), handler.requests)
    assert source.stall_message == (f"{url}: the transfer ended after {len(frames)} of 100 frames "
                                    "(the server stopped sending); stopping")


def test_a_tcp_sender_that_restarts_is_reconnected_then_its_end_is_a_stall():
    """An MPEG-TS over TCP from a sender that listens (ffmpeg ...?listen=1) for 2 s, exits,
    and starts again 1 s later: the peer's close is a sender gone, not the end. Both runs'
    frames come (the pts start again once), then the stall line once no sender returns."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    send = [*TESTSRC[:4], "-re", *TESTSRC[4:], "-t", "2", "-tune", "zerolatency",  # no lookahead wait
            "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"]
    senders = [subprocess.Popen(send, stderr=subprocess.DEVNULL)]

    def restart():
        senders[0].wait()
        time.sleep(1.0)
        senders.append(subprocess.Popen(send, stderr=subprocess.DEVNULL))

    threading.Thread(target=restart, daemon=True).start()
    try:
        # reconnect_s 5: the reopen's backoff (0.25, 0.5, 1, 2 s) finds the second sender even if
        # a loaded machine takes seconds to start it
        source = VideoSource(f"tcp://127.0.0.1:{port}", reconnect_s=5, read_timeout_s=1, open_timeout_s=20)
        frames = read(source, 400)
    finally:
        for sender in senders:
            sender.kill()
    pts = np.array([f.pts_s for f in frames])
    restarts = np.flatnonzero(np.diff(pts) < 0) + 1
    assert len(frames) == 100 and len(restarts) == 1 and restarts[0] == 50, pts
    assert source.reconnects == 1 and source.stall_message.startswith(f"tcp://127.0.0.1:{port}: stalled")


def test_an_hls_ladder_reads_its_sharpest_variant_and_fetches_only_its_segments(tmp_path):
    """A master playlist listing a 96x64 rung before a 192x128 one (FFmpeg's best stream is
    the first): the frames are the 192x128 rung's, and after opening (FFmpeg probes every
    rung's first segment) only its segments are fetched."""
    import functools

    ladder = ["-filter_complex", "[0:v]split=2[a][b];[a]scale=192:128[big];[b]scale=96:64[small]",
              "-map", "[big]", "-map", "[small]"]
    subprocess.run([*TESTSRC[:8], *ladder, *TESTSRC[8:], "-t", "3", "-f", "hls", "-hls_time", "1",
                    "-hls_playlist_type", "vod", "-var_stream_map", "v:0 v:1", str(tmp_path / "v%v.m3u8")],
                   check=True, timeout=60)
    (tmp_path / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=96x64\nv1.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=192x128\nv0.m3u8\n")
    with http_server(functools.partial(QuietHandler, directory=str(tmp_path))) as server:
        source = VideoSource(f"{server.url}/master.m3u8", reconnect_s=1, read_timeout_s=1)
        opened = len(server.requests)
        frames = read(source, 200)
    assert_one_pass(frames, 75)
    assert frames[0].image.shape == (128, 192, 3) and (source.width, source.height) == (192, 128)
    assert server.requests[opened:] == ["/v01.ts", "/v02.ts"], server.requests
