"""``python -m benchmarks loaders``: clips/s of each decode backend through the loader, of the
bare decoder on the same clips (``raw_<backend>`` rows), and of the naive approach the seeds
use (decode every frame of the video, then keep the sampled ones).

Without ``--data`` it encodes its own benchmark set once (cached under ``--cache``):
20 s 640x360 H.264 videos at 25 fps (Big Buck Bunny content), one set per keyframe
interval in ``--gops``.

``--soak`` measures memory instead of speed: per backend, the memory growth over ``--clips``
clips (default 10000) of the bare decoder in one process, and of the loader (persistent
workers) with decode-process recycling off and on. Without ``--data`` it reads tiny videos,
so that many clips take minutes.

Modules: ``throughput`` (the speed rows), ``soak`` (``--soak``), ``prepared``
(``--prepared``), ``costs`` (``--costs``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from accel.cli import Parser, comma_list, non_negative_int, positive_float, positive_int
from accel.data.sampling import STRATEGIES
from accel.io.backends import AUTO_ORDER
from benchmarks.common import add_common_args
from benchmarks.loaders.costs import main_costs
from benchmarks.loaders.prepared import main_prepared
from benchmarks.loaders.soak import in_child, main_soak
from benchmarks.loaders.throughput import (
    ALL_BACKENDS,
    benchmark_loader,
    main_throughput,
    make_benchmark_data,
    raw_clip,
    through_loader,
)

__all__ = ["build_parser", "main", "benchmark_loader", "in_child", "make_benchmark_data", "raw_clip",
           "through_loader"]


def build_parser(prog: str) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--data", type=Path, help="a dataset folder or CSV (default: make benchmark videos)")
    p.add("--split", default=None, help="split folder/column to read (default: all of --data)")
    p.add("--backends", type=comma_list(choices=ALL_BACKENDS), default=list(ALL_BACKENDS),
          help=f"comma list from {','.join(ALL_BACKENDS)} (default: all)")
    p.add("--clip-len", type=positive_int, default=16)
    p.add("--size", type=non_negative_int, default=112, help="frames resized to size x size (0: keep)")
    p.add("--strategy", choices=STRATEGIES, default="uniform")
    p.add("--workers", type=non_negative_int, default=min(2, os.cpu_count() or 1))
    p.add("--batch-size", type=positive_int, default=8)
    p.add("--clips", type=positive_int, default=None, help="clips read per backend (default 48; --soak 10000)")
    p.add("--gops", type=comma_list(positive_int), default=[25, 50, 250],
          help="keyframe intervals of the generated videos (default 25,50,250; ignored with --data)")
    p.add("--videos", type=positive_int, default=6, help="generated videos per keyframe interval")
    p.add("--seconds", type=positive_float, default=20.0, help="length of generated videos")
    p.add("--cache", type=Path, default=Path("runs/bench_data"),
          help="where generated videos are kept between runs")
    p.add("--no-overhead", dest="overhead", action="store_false",
          help="skip the workers=0 pass that measures the loader's overhead")
    p.add("--dali-device", choices=("gpu", "cpu"), default="gpu",
          help="gpu: NVDEC (needs CUDA); cpu: DALI's CPU decoder (VP8/VP9 only)")
    p.add("--soak", action="store_true",
          help="memory growth per backend over --clips clips (default 10000) instead of speed")
    p.add("--soak-samples", type=positive_int, default=10, help="memory samples per soak run")
    p.add("--prepared", type=Path, default=None,
          help="the same dataset after python -m accel.prepare: read the same clips from "
               "both in this run and add speedup_vs_original (needs --data)")
    p.add("--costs", action="store_true",
          help="per-clip CPU time of each layer (floor, reader, dataset, loader with 0 and "
               "--workers workers) on original, prepared and long files (benchmarks/loaders/costs.py)")
    p.add("--cost-backends", type=comma_list(choices=AUTO_ORDER), default=["pyav", "torchcodec"],
          help="backends of the --costs rows (default pyav,torchcodec)")
    p.add("--long", type=Path, default=None,
          help="--costs: the long recording (default: make a --long-minutes one with ffmpeg)")
    p.add("--long-minutes", type=positive_float, default=60.0, help="--costs: length of the made recording")
    p.add("--long-clips", type=positive_int, default=24, help="--costs: clips read from the long recording")
    add_common_args(p, json=None, json_help="default runs/benchmarks/loaders.json "
                    "(--soak: loaders_soak.json, --costs: loader_costs.json)")
    return p


def main(args) -> int:
    """One mode per run: --prepared, else --costs, else --soak, else the speed rows."""
    mode = "prepared" if args.prepared is not None else "costs" if args.costs else \
        "soak" if args.soak else "throughput"
    name = {"soak": "loaders_soak", "costs": "loader_costs"}.get(mode, "loaders")
    args = argparse.Namespace(**{**vars(args), "clips": args.clips or (10_000 if mode == "soak" else 48),
                                 "json": args.json or Path(f"runs/benchmarks/{name}.json")})
    run = {"prepared": main_prepared, "costs": main_costs, "soak": main_soak, "throughput": main_throughput}
    return run[mode](args)
