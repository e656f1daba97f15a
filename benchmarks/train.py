"""``python -m benchmarks train``: end-to-end training throughput with the real loader, and
the share of step time spent waiting for data (data-stall %), per decode backend.

A step is: wait for the next batch (decode, collate, copy to the device, augment: the
data-wait), then forward + backward + optimizer step (compute). On CUDA the compute is
timed with CUDA events on the compute stream, and each step waits for that stream alone:
a whole-device sync would also wait for work queued on other streams (DALI's prefetch of
later batches, the prefetcher's copies) and charge it to the current step. The data-wait
is the step's wall time less the compute stream's time. data_stall_pct = data-wait /
(data-wait + compute) over the timed steps. The loader reads a sampler that repeats the
dataset for warm-up plus timed steps, so a few videos still make every batch, and every
timed step falls inside one epoch (a loader or DALI pipeline rebuilt at an epoch boundary is
not charged as data wait). A loader that yields no batch (every file skipped) is an error, exit 2.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from accel import cli
from accel.data.loader import LOADER_BACKENDS, build_loader
from accel.data.manifests import load_manifest
from accel.data.prefetch import DevicePrefetcher
from accel.data.samplers import RepeatSampler
from accel.data.transforms import ClipTransform
from accel.deploy.perf import optimize
from accel.telemetry import Telemetry
from benchmarks.common import (
    add_common_args,
    cpu_threads,
    report,
    set_cudnn_benchmark,
    summarize_ms,
    write_partial,
    wrote,
)

COLUMNS = ["model", "backend", "workers", "batch_size", "clip_len", "size", "steps", "clips_per_s",
           "step_ms_mean", "data_wait_ms_mean", "compute_ms_mean", "data_stall_pct", "cpu_util",
           "sm_util", "nvdec_util", "skipped", "status"]


class NoBatches(ValueError):
    """The loader yields no batch: the benchmark would wait forever."""


def device_batches(loader, device: torch.device, transform=None):
    """Endless batches of ``loader`` on ``device``, one epoch after another.

    Each epoch calls ``loader.set_epoch(epoch)`` (new random clips) and runs through a
    :class:`~accel.data.prefetch.DevicePrefetcher` with ``transform``; an epoch that yields no
    batch (every file skipped) raises :class:`NoBatches` instead of looping for ever.
    """
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        got = 0
        for batch in DevicePrefetcher(loader, device, transform=transform):
            got += 1
            yield batch
        if not got:
            raise NoBatches(f"epoch {epoch} of the {loader.backend} loader yielded no batch "
                            f"({len(loader.skipped)} files skipped)")
        epoch += 1


class HostClock:
    """CPU steps: the wall clock around the batch fetch and around the compute."""

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def data_ready(self) -> None:
        self.t1 = time.perf_counter()

    def end(self) -> tuple[float, float]:
        """(data-wait ms, compute ms) of the step."""
        t2 = time.perf_counter()
        return (self.t1 - self.t0) * 1e3, (t2 - self.t1) * 1e3


class StreamClock:
    """CUDA steps: events on the compute stream. Compute = the stream's time from the batch
    being ready (its transforms done) to the optimizer step done; the host waits for that
    event only, never for the whole device (other streams' prefetch is not this step's)."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.current_stream(device)

    def _event(self):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(self.stream)
        return ev

    def start(self) -> None:
        self.t0 = time.perf_counter()  # the previous step's end event has completed

    def data_ready(self) -> None:
        self.ready = self._event()

    def end(self) -> tuple[float, float]:
        done = self._event()
        done.synchronize()
        wall = (time.perf_counter() - self.t0) * 1e3
        compute = self.ready.elapsed_time(done)
        return max(0.0, wall - compute), compute


def step_clock(device: torch.device) -> HostClock | StreamClock:
    return StreamClock(device) if device.type == "cuda" else HostClock()


def timed_steps(batches, step, clock, *, warmup: int, steps: int, progress=None):
    """Run ``warmup + steps`` steps of ``step(batch)``; (waits ms, computes ms, clips) of the
    timed ones."""
    waits, computes, clips = [], [], 0
    for i in range(warmup + steps):
        clock.start()
        batch = next(batches)
        clock.data_ready()
        step(batch)
        wait, compute = clock.end()
        if i >= warmup:
            waits.append(wait)
            computes.append(compute)
            clips += batch.clip.shape[0]
        if progress is not None:
            progress.update()
    return waits, computes, clips


def bench_backend(manifest, backend: str, args, device: torch.device) -> dict:
    from models import create_model, resolve_data_config

    if len(manifest) == 0:
        raise NoBatches(f"{manifest.source}: no videos")
    sampler = RepeatSampler(len(manifest), num_samples=(args.warmup_steps + args.steps) * args.batch_size)
    loader = build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                          strategy="random_window", frame_size=(args.frame_size, args.frame_size),
                          backend=backend, num_workers=args.workers, sampler=sampler, drop_last=True,
                          device=device, seed=0)
    model = create_model(args.model, num_classes=max(2, len(manifest.classes))).to(device)
    step_model = optimize(model, channels_last=args.channels_last, amp=args.amp, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    cfg = resolve_data_config(model)
    transform = ClipTransform(args.size, train=True, mean=cfg.mean, std=cfg.std)
    batches = device_batches(loader, device, transform)

    def step(batch) -> None:
        loss = torch.nn.functional.cross_entropy(step_model(batch.clip), batch.label)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    with Telemetry() as tel, tqdm(total=args.warmup_steps + args.steps, unit="step", leave=False,
                                  desc=f"{args.model} / {loader.backend}") as bar:
        waits, computes, clips = timed_steps(batches, step, step_clock(device), warmup=args.warmup_steps,
                                             steps=args.steps, progress=bar)
    wait, compute = summarize_ms(waits), summarize_ms(computes)
    total_ms = sum(waits) + sum(computes)
    return {"model": args.model, "backend": loader.backend, "backend_reason": loader.reason,
            "workers": args.workers, "batch_size": args.batch_size, "clip_len": args.clip_len,
            "size": args.size, "steps": args.steps, "device": str(device),
            "clips_per_s": clips / (total_ms / 1e3), "step_ms_mean": total_ms / args.steps,
            "data_wait_ms_mean": wait["mean_ms"], "data_wait_p95_ms": wait["p95_ms"],
            "compute_ms_mean": compute["mean_ms"], "compute_std_ms": compute["std_ms"],
            "data_stall_pct": 100 * sum(waits) / total_ms, "skipped": len(loader.skipped),
            "skipped_files": loader.skipped, "status": "ok",
            "timing": "cuda events on the compute stream" if device.type == "cuda" else "wall clock",
            **tel.summary()}


def build_parser(prog: str) -> cli.Parser:
    from models import list_models

    p = cli.Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--model", choices=list_models(), default="r2plus1d_18", metavar="MODEL",
          help="one of " + ", ".join(list_models()) + " (default: %(default)s)")
    p.add("--data", type=Path, help="a dataset folder or CSV (default: the loaders "
          "benchmark's generated 20 s 640x360 H.264 videos, GOP 25)")
    p.add("--split", default=None)
    p.add("--backends", type=cli.comma_list(choices=LOADER_BACKENDS), default=["auto"],
          help=f"comma list from {','.join(LOADER_BACKENDS)} (default: auto)")
    p.add("--workers", type=cli.non_negative_int, default=os.cpu_count() or 2)
    p.add("--batch-size", type=cli.positive_int, default=8)
    p.add("--clip-len", type=cli.positive_int, default=16)
    p.add("--frame-size", type=cli.positive_int, default=128, help="frames resized to this before cropping")
    p.add("--size", type=cli.positive_int, default=112, help="crop size fed to the model")
    p.add("--steps", type=cli.bounded_int(2), default=20, help="timed steps per backend (a std needs two)")
    p.add("--warmup-steps", type=cli.non_negative_int, default=3)
    p.add("--amp", choices=("bf16", "fp16"), default=None)
    p.add("--channels-last", action="store_true")
    add_common_args(p, json=Path("runs/benchmarks/train.json"), torch_run=True)
    return p


def main(args) -> int:
    device = cli.resolve_device(args.device)
    if args.data is None:
        from benchmarks.loaders import make_benchmark_data

        manifest = load_manifest(make_benchmark_data(Path("runs/bench_data"), 25, videos=6, seconds=20))
    else:
        manifest = load_manifest(args.data, args.split)
    set_cudnn_benchmark(args.cudnn_benchmark)
    rows: list[dict] = []
    for backend in args.backends:
        try:
            with cpu_threads(args.threads):
                rows.append(bench_backend(manifest, backend, args, device))
        except NoBatches as e:
            raise cli.UsageError(str(e)) from None
        except (RuntimeError, NotImplementedError) as e:  # e.g. DALI without a GPU
            rows.append({"model": args.model, "backend": backend, "status": "skipped",
                         "reason": cli.one_line(e)})
        write_partial(rows, args.json, command=args.command_line)
    paths = report(rows, args.json, command=args.command_line, columns=COLUMNS,
                   title="Training throughput and data stall")
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['model']} with {r['backend']}: {r['clips_per_s']:.1f} clips/s, "
                  f"{r['data_stall_pct']:.0f}% of step time waiting for data")
        else:
            print(f"{r['backend']}: skipped ({r['reason']})")
    wrote(paths)
    return 0
