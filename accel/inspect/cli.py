"""The command: ``python -m accel.inspect DATA [--clip_len 16 --size 112 --verify 8 ...]``."""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from ..cli import Parser, fail, non_negative_int, one_line, positive_int
from ..data.manifests import CsvOptions, ManifestError
from ..data.sampling import STRATEGIES
from .cost import CostOptions, measure_costs
from .groups import members, summary
from .layout import list_entries
from .plot import plot_report
from .problems import class_balance, find_problems, gpu_capability
from .report import render, write_report
from .scan import scan_with_progress, scan_workers
from .verify import verify

PROG = "python -m accel.inspect"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Know a dataset before training on it: what is in it, what "
               "will break, what a clip costs, whether decoders agree.")
    p.add("data", help="a dataset folder (class or split folders, frame folders) or a CSV")
    p.add("--out_dir", type=Path, default=Path("runs/inspect"),
          help="where inspect.json, inspect.md and inspect.png go (default runs/inspect)")
    p.add("--workers", type=positive_int, default=os.cpu_count() or 1,
          help="scan processes (default: all cores)")
    p.add("--clip_len", type=positive_int, default=16, help="frames per clip, as training uses")
    p.add("--size", type=non_negative_int, default=112, help="frames resized to size x size (0: keep)")
    p.add("--sampling", choices=STRATEGIES, default="uniform", help="how a clip's frames are drawn")
    p.add("--sample", type=non_negative_int, default=8,
          help="clips timed per group and decoder for the cost section (0: no cost section)")
    p.add("--prepare", type=non_negative_int, default=1,
          help="files per group prepared with accel.prepare to measure its speed-up (0: none)")
    p.add("--verify", type=non_negative_int, default=0,
          help="files whose same random clip every decoder decodes, compared (default 0)")
    p.add("--decoders", default=None, help="comma list of CPU decoders to time and compare "
                                           "(default: every available one)")
    p.add("--seed", type=int, default=0, help="which files and clips --verify draws")
    p.add("--path_column", default=None, help="a CSV's path column (default: found by name)")
    p.add("--label_column", default=None, help="a CSV's label column (default: found by name)")
    p.add("--video_root", default=None, help="what a CSV's paths are relative to (default: its folder)")
    p.add("--quiet", action="store_true", help="no progress bars and no tables in the terminal")
    return p


def choose_decoders(text: str | None) -> list[str]:
    from ..io.backends import AUTO_ORDER, available_backends

    found = available_backends()
    if text is None:
        return found
    asked = [d.strip() for d in text.split(",") if d.strip()]
    for d in asked:
        if d not in AUTO_ORDER:
            raise ManifestError(f"--decoders {d!r}: not a CPU decoder (choose from {', '.join(AUTO_ORDER)})")
        if d not in found:
            raise ManifestError(f"--decoders {d!r}: not available here (available: {', '.join(found)})")
    return asked


def scan_section(args, entries) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    records = scan_with_progress(entries, workers=args.workers, quiet=args.quiet)
    readable = [r for r in records if "skipped" not in r]
    return records, {"files": len(records), "readable": len(readable),
                     "skipped": len(records) - len(readable), "workers": scan_workers(args.workers, len(entries)),
                     "hours": sum(r.get("duration_s", 0) for r in readable) / 3600,
                     "seconds": round(time.perf_counter() - t0, 2),
                     "cpu_seconds": round(sum(r["scan_cpu_ms"] for r in records) / 1e3, 2)}


def measured_sections(args, report: dict, records: list[dict], decoders: list[str]) -> None:
    """The cost and verify sections, which decode (a small sample)."""
    from tqdm import tqdm

    groups = members(records)
    options = CostOptions(clip_len=args.clip_len, size=args.size, sampling=args.sampling,
                          sample=args.sample, prepare_files=args.prepare)
    report["cost_options"] = dataclasses.asdict(options)
    if args.sample and groups and decoders:
        with tqdm(total=len(groups) * len(decoders), desc="cost", unit="decoder",
                  disable=args.quiet) as bar:
            report["cost"] = measure_costs(groups, decoders, options, progress=bar)
    if args.verify:
        with tqdm(total=args.verify, desc="verify", unit="file", disable=args.quiet) as bar:
            report["verify"] = verify(records, args.verify, decoders, clip_len=args.clip_len,
                                      seed=args.seed, progress=bar)


def inspect_dataset(args) -> dict:
    """The whole report for parsed ``args`` (raises ManifestError for a layout it cannot read)."""
    options = CsvOptions(args.path_column, args.label_column, args.video_root)
    entries = list_entries(args.data, options)
    decoders = choose_decoders(args.decoders)
    records, scanned = scan_section(args, entries)
    capability, gpu = gpu_capability()
    report = {"command": shlex.join([PROG, *sys.argv[1:]]), "data": str(args.data), "scan": scanned,
              "dali_gpu": gpu, "decoders": decoders,
              "problems": find_problems(records, clip_len=args.clip_len, capability=capability),
              "groups": summary(records), "balance": class_balance(records), "files": records}
    measured_sections(args, report, records, decoders)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = inspect_dataset(args)
    except ManifestError as e:
        fail(PROG, one_line(e))
    paths = write_report(report, args.out_dir)
    plot_report(report["files"], report["balance"], args.out_dir / "inspect.png")
    if not args.quiet:
        print(render(report))
    print(f"wrote {paths['json']}, {paths['md']}, {args.out_dir / 'inspect.png'}")
    return 0
