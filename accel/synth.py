"""Synthetic video datasets made of real encoded files (PyAV + FFmpeg's encoders).

Two kinds of content:

* ``index``: every frame carries its own index as 16 large black/white blocks in the top
  half (they survive lossy compression), above a moving texture that costs a real decode.
  ``read_frame_index(frame)`` reads it back, so any test can check which frame it got.
* ``temporal``: learnable classes that only the *order* of frames tells apart. The whole
  frame's brightness follows a class-specific profile over time (ramp up, ramp down, peak,
  dip, ...). Every profile sweeps the same brightness range the same number of times per
  segment, so a single frame, or the unordered bag of a clip's frames, carries no class
  information, while the sequence does. Colours, textures, object positions and the
  brightness range are random per video.

``python -m accel.synth OUT --classes 4 --videos-per-class 24`` writes
``OUT/{train,val,test}/{class}/*.mp4``.
"""
from __future__ import annotations

import argparse
import fractions
import itertools
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .cli import Parser, comma_list, fail, non_negative_int, one_line, positive_float, positive_int, unit_interval

CODECS = {"h264": "libx264", "hevc": "libx265", "mpeg4": "mpeg4", "vp9": "libvpx-vp9",
          "av1": "libsvtav1"}
PROG = "python -m accel.synth"
KINDS = ("temporal", "index")

# Brightness profiles: each is a list of segment directions (+1 rising, -1 falling); every
# segment sweeps the full range, so all profiles share one distribution of frame values.
TEMPORAL_CLASSES: dict[str, tuple[int, ...]] = {
    "ramp_up": (+1,),
    "ramp_down": (-1,),
    "peak": (+1, -1),
    "dip": (-1, +1),
    "saw_up": (+1, +1),
    "saw_down": (-1, -1),
    "up_down_up": (+1, -1, +1),
    "down_up_down": (-1, +1, -1),
}

_BITS_ROWS, _BITS_COLS = 2, 8  # 16 bits: frame indices up to 65535


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build has the FFmpeg encoder behind ``codec``."""
    import av

    return CODECS[codec] in av.codecs_available


# --------------------------------------------------------------------------- frame content
def index_frame(index: int, height: int, width: int, *, texture_seed: int = 0) -> np.ndarray:
    """An RGB frame whose top half encodes ``index`` in 16 blocks; bottom half moves."""
    if not 0 <= index < 2 ** (_BITS_ROWS * _BITS_COLS):
        raise ValueError(f"index must be in [0, 65535], got {index}")
    if height < 32 or width < 32 or height % 2 or width % 2:
        raise ValueError(f"index frames need even sizes >= 32, got {width}x{height}")
    frame = np.empty((height, width, 3), np.uint8)
    half = height // 2
    rows = np.arange(half) * _BITS_ROWS // half
    cols = np.arange(width) * _BITS_COLS // width
    bit_of = rows[:, None] * _BITS_COLS + cols[None, :]
    frame[:half] = np.where((index >> bit_of) & 1, 224, 32).astype(np.uint8)[..., None]
    # A texture scrolling one pixel per frame: real motion for the codec to encode.
    rng = np.random.default_rng(texture_seed)
    tex = rng.integers(0, 256, size=(height - half, width + 64, 3), dtype=np.uint8)
    shift = index % 64
    frame[half:] = tex[:, shift:shift + width]
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """Read back the index written by :func:`index_frame` (frame is (H, W, 3) uint8)."""
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    half = h // 2
    value = 0
    for r in range(_BITS_ROWS):
        for c in range(_BITS_COLS):
            y0, y1 = r * half // _BITS_ROWS, (r + 1) * half // _BITS_ROWS
            x0, x1 = c * w // _BITS_COLS, (c + 1) * w // _BITS_COLS
            # The block's centre half: edges bleed under compression and chroma subsampling.
            dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
            block = frame[y0 + dy:y1 - dy, x0 + dx:x1 - dx]
            if block.mean() > 128:
                value |= 1 << (r * _BITS_COLS + c)
    return value


def brightness_profile(segments: Sequence[int], num_frames: int) -> np.ndarray:
    """Values in [0, 1] per frame; each segment sweeps the whole range up or down."""
    t = (np.arange(num_frames) + 0.5) / num_frames * len(segments)
    seg = np.minimum(t.astype(int), len(segments) - 1)
    frac = t - seg
    direction = np.asarray(segments)[seg]
    return np.where(direction > 0, frac, 1.0 - frac)


def temporal_frames(class_name: str, num_frames: int, height: int, width: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one video of a temporal class."""
    if class_name not in TEMPORAL_CLASSES:
        raise ValueError(f"unknown temporal class {class_name!r}; known: {sorted(TEMPORAL_CLASSES)}")
    # Random scene: background colour, a few coloured rectangles, fine noise texture.
    scene = np.empty((height, width, 3), np.float32)
    scene[:] = rng.uniform(60, 255, size=3)
    for _ in range(rng.integers(2, 6)):
        h, w = rng.integers(height // 6, height // 2), rng.integers(width // 6, width // 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        scene[y:y + h, x:x + w] = rng.uniform(60, 255, size=3)
    scene += rng.normal(0, 12, size=scene.shape)
    # Random brightness range per video, so no absolute level identifies a phase.
    low = rng.uniform(0.15, 0.45)
    high = low + rng.uniform(0.4, 0.55)
    levels = low + (high - low) * brightness_profile(TEMPORAL_CLASSES[class_name], num_frames)
    frames = scene[None] * levels[:, None, None, None].astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- encoding
def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 25,
                codec: str = "h264", gop: int = 30, bframes: int = 0, crf: int = 18,
                frame_durations_ms: Sequence[int] | None = None,
                pix_fmt: str = "yuv420p") -> Path:
    """Encode RGB uint8 frames to ``path``.

    ``gop``: frames between keyframes (scene-cut keyframes are disabled, so the GOP is what
    you ask). ``frame_durations_ms`` makes a variable-frame-rate file (millisecond pts).
    ``pix_fmt``: the encoded pixel format, e.g. ``yuv420p10le`` (10-bit) or ``yuvj420p``
    (full range).
    """
    import av

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if not encoder_available(codec):
        raise RuntimeError(f"this FFmpeg build has no {CODECS[codec]} encoder for codec {codec!r}")
    if gop < 1 or bframes < 0:
        raise ValueError(f"gop must be >= 1 and bframes >= 0, got gop={gop} bframes={bframes}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    options = {}
    if codec in ("h264", "hevc"):
        options = {"crf": str(crf), "preset": "veryfast"}
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0" if codec == "h264" else \
            f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error"
        options["x264-params" if codec == "h264" else "x265-params"] = params
    elif codec == "vp9":
        options = {"crf": str(crf + 12), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    elif codec == "mpeg4":
        options = {"qscale": "3"}
    elif codec == "av1":
        options = {"preset": "12", "crf": str(crf + 17)}
    with av.open(str(path), "w") as container:
        rate = fractions.Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(CODECS[codec], rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        if codec == "mpeg4":
            stream.codec_context.qscale = 3
        if frame_durations_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        pts = 0
        for i, img in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if frame_durations_ms is not None:
                frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
                pts += int(frame_durations_ms[i])
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_index_video(path: str | Path, num_frames: int, *, width: int = 64, height: int = 64,
                      fps: float = 25, codec: str = "h264", gop: int = 30, bframes: int = 0,
                      vfr: bool = False, seed: int = 0, pix_fmt: str = "yuv420p") -> Path:
    """A video whose frame ``i`` shows the number ``i`` (see :func:`read_frame_index`)."""
    durations = None
    if vfr:
        durations = np.random.default_rng(seed).integers(15, 70, size=num_frames)
    frames = (index_frame(i, height, width, texture_seed=seed) for i in range(num_frames))
    return write_video(path, frames, fps=fps, codec=codec, gop=gop, bframes=bframes,
                       frame_durations_ms=durations, pix_fmt=pix_fmt)


# --------------------------------------------------------------------------- odd files
_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 VOP start code; 2 bits after it give its type


def _vop_type(data: bytes) -> str:
    at = data.find(_VOP)
    return "IPBS"[data[at + 4] >> 6] if at >= 0 else "?"


def _n_vop(time_increment_bits: int) -> bytes:
    """A not-coded P-VOP: the tiny placeholder DivX puts after a packed B-frame run."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"  # type, time, vop_coded=0
    bits += "0" + "1" * (-(len(bits) + 1) % 8)  # MPEG-4 stuffing up to the byte
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def write_packed_bframe_avi(path: str | Path, num_frames: int, *, width: int = 64,
                            height: int = 64, fps: int = 25, gop: int = 12, bframes: int = 2,
                            seed: int = 0) -> Path:
    """An index-coded XviD AVI with DivX-style *packed* B-frames, as old datasets ship them.

    FFmpeg's MPEG-4 encoder writes B-frames unpacked; this packs them the DivX way (the
    reverse of FFmpeg's ``mpeg4_unpack_bframes``): each reference travels with the first
    B-frame after it in one chunk, the run's other B-frames follow, then a placeholder
    N-VOP, and the user data string ends in "p" so decoders know.
    """
    import av

    enc = av.CodecContext.create("mpeg4", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base, enc.framerate = fractions.Fraction(1, fps), fps
    enc.gop_size, enc.max_b_frames, enc.qscale = gop, bframes, 3
    enc.options = {"qscale": "3"}
    coded = []
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(index_frame(i, height, width, texture_seed=seed),
                                           format="rgb24")
        frame.pts = i
        coded += [bytes(p) for p in enc.encode(frame)]
    coded += [bytes(p) for p in enc.encode(None)]
    types = [_vop_type(c) for c in coded]
    user_data = b"\x00\x00\x01\xb2DivX503b1393p"
    time_bits = max(1, (fps - 1).bit_length())  # the VOL's vop_time_increment_resolution is fps
    chunks, i = [], 0
    while i < len(coded):
        data = coded[i]
        if types[i] == "I":
            at = data.find(_VOP)
            data = data[:at] + user_data + data[at:]
        run = 0
        while i + 1 + run < len(coded) and types[i + 1 + run] == "B":
            run += 1
        if run:
            chunks += [data + coded[i + 1], *coded[i + 2:i + 1 + run], _n_vop(time_bits)]
        else:
            chunks.append(data)
        i += 1 + run
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.codec_tag = "XVID"
        for k, chunk in enumerate(chunks):
            packet = av.Packet(chunk)
            packet.dts = packet.pts = k
            packet.time_base, packet.stream = fractions.Fraction(1, fps), stream
            packet.is_keyframe = _vop_type(chunk) == "I"
            container.mux(packet)
    return path


_TWO_STREAM_OPTIONS = {"mpeg4": {"qscale": "3"}, "h264": {"crf": "18", "preset": "veryfast"},
                       "hevc": {"crf": "18", "preset": "veryfast",
                                "x265-params": "keyint=30:min-keyint=30:bframes=2:log-level=error"}}


def tag_rotation(src: str | Path, dst: str | Path, degrees: int) -> Path:
    """``src``'s video stream copied to ``dst`` with a display matrix (a phone video held
    sideways): ``degrees`` counterclockwise, as FFmpeg's ``rotate`` tag and players read it."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        stream.set_display_rotation(degrees)
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:  # the demuxer's end-of-stream flush packet
                continue
            packet.stream = stream
            out.mux(packet)
    return Path(dst)


def write_two_stream_video(path: str | Path, *, frames: tuple[int, int] = (30, 45),
                           codecs: tuple[str, str] = ("mpeg4", "h264")) -> Path:
    """Two index-coded video streams: #0 48x32 at 25 fps, #1 64x64 at 30 fps (``codecs``:
    each one of mpeg4, h264, hevc).

    Stream 1 carries the "default" disposition, so it is the best stream FFmpeg picks,
    though not the first. Stream 1's frames show their index + 1000.
    """
    import av

    for codec in codecs:
        if codec not in _TWO_STREAM_OPTIONS:
            raise ValueError(f"codecs must be among {sorted(_TWO_STREAM_OPTIONS)}, got {codec!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        first = container.add_stream(CODECS[codecs[0]], rate=25, options=_TWO_STREAM_OPTIONS[codecs[0]])
        first.width, first.height, first.pix_fmt = 48, 32, "yuv420p"
        second = container.add_stream(CODECS[codecs[1]], rate=30, options=_TWO_STREAM_OPTIONS[codecs[1]])
        second.width, second.height, second.pix_fmt = 64, 64, "yuv420p"
        first.disposition = av.stream.Disposition(0)
        second.disposition = av.stream.Disposition.default
        for stream, count, offset in ((first, frames[0], 0), (second, frames[1], 1000)):
            for i in range(count):
                image = index_frame(i + offset, stream.height, stream.width, texture_seed=offset)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def write_audio_only(path: str | Path, *, seconds: float = 0.5, video_track: bool = False) -> Path:
    """A file with one second of silence and no video stream, or (``video_track``) a video
    stream that holds no frames: the zero-frame file."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 8000
    with av.open(str(path), "w", format="matroska" if video_track else None) as container:
        if video_track:
            video = container.add_stream("mpeg4", rate=25)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, int(rate * seconds)), np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*audio.encode(frame), *audio.encode()]:
            container.mux(packet)
    return path


# --------------------------------------------------------------------------- datasets
def make_dataset(out: str | Path, *, classes: int = 4, videos_per_class: int = 24,
                 kind: str = "temporal", frames: int = 32, width: int = 64, height: int = 64,
                 fps: float = 16, codec: str = "h264", gop: int = 16, bframes: int = 0,
                 splits: Sequence[float] = (0.6, 0.2, 0.2), vfr: bool = False, seed: int = 0,
                 progress: bool = False) -> Path:
    """Write ``out/{train,val,test}/{class}/{class}_{n}.mp4``; returns ``out``.

    Each class is split by the ``splits`` fractions (train, val, test); a split whose share
    rounds to zero videos is left out.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    max_classes = len(TEMPORAL_CLASSES) if kind == "temporal" else 10_000
    if not 2 <= classes <= max_classes:
        raise ValueError(f"classes must be in [2, {max_classes}] for kind {kind!r}, got {classes}")
    if videos_per_class < 1:
        raise ValueError(f"videos_per_class must be >= 1, got {videos_per_class}")
    if len(splits) != 3 or any(s < 0 for s in splits) or not np.isclose(sum(splits), 1.0):
        raise ValueError(f"splits must be three fractions (train, val, test) summing to 1, got {splits}")
    out = Path(out)
    names = list(TEMPORAL_CLASSES)[:classes] if kind == "temporal" else [f"class_{i}" for i in range(classes)]
    counts = np.floor(np.asarray(splits) * videos_per_class).astype(int)
    counts[0] = videos_per_class - counts[1:].sum()  # train takes the rounding remainder
    rng = np.random.default_rng(seed)
    jobs = []
    for c, name in enumerate(names):
        n = 0
        for split, count in zip(("train", "val", "test"), counts):
            for _ in range(count):
                jobs.append((split, c, name, n, int(rng.integers(2**31))))
                n += 1
    iterator = jobs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(jobs, desc=f"synth {out}", unit="video")
    for split, _class_index, name, n, video_seed in iterator:
        path = out / split / name / f"{name}_{n:04d}.mp4"
        if kind == "temporal":
            video = temporal_frames(name, frames, height, width, np.random.default_rng(video_seed))
            durations = (np.random.default_rng(video_seed).integers(30, 100, size=frames)
                         if vfr else None)
            write_video(path, video, fps=fps, codec=codec, gop=gop, bframes=bframes,
                        frame_durations_ms=durations)
        else:
            write_index_video(path, frames, width=width, height=height, fps=fps, codec=codec,
                              gop=gop, bframes=bframes, vfr=vfr, seed=video_seed)
    return out


def _parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '640x360' -> (640, 360) as (width, height), each side >= 2."""
    try:
        w, h = text.lower().split("x") if "x" in text else (text, text)
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from None
    if min(size) < 2:
        raise argparse.ArgumentTypeError(f"size must be at least 2x2, got {text!r}")
    return size


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Write a class-folder dataset of real encoded videos: "
                                      "OUT/{train,val,test}/{class}/*.mp4")
    p.add("out", type=Path, help="output folder")
    p.add("--kind", choices=KINDS, default="temporal",
          help="temporal: classes told apart only by frame order; "
               "index: frames that show their own index (default: temporal)")
    p.add("--classes", type=positive_int, default=4,
          help=f"number of classes (temporal: at most {len(TEMPORAL_CLASSES)})")
    p.add("--videos-per-class", type=positive_int, default=24)
    p.add("--frames", type=positive_int, default=32, help="frames per video")
    p.add("--size", type=_parse_size, default=(64, 64), help="N or WxH (default 64)")
    p.add("--fps", type=positive_float, default=16)
    p.add("--codec", choices=sorted(CODECS), default="h264")
    p.add("--gop", type=positive_int, default=16, help="frames between keyframes")
    p.add("--bframes", type=non_negative_int, default=0, help="max consecutive B-frames")
    p.add("--splits", type=comma_list(unit_interval), default=[0.6, 0.2, 0.2],
          help="train,val,test fractions (default 0.6,0.2,0.2)")
    p.add("--vfr", action="store_true", help="variable frame rate (irregular timestamps)")
    p.add("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    width, height = args.size
    try:
        out = make_dataset(args.out, classes=args.classes, videos_per_class=args.videos_per_class,
                           kind=args.kind, frames=args.frames, width=width, height=height,
                           fps=args.fps, codec=args.codec, gop=args.gop, bframes=args.bframes,
                           splits=tuple(args.splits), vfr=args.vfr, seed=args.seed, progress=True)
    except (ValueError, RuntimeError) as e:
        fail(PROG, one_line(e))
    n = sum(1 for _ in out.rglob("*.mp4"))
    print(f"wrote {n} videos to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
