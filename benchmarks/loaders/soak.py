"""``python -m benchmarks loaders --soak``: memory instead of speed. Per backend, the memory
growth over ``--clips`` clips (default 10000) of the bare decoder in one process, and of the
loader (persistent workers) with decode-process recycling off and on. Without ``--data`` it
reads tiny videos, so that many clips take minutes.
"""
from __future__ import annotations

import time
from pathlib import Path

from accel.data.loader import build_loader
from accel.data.manifests import Manifest, load_manifest
from accel.data.options import WatchdogOptions
from accel.data.reading import read_frames
from accel.io.backends import available_backends
from benchmarks.common import report, wrote
from benchmarks.loaders.throughput import SEED, clip_chooser, cycle_plan, skip_row

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
    plan = cycle_plan(manifest, args.clips)
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
    watchdog = WatchdogOptions() if recycle else WatchdogOptions(recycle_after_clips=None, recycle_rss_growth_mb=None)
    loader = build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                          strategy="random", backend=backend, num_workers=args.workers,
                          shuffle=True, persistent_workers=True, pin_memory=False, seed=SEED, watchdog=watchdog)
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


def run_soak(manifest: Manifest, args) -> list[dict]:
    rows = []
    available = set(available_backends())
    for backend in args.backends:
        if backend in ("naive", "dali"):
            continue  # naive is PyAV; DALI has no CPU worker processes to grow
        if backend not in available:
            rows.append(skip_row(backend, f"{backend} is not installed"))
            continue
        rows.append(in_child(_soak_raw, manifest, backend, args))
        for recycle in (False, True):  # the second: the defaults
            rows.append(in_child(_soak_loader, manifest, backend, recycle, args))
        for r in rows[-3:]:
            print(f"{backend:>10} {r['mode']:>20}: {r['start_mb']:.1f} -> {r['end_mb']:.1f} MiB "
                  f"({r['growth_pct']:+.1f}%) over {r['clips']} clips, {r['clips_per_s']:.0f} clips/s",
                  flush=True)
    return rows


def main_soak(args) -> int:
    manifest = load_manifest(args.data, args.split) if args.data else load_manifest(make_soak_data(args.cache))
    rows = run_soak(manifest, args)
    wrote(report(rows, args.json, command=args.command_line, columns=SOAK_COLUMNS, title="Loader memory soak"))
    return 0
