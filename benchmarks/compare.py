"""``python -m benchmarks compare RESULTS.json BASELINE.json --threshold 0.10 --metric clips_per_s``

Holds a results file against a saved baseline. Records are matched by their identity fields
(model, variant, mode, batch size, backend, ...: whichever the records have); for each
``--metric`` the relative change is computed in the direction that metric improves (known
by name, or given with ``--direction``). Exit status: 1 when any matched figure regressed by
more than the threshold, or a record that ran in the baseline no longer ran (skipped or
error); 0 otherwise; 2 when nothing could be compared.

Reads this project's results files (``{"records": [...]}``) and pytest-benchmark's
``--benchmark-json`` files (metrics ``mean``, ``median``, ``min``, ``ops`` ..., in seconds).
Imports no torch: it runs on any CI box.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import TorchFreeParser, markdown_table

KEY_FIELDS = ("name", "model", "variant", "mode", "batch_size", "frames", "size", "backend",
              "workers", "clip_len", "gop", "fps", "device")
HIGHER_IS_BETTER = {"clips_per_s", "frames_per_s", "top1_agree", "ops", "speedup_vs_naive",
                    "within_interval_pct", "inferred"}
LOWER_IS_BETTER = {"batch_time_ms_mean", "ms_per_clip", "p50_ms", "p95_ms", "p99_ms",
                   "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                   "model_ms_mean", "peak_mem_mb", "rss_mb", "max_abs_diff", "drop_pct", "dropped",
                   "compile_s", "export_s", "mean", "median", "min", "max", "stddev",
                   "overhead_vs_raw_pct", "data_stall_pct", "step_ms"}


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file, or pytest-benchmark entries turned into records."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read results file {path}: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return data["records"]
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):  # pytest-benchmark
        return [{"name": b["fullname"], "status": "ok",
                 **{k: v for k, v in b["stats"].items() if isinstance(v, (int, float))}}
                for b in data["benchmarks"]]
    raise ValueError(f"{path} is neither a vidaccel results file ({{'records': [...]}}) nor a "
                     "pytest-benchmark JSON file ({'benchmarks': [...]})")


def record_key(r: dict[str, Any]) -> tuple:
    return tuple((k, r[k]) for k in KEY_FIELDS if r.get(k) is not None)


def direction(metric: str, override: str | None) -> str:
    if override:
        return override
    if metric in HIGHER_IS_BETTER:
        return "higher"
    if metric in LOWER_IS_BETTER:
        return "lower"
    raise ValueError(f"unknown metric {metric!r}: say which way is better with --direction "
                     f"higher|lower (known higher-is-better: {', '.join(sorted(HIGHER_IS_BETTER))}; "
                     f"lower-is-better: {', '.join(sorted(LOWER_IS_BETTER))})")


def compare(results: list[dict], baseline: list[dict], *, metrics: list[str], threshold: float,
            direction_override: str | None = None) -> list[dict[str, Any]]:
    """One row per (matched record, metric), plus rows for records only on one side."""
    base = {record_key(r): r for r in baseline}
    seen = set()
    rows = []
    for r in results:
        key = record_key(r)
        label = " ".join(str(v) for _, v in key)
        b = base.get(key)
        if b is None:
            rows.append({"record": label, "metric": "", "verdict": "new"})
            continue
        seen.add(key)
        ran_before, runs_now = b.get("status", "ok") == "ok", r.get("status", "ok") == "ok"
        if ran_before and not runs_now:
            rows.append({"record": label, "metric": "", "verdict": "lost",
                         "note": f"{r.get('status')}: {r.get('reason', '')}"})
            continue
        if not (ran_before and runs_now):
            continue
        for m in metrics:
            new, old = r.get(m), b.get(m)
            if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
                continue
            way = direction(m, direction_override)
            change = (new - old) / abs(old) if old else (0.0 if new == old else float("inf"))
            worse = -change if way == "higher" else change
            verdict = "REGRESSED" if worse > threshold else "improved" if worse < -threshold else "ok"
            rows.append({"record": label, "metric": m, "baseline": old, "result": new,
                         "change_pct": 100 * change, "verdict": verdict})
    for key, b in base.items():
        if key not in seen and b.get("status", "ok") == "ok":
            rows.append({"record": " ".join(str(v) for _, v in key), "metric": "", "verdict": "missing"})
    return rows


def _fraction(text: str) -> float:
    """An argparse type: a number >= 0 (accel.cli's ``non_negative_float``, which this
    torch-free command cannot import)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def build_parser(prog: str) -> TorchFreeParser:
    p = TorchFreeParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="the new results JSON")
    p.add_argument("baseline", type=Path, help="the saved baseline JSON")
    p.add_argument("--threshold", type=_fraction, default=0.10,
                   help="relative change that counts as a regression (default 0.10 = 10%%)")
    p.add_argument("--metric", action="append", default=None,
                   help="metric to hold (repeatable or comma-separated; default clips_per_s, "
                        "or mean for pytest-benchmark files)")
    p.add_argument("--direction", choices=("higher", "lower"), default=None,
                   help="which way is better, for a metric not known by name")
    p.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    return p


def main(args) -> int:
    try:
        results, baseline = load_records(args.results), load_records(args.baseline)
        pytest_benchmark = bool(results) and "name" in results[0] and "model" not in results[0]
        metrics = [m.strip() for arg in (args.metric or ["mean" if pytest_benchmark else "clips_per_s"])
                   for m in arg.split(",") if m.strip()]
        for m in metrics:
            direction(m, args.direction)
        rows = compare(results, baseline, metrics=metrics, threshold=args.threshold,
                       direction_override=args.direction)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    compared = [r for r in rows if r["metric"]]
    sig = lambda k: lambda r: "" if r.get(k) is None else f"{r[k]:.4g}"  # noqa: E731
    print(markdown_table(rows, ["record", "metric", "baseline", "result", "change_pct", "verdict", "note"],
                         ["Record", "Metric", "Baseline", "Result", "Change %", "Verdict", "Note"],
                         formats={"baseline": sig("baseline"), "result": sig("result"),
                                  "change_pct": lambda r: "" if r.get("change_pct") is None
                                  else f"{r['change_pct']:+.1f}"}))
    bad = [r for r in rows if r["verdict"] in ("REGRESSED", "lost")]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threshold": args.threshold, "metrics": metrics,
                                         "rows": rows}, indent=2) + "\n")
    if not compared and not bad:
        print("nothing to compare: no record of the results matches the baseline on "
              f"{', '.join(metrics)}", file=sys.stderr)
        return 2
    print(f"{len(compared)} figure(s) compared at a {args.threshold:.0%} threshold: "
          f"{sum(r['verdict'] == 'REGRESSED' for r in rows)} regressed, "
          f"{sum(r['verdict'] == 'improved' for r in rows)} improved, "
          f"{sum(r['verdict'] == 'lost' for r in rows)} no longer run")
    return 1 if bad else 0
