"""Evaluate a training checkpoint: clip-level and video-level metrics, plots, predictions.

    python evaluate.py --checkpoint runs/demo/best.pt --data_dir data/demo
    python evaluate.py --checkpoint runs/demo/best.pt --test_dir other/test --log_dir runs/eval

The model is rebuilt from what the checkpoint records (name, classes, options) and the
data is read with the checkpoint's clip length, size, sampling and batch size, so on CPU
the numbers equal the final test of ``train.py`` bit for bit. ``--runtime onnx|aoti|tensorrt``
runs an exported model instead of eager PyTorch (``--exported FILE``, or exported on the fly);
``--backend`` is the old name of ``--runtime`` here, and ``--decoder`` picks the video decoder.
Writes ``metrics.json``, PNG plots and ``test_predictions.csv`` to ``--log_dir``.
``test.py`` is this script under seed 004's name (``--model_path``, ``--out_dir``,
``--num_frames`` and ``--segments``, which must match the checkpoint).
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

from accel import ManifestError
from accel.cli import Options, Parser, UsageError, fail, flagged, non_negative_int, positive_int, resolve_device
from accel.data.loader import LOADER_BACKENDS
from accel.data.manifests import CsvOptions, check_present, skipped_summary
from accel.data.sampling import STRATEGIES
from accel.io.diagnose import explain_skip
from accel.train.checkpoint import EVAL_ENTRIES, CheckpointError, read_checkpoint
from accel.train.evaluation import EvalSettings, evaluate_split, public, summary_lines, write_report_files
from accel.train.tracking import write_json
from models import resolve_data_config
from models.checkpoint import model_from_checkpoint

PROG = "evaluate.py"
RUNTIMES = ("eager", "onnx", "aoti", "tensorrt")
SUFFIX = {"onnx": ".onnx", "aoti": ".pt2", "tensorrt": ".ep"}
# The options that change how the checkpoint's recorded evaluation reads clips, when given:
# option -> EvalSettings field.
EVAL_OPTIONS = {"test_sampling": "sampling", "batch_size": "batch_size", "num_workers": "num_workers",
                "decoder": "backend", "video_stride": "video_stride", "window_stride": "window_stride",
                "max_windows": "max_windows", "autorotate": "rotate"}


def get_args_parser() -> Parser:
    p = Parser(prog=PROG, description="Evaluate a train.py checkpoint on a test set.")
    p.add("--checkpoint", "--model_path", required=True,
          help="best.pt or last.pt from train.py (a best_model.pth that does not exist finds best.pt "
               "beside it)")
    p.add("--data_dir", "--data_root",
          help="dataset whose --split is evaluated (folder with test/, or CSV with a split column)")
    p.add("--test_dir", help="test set: a folder with test/, a folder of class folders, or a CSV")
    p.add("--split", default="test", choices=("train", "val", "test"),
          help="split of --data_dir to evaluate (default test)")
    p.add("--video_root", help="CSV paths are relative to this folder (default: the CSV's folder)")
    p.add("--path_column", help="CSV column of the file paths (default: found by name)")
    p.add("--label_column", help="CSV column of the labels (default: found by name)")
    p.add("--clip_len", "--num_frames", type=positive_int,
          help="frames per clip: must match the checkpoint's (checked, not changed)")
    p.add("--segments", "--num_segments", type=positive_int,
          help="late-fusion segments: must match the checkpoint's (checked, not changed)")
    p.add("--log_dir", "--out_dir", help="where reports go (default: CHECKPOINT_DIR/eval_SPLIT)")
    p.add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add("--runtime", "--backend", choices=RUNTIMES, default="eager",
          help="model runtime: eager PyTorch, or an export (onnx, aoti, tensorrt); "
               "--backend is its old name")
    p.add("--exported", help="the exported file for --runtime (default: export now to log_dir)")
    p.add("--decoder", choices=LOADER_BACKENDS,
          help="video decoder (default: the one training used; dali becomes auto off CUDA)")
    p.add("--no_autorotate", dest="autorotate", action="store_false", default=None,
          help="frames as stored, not turned upright by a display matrix (default: as training did)")
    p.add("--test_sampling", "--sampling", choices=STRATEGIES, help="clip sampling (default: training's)")
    p.add("--batch_size", "-b", type=positive_int, help="default: training's evaluation batch size")
    p.add("--num_workers", "--workers", "-j", type=non_negative_int)
    p.add("--amp", choices=("none", "bf16", "fp16"), help="autocast on CUDA (default: training's)")
    p.add_flag("--channels_last", True, "channels-last weights and clips (default on)")
    p.add_flag("--video_eval", True, "video-level metrics from sliding windows (--no_video_eval)")
    p.add("--video_stride", type=positive_int, help="frame step inside a window (default: training's)")
    p.add("--window_stride", type=positive_int, help="frames between window starts")
    p.add("--max_windows", type=positive_int, help="windows per video at most")
    p.add_flag("--progress", True, "tqdm bars (--no_progress)")
    return p


def test_manifest(args, classes):
    """The manifest to evaluate, with the checkpoint's class list, without missing files."""
    from accel.data.splits import has_split, load_other, split_manifest

    options = CsvOptions(args.path_column, args.label_column, args.video_root)
    if args.test_dir:
        manifest = load_other(args.test_dir, "test", classes, options, "test_dir")
    elif args.data_dir:
        src = Path(args.data_dir)
        if not src.exists():
            raise UsageError(f"--data_dir {src}: no such file or folder")
        if not has_split(src, args.split):
            raise UsageError(f"--data_dir {src} has no {args.split} split (a {args.split}/ folder, "
                             f"{args.split}.csv, or rows with split={args.split}); give --test_dir")
        manifest = split_manifest(src, args.split, classes, options)
    else:
        raise UsageError("give --test_dir or --data_dir (with --split, default test)")
    present, gone, warning = check_present(manifest)
    if warning:
        print(flagged(warning), flush=True)
    return present, [list(g) for g in gone]


def checkpoint_path(given: str) -> Path:
    """The named checkpoint, or train.py's best.pt beside a seed's best_model.pth name."""
    path = Path(given)
    if path.exists() or path.suffix != ".pth":
        return path
    for kind in ("best", "last"):
        ours = path.parent / f"{kind}.pt"
        if path.stem.startswith(kind) and ours.is_file():
            print(f"note: {path} does not exist; using {ours} (train.py's {kind} checkpoint)", flush=True)
            return ours
    return path


def check_matches(args, ckpt: dict, model, settings_clip_len: int) -> None:
    """--num_frames / --segments describe the checkpoint; a different value is an error."""
    if args.clip_len is not None and args.clip_len != settings_clip_len:
        raise UsageError(f"--num_frames {args.clip_len}: the checkpoint was trained on {settings_clip_len}-"
                         "frame clips (drop the flag or give the same value)")
    if args.segments is not None:
        trained = getattr(model, "num_segments", None)  # the rebuilt model's own, default or recorded
        if trained != args.segments:
            raise UsageError(f"--segments {args.segments}: the checkpoint ({ckpt.get('model_name')}) has "
                             f"{trained if trained is not None else 'no'} segments")


def build_runner(args, model, settings: EvalSettings, device: torch.device, log_dir: Path, amp, *,
                 stem: str = "model"):
    """The callable clips -> logits: eager (optimised) PyTorch or an exported artifact (without
    ``args.exported``, exported now to ``log_dir/<stem><suffix>``)."""
    from accel.deploy.perf import optimize

    if args.runtime == "eager":
        return optimize(model, channels_last=args.channels_last, amp=amp, compile=False, device=device)
    from accel.deploy import export

    path = Path(args.exported) if args.exported else log_dir / f"{stem}{SUFFIX[args.runtime]}"
    if args.exported is None:
        example = torch.randn(settings.batch_size, 3, settings.clip_len, settings.size, settings.size)
        t0 = time.perf_counter()
        if args.runtime == "onnx":  # exported on the CPU: a CPU copy of the model, a CPU example
            result = export.export_onnx(copy.deepcopy(model).cpu(), example, path)
        elif args.runtime == "aoti":
            result = export.export_aoti(model.to(device), example.to(device), path)
        else:
            result = export.export_tensorrt(model.to(device), example.to(device), path)
        print(f"exported {args.runtime} -> {path} in {time.perf_counter() - t0:.1f} s; "
              f"parity vs eager: {result.parity}", flush=True)
    return export.load_exported(path, device)


def main(args: Options) -> dict:
    try:
        args.checkpoint = str(checkpoint_path(args.checkpoint))
        ckpt = read_checkpoint(args.checkpoint, require=EVAL_ENTRIES)
        device = resolve_device(args.device)
        classes = list(ckpt["classes"])
        manifest, missing = test_manifest(args, classes)
        model = model_from_checkpoint(ckpt, source=args.checkpoint)
        e = dict(ckpt.get("eval") or {})
        if not e:
            raise CheckpointError(f"{args.checkpoint}: records no evaluation settings")
        e.update({EVAL_OPTIONS[k]: v for k, v in args.given_values(EVAL_OPTIONS).items()})
        if e.get("backend") == "dali" and device.type != "cuda":
            e["backend"] = "auto"  # trained with NVDEC, evaluated here on the CPU decoders
        e["video_level"] = args.video_eval
        if e.get("frame_size") is not None:
            e["frame_size"] = tuple(e["frame_size"])
        # Normalised as in training: the recorded statistics; the model's own where none are.
        cfg = resolve_data_config(model)
        e.setdefault("mean", cfg.mean)
        e.setdefault("std", cfg.std)
        settings = EvalSettings(**e)
        check_matches(args, ckpt, model, settings.clip_len)
        train_args = ckpt.get("args") or {}
        amp = args.amp if "amp" in args.given else (train_args.get("amp_effective") or "none")
        amp = None if amp == "none" or device.type != "cuda" else amp
        log_dir = Path(args.log_dir) if args.log_dir else Path(args.checkpoint).parent / f"eval_{args.split}"
        if args.runtime == "tensorrt" and device.type != "cuda":
            raise UsageError("--runtime tensorrt needs a CUDA device")
        log_dir.mkdir(parents=True, exist_ok=True)
        runner = build_runner(args, model, settings, device, log_dir, amp)
    except (UsageError, ManifestError, CheckpointError, ImportError, FileNotFoundError, ValueError) as err:
        fail(PROG, flagged(err))

    from tqdm import tqdm

    def bar(n, desc):
        return tqdm(total=n, desc=desc, leave=False, disable=not args.progress, file=sys.stderr)

    print(f"{ckpt['model_name']} from {args.checkpoint} (epoch {ckpt['epoch'] + 1}); "
          f"{len(manifest)} videos of {manifest.source}; clips {settings.clip_len}x{settings.size}px "
          f"{settings.sampling}; runtime {args.runtime}; device {device}", flush=True)
    t0 = time.perf_counter()
    report = evaluate_split(runner, manifest, settings, device, progress_factory=bar)
    elapsed = time.perf_counter() - t0
    skipped = [[p, explain_skip(p, r)] for p, r in missing + report["skipped"]]
    if report["clip"].get("n", len(manifest) - len(report["skipped"])) == 0:
        fail(PROG, f"no readable video: all {len(manifest)} of {manifest.source} were skipped "
                   f"({skipped[0][0]}: {skipped[0][1]})")
    doc = {"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"], "model": ckpt["model_name"],
           "classes": classes, "data": manifest.source, "runtime": args.runtime, "device": str(device),
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
           "time_s": elapsed, "test": public(report), "skipped": {"test": skipped},
           "num_skipped": len(skipped)}
    write_json(doc, log_dir / "metrics.json")
    write_report_files(report, manifest, log_dir, prefix="test")
    for line in summary_lines(report):
        print(line)
    for line in skipped_summary(skipped, f"{log_dir / 'metrics.json'}, key \"skipped\""):
        print(line)
    print(f"metrics: {log_dir / 'metrics.json'}   plots: {log_dir}/*.png")
    return doc


if __name__ == "__main__":
    main(get_args_parser().parse_args())
    sys.exit(0)
