"""SUMMARY.md of a ``scripts/gpu_check.sh`` results folder (run before it is packed).

``python -m benchmarks.gpu_summary OUT``: the machine (preflight), one short section per
step that produced results, and the step table last (the script prints this file last, so
the table is the end of the call's output).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import TorchFreeParser


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(out: Path, name: str) -> list[dict]:
    data = _json(out / name)
    return data.get("records", []) if isinstance(data, dict) else []


def _num(value: Any, fmt: str = ".1f") -> str:
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value if value is not None else "n/a")


def machine(out: Path) -> list[str]:
    pre, env = _json(out / "preflight.json") or {}, _json(out / "environment.json") or {}
    counters = pre.get("nvml_counters") or {}
    unsupported = [k for k, v in counters.items() if v != "ok"]
    rehearsal = " CPU rehearsal (stand-ins, tiny sizes)," if pre.get("rehearsal_cpu") else ""
    return [f"# GPU check {out.name} (tier {pre.get('tier', '?')}){rehearsal}\n",
            f"{pre.get('gpu', '?')} (compute capability {pre.get('capability', '?')}), driver "
            f"{pre.get('driver', '?')}, torch {pre.get('torch', '?')} (CUDA {pre.get('torch_cuda', '?')}), "
            f"DALI {pre.get('dali') or 'absent'}, {env.get('cpu_count', '?')} CPU cores, commit "
            f"{env.get('git_commit', '?')}, {env.get('timestamp', '?')}",
            f"libnvcuvid: {pre.get('libnvcuvid') or 'not found'}; NVDEC: {pre.get('nvdec', 'not tested')}; "
            f"NVML counters unsupported: "
            f"{', '.join(unsupported) or 'none'}; CPU decoders: {pre.get('cpu_decoders', '?')}\n"]


def _partial(out: Path, names: tuple[str, ...]) -> list[str]:
    """Results files a step left half-way (stopped at its limit): their rows so far are shown."""
    cut = [n for n in names if (_json(out / n) or {}).get("partial")]
    return [f"(stopped part-way, rows so far: {', '.join(cut)})\n"] if cut else []


def models(out: Path) -> list[str]:
    names = ("models_runtime.json", "models_exports.json", "models_all.json", "train_amp.json")
    rows = [r for n in names for r in _records(out, n)]
    if not rows:
        return []
    lines = ["## Models (ms per clip; max |diff| vs eager fp32; the math each row ran)\n", *_partial(out, names),
             "| model | mode | variant | math | ms/clip | p99 ms | max diff | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.get('model')} | {r.get('mode', 'infer')} | {r.get('variant')} | "
                     f"{r.get('precision', '?')} | "
                     f"{_num(r.get('ms_per_clip'), '.2f')} | {_num(r.get('p99_ms'))} | "
                     f"{_num(r.get('max_abs_diff'), '.1e')} | {r.get('status')} "
                     f"{r.get('reason', '') if r.get('status') != 'ok' else ''}|")
    return lines + [""]


def training(out: Path) -> list[str]:
    lines = []
    for name in ("train_stall.json", "train_stall_dali.json"):
        for r in _records(out, name):
            lines.append(f"- {r.get('backend')}: stall {_num(r.get('data_stall_pct'))}% of step time, "
                         f"{_num(r.get('clips_per_s'))} clips/s, step {_num(r.get('step_ms_mean'))} ms "
                         f"(data wait {_num(r.get('data_wait_ms_mean'))} ms, {r.get('timing', '')}; NVDEC "
                         f"{_num(r.get('nvdec_util'))}%)" if r.get("status") == "ok"
                         else f"- {r.get('backend')}: {r.get('status')} ({r.get('reason', '')})")
    nccl = _json(out / "nccl_metrics.json")
    if isinstance(nccl, dict):
        cfg = nccl.get("config", {})
        dist = nccl.get("distributed") or {}
        lines.append(f"- torchrun ({dist.get('backend') or 'NO process group'}, world size "
                     f"{dist.get('world_size', cfg.get('world_size', '?'))}, amp {cfg.get('amp', '?')}): "
                     f"{len(nccl.get('epochs', []))} epoch(s) trained")
    return (["## Training\n"] + lines + [""]) if lines else []


def stream(out: Path) -> list[str]:
    rows = _records(out, "stream.json")
    if not rows:
        return []
    return ["## Streaming at 30 fps (latency frame arrival -> logits)\n", *_partial(out, ("stream.json",))] + [
        f"- {r['model']} {r['variant']} ({r.get('precision', '?')}): p50 {_num(r.get('latency_p50_ms'))} / "
        f"p99 {_num(r.get('latency_p99_ms'))} ms, dropped {_num(r.get('drop_pct'))}%"
        if r.get("status") == "ok"
        else f"- {r.get('model')} {r.get('variant')}: {r.get('status')} ({r.get('reason', '')})"
        for r in rows] + [""]


def dali(out: Path) -> list[str]:
    lines = []
    frames = _json(out / "dali_frames.json")
    for r in (frames or {}).get("records", []):
        lines.append(f"- {r['file']}: {'pass' if r.get('pass') else 'FAIL'} "
                     f"(frames exact {r.get('frames_exact', 'n/a')}, "
                     f"mean |diff| {_num(r.get('mean_abs'), '.2f')})"
                     + (f": {r['error']}" if r.get("error") else ""))
    for r in _records(out, "loaders_720p.json"):
        if r.get("status") == "ok" and not str(r.get("backend")).startswith("raw_"):
            lines.append(f"- loader {r['backend']}: {_num(r.get('clips_per_s'))} clips/s "
                         f"(NVDEC {_num(r.get('nvdec_util'))}%)")
    return (["## DALI\n"] + lines + [""]) if lines else []


def telemetry(out: Path) -> list[str]:
    tel = _json(out / "telemetry.json")
    if not isinstance(tel, dict):
        return []
    s = tel.get("summary", {})
    keys = ("telemetry_samples", "sm_util", "nvdec_util", "gpu_mem_mb", "power_w", "cpu_util")
    return ["## Telemetry over the run (2 Hz)\n", ", ".join(f"{k} {_num(s.get(k))}" for k in keys), ""]


def steps(out: Path) -> list[str]:
    lines = ["## Steps\n", "| step | status | seconds | limit |", "|---|---|---|---|"]
    path = out / "steps.tsv"
    if path.is_file():
        with path.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                lines.append(f"| {row['step']} | {row['status']} | {row['seconds']} | {row['limit_s']} |")
    return lines


def write_summary(out: Path) -> Path:
    sections = [machine, models, training, stream, dali, telemetry, steps]  # the step table last
    text = "\n".join(line for section in sections for line in section(out)) + "\n"
    path = out / "SUMMARY.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    # torch-free (accel.cli imports torch): the summary is written even where torch broke.
    p = TorchFreeParser(prog="python -m benchmarks.gpu_summary", description=__doc__.splitlines()[0])
    p.add_argument("results_dir", type=Path, help="gpu_check.sh's results folder")
    args = p.parse_args(argv)
    if not args.results_dir.is_dir():
        p.error(f"{args.results_dir}: no such folder")
    print(write_summary(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
