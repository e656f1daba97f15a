"""What every benchmark shares: timing statistics, the environment fingerprint, and
writing records as JSON + CSV + Markdown.

A results file is ``{"command": ..., "environment": {...}, "records": [...]}``; the CSV and
Markdown files beside it hold the same records, one row each.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Mapping, NoReturn, Sequence

import numpy as np

# Libraries whose versions change benchmark numbers; read from package metadata so that
# fingerprinting never imports (and initialises) a heavy library.
_LIBRARIES = (
    "torch", "torchvision", "numpy", "av", "decord", "torchcodec", "nvidia-dali-cuda120",
    "nvidia-dali-cuda130", "onnxruntime", "onnx", "torch-tensorrt", "nvidia-ml-py", "vidaccel",
)


def summarize_ms(times_ms: Sequence[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1) and percentiles of per-iteration times in milliseconds."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("summarize_ms needs at least one timing")
    p50, p95, p99 = np.percentile(t, [50, 95, 99])
    return {
        "mean_ms": float(t.mean()),
        "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "n": int(t.size),
    }


def _library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return (sha + ("-dirty" if dirty else "")) if sha else "n/a"


def environment() -> dict[str, object]:
    """Fingerprint of everything that moves a benchmark number."""
    import torch

    env: dict[str, object] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "n/a",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "n/a",
        "gpu": "n/a",
        "driver": "n/a",
        "libraries": _library_versions(),
        "git_commit": _git_commit(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
        from accel.telemetry import nvml_driver_version

        env["driver"] = nvml_driver_version() or "n/a"
    return env


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def markdown_table(records: Iterable[Mapping[str, object]], columns: Sequence[str],
                   headers: Sequence[str] | None = None, *,
                   formats: Mapping[str, Callable[[Mapping[str, object]], str]] | None = None) -> str:
    """One row per record. ``formats[column](record)`` renders a column from the whole
    record (e.g. "mean ± std" from two fields); a column may then name no record field."""
    headers = list(headers or columns)
    formats = formats or {}
    cell = lambda r, c: formats[c](r) if c in formats else _fmt(r.get(c))  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in records:
        lines.append("| " + " | ".join(cell(r, c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_results(records: list[dict], json_path: str | os.PathLike, *, command: str,
                  columns: Sequence[str],
                  headers: Sequence[str] | None = None, title: str = "",
                  extra: Mapping[str, object] | None = None,
                  formats: Mapping[str, Callable[[Mapping[str, object]], str]] | None = None,
                  notes: str = "") -> dict[str, Path]:
    """Write records to ``json_path`` and a ``.csv`` and ``.md`` beside it; return the paths."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"command": command, "environment": env, **(extra or {}), "records": records}
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    csv_path = json_path.with_suffix(".csv")
    fields: list[str] = []
    for r in records:
        fields.extend(k for k in r if k not in fields and not isinstance(r[k], (dict, list)))
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)

    md_path = json_path.with_suffix(".md")
    gpu = env["gpu"] if env["gpu"] != "n/a" else f"CPU: {env['cpu']} ({env['cpu_count']} cores)"
    md = [f"# {title}\n" if title else "", f"`{command}`\n",
          f"{gpu}; torch {env['torch']}, CUDA {env['cuda']}, commit {env['git_commit']}, "
          f"{env['timestamp']}\n", markdown_table(records, columns, headers, formats=formats),
          notes]
    md_path.write_text("\n".join(s for s in md if s))
    return {"json": json_path, "csv": csv_path, "md": md_path}


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's intra-op thread count for the block only (it is process-wide).

    On a busy machine, OpenMP with more threads than free cores slows torch ops many-fold.
    """
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_partial(records: list[dict], json_path: str | os.PathLike, *, command: str) -> Path:
    """The records so far, written after every record (atomically: a step killed at its
    time limit keeps the rows it made, never half a file). ``write_results`` replaces it at
    the end with the full file; ``"partial": true`` marks one that never got there."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps({"command": command, "partial": True, "records": records},
                              indent=2, default=str) + "\n")
    os.replace(tmp, json_path)
    return json_path


class TorchFreeParser(argparse.ArgumentParser):
    """``accel.cli.Parser``'s one-line errors (exit 2) for the command chooser and ``compare``,
    which must not import torch: importing ``accel.cli`` imports ``accel`` (torch)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common_args(p: argparse.ArgumentParser, *, json: Path | None, json_help: str = "",
                    torch_run: bool = False) -> None:
    """The options every benchmark command shares: ``--json`` (the results file; its
    ``.csv`` and ``.md`` are written beside it) and, for ``torch_run`` commands (those that
    run a model), ``--device``, ``--threads`` and ``--no-cudnn-benchmark``. ``p`` is an
    ``accel.cli.Parser``."""
    from accel.cli import positive_int

    p.add("--json", type=Path, default=json,
          help=json_help or "results file; .csv and .md are written beside it (default: %(default)s)")
    if not torch_run:
        return
    p.add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add("--threads", type=positive_int, default=None,
          help="CPU threads for torch and ONNX Runtime (default: torch's default). On a shared or "
               "busy machine use 1: OpenMP with more threads than free cores inflates times many-fold")
    p.add("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
          help="leave cuDNN autotuning off (on by default: fixed shapes, tuned in the warm-up)")


def report(rows: list[dict], json_path: str | os.PathLike, *, command: str, columns: Sequence[str],
           title: str, notes: str = "", headers: Sequence[str] | None = None,
           formats: Mapping[str, Callable[[Mapping[str, object]], str]] | None = None) -> dict[str, Path]:
    """``write_results``, then the table on stdout; the caller prints its summary and
    :func:`wrote`."""
    paths = write_results(rows, json_path, command=command, columns=columns, headers=headers,
                          title=title, notes=notes, formats=formats)
    print(markdown_table(rows, columns, headers, formats=formats))
    return paths


def wrote(paths: Mapping[str, Path]) -> None:
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def set_cudnn_benchmark(on: bool) -> None:
    """cuDNN autotuning for fixed input shapes (every benchmark's case): the fastest
    convolution algorithm, chosen in the warm-up, not the first heuristic pick."""
    import torch

    torch.backends.cudnn.benchmark = bool(on)


def fp32_math(device_type: str, *, capability: tuple[int, int] | None = None,
              conv_tf32: bool | None = None) -> str:
    """What an "fp32" row's convolutions really ran: "tf32" on CUDA from Ampere (compute
    capability 8) on while cuDNN may use TF32 (torch's default), else "fp32"."""
    if device_type != "cuda":
        return "fp32"
    import torch

    if capability is None:
        capability = torch.cuda.get_device_capability()
    if conv_tf32 is None:
        conv_tf32 = torch.backends.cudnn.allow_tf32
    return "tf32" if conv_tf32 and capability[0] >= 8 else "fp32"
