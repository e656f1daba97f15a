"""``python -m benchmarks train``: end-to-end training throughput with the real loader, and
the share of step time spent waiting for data (data-stall %), per decode backend.

A step is: wait for the next batch (decode, collate, copy to the device, augment: the
data-wait), then forward + backward + optimizer step (compute). On CUDA the device is
synchronised before each clock read, so asynchronous work is charged to the step that
queued it. data_stall_pct = data-wait / (data-wait + compute) over the timed steps.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from accel.data import load_manifest
from accel.loader import LOADER_BACKENDS, DevicePrefetcher, build_loader
from accel.perf import optimize
from accel.telemetry import Telemetry
from accel.transforms import ClipTransform
from benchmarks.common import cpu_threads, markdown_table, summarize_ms, write_results

COLUMNS = ["model", "backend", "workers", "batch_size", "clip_len", "size", "steps", "clips_per_s",
           "step_ms_mean", "data_wait_ms_mean", "compute_ms_mean", "data_stall_pct", "cpu_util",
           "sm_util", "nvdec_util", "skipped", "status"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(loader, device, transform):
    """Endless device batches, one epoch after another."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from DevicePrefetcher(loader, device, transform=transform)
        epoch += 1


def bench_backend(manifest, backend: str, args, device: torch.device) -> dict:
    from models import create_model

    loader = build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                          strategy="random_window", frame_size=(args.frame_size, args.frame_size),
                          backend=backend, num_workers=args.workers, shuffle=True, drop_last=True,
                          device=device, seed=0)
    model = create_model(args.model, num_classes=max(2, len(manifest.classes))).to(device)
    step_model = optimize(model, channels_last=args.channels_last, amp=args.amp, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    transform = ClipTransform(args.size, train=True)
    batches = _batches(loader, device, transform)
    waits, computes, clips = [], [], 0
    total = args.warmup_steps + args.steps
    with Telemetry() as tel:
        for step in tqdm(range(total), desc=f"{args.model} / {loader.backend}", unit="step", leave=False):
            _sync(device)
            t0 = time.perf_counter()
            batch = next(batches)
            _sync(device)
            t1 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(step_model(batch["clip"]), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            _sync(device)
            t2 = time.perf_counter()
            if step >= args.warmup_steps:
                waits.append((t1 - t0) * 1e3)
                computes.append((t2 - t1) * 1e3)
                clips += batch["clip"].shape[0]
    wait, compute = summarize_ms(waits), summarize_ms(computes)
    total_ms = sum(waits) + sum(computes)
    return {"model": args.model, "backend": loader.backend, "backend_reason": loader.reason,
            "workers": args.workers, "batch_size": args.batch_size, "clip_len": args.clip_len,
            "size": args.size, "steps": args.steps, "device": str(device),
            "clips_per_s": clips / (total_ms / 1e3), "step_ms_mean": total_ms / args.steps,
            "data_wait_ms_mean": wait["mean_ms"], "data_wait_p95_ms": wait["p95_ms"],
            "compute_ms_mean": compute["mean_ms"], "compute_std_ms": compute["std_ms"],
            "data_stall_pct": 100 * sum(waits) / total_ms, "skipped": len(loader.skipped),
            "skipped_files": loader.skipped, "status": "ok", **tel.summary()}


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="r2plus1d_18")
    p.add_argument("--data", type=Path, help="a dataset folder or CSV (default: the loaders "
                   "benchmark's generated 20 s 640x360 H.264 videos, GOP 25)")
    p.add_argument("--split", default=None)
    p.add_argument("--backends", default="auto",
                   help=f"comma list from {','.join(LOADER_BACKENDS)} (default: auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--frame-size", type=int, default=128, help="frames resized to this before cropping")
    p.add_argument("--size", type=int, default=112, help="crop size fed to the model")
    p.add_argument("--steps", type=int, default=20, help="timed steps per backend")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads in this process (default: torch's); on a busy or "
                        "small machine leave cores to the loader's workers")
    p.add_argument("--json", type=Path, default=Path("runs/benchmarks/train.json"))
    return p


def main(args) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in LOADER_BACKENDS]
    if unknown:
        raise SystemExit(f"error: unknown backends {unknown}; choose from {', '.join(LOADER_BACKENDS)}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
    if args.steps < 2:
        raise SystemExit("error: --steps must be >= 2 (a std needs two timings)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.data is None:
        from benchmarks.loaders import make_benchmark_data

        args.data = make_benchmark_data(Path("runs/bench_data"), 25, videos=6, seconds=20)
    manifest = load_manifest(args.data, args.split)
    rows = []
    for backend in backends:
        try:
            with cpu_threads(args.threads):
                rows.append(bench_backend(manifest, backend, args, device))
        except (RuntimeError, NotImplementedError) as e:  # e.g. DALI without a GPU
            rows.append({"model": args.model, "backend": backend, "status": "skipped",
                         "reason": str(e).splitlines()[0]})
    paths = write_results(rows, args.json, command=args.command_line, columns=COLUMNS, title="Training throughput and data stall")
    print(markdown_table(rows, COLUMNS))
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['model']} with {r['backend']}: {r['clips_per_s']:.1f} clips/s, "
                  f"{r['data_stall_pct']:.0f}% of step time waiting for data")
        else:
            print(f"{r['backend']}: skipped ({r['reason']})")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
    return 0
