"""``python -m benchmarks loaders --costs``: where a clip's time goes, against the decoder's floor.

For each kind of file users have (``original``: 640x360 H.264, a keyframe every 50 frames,
2 B-frames; ``prepared``: what ``accel.prepare`` writes, 224x128, a keyframe every 16, no
B-frames; ``long``: one 60-minute 320x192 recording, a keyframe every 250, 16 consecutive
frames per clip; ``short_recording``: 10 s of the same kind, what a clip of the long one
should cost) and each backend, one process reads the same clips through each layer in turn,
and reports CPU time per clip (this process and all its children) and wall time per clip:

* ``floor``: the backend's own decoder asked for the same frames with no whole-file scan
  (PyAV: open, seek to the keyframe before each run of wanted frames, decode forward, convert
  only the wanted frames; torchcodec: "approximate" mode), opened per clip as the loaders do;
* ``reader``: ``open_video(path, backend).get_frames(indices)`` on the cached stream index;
* ``dataset_inprocess``: ``VideoClipDataset(isolate_decode=False)[i]`` (sampling, no child);
* ``dataset``: the default dataset, decoding in its watched child process;
* ``loader_0`` / ``loader_N``: ``build_loader`` with 0 and N DataLoader workers (collate too).

One-off costs are reported apart: building a file's index (a demux scan), on an empty index
folder, as ``index_build_ms`` per file; each layer's warm-up (its first clip, or first batch for
the loaders: imports, the decode child's fork, the workers' start) as ``warmup_ms``. CPU time
is read while a layer's workers and decode children are still alive, so theirs counts. Ratios
(``vs_floor``) are taken in the same run, so load on a shared machine hits both sides.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from accel.cli import UsageError
from accel.data.dataset import VideoClipDataset
from accel.data.loader import build_loader
from accel.data.manifests import Manifest, VideoItem
from accel.io import index_stream
from accel.io.backends import available_backends
from accel.io.index_store import forget_memory
from accel.io.pyav import shared_rgb
from benchmarks.common import report, wrote
from benchmarks.cpu import tree_cpu_s

COST_COLUMNS = ["kind", "backend", "layer", "clips", "cpu_ms_per_clip", "wall_ms_per_clip", "vs_floor",
                "warmup_ms", "index_build_ms", "convert_ms"]


# ---------------------------------------------------------------------------- files
def make_long_video(cache: Path, minutes: float) -> Path:
    """A ``minutes``-long 320x192 H.264 recording (keyframe every 250, 30 fps), with FFmpeg's
    command line (PyAV encoding frame by frame would take many minutes), cached."""
    path = cache / f"long_{minutes:g}min_320x192_gop250.mp4"
    if path.is_file():
        return path
    if shutil.which("ffmpeg") is None:
        raise UsageError("the long-video rows need FFmpeg's command line (apt-get install ffmpeg) "
                         "or --long PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x192:rate=30",
                    "-t", str(minutes * 60), "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                    "-g", "250", "-keyint_min", "250", "-sc_threshold", "0", "-bf", "0",
                    "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.rename(path)
    return path


def make_prepared(originals: list[str], cache: Path) -> list[str]:
    """The originals through ``accel.prepare``'s defaults (cached)."""
    from accel.prepare import PrepareOptions, prepare_video

    out = []
    for src in originals:
        dst = cache / "prepared" / Path(src).name
        if not dst.is_file():
            prepare_video(src, str(dst), PrepareOptions())
        out.append(str(dst))
    return out


# ---------------------------------------------------------------------------- the floor
def floor_clip(path: str, indices: list[int], backend: str, index) -> None:
    """The backend's decoder alone on ``indices`` (sorted, distinct), no scan, opened per clip.
    PyAV's keyframe positions and timestamps come from ``index``, an oracle built beforehand."""
    if backend == "torchcodec":
        from torchcodec.decoders import VideoDecoder

        VideoDecoder(path, seek_mode="approximate", dimension_order="NHWC",
                     num_ffmpeg_threads=1).get_frames_at(indices=indices)
        return
    import av

    keys, keyframes = index.keys, np.asarray(index.keyframes)
    wanted = set(int(keys[i]) for i in indices)
    with av.open(path) as container:
        stream = container.streams[index.stream]
        stream.codec_context.thread_count = 1  # as the readers decode in loader workers
        position = -1
        for i in indices:
            keyframe = int(keyframes[np.searchsorted(keyframes, i, side="right") - 1])
            if keyframe > position:  # a new run: seek to its keyframe
                container.seek(int(keys[keyframe]), stream=stream, backward=True)
                frames = container.decode(stream)
            for frame in frames:
                position = int(np.searchsorted(keys, frame.pts))
                if frame.pts in wanted:
                    frame.to_ndarray(format="rgb24") if index.plain_colour else shared_rgb(frame)
                if position >= i:
                    break


# ---------------------------------------------------------------------------- one row
def timed(layer) -> dict:
    """Run a layer: its warm-up (one-off: the decode child's fork, workers' start), then its
    timed clips, measured while its processes are still alive (their CPU time counts)."""
    start_cpu, t0 = tree_cpu_s(), time.perf_counter()
    warm = layer.warm_up()
    warmup_ms = (time.perf_counter() - t0) * 1e3
    cpu0, wall0 = tree_cpu_s(), time.perf_counter()
    clips = layer.run(warm)
    cpu, wall = tree_cpu_s() - cpu0, time.perf_counter() - wall0
    if layer.cpu_from_start:  # workers run ahead of the first batch: count all they did
        cpu, clips_cpu = tree_cpu_s() - start_cpu, clips + warm[2]
    else:
        clips_cpu = clips
    layer.close(warm)
    return {"clips": clips, "cpu_ms_per_clip": cpu * 1e3 / clips_cpu, "wall_ms_per_clip": wall * 1e3 / clips,
            "warmup_ms": warmup_ms}


class Layer:
    """Reads every clip of the plan through one layer of the data path."""

    cpu_from_start = False

    def __init__(self, name: str, read_one, make=None):
        self.name, self.read_one, self.make = name, read_one, make

    def warm_up(self):
        state = self.make() if self.make else None
        self.read_one(state, 0)  # imports, page cache, the decode child's fork
        return state

    def run(self, state) -> int:
        for i in range(self.clips):
            self.read_one(state, i)
        return self.clips

    def close(self, state) -> None:
        if hasattr(state, "close"):
            state.close()


class LoaderLayer(Layer):
    """``build_loader`` with persistent workers: the first batch warms up, the rest is timed
    (wall); CPU time counts from the loader's creation over every clip, since workers decode
    batches ahead of the one asked for (their start-up is in it too)."""

    cpu_from_start = True

    def warm_up(self):
        loader = self.make()
        batches = iter(loader)
        first = next(batches)
        return loader, batches, first.clip.shape[0]

    def run(self, state) -> int:
        _, batches, first = state
        return sum(batch.clip.shape[0] for batch in batches)

    def close(self, state) -> None:
        del state


def layer_runs(manifest: Manifest, plan: list[list[int]], backend: str, strategy: str, args) -> list[Layer]:
    """Every layer, reading every clip of ``plan``."""
    from accel import open_video

    paths = [item.path for item in manifest.items]
    index = {p: index_stream(p) for p in set(paths)}

    def dataset(isolate: bool):
        return lambda: VideoClipDataset(manifest, clip_len=args.clip_len, strategy=strategy, backend=backend,
                                        isolate_decode=isolate, on_error="raise")

    def loader(workers: int):
        return lambda: build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                                    strategy=strategy, backend=backend, num_workers=workers,
                                    on_error="raise", persistent_workers=workers > 0)

    layers = [
        Layer("floor", lambda _, i: floor_clip(paths[i], sorted(set(plan[i])), backend, index[paths[i]])),
        Layer("reader", lambda _, i: open_video(paths[i], backend).get_frames(plan[i])),
        Layer("dataset_inprocess", lambda ds, i: ds[i], dataset(False)),
        Layer("dataset", lambda ds, i: ds[i], dataset(True)),
        LoaderLayer("loader_0", None, loader(0)),
        LoaderLayer(f"loader_{args.workers}", None, loader(args.workers)),
    ]
    for layer in layers:
        layer.clips = len(plan)
    return layers


def clip_plan(manifest: Manifest, clip_len: int, strategy: str) -> list[list[int]]:
    """The frames the datasets read for each entry (epoch 0), computed the way they do."""
    from accel.data.sampling import clip_generator, sample_indices

    return [sample_indices(index_stream(item.path).num_frames, clip_len, strategy,
                           generator=clip_generator(0, 0, i))
            for i, item in enumerate(manifest.items)]


def convert_ms(path: str, frames: int) -> float:
    """Milliseconds to convert ``frames`` decoded frames of ``path`` to RGB (PyAV's swscale,
    the conversion inside every backend's decode), best of 5."""
    import av

    with av.open(path) as container:
        decoded = [f for _, f in zip(range(frames), container.decode(video=0))]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for frame in decoded:
            frame.to_ndarray(format="rgb24")
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def index_build_ms(paths: list[str]) -> float:
    """Mean milliseconds to build one file's index on an empty index folder."""
    previous = os.environ.get("VIDACCEL_INDEX_DIR")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["VIDACCEL_INDEX_DIR"] = folder
        forget_memory()
        t0 = time.perf_counter()
        for p in paths:
            index_stream(p)
        spent = (time.perf_counter() - t0) * 1e3 / len(paths)
    if previous is None:
        os.environ.pop("VIDACCEL_INDEX_DIR", None)
    else:
        os.environ["VIDACCEL_INDEX_DIR"] = previous
    forget_memory()
    return spent


def run_kind(kind: str, paths: list[str], args) -> list[dict]:
    strategy = "dense" if kind in ("long", "short_recording") else "uniform"  # recordings: consecutive frames
    manifest = Manifest([VideoItem(p, 0) for p in paths], ["all"])
    build_ms = index_build_ms(sorted(set(paths)))
    for p in set(paths):
        index_stream(p)  # the index every layer then reads (in memory and on disk)
    plan = clip_plan(manifest, args.clip_len, strategy)
    rows = []
    for backend in args.cost_backends:
        floor_cpu = None
        for layer in tqdm(layer_runs(manifest, plan, backend, strategy, args), desc=f"{kind} {backend}",
                          unit="layer", leave=False):
            row = timed(layer)
            floor_cpu = row["cpu_ms_per_clip"] if layer.name == "floor" else floor_cpu
            rows.append({"kind": kind, "backend": backend, "layer": layer.name, **row,
                         "vs_floor": row["cpu_ms_per_clip"] / floor_cpu if floor_cpu else None,
                         "index_build_ms": build_ms if layer.name == "floor" else None,
                         "convert_ms": convert_ms(paths[0], args.clip_len) if layer.name == "floor" else None})
    return rows


def run_costs(args) -> list[dict]:
    from benchmarks.loaders.throughput import make_benchmark_data

    originals = sorted(str(p) for p in (make_benchmark_data(args.cache, 50, videos=args.videos,
                                                            seconds=args.seconds) / "bench").glob("*.mp4"))
    kinds = {"original": originals, "prepared": make_prepared(originals, args.cache / "costs")}
    long = args.long or make_long_video(args.cache, args.long_minutes)
    kinds["long"] = [str(long)] * args.long_clips
    if shutil.which("ffmpeg") is not None:  # the same kind of recording, 10 s: what a clip should cost
        kinds["short_recording"] = [str(make_long_video(args.cache, 10 / 60))] * args.long_clips
    reps = max(1, args.clips // max(1, len(originals)))
    kinds["original"] = originals * reps
    kinds["prepared"] = kinds["prepared"] * reps
    rows = []
    for kind, paths in kinds.items():
        rows += run_kind(kind, paths, args)
    return rows


NOTES = ("\nCPU ms per clip: this process and all its children (DataLoader workers, decode "
         "children), one process reading the same clips through each layer in turn; `vs_floor` = "
         "the layer's CPU time / the floor's, same run. Each layer's first clip (loaders: first "
         "batch) is a warm-up, timed apart as `warmup_ms`; loader rows' CPU counts from the "
         "loader's creation (workers decode ahead), start-up included. `index_build_ms`: the "
         "one-off demux scan per file on an empty index folder (then served from the index). "
         "`convert_ms`: converting the clip's frames to RGB (swscale), part of every decode.\n")


def main_costs(args) -> int:
    missing = [b for b in args.cost_backends if b not in available_backends()]
    if missing:
        raise UsageError(f"--cost-backends {','.join(missing)}: not available here; available: "
                         f"{', '.join(available_backends())}")
    wrote(report(run_costs(args), args.json, command=args.command_line, columns=COST_COLUMNS,
                 title="Where a clip's time goes", notes=NOTES))
    return 0
