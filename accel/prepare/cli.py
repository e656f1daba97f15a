"""``python -m accel.prepare``'s arguments, run and summary; exit 0 all prepared, 1 some
sources failed, 2 bad input, 130 interrupted."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..data.manifests import SPLITS, ManifestError
from .options import CODECS, PRESETS, TUNES, PrepareOptions
from .run import prepare


def build_parser():
    from ..cli import Parser, non_negative_float, positive_int

    p = Parser(prog="python -m accel.prepare",
               description="Transcode a dataset once into files that decode fast: DST gets SRC's "
                           "relative paths, every output checked (frame count, timestamps, PSNR).",
               epilog="Exit status: 0 all prepared, 1 some sources failed (listed), 2 bad input, "
                      "130 interrupted (rerun to continue).")
    p.add_argument("src", type=Path, help="dataset: class folders (with or without train/val/test) or a CSV")
    p.add_argument("dst", type=Path, help="output folder: same relative paths (and CSV) as SRC")
    p.add("--short-side", type=positive_int, default=128,
          help="short side in pixels, exactly (even; never upscales; default 128); the long side "
               "keeps the aspect ratio, rounded to a multiple of 32")
    p.add("--gop", type=positive_int, default=16, help="frames between keyframes (default 16)")
    p.add("--bframes", type=int, default=0, help="max consecutive B-frames (default 0)")
    p.add("--crf", type=int, default=20, help="x264/x265 constant rate factor (default 20)")
    p.add("--codec", choices=tuple(CODECS), default="h264")
    p.add("--tune", choices=TUNES, default=PrepareOptions.tune,
          help=f"encoder tuning (default {PrepareOptions.tune}: measured 1.6-1.8x faster clips, README)")
    p.add("--preset", choices=PRESETS, default="medium", help="encoder speed/size trade-off")
    p.add("--workers", type=positive_int, default=max(1, len(os.sched_getaffinity(0))),
          help="parallel worker processes (default: the cores this process may use)")
    p.add("--split", action="append", choices=SPLITS,
          help="prepare only this split (repeatable; default: every split)")
    p.add("--check-frames", type=positive_int, default=4, help="frames per file checked by PSNR")
    p.add("--min-psnr", type=non_negative_float, default=25.0,
          help="a checked frame below this PSNR (dB) fails the file (default 25)")
    p.add("--report", type=Path, help="report path (default DST/.prepare/reports/report-<time>.json)")
    p.add_flag("--progress", True, "show a progress bar (--no-progress to hide it)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..cli import one_line

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = PrepareOptions(short_side=args.short_side, gop=args.gop, bframes=args.bframes,
                                 crf=args.crf, codec=args.codec, tune=args.tune, preset=args.preset,
                                 check_frames=args.check_frames, min_psnr=args.min_psnr)
    except ValueError as e:
        parser.error(one_line(e))
    command = shlex.join(["python", "-m", "accel.prepare", *argv])
    try:
        report = prepare(args.src, args.dst, options, workers=args.workers, splits=args.split,
                         progress=args.progress, report_path=args.report, command=command)
    except ManifestError as e:
        parser.error(one_line(e))
    except KeyboardInterrupt as e:
        print(f"interrupted: finished files are kept; rerun the same command to continue "
              f"(report: {e.args[0] if e.args else '-'})", file=sys.stderr)
        return 130
    files, ps = report["files"], report["psnr_db"]
    share = report["output_bytes"] / report["input_bytes"] if report["input_bytes"] else float("nan")
    print(f"{files['prepared']} prepared, {files['kept']} kept from earlier runs, {files['copied']} "
          f"frame folders linked, {files['failed']} failed; {report['frames']} frames, "
          f"{report['input_bytes'] / 1e6:.1f} MB -> {report['output_bytes'] / 1e6:.1f} MB "
          f"({share:.0%} of the input), PSNR min {ps['min']} mean {ps['mean']} dB, {report['seconds']:.1f} s")
    for f in report["failed"]:
        print(f"  failed {f['path']}: {f['reason']}")
    print(f"report: {report['report']}")
    return 1 if report["failed"] else 0
