"""``python -m benchmarks models``: inference and training-step speed of the model zoo, per
variant, with parity against eager fp32.

One record per (model, variant, mode, batch size). Variants:

  eager            the model as built, fp32
  channels_last    weights and inputs in channels_last(_3d)
  amp              bf16 autocast (CPU and Ampere+ GPUs; no GradScaler needed)
  amp_fp16         fp16 autocast (CUDA only; training uses a GradScaler)
  compile          torch.compile (mode from --compile-mode)
  cuda_graphs      the forward captured once per shape and replayed (CUDA, inference only)
  aoti             AOTInductor .pt2 package (torch.export, dynamic batch)
  onnx             ONNX (dynamo exporter) run by ONNX Runtime (CUDA needs onnxruntime-gpu)
  tensorrt         torch-tensorrt fp16 engine (CUDA + vidaccel[trt]); tensorrt_fp32 likewise

The first five combine with "+": ``channels_last+amp+compile``. A variant that cannot run
here (no CUDA, a missing package, an inference-only variant in training mode) is a row
with status "skipped" and the reason; one that fails is status "error" with the exception,
and the command then exits 1. Timings: warm-up, then --iters iterations each timed on its
own (CUDA events on the compute stream on GPU, ``time.perf_counter`` on CPU; see
``benchmarks.timing``), inputs rotating through a pool of --pool distinct batches.
Telemetry is sampled at 2 Hz (``accel.telemetry.P99_SAFE_HZ``) so that its thread stays out
of the p99.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from accel.cli import Parser, comma_list, non_negative_int, one_line, positive_float, positive_int, resolve_device
from accel.deploy.perf import sync_device
from accel.telemetry import P99_SAFE_HZ, Telemetry
from benchmarks.common import (
    add_common_args,
    cpu_threads,
    fp32_math,
    report,
    set_cudnn_benchmark,
    summarize_ms,
    write_partial,
    wrote,
)
from benchmarks.timing import make_input_pool, time_inference, time_train_step

OPTIMIZE_PARTS = ("channels_last", "amp", "amp_fp16", "compile", "cuda_graphs")
EXPORT_VARIANTS = {"aoti": ("aoti", None), "onnx": ("onnx", None),
                   "tensorrt": ("tensorrt", "fp16"), "tensorrt_fp32": ("tensorrt", "fp32")}
ALL_VARIANTS = ("eager", *OPTIMIZE_PARTS, *EXPORT_VARIANTS)
MODES = ("infer", "train")
SATURATION_GAIN = 0.05  # the sweep stops when doubling the batch adds less than 5% clips/s

COLUMNS = ["model", "variant", "mode", "batch_size", "params_m", "gflops", "batch_time",
           "ms_per_clip", "clips_per_s", "percentiles", "peak_mem_mb", "max_abs_diff",
           "top1_agree", "setup_s", "status"]
HEADERS = ["Model", "Variant", "Mode", "Batch", "Params (M)", "GFLOPs/clip",
           "Mean Batch Time (s) ± std", "Latency (ms/clip)", "Clips/s", "p50 / p95 / p99 (ms)",
           "Peak mem (MB)", "Max abs diff", "Top-1 agree", "Compile/export (s)", "Status"]


def _num(v: Any, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


FORMATS: dict[str, Callable[[dict], str]] = {
    "params_m": lambda r: _num(r["params"] / 1e6, ".2f"),
    "gflops": lambda r: _num(r.get("gflops"), ".2f"),
    "batch_time": lambda r: "" if r.get("batch_time_ms_mean") is None else
    f"{r['batch_time_ms_mean'] / 1e3:.4f} ± {r['batch_time_ms_std'] / 1e3:.4f}",
    "ms_per_clip": lambda r: _num(r.get("ms_per_clip"), ".2f"),
    "clips_per_s": lambda r: _num(r.get("clips_per_s"), ".1f"),
    "percentiles": lambda r: "" if r.get("p50_ms") is None else
    f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} / {r['p99_ms']:.1f}",
    "peak_mem_mb": lambda r: _num(r.get("peak_mem_mb"), ".0f"),
    "max_abs_diff": lambda r: _num(r.get("max_abs_diff"), ".2e"),
    "top1_agree": lambda r: _num(r.get("top1_agree"), ".2f"),
    "setup_s": lambda r: _num(r.get("compile_s") if r.get("compile_s") is not None
                              else r.get("export_s"), ".1f"),
    "status": lambda r: r["status"] if not r.get("reason") else f"{r['status']}: {r['reason'][:80]}",
}

NOTES = """
How to read this table: one row per model, variant, mode and batch size. *Mean Batch Time*
is the mean ± sample std of the per-iteration times of one batch; *Latency (ms/clip)* is the
mean batch time divided by the batch size (the seed's definition); p50/p95/p99 are
per-batch percentiles. *Max abs diff* and *Top-1 agree* compare the variant's logits with
eager fp32 on the same input (random weights: small logits, so read the difference against
`ref_max_abs` in the JSON). *Peak mem* is CUDA max allocated on GPU, process RSS on CPU.
*Compile/export* is the one-off cost before the first timed call, not in the timings.
"""


# --------------------------------------------------------------------------- variants
def parse_variant(variant: str) -> dict[str, Any]:
    """``"channels_last+amp"`` -> optimize() options, or an export backend."""
    if variant == "eager":
        return {"optimize": {}}
    if variant in EXPORT_VARIANTS:
        backend, precision = EXPORT_VARIANTS[variant]
        return {"export": backend, "precision": precision}
    parts = variant.split("+")
    bad = [p for p in parts if p not in OPTIMIZE_PARTS]
    if bad or len(set(parts)) != len(parts) or {"amp", "amp_fp16"} <= set(parts):
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(ALL_VARIANTS)}; "
                         f"{', '.join(OPTIMIZE_PARTS)} combine with '+' (one amp at most)")
    amp = "fp16" if "amp_fp16" in parts else "bf16" if "amp" in parts else None
    return {"optimize": {"channels_last": "channels_last" in parts, "amp": amp,
                         "compile": "compile" in parts, "cuda_graphs": "cuda_graphs" in parts}}


def why_unavailable(variant: str, mode: str, device: torch.device) -> str | None:
    """Why ``variant`` cannot run in ``mode`` on ``device`` here, or None."""
    spec = parse_variant(variant)
    opts = spec.get("optimize", {})
    cuda = device.type == "cuda"
    if mode == "train" and ("export" in spec or opts.get("cuda_graphs")):
        return "inference-only variant"
    if opts.get("cuda_graphs") and not cuda:
        return "CUDA graphs need a CUDA device"
    if opts.get("amp") == "fp16" and not cuda:
        return "fp16 autocast is benchmarked on CUDA only (CPU fp16 kernels are emulated)"
    backend = spec.get("export")
    if backend == "tensorrt":
        if not cuda:
            return "TensorRT needs a CUDA device"
        if importlib.util.find_spec("torch_tensorrt") is None:
            from accel.deploy.export import trt_install_hint

            return f"torch-tensorrt is not installed ({trt_install_hint()})"
    if backend == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install 'vidaccel[onnx]')"
        if cuda:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


def build_runner(variant: str, model: torch.nn.Module, example: torch.Tensor, *,
                 device: torch.device, compile_mode: str, export_dir: Path,
                 tag: str = "model", threads: int | None = None) -> tuple[Callable, dict]:
    """A callable for ``variant`` and its one-off setup cost (export_s; compile_s is measured
    at the first call, since torch.compile and CUDA-graph capture are lazy)."""
    from accel.deploy.perf import optimize

    spec = parse_variant(variant)
    if "optimize" in spec:
        opts = dict(spec["optimize"])
        if opts.get("compile"):
            opts["compile"] = compile_mode
        return optimize(model, device=device, **opts), {}
    from accel.deploy import export

    name = f"{tag}_{variant}_{example.shape[2]}x{example.shape[3]}"
    if spec["export"] == "onnx":
        r = export.export_onnx(model, example, export_dir / f"{name}.onnx", check=False)
        if threads:  # ONNX Runtime has its own thread pool: give it the same CPU budget
            r.runner = export.OnnxRunner(r.path, device, intra_op_threads=threads)
    elif spec["export"] == "aoti":
        r = export.export_aoti(model, example, export_dir / f"{name}.pt2", check=False)
    else:
        r = export.export_tensorrt(model, example, export_dir / f"{name}.ep",
                                   precision=spec["precision"], check=False)
    return r.runner, {"export_s": r.export_s, "artifact": str(r.path)}


# --------------------------------------------------------------------------- measuring
def gflops_or_none(model: torch.nn.Module, frames: int, size: int) -> float | None:
    """:func:`accel.deploy.perf.count_gflops` of one clip, or None for a model with an op
    that has no meta kernel (no figure rather than a wrong one)."""
    from accel.deploy.perf import count_gflops

    try:
        return count_gflops(model, clip_len=frames, size=size)
    except Exception:  # noqa: BLE001 - any op the meta device cannot run
        return None


def _peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device, telemetry: dict) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = telemetry.get("rss_mb")
    return rss if isinstance(rss, float) else None


def _timing_fields(times: list[float], batch_size: int) -> dict[str, Any]:
    s = summarize_ms(times)
    return {"batch_time_ms_mean": s["mean_ms"], "batch_time_ms_std": s["std_ms"],
            "ms_per_clip": s["mean_ms"] / batch_size,
            "clips_per_s": batch_size * 1e3 / s["mean_ms"],
            "p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "p99_ms": s["p99_ms"],
            "min_ms": s["min_ms"], "max_ms": s["max_ms"]}


def _wall_s(device: torch.device, call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()``'s result and its seconds on the wall, all its device work included (a
    one-off cost: compiling, capturing, the first step)."""
    sync_device(device)
    t0 = time.perf_counter()
    out = call()
    sync_device(device)
    return out, time.perf_counter() - t0


def _timed_record(device: torch.device, batch_size: int, run: Callable[[], list[float]]) -> dict[str, Any]:
    """The timing fields of ``run()``'s per-iteration times, the peak memory and the
    telemetry sampled meanwhile."""
    _peak_start(device)
    with Telemetry(hz=P99_SAFE_HZ, device_index=device.index or 0) as tel:
        times = run()
    summary = tel.summary()
    return {**_timing_fields(times, batch_size), "peak_mem_mb": _peak_mb(device, summary), **summary}


def measure_infer(fn: Callable, pool: list[torch.Tensor], reference: torch.Tensor, *,
                  device: torch.device, warmup: int, iters: int, lazy_setup: bool) -> dict[str, Any]:
    """First call (compile / capture cost, parity output), then the timed loop."""
    with torch.inference_mode():
        out, first_s = _wall_s(device, lambda: fn(pool[0]))
    out = out.float().to(reference.device)
    diff = (out - reference).abs().nan_to_num(nan=float("inf"))
    rec: dict[str, Any] = {
        "max_abs_diff": diff.max().item(),
        "top1_agree": (out.argmax(-1) == reference.argmax(-1)).float().mean().item(),
        "ref_max_abs": reference.abs().max().item(),
    }
    if lazy_setup:
        rec["compile_s"] = first_s
    rec.update(_timed_record(device, pool[0].shape[0],
                             lambda: time_inference(fn, pool, warmup=warmup, iters=iters)))
    return rec


def measure_train(variant: str, base: torch.nn.Module, pool: list[torch.Tensor], *,
                  num_classes: int, device: torch.device, compile_mode: str, warmup: int,
                  iters: int) -> dict[str, Any]:
    """forward + backward + AdamW step on a copy of the model (the reference stays intact)."""
    from accel.deploy.perf import optimize

    opts = dict(parse_variant(variant)["optimize"])
    if opts.get("compile"):
        opts["compile"] = compile_mode
    model = copy.deepcopy(base).train()
    fn = optimize(model, device=device, **opts)
    params = [p for p in fn.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if opts.get("amp") == "fp16" else None
    g = torch.Generator().manual_seed(0)
    targets = [torch.randint(0, num_classes, (x.shape[0],), generator=g).to(device) for x in pool]
    rec: dict[str, Any] = {}
    if opts.get("compile"):  # the first step compiles forward and backward: report it apart
        _, rec["compile_s"] = _wall_s(device, lambda: time_train_step(
            fn, pool[:1], targets[:1], optimizer, scaler=scaler, warmup=0, iters=1))
    rec.update(_timed_record(device, pool[0].shape[0], lambda: time_train_step(
        fn, pool, targets, optimizer, scaler=scaler, warmup=warmup, iters=iters)))
    return rec


def row_precision(variant: str, device: torch.device) -> str:
    """The math a row ran: its autocast or export precision, else what fp32 convolutions
    really run on this device ("tf32" on Ampere and later, where cuDNN allows it)."""
    spec = parse_variant(variant)
    low = spec.get("optimize", {}).get("amp") or spec.get("precision")
    return low if low in ("bf16", "fp16") else fp32_math(device.type)


def is_full_precision(variant: str) -> bool:
    """fp32 end to end: its logits must match eager fp32 within the parity tolerance."""
    spec = parse_variant(variant)
    return spec.get("optimize", {}).get("amp") is None and spec.get("precision") in (None, "fp32")


def parity_verdict(variant: str, rec: dict[str, Any], tol: float) -> str | None:
    """Why the variant's outputs are wrong, or None. fp32 variants must agree within
    ``tol`` x max(1, largest reference logit); low-precision ones only must be finite."""
    diff = rec.get("max_abs_diff")
    if diff is None:
        return None
    if not math.isfinite(diff):
        return "parity: non-finite logits (wrong results)"
    limit = tol * max(1.0, rec.get("ref_max_abs") or 0.0)
    if is_full_precision(variant) and diff > limit:
        return f"parity: max_abs_diff {diff:.2e} > {limit:.1e} vs eager fp32 (wrong results)"
    return None


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e)


# --------------------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """How :class:`ModelBench` builds, feeds and times a model (the command's options)."""

    num_classes: int = 7
    frames: int | None = None  # clip length; None: the model's
    size: int | None = None  # frame side; None: the model's
    warmup: int = 5
    iters: int = 30
    pool: int = 4  # distinct input batches to rotate through
    compile_mode: str = "default"
    parity_tol: float = 1e-3  # max |logit diff| of an fp32 variant vs eager fp32 (scaled)
    threads: int | None = None  # CPU threads for ONNX Runtime sessions
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: torch.device) -> BenchOptions:
        """The command's options; ``--parity-tol`` unset: 5e-3 on CUDA (TF32 convolutions), else 1e-3."""
        names = {f.name for f in dataclasses.fields(cls)} - {"parity_tol"}
        tol = args.parity_tol if args.parity_tol is not None else 5e-3 if device.type == "cuda" else 1e-3
        return cls(**{n: getattr(args, n) for n in names}, parity_tol=tol)


class ModelBench:
    """Everything about one model: the eager fp32 instance, references, export cache."""

    def __init__(self, name: str, options: BenchOptions, device: torch.device, export_dir: Path):
        from models import create_model, resolve_data_config

        self.name, self.options, self.device, self.export_dir = name, options, device, export_dir
        torch.manual_seed(options.seed)
        self.model = create_model(name, num_classes=options.num_classes).eval()
        cfg = resolve_data_config(self.model)  # the model's usual input
        self.frames = options.frames or cfg.clip_len
        self.size = options.size or cfg.size
        self.params = sum(p.numel() for p in self.model.parameters())
        self.gflops = gflops_or_none(self.model, self.frames, self.size)
        self.model.to(device)
        self.runners: dict[str, tuple[Callable, dict]] = {}

    def base_record(self, variant: str, mode: str, batch_size: int) -> dict[str, Any]:
        return {"model": self.name, "variant": variant, "mode": mode,
                "precision": row_precision(variant, self.device), "params": self.params,
                "gflops": self.gflops, "batch_size": batch_size, "frames": self.frames,
                "size": self.size, "batch_time_ms_mean": None, "batch_time_ms_std": None,
                "ms_per_clip": None, "clips_per_s": None, "p50_ms": None, "p95_ms": None,
                "p99_ms": None, "peak_mem_mb": None, "device": str(self.device),
                "cpu_threads": torch.get_num_threads(), "max_abs_diff": None,
                "top1_agree": None, "parity_tol": self.options.parity_tol,
                "compile_s": None, "export_s": None,
                "warmup": self.options.warmup, "iters": self.options.iters, "status": "ok", "reason": ""}

    def pool(self, batch_size: int) -> list[torch.Tensor]:
        return make_input_pool((batch_size, 3, self.frames, self.size, self.size),
                               n=self.options.pool, device=self.device, seed=self.options.seed)

    def runner(self, variant: str, example: torch.Tensor) -> tuple[Callable, dict]:
        """Optimised wrappers are cheap and per call; exports are made once (dynamic batch)."""
        if variant == "eager":
            return self.model, {}
        if variant in EXPORT_VARIANTS:
            if variant not in self.runners:
                ex = example if example.shape[0] >= 2 else torch.cat([example, example])
                self.runners[variant] = build_runner(variant, self.model, ex, device=self.device,
                                                     compile_mode=self.options.compile_mode,
                                                     export_dir=self.export_dir, tag=self.name,
                                                     threads=self.options.threads)
            return self.runners[variant]
        return build_runner(variant, copy.deepcopy(self.model), example, device=self.device,
                            compile_mode=self.options.compile_mode, export_dir=self.export_dir)

    def run(self, variant: str, mode: str, batch_size: int) -> dict[str, Any]:
        rec = self.base_record(variant, mode, batch_size)
        why = why_unavailable(variant, mode, self.device)
        if why:
            return rec | {"status": "skipped", "reason": why}
        a = self.options
        try:
            pool = self.pool(batch_size)
            if mode == "train":
                rec.update(measure_train(variant, self.model, pool, num_classes=a.num_classes,
                                         device=self.device, compile_mode=a.compile_mode,
                                         warmup=a.warmup, iters=a.iters))
                return rec
            with torch.inference_mode():
                reference = self.model(pool[0]).float()
            fn, setup = self.runner(variant, pool[0])
            rec.update({k: v for k, v in setup.items() if k == "export_s"})
            lazy = any(p in variant.split("+") for p in ("compile", "cuda_graphs"))
            rec.update(measure_infer(fn, pool, reference, device=self.device, warmup=a.warmup,
                                     iters=a.iters, lazy_setup=lazy))
            wrong = parity_verdict(variant, rec, a.parity_tol)
            return rec | ({"status": "error", "reason": wrong} if wrong else {})
        except Exception as e:  # one variant failing must not cost the rest of the table
            status = "skipped" if _is_oom(e) else "error"
            reason = f"out of memory at batch {batch_size}" if _is_oom(e) else one_line(e, typed=True, limit=300)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return rec | {"status": status, "reason": reason}


def batch_plan(sizes: list[int], *, sweep: bool) -> list[int]:
    """The fixed batch sizes, and batch 1 (latency) with the sweep."""
    return sorted(set(sizes) | ({1} if sweep else set()))


def run_case(bench: ModelBench, variant: str, mode: str, bar: tqdm, *, sizes: list[int],
             sweep_to: int | None) -> list[dict]:
    """Fixed batch sizes, then (``sweep_to``: --batch-sweep's --max-batch) doubling until
    clips/s saturates."""
    records = []
    for bs in batch_plan(sizes, sweep=sweep_to is not None):
        bar.set_postfix_str(f"{bench.name} {variant} {mode} bs={bs}")
        records.append(bench.run(variant, mode, bs))
    if sweep_to is None or records[-1]["status"] != "ok":
        return records
    best, bs = records[-1], records[-1]["batch_size"] * 2
    while bs <= sweep_to:
        bar.set_postfix_str(f"{bench.name} {variant} {mode} sweep bs={bs}")
        rec = bench.run(variant, mode, bs)
        rec["sweep"] = True
        records.append(rec)
        if rec["status"] != "ok" or rec["clips_per_s"] < best["clips_per_s"] * (1 + SATURATION_GAIN):
            break
        best, bs = rec, bs * 2
    return records


def variant_type(text: str) -> str:
    """An argparse type: a variant ``parse_variant`` knows, or ``all``."""
    if text != "all":
        try:
            parse_variant(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser(prog: str) -> Parser:
    from accel.deploy.perf import COMPILE_MODES
    from models import list_models

    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--models", type=comma_list(choices=("all", *list_models())), default=["tsm_resnet18"],
          help="comma-separated model names, or 'all' (default: tsm_resnet18)")
    p.add("--variants", type=comma_list(variant_type), default=["eager"],
          help="comma-separated variants, or 'all': " + ", ".join(ALL_VARIANTS)
          + "; combine optimisations with '+' (default: eager)")
    p.add("--mode", choices=("infer", "train", "both"), default="infer")
    p.add("--batch-size", type=comma_list(positive_int), default=[8],
          help="comma-separated batch sizes (default 8)")
    p.add("--batch-sweep", action="store_true",
          help="add batch 1 (latency) and double the largest batch until clips/s gains "
               f"< {SATURATION_GAIN * 100:.0f}%% or memory runs out")
    p.add("--max-batch", type=positive_int, default=256,
          help="upper bound of the sweep (exports are built for batches up to 256)")
    p.add("--frames", type=positive_int, default=None, help="clip length (default: the model's)")
    p.add("--size", type=positive_int, default=None, help="frame side (default: the model's)")
    p.add("--num-classes", type=positive_int, default=7)
    p.add("--warmup", type=non_negative_int, default=5)
    p.add("--iters", type=positive_int, default=30)
    p.add("--pool", type=positive_int, default=4, help="distinct input batches to rotate through")
    p.add("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add("--parity-tol", type=positive_float, default=None,
          help="max |logit difference| an fp32 variant may have against eager fp32, "
               "scaled by max(1, largest logit); beyond it the row is an error "
               "(default 1e-3 on CPU, 5e-3 on CUDA where convolutions use TF32)")
    p.add("--seed", type=int, default=0)
    p.add("--export-dir", type=Path, default=None,
          help="keep exported artifacts here (default: a temporary folder)")
    p.add("--no-plot", action="store_true")
    add_common_args(p, json=Path("benchmarks/results/models.json"), torch_run=True,
                    json_help="results file; .csv, .md and .png are written beside it")
    return p


def resolve_args(args) -> tuple[list[str], list[str], list[str], torch.device]:
    """Model names, variants and modes with 'all' / 'both' spelled out; the device."""
    from models import list_models

    names = list_models() if "all" in args.models else args.models
    variants = list(ALL_VARIANTS) if "all" in args.variants else args.variants
    modes = list(MODES) if args.mode == "both" else [args.mode]
    return names, variants, modes, resolve_device(args.device)


def summary_text(records: list[dict]) -> str:
    """Per model and mode: eager vs the best variant, parity, what was skipped and why."""
    lines = []
    keyed: dict[tuple, list[dict]] = {}
    for r in records:
        keyed.setdefault((r["model"], r["mode"]), []).append(r)
    for (model, mode), rows in keyed.items():
        ok = [r for r in rows if r["status"] == "ok"]
        head = f"{model} [{mode}] {rows[0]['params'] / 1e6:.2f} M params"
        if rows[0].get("gflops") is not None:
            head += f", {rows[0]['gflops']:.1f} GFLOPs/clip"
        lines.append(head + f", {rows[0]['frames']}x{rows[0]['size']}px on {rows[0]['device']}")
        for bs in sorted({r["batch_size"] for r in ok}):
            at = [r for r in ok if r["batch_size"] == bs]
            best = max(at, key=lambda r: r["clips_per_s"])
            eager = next((r for r in at if r["variant"] == "eager"), None)
            line = (f"  batch {bs}: best {best['variant']} {best['clips_per_s']:.1f} clips/s, "
                    f"{best['ms_per_clip']:.2f} ms/clip, p99 {best['p99_ms']:.1f} ms/batch")
            if eager is not None and best is not eager:
                line += f" ({best['clips_per_s'] / eager['clips_per_s']:.2f}x eager)"
            lines.append(line)
        sweep = [r for r in ok if r.get("sweep")]
        if sweep:
            top = max(sweep, key=lambda r: r["clips_per_s"])
            lines.append(f"  saturation: {top['clips_per_s']:.1f} clips/s at batch {top['batch_size']} "
                         f"({top['variant']})")
        diffs = [r for r in ok if r.get("max_abs_diff") is not None and r["variant"] != "eager"]
        if diffs:
            worst = max(diffs, key=lambda r: r["max_abs_diff"])
            lines.append(f"  parity: worst max|diff| {worst['max_abs_diff']:.2e} ({worst['variant']}), "
                         f"min top-1 agreement {min(r['top1_agree'] for r in diffs):.2f}")
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"  {r['status']}: {r['variant']} bs={r['batch_size']}: {r['reason']}")
    return "\n".join(lines)


def main(args) -> int:
    names, variants, modes, device = resolve_args(args)
    options = BenchOptions.from_args(args, device)
    set_cudnn_benchmark(args.cudnn_benchmark)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="vidaccel-exports-") as tmp, cpu_threads(args.threads):
        export_dir = args.export_dir or Path(tmp)
        cases = [(v, m) for v in variants for m in modes]
        with tqdm(total=len(names) * len(cases), desc="models", unit="case") as bar:
            for name in names:
                bar.set_postfix_str(f"building {name}")
                bench = ModelBench(name, options, device, export_dir)
                for variant, mode in cases:
                    records.extend(run_case(bench, variant, mode, bar, sizes=args.batch_size,
                                            sweep_to=args.max_batch if args.batch_sweep else None))
                    write_partial(records, args.json, command=args.command_line)
                    bar.update()
                del bench
    paths = report(records, args.json, command=args.command_line, columns=COLUMNS, headers=HEADERS,
                   formats=FORMATS, title="Model benchmark", notes=NOTES)
    if not args.no_plot:
        from benchmarks.plots import plot_throughput

        png = plot_throughput(records, Path(args.json).with_suffix(".png"))
        if png:
            paths["png"] = png
    print(summary_text(records))
    wrote(paths)
    errors = [r for r in records if r["status"] == "error"]
    if errors:
        print(f"{len(errors)} variant(s) failed; see the status column")
    return 1 if errors else 0
