"""``python -m benchmarks loaders --data D --prepared P``: the same clips read from a dataset
and from its ``python -m accel.prepare`` copy in one run, with ``speedup_vs_original``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from accel.cli import UsageError
from accel.data.manifests import Manifest, ManifestError, load_manifest
from accel.io.backends import available_backends
from accel.telemetry import Telemetry
from benchmarks.common import report, wrote
from benchmarks.loaders.throughput import COLUMNS, cycle_plan, finish_rows, raw_clip, raw_row, skip_row, through_loader

NOTES = ("\n`raw_<backend>` rows: the bare decoder in one process, the same clip from both datasets "
         "back to back (alternating which goes first), so load drift on a shared machine hits both; "
         "`speedup_vs_original` = prepared clips/s / original clips/s (same backend and workers); "
         "`median_clip_speedup` = median over clips of the per-clip time ratio. Loader rows "
         "(`--workers` DataLoader workers) run one dataset after the other.\n")


def _prepared_manifests(args) -> tuple[Manifest, Manifest]:
    """The manifests of --data and --prepared, checked to list the same files in the
    same order, so the clip plan (positions and seeds) reads the same clips from both."""
    if args.data is None:
        raise UsageError("--prepared needs --data (the dataset it was prepared from)")
    try:
        original = load_manifest(args.data, args.split)
        prepared = load_manifest(args.prepared, args.split)
    except ManifestError as e:
        raise UsageError(str(e)) from None

    def rel(m: Manifest, root: Path) -> list[str]:
        base = root.parent if root.suffix.lower() == ".csv" else root
        return [os.path.relpath(item.path, base) for item in m.items]

    if rel(original, args.data) != rel(prepared, args.prepared):
        raise UsageError(f"{args.prepared} does not list the same files as {args.data} "
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
                raise UsageError(f"{prepared.items[position].path} gives other frames than "
                                 f"{original.items[position].path} ({frames['prepared']} vs "
                                 f"{frames['original']}): not the same clip; prepare it again")
    ratios = np.asarray(times["original"]) / np.asarray(times["prepared"])
    rows = [{**raw_row(backend, times[label], args, tel.summary()), "dataset": label}
            for label in times]
    rows[1]["median_clip_speedup"] = float(np.median(ratios))  # per-clip ratios: robust to spikes
    return rows


def run_prepared_comparison(original: Manifest, prepared: Manifest, args) -> list[dict]:
    """Paired bare-decoder rows, then the loader on each dataset, for every backend."""
    plan = cycle_plan(original, args.clips)
    available = set(available_backends())
    rows = []
    for backend in args.backends:
        if backend == "dali" or (backend != "naive" and backend not in available):
            rows.append({**skip_row(backend, "not compared with --prepared" if backend == "dali"
                                     else f"{backend} is not installed here"), "dataset": "both"})
            continue
        rows += _raw_paired(original, prepared, plan, backend, args)
        for label, manifest in (("original", original), ("prepared", prepared)):
            rows.append({**through_loader(manifest, plan, backend, args.workers, args), "dataset": label})
    finish_rows(rows, "n/a", args)
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


def main_prepared(args) -> int:
    rows = run_prepared_comparison(*_prepared_manifests(args), args)
    columns = ["dataset", *COLUMNS, "speedup_vs_original", "median_clip_speedup"]
    paths = report(rows, args.json, command=args.command_line, columns=columns,
                   title="Loader throughput, original vs prepared", notes=NOTES)
    for r in rows:
        if "speedup_vs_original" in r:
            median = (f" (median per clip {r['median_clip_speedup']:.1f}x)"
                      if "median_clip_speedup" in r else "")
            print(f"{r['backend']}: {r['speedup_vs_original']:.1f}x faster from {args.prepared}{median}")
    wrote(paths)
    return 0
