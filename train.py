"""Train a video classifier: one process, or several with ``torchrun`` (DDP).

    python train.py --model tsm_resnet18 --data_dir data/demo --clip_len 8 --size 32 \
        --epochs 6 --lr 1e-3 --out_dir runs/demo
    torchrun --nproc_per_node=2 train.py ... --device cpu      # Gloo on CPU, NCCL on GPU

The laryngoscopy seed's command line works as written (``--data_dir --test_dir --log_dir
--model_dir --train_sampling --val_sampling --test_sampling --loss_weight``); every option
takes dashes or underscores. Writes to ``--log_dir`` (``metrics.json``, ``log.csv``,
``config.json``, TensorBoard events, PNG plots, test predictions) and ``--model_dir``
(``best.pt``, ``last.pt``: full checkpoints readable with ``torch.load(weights_only=True)``);
``--out_dir`` sets both. Resume with ``--resume last.pt``: the run's model, clip length,
size, data and optimisation options come back from the checkpoint unless given again.
The other seeds' commands work too (see README "Coming from ..."): ``--segments`` picks
``r3d_18_late_fusion``, the seeds' model names are aliases, ``--loss bce`` trains one logit.
``--decoder`` picks the video decoder (``--backend`` is its old name).

Reading order: ``main`` runs ``setup`` (every check of the inputs, before any training), then
``train``: ``build_data``, ``build_training``, ``resume_training``, ``open_outputs``, per epoch
``run_epoch`` and ``save_epoch``, then ``final_test`` and ``write_reports``.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from accel import DecodeOptions, ManifestError, VideoDecodeError, build_loader
from accel.cli import (
    Parser,
    UsageError,
    fail,
    key_value,
    non_negative_float,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    resolve_device,
    unit_interval,
)
from accel.data.loader import LOADER_BACKENDS, ClipBatchLoader
from accel.data.manifests import CsvOptions, check_present, explain_skip, skipped_summary
from accel.data.reading import ON_ERROR
from accel.data.samplers import ShardedSampler
from accel.data.sampling import STRATEGIES
from accel.data.splits import load_splits
from accel.data.transforms import ClipTransform
from accel.deploy.perf import COMPILE_MODES
from accel.io.backends import AUTO_ORDER
from accel.train.checkpoint import (
    RESUME_ENTRIES,
    CheckpointError,
    link_or_copy,
    load_model_state,
    plain,
    read_checkpoint,
    save_checkpoint,
)
from accel.train.distributed import DistInfo, all_gather_objects, barrier, destroy, init_distributed
from accel.train.engine import EpochState, train_one_epoch
from accel.train.evaluation import (
    EvalSettings,
    evaluate_clips,
    evaluate_split,
    public,
    summary_line,
    write_report_files,
)
from accel.train.longrun import LongRunHooks, LongRunOptions, RunStopped
from accel.train.losses import LOSSES, build_criterion, class_weights, sampling_weights
from accel.train.metrics import classification_metrics
from accel.train.optim import LRSchedule, build_optimizer
from accel.train.preempt import EXIT_PREEMPTED, PreemptionFlag, exit_status_help
from accel.train.rng import rng_state, seed_everything, set_rng_state
from accel.train.rolling import RollingCheckpoints, newest_checkpoint, place
from accel.train.selection import ModelSelector
from accel.train.tracking import RunLogger, write_json
from models import resolve_data_config
from models.checkpoint import model_from_checkpoint

PROG = "train.py"


def get_args_parser() -> Parser:
    p = Parser(prog=PROG, description="Train a video classifier (CPU, one GPU, or torchrun DDP).",
               epilog=exit_status_help() + ".")
    add_data_args(p.add_argument_group("data"))
    add_model_args(p.add_argument_group("model"))
    add_optimisation_args(p.add_argument_group("optimisation"))
    add_selection_args(p.add_argument_group("model selection and stopping"))
    add_speed_args(p.add_argument_group("speed"))
    add_evaluation_args(p.add_argument_group("evaluation"))
    add_output_args(p.add_argument_group("output"))
    add_long_run_args(p.add_argument_group("long runs (README: Long runs)"))
    return p


def add_data_args(g) -> None:
    g.add("--data_dir", "--data_root",
          help="train/ val|validation/ test/ split folders (class folders or a CSV in each), "
               "train.csv val.csv test.csv, a folder of class folders, or one CSV (path,label[,split]); "
               "required unless --resume")
    g.add("--val_dir", "--val_csv", help="validation set (folder or CSV); default: data_dir's val split")
    g.add("--test_dir", "--test_csv", help="test set (folder with test/, class folders, or CSV); "
                                           "default: data_dir's test split")
    g.add("--video_root", help="CSV paths are relative to this folder (default: the CSV's folder)")
    g.add("--path_column", help="CSV column of the file paths (default: found by name: path, filename, "
                                "file, video, clip, sequence)")
    g.add("--label_column", help="CSV column of the labels (default: label, class or target)")
    g.add("--val_fraction", type=unit_interval, default=0.2,
          help="held out of train (stratified) when data_dir has no val split (default 0.2)")
    g.add("--clip_len", "--num_frames", type=positive_int, help="frames per clip (default: the model's)")
    g.add("--size", type=positive_int, help="model input size in pixels (default: the model's)")
    g.add("--decode_size", type=positive_int,
          help="frames are resized to this square size in the loader workers (default: --size)")
    for split in ("train", "val", "test"):
        g.add(f"--{split}_sampling", choices=STRATEGIES, default="uniform",
              help=f"frame sampling for {split} clips (default uniform)")
    g.add("--frame_stride", type=positive_int, default=1, help="frame step of 'dense' clips")
    g.add("--decoder", "--backend", choices=LOADER_BACKENDS, default="auto",
          help="video decoder (default auto: DALI (NVDEC) when training on CUDA with DALI installed, "
               f"else the first installed of {', '.join(AUTO_ORDER)}); --backend is its old name")
    g.add_flag("--autorotate", True, "turn phone videos upright by their display matrix, as players do "
               "(default; --no_autorotate: frames as stored)")
    g.add("--num_workers", "--workers", "-j", type=non_negative_int, default=2)
    g.add("--on_error", choices=ON_ERROR, default="skip",
          help="an undecodable file is skipped and listed (default) or stops the run")
    g.add("--augment", nargs="?", const="full", choices=("full", "flip", "none"), default="full",
          help="training augmentation: full (crop, flip, rotate, colour; --augment alone), flip, none")


def add_model_args(g) -> None:
    from models import list_models

    g.add("--model", type=model_name, metavar="NAME",
          help=f"one of {', '.join(list_models())}, or a seed's name (tsm_resnet, r2plus1d, cnnlstm...); "
               "default resnet50_lstm, r3d_18_late_fusion with --segments, the checkpoint's with --resume")
    g.add("--pretrained", action="store_true", help="ImageNet / Kinetics trunk weights (needs network)")
    g.add("--weights", help="local weights: a trunk file or a checkpoint of this model")
    g.add("--model_arg", type=key_value, action="append", default=[], metavar="NAME=VALUE",
          help="extra model option, repeatable (e.g. hidden_size=128, dropout=0.2)")
    g.add("--segments", "--num_segments", type=positive_int,
          help="temporal segments of r3d_18_late_fusion (= --model_arg num_segments=N)")
    g.add("--freeze_backbone", action="store_true", help="train only the head (trunk frozen)")
    g.add("--backbone_lr_mult", type=non_negative_float, default=1.0,
          help="trunk learning rate = lr x this (layer-wise LR; default 1)")
    g.add_flag("--sync_bn", False, "SyncBatchNorm across DDP processes")


def add_optimisation_args(g) -> None:
    g.add("--epochs", type=positive_int, default=30)
    g.add("--batch_size", "-b", type=positive_int, default=8, help="clips per step and process")
    g.add("--eval_batch_size", type=positive_int, help="default: --batch_size")
    g.add("--lr", "--learning_rate", type=positive_float, default=1e-4)
    g.add("--opt", "--optimizer", choices=("adamw", "adam", "sgd"), default="adamw")
    g.add("--weight_decay", "--wd", type=non_negative_float, default=1e-4)
    g.add("--momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    g.add("--sched", "--scheduler", choices=LRSchedule.KINDS, default="cosine")
    g.add("--warmup_epochs", type=non_negative_float, default=0.0, help="linear warmup (may be fractional)")
    g.add("--min_lr_ratio", type=unit_interval, default=0.0, help="cosine floor, as a share of lr")
    g.add("--plateau_factor", type=unit_interval, default=0.1)
    g.add("--plateau_patience", type=non_negative_int, default=2)
    g.add("--clip_grad_norm", "--grad_clip", type=non_negative_float, default=0.0, help="0 = off")
    g.add("--accum_steps", "--grad_accum", type=positive_int, default=1, help="gradient accumulation")
    g.add("--loss", choices=LOSSES, default="ce",
          help="ce (cross-entropy), focal, or bce (two classes: one logit, BCE-with-logits)")
    g.add("--focal_gamma", type=non_negative_float, default=2.0)
    g.add("--label_smoothing", type=unit_interval, default=0.0)
    g.add("--class_weights", default="auto",
          help="auto (balanced unless --balanced_sampler), balanced, none, or w1,w2,...")
    g.add_flag("--balanced_sampler", False, "WeightedRandomSampler with weights count^-tau")
    g.add("--sampler_tau", type=non_negative_float, default=1.0)


def add_selection_args(g) -> None:
    g.add("--loss_weight", type=unit_interval, default=0.3,
          help="best checkpoint by loss_weight * best_loss/val_loss + (1 - loss_weight) * val AUROC "
               "(0..1, default 0.3; higher weighs loss more)")
    g.add("--patience", type=non_negative_int, default=10,
          help="stop after this many epochs without a better score (0 = never)")
    g.add("--min_delta", type=non_negative_float, default=0.0)


def add_speed_args(g) -> None:
    g.add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add("--dist_timeout", type=positive_float, default=300.0,
          help="seconds a DDP collective waits for a silent rank before the run fails (default 300)")
    g.add("--amp", nargs="?", const="bf16", choices=("none", "bf16", "fp16"), default="none",
          help="mixed precision on CUDA (--amp alone = bf16; fp16 uses a GradScaler)")
    g.add_flag("--channels_last", True, "channels-last weights and clips (default on; --no_channels_last)")
    g.add("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=None,
          help="torch.compile the model (--compile alone = default mode)")
    g.add_flag("--deterministic", False, "torch.use_deterministic_algorithms")


def add_evaluation_args(g) -> None:
    g.add_flag("--video_eval", True, "video-level test metrics (sliding windows; --no_video_eval)")
    g.add("--video_stride", type=positive_int, help="frame step inside a window (default: per video, "
                                                     "the widest that fits, like a uniform clip)")
    g.add("--window_stride", type=positive_int, help="frames between window starts")
    g.add("--max_windows", type=positive_int, default=16, help="windows per video at most")


def add_output_args(g) -> None:
    g.add("--out_dir", "--output_dir", help="sets --log_dir and --model_dir (default runs/MODEL_TIME)")
    g.add("--log_dir", help="metrics, logs and plots")
    g.add("--model_dir", help="checkpoints (default: --log_dir)")
    g.add("--resume", help="continue exactly where a checkpoint stopped: a file (last.pt, step-*.pt), or "
                           "auto: the newest readable one in --model_dir / --out_dir, or a fresh start "
                           "if there is none (the default when torchrun restarts the workers)")
    g.add("--seed", type=int, default=0)
    g.add_flag("--debug", False, "show Python tracebacks instead of one-line errors")
    g.add("--print_freq", type=positive_int, default=5, help="progress-bar refresh, in steps")
    g.add_flag("--progress", True, "tqdm bars (--no_progress)")
    g.add_flag("--tensorboard", True, "TensorBoard events under log_dir/tensorboard")
    g.add_flag("--wandb", False, "Weights & Biases logging")
    g.add("--wandb_project", default="vidaccel")
    g.add("--wandb_name")
    g.add("--wandb_mode", choices=("offline", "online", "disabled"), default="offline",
          help="offline (default) needs no network; sync later with `wandb sync`")


def add_long_run_args(g) -> None:
    g.add("--save_every_steps", type=non_negative_int, default=0,
          help="also write a resumable checkpoint (step-EPOCH-SAMPLES.pt) every N steps (0 = off)")
    g.add("--save_every_minutes", type=non_negative_float, default=0.0,
          help="also write one every M minutes (0 = off)")
    g.add("--keep_checkpoints", type=positive_int, default=2, help="mid-epoch checkpoints kept (default 2)")
    g.add("--max_nonfinite", type=non_negative_int, default=0,
          help="stop after K consecutive non-finite losses (each is skipped and counted; 0 = never stop)")
    g.add("--stall_warn_s", type=non_negative_float, default=60.0,
          help="warn when one batch takes longer than this to arrive (default 60; 0 = off)")


def model_name(text: str) -> str:
    """argparse type: a registered model or a seed's alias, as the registered name."""
    import argparse

    from models import resolve_model_name

    try:
        return resolve_model_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Setup:
    info: DistInfo
    device: torch.device
    splits: object
    model: nn.Module
    log_dir: Path
    model_dir: Path
    model_kwargs: dict
    amp: str | None
    resume: dict | None
    missing: dict  # split -> [(path, reason)] of listed files that do not exist
    flag: PreemptionFlag = dataclasses.field(default_factory=PreemptionFlag)  # SIGTERM / SIGUSR1 seen


def say(info: DistInfo, *msg) -> None:
    if info.is_main:
        print(*msg, flush=True)


def output_dirs(args) -> tuple[Path, Path]:
    if args.log_dir or args.model_dir:
        log_dir = Path(args.log_dir or args.model_dir)
        model_dir = Path(args.model_dir or args.log_dir)
    else:
        out = Path(args.out_dir or f"runs/{args.model}_{datetime.now():%Y%m%d-%H%M%S}")
        log_dir = model_dir = out
    if args.out_dir and not args.log_dir:
        log_dir = Path(args.out_dir)
    if args.out_dir and not args.model_dir:
        model_dir = Path(args.out_dir)
    return log_dir, model_dir


def model_options(args) -> dict:
    """The model's keyword options from the command line (recorded in checkpoints)."""
    kwargs = dict(args.model_arg)
    if args.segments is not None:
        kwargs["num_segments"] = args.segments
    if args.loss == "bce":
        kwargs["binary_logit"] = True
    return kwargs


def choose_model(args) -> None:
    """--model from the flags when not given: --segments means seed 004's late fusion."""
    if args.model is None:
        args.model = "r3d_18_late_fusion" if args.segments is not None else "resnet50_lstm"
    elif args.segments is not None and args.model != "r3d_18_late_fusion":
        raise UsageError(f"--segments is an option of r3d_18_late_fusion, not of {args.model}: "
                         "add --model r3d_18_late_fusion (or drop --segments)")


def build_model(args, num_classes: int, kwargs: dict) -> nn.Module:
    import re

    from models import PretrainedUnavailable, create_model

    try:
        model = create_model(args.model, num_classes=num_classes, pretrained=args.pretrained,
                             checkpoint_path=args.weights, **kwargs)
    except PretrainedUnavailable as e:
        url = re.search(r"download (\S+) elsewhere", str(e))
        where = f"download {url.group(1)} elsewhere and " if url else ""
        raise UsageError(f"--pretrained: cannot fetch {args.model}'s trunk weights here (no network?); "
                         f"{where}give the file with --weights FILE instead of --pretrained") from None
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise UsageError(f"--model {args.model}: {one_line(e)}") from None
    if args.freeze_backbone:
        if not hasattr(model, "freeze_backbone"):
            raise UsageError(f"--freeze_backbone: {args.model} has no separate trunk")
        model.freeze_backbone()
    return model


def frozen_random_trunk_warning(args, model: nn.Module) -> str | None:
    """A frozen trunk that was never given weights learns nothing: say so, with the fix."""
    if not getattr(model, "backbone_frozen", False) or args.pretrained or args.weights or args.resume:
        return None
    return (f"warning: {args.model}'s trunk is frozen but has random weights (no --pretrained, no "
            "--weights): only the layers after it learn. Give --weights FILE (torchvision's weights "
            "file for the trunk, e.g. resnet18-f37072fd.pth, or a checkpoint), --pretrained with "
            "network, or train the trunk too with --model_arg freeze_backbone=False")


# Options a resumed run takes from its checkpoint unless given again. Those that change the
# weights' meaning must match; the others may differ, and the difference is stated.
RESUMED = ("model", "loss", "clip_len", "size", "decode_size", "train_sampling", "val_sampling",
           "test_sampling", "frame_stride", "data_dir", "val_dir", "test_dir", "video_root",
           "path_column", "label_column", "val_fraction", "batch_size", "epochs", "lr", "opt",
           "weight_decay", "sched", "warmup_epochs", "min_lr_ratio", "accum_steps", "label_smoothing",
           "class_weights", "balanced_sampler", "sampler_tau", "focal_gamma", "augment", "loss_weight",
           "patience", "seed", "log_dir", "model_dir")
RESUME_MUST_MATCH = ("model", "loss")


def restore_options(args, ck: dict) -> list[str]:
    """Fill ``args`` from a checkpoint's recorded options; refuse or state differences."""
    saved = ck.get("args") or {}
    saved = {**saved, "model": ck.get("model_name", saved.get("model"))}
    given = getattr(args, "_given", set())
    new_output = bool(given & {"out_dir", "log_dir", "model_dir"})
    notes = []
    for name in RESUMED:
        if name not in saved or (saved[name] is None and name not in given):
            continue
        if name in ("log_dir", "model_dir") and new_output:
            continue  # a new output place was given: write there
        if name not in given:
            setattr(args, name, saved[name])
        elif str(getattr(args, name)) != str(saved[name]):
            if name in RESUME_MUST_MATCH:
                raise UsageError(f"--resume {args.resume}: the checkpoint was trained with --{name} "
                                 f"{saved[name]}, not --{name} {getattr(args, name)}")
            notes.append(f"--{name} {getattr(args, name)} replaces the checkpoint's {saved[name]}")
    return notes


def resumed_model_options(args, ck: dict) -> dict:
    """The checkpoint's model options; a differing --segments / --model_arg is refused."""
    kwargs = dict(ck.get("model_kwargs") or {})
    if {"segments", "model_arg"} & getattr(args, "_given", set()):
        wanted = model_options(args)
        if wanted != kwargs:
            raise UsageError(f"--resume {args.resume}: the checkpoint's model options are {kwargs}, "
                             f"not {wanted}")
    return kwargs


def check_files(splits, on_error: str) -> tuple[list[str], dict]:
    """Drop listed files that do not exist (each split), before any training.

    Returns console lines naming them (first few, then a count) and ``{split: [(path,
    reason)]}``; a split with none left, or any missing file under ``--on_error raise``,
    is a one-line error."""
    lines, missing = [], {}
    for name in ("train", "val", "test"):
        m = getattr(splits, name)
        if m is None or not len(m):
            continue
        present, gone, warning = check_present(m, what=name, strict=on_error == "raise")
        if warning:
            setattr(splits, name, present)
            missing[name] = gone
            lines.append(warning)
    return lines, missing


def check_input(model: nn.Module, args) -> None:
    """One clip through the model (eval mode, no gradients, CPU): a clip length or size the
    model cannot take is a start-up error, not a traceback in the first step."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, args.clip_len, args.size, args.size))
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"--model {args.model} cannot take {args.clip_len}-frame clips of "
                         f"{args.size}px: {one_line(e)}") from None
    finally:
        model.train(was_training)


def setup(args) -> Setup:
    """Everything that can fail because of a wrong input, before any training."""
    check_options(args)
    resume, notes = resume_auto(args)
    if args.resume:
        resume = resume or read_checkpoint(args.resume, require=RESUME_ENTRIES)
        notes += restore_options(args, resume)
    choose_model(args)
    check_inputs(args)
    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device.type, timeout_s=args.dist_timeout)
    for note in notes:
        say(info, f"note: {note}")
    partial = (resume or {}).get("in_epoch")
    if partial and len(partial["ranks"]) != info.world_size:
        raise UsageError(f"--resume {args.resume}: saved mid-epoch by {len(partial['ranks'])} processes; "
                         f"resume it with as many (not {info.world_size}), or from last.pt")
    splits, missing = read_splits(args, info, resume)
    kwargs = resumed_model_options(args, resume) if resume is not None else model_options(args)
    model = setup_model(args, info, len(splits.classes), kwargs, resume)
    amp = None if args.amp == "none" else args.amp
    if amp and device.type != "cuda":
        say(info, f"note: --amp {amp} is for CUDA; training in float32 on {device}")
        amp = None
    log_dir, model_dir = output_dirs(args)
    return Setup(info, device, splits, model, log_dir, model_dir, kwargs, amp, resume, missing)


def resume_auto(args) -> tuple[dict | None, list[str]]:
    """--resume auto (the default when torchrun restarts the workers): the newest readable
    checkpoint of the output folder, or none; returns it and the lines saying what was chosen."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if args.resume is None and restarted and (args.out_dir or args.model_dir or args.log_dir):
        args.resume = "auto"
    if args.resume != "auto":
        return None, []
    if not (args.out_dir or args.model_dir or args.log_dir):
        raise UsageError("--resume auto looks for checkpoints in --out_dir or --model_dir: give one")
    folder = output_dirs(args)[1]
    path, ck, lines = newest_checkpoint(folder, require=RESUME_ENTRIES)
    if path is None:
        args.resume = None
        return None, lines + [f"--resume auto: no checkpoint in {folder}: starting fresh"]
    args.resume = str(path)
    return ck, lines + [f"--resume auto: {path}" + (f" (torchrun restart {restarted})" if restarted else "")]


def check_options(args) -> None:
    """Option values that cannot work, whatever the data."""
    if args.decode_size is not None and args.size is not None and args.decode_size < args.size // 4:
        raise UsageError(f"--decode_size {args.decode_size} is far below --size {args.size}")
    if args.class_weights not in ("auto", "balanced", "none"):
        try:
            [float(v) for v in args.class_weights.split(",")]
        except ValueError:
            raise UsageError(f"--class_weights must be auto, balanced, none or numbers, "
                             f"got {args.class_weights!r}") from None
    if args.decoder == "dali":
        from accel.data.dali import dali_unavailable_message

        why_not = dali_unavailable_message("gpu", None if args.device == "auto" else args.device)
        if why_not:
            raise UsageError(f"--decoder dali: {why_not}")


def check_inputs(args) -> None:
    """The data paths exist (after --resume filled them in); --wandb has its package."""
    if args.data_dir is None:
        raise UsageError("--data_dir is required (the dataset folder or CSV), unless --resume is given")
    for name in ("data_dir", "val_dir", "test_dir", "video_root"):
        v = getattr(args, name)
        if v is not None and not Path(v).exists():
            raise UsageError(f"--{name} {v}: no such file or folder")
    if args.wandb:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise UsageError("--wandb needs the wandb package: pip install 'vidaccel[wandb]' "
                             "(or drop --wandb)")


def read_splits(args, info: DistInfo, resume: dict | None) -> tuple[object, dict]:
    """Train / val / test manifests, without the listed files that do not exist (named here);
    their classes must suit --loss, --resume and the number of processes."""
    options = CsvOptions(args.path_column, args.label_column, args.video_root)
    splits = load_splits(args.data_dir, args.test_dir, val_dir=args.val_dir, val_fraction=args.val_fraction,
                         seed=args.seed, options=options)
    if args.loss == "bce" and len(splits.classes) != 2:
        raise UsageError(f"--loss bce is for two classes; the data has {len(splits.classes)} "
                         f"({splits.classes}): use --loss ce")
    lines, missing = check_files(splits, args.on_error)
    for line in lines:
        say(info, line)
    if resume is not None and list(resume["classes"]) != splits.classes:
        raise UsageError(f"--resume: checkpoint classes {resume['classes']} differ from the data's "
                         f"{splits.classes}")
    if info.world_size > len(splits.train):
        raise UsageError(f"{len(splits.train)} training videos cannot feed {info.world_size} processes")
    return splits, missing


def setup_model(args, info: DistInfo, num_classes: int, kwargs: dict, resume: dict | None) -> nn.Module:
    """The model (resumed weights loaded); fills in --clip_len, --size and --decode_size from
    it and checks it takes such clips."""
    seed_everything(args.seed)  # the random initial weights depend on the seed only
    model = build_model(args, num_classes, kwargs)
    if resume is not None:
        load_model_state(model, resume, source=args.resume)  # a mismatch is one line, exit 2
    warning = frozen_random_trunk_warning(args, model)
    if warning:
        say(info, warning)
    data_config = resolve_data_config(model)
    args.clip_len = args.clip_len or data_config.clip_len
    args.size = args.size or data_config.size
    args.decode_size = args.decode_size or args.size
    check_input(model, args)
    return model


# --------------------------------------------------------------------------- main
def decode_failure(e: BaseException) -> str | None:
    """One line (file: reason) for an ``--on_error raise`` stop, from the dataset itself or
    re-raised by a DataLoader worker (which turns it into a RuntimeError with a traceback)."""
    if isinstance(e, VideoDecodeError):
        return f"{e.path}: {explain_skip(e.path, e.reason)}"
    text = str(e)
    if isinstance(e, RuntimeError) and "VideoDecodeError" in text:
        last = [ln for ln in text.splitlines() if "VideoDecodeError: " in ln][-1]
        message = last.split("VideoDecodeError: ", 1)[1]
        cuts = [i for i in range(len(message)) if message.startswith(": ", i)]
        path = next((message[:i] for i in cuts if os.path.exists(message[:i])), message.split(": ")[0])
        return f"{path}: {explain_skip(path, message[len(path) + 2:])}"
    return None


def main(args) -> dict:
    debug = getattr(args, "debug", False)
    try:
        s = setup(args)
    except (UsageError, ManifestError, CheckpointError) as e:
        if debug:
            raise
        fail(PROG, one_line(e))
    try:
        s.flag.install()
        return train(args, s)
    except RunStopped as e:
        if s.info.is_main:
            print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.status) from None
    except (UsageError, ManifestError) as e:
        if debug:
            raise
        fail(PROG, one_line(e))
    except (VideoDecodeError, RuntimeError) as e:
        if s.info.distributed and "timed out" in str(e).lower():  # Gloo and NCCL both say so
            fail(PROG, f"rank {s.info.rank}: no answer from another process within --dist_timeout "
                       f"{args.dist_timeout:g} s (stopped or hung?): {one_line(e)}")
        line = decode_failure(e)
        if line is None or debug:
            raise
        fail(PROG, f"--on_error raise: {line}")
    finally:
        s.flag.uninstall()
        destroy(s.info)


def train(args, s: Setup) -> dict:
    """The run, top to bottom: data, model and optimiser, resume, the epochs (train, validate,
    save), then the final test of the best checkpoint and the reports."""
    info, device, splits = s.info, s.device, s.splits
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for note in splits.notes:
        say(info, f"note: {note}")
    data = build_data(args, s)
    tr = build_training(args, s, data)
    if s.resume is not None:
        resume_training(args, s, tr)
    out = open_outputs(args, s, data, tr)

    stopped_early, val_preds = False, None
    for epoch in range(tr.start_epoch, args.epochs):
        record, val_preds = run_epoch(args, s, data, tr, out, epoch)
        if info.is_main:
            save_epoch(s, tr, out, record)
        say(info, epoch_line(args, record))
        signals = [x for x in all_gather_objects(s.flag.requested, info) if x]
        if signals:  # a signal during validation: last.pt was just written
            raise RunStopped(f"preempted by {signals[0]} after epoch {epoch + 1}: checkpoint "
                             f"{s.model_dir / 'last.pt'}; run again with --resume auto to continue",
                             EXIT_PREEMPTED)
        if tr.selector.should_stop:
            say(info, f"early stop: no better score for {tr.selector.patience} epochs "
                      f"(best epoch {tr.selector.best_epoch + 1})")
            stopped_early = True
            break

    skipped = gather_skipped(s, data.train_loader, val_preds)
    result: dict = {"history": tr.history, "best_epoch": tr.selector.best_epoch,
                    "stopped_early": stopped_early}
    barrier(info)
    if info.is_main:
        test_public = final_test(args, s, data, out, skipped)
        if test_public is not None:
            result["test"] = test_public
        write_reports(s, tr, out, skipped, test_public)
    barrier(info)
    return result


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """What the epochs read: the training loader and transform, how val and test clips are read."""
    train_loader: ClipBatchLoader
    train_tf: ClipTransform  # augmentation and normalisation of the training clips, on the device
    val_settings: EvalSettings
    test_settings: EvalSettings
    loss_weights: torch.Tensor | None  # the criterion's class weights


def build_data(args, s: Setup) -> Data:
    """The training loader (this rank's shard, class-balanced with --balanced_sampler), its
    augmentation, how validation and test clips are read, and the loss's class weights."""
    info, device, splits = s.info, s.device, s.splits
    classes = splits.classes
    counts = splits.train.class_counts()
    weights_mode = args.class_weights
    if weights_mode == "auto":
        weights_mode = "none" if args.balanced_sampler else "balanced"
    loss_weights = class_weights(counts, weights_mode)
    sample_w = sampling_weights(splits.train.labels, len(classes), args.sampler_tau) \
        if args.balanced_sampler else None
    sampler = ShardedSampler(len(splits.train), rank=info.rank, world_size=info.world_size,
                             seed=args.seed, shuffle=True, weights=sample_w)
    per_rank = len(sampler)
    train_loader = build_loader(
        splits.train, batch_size=args.batch_size, clip_len=args.clip_len, strategy=args.train_sampling,
        frame_size=(args.decode_size, args.decode_size), backend=args.decoder,
        num_workers=args.num_workers, sampler=sampler,
        # A last batch of one clip breaks BatchNorm in training mode: drop it then.
        drop_last=per_rank % args.batch_size == 1 and per_rank > 1,
        # Workers restart each epoch, so nothing a decoder leaks (torchcodec keeps ~1 KB per
        # file it opened, for good) outlives an epoch, whatever the watchdog's limits are set
        # to (it also replaces a decode child after recycle_after_clips clips or
        # recycle_rss_growth_mb of growth). Not for the seed: each index carries its epoch
        # (EpochSampler). Kept False, the behaviour the scripts have always had.
        persistent_workers=False, on_error=args.on_error, seed=args.seed, device=device,
        decode=DecodeOptions(stride=args.frame_stride, rotate=args.autorotate))
    if len(train_loader) == 0:
        fail(PROG, "no training batches")
    model = s.model
    train_tf = train_transform(args, model)
    val_settings = eval_settings(args, args.val_sampling, model, video_level=False)
    test_settings = eval_settings(args, args.test_sampling, model, video_level=args.video_eval)
    return Data(train_loader, train_tf, val_settings, test_settings, loss_weights)


def train_transform(args, model: nn.Module) -> ClipTransform:
    """--augment full (crop, flip, rotate, colour), flip, or none; normalised for the model."""
    mean, std = resolve_data_config(model).stats  # the model's, as in every evaluation
    if args.augment == "full":
        train_tf = ClipTransform(args.size, train=True, mean=mean, std=std)
    elif args.augment == "flip":
        train_tf = ClipTransform(args.size, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), rotate_deg=0.0,
                                 brightness=0.0, contrast=0.0, saturation=0.0, mean=mean, std=std)
    else:
        train_tf = ClipTransform(args.size, train=False, mean=mean, std=std)
    return train_tf


def eval_settings(args, sampling: str, model: nn.Module, video_level: bool) -> EvalSettings:
    data_config = resolve_data_config(model)
    return EvalSettings(
        clip_len=args.clip_len, size=args.size, sampling=sampling,
        batch_size=args.eval_batch_size or args.batch_size, num_workers=args.num_workers,
        backend=args.decoder, frame_size=(args.decode_size, args.decode_size), seed=args.seed,
        mean=data_config.mean, std=data_config.std,
        video_level=video_level, video_stride=args.video_stride, window_stride=args.window_stride,
        max_windows=args.max_windows, rotate=args.autorotate)


# --------------------------------------------------------------------------- model and optimiser
@dataclasses.dataclass
class Training:
    """What the epochs change: the weights and their wrappers, the optimiser, schedule and
    selector, and the history so far."""
    model: nn.Module  # the bare model (state_dict, checkpoints)
    net: nn.Module  # what trains: the DDP-wrapped model, optimised (channels-last, AMP, compile)
    eval_net: nn.Module  # what validates: the bare model, optimised
    ddp: nn.Module | None
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None  # --amp fp16 only
    criterion: nn.Module
    selector: ModelSelector
    history: list[dict] = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    in_epoch: dict | None = None  # a mid-epoch checkpoint's epoch and every rank's EpochState
    shards: dict = dataclasses.field(default_factory=dict)  # how the first epoch's clips fell on the ranks


def build_training(args, s: Setup, data: Data) -> Training:
    """Model on the device (SyncBN and DDP when distributed), optimiser, LR schedule, loss."""
    from accel.deploy.perf import optimize, to_channels_last

    info, device, model = s.info, s.device, s.model
    train_loader, loss_weights = data.train_loader, data.loss_weights
    model.to(device)
    if args.channels_last:
        to_channels_last(model)
    ddp = None
    if info.distributed:
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    compile_mode = args.compile or False
    net = optimize(ddp if ddp is not None else model, channels_last=args.channels_last, amp=s.amp,
                   compile=compile_mode, device=device)
    eval_net = optimize(model, channels_last=args.channels_last, amp=s.amp, compile=compile_mode,
                        device=device)
    optimizer = build_optimizer(model, name=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                backbone_lr_mult=args.backbone_lr_mult, momentum=args.momentum)
    steps = math.ceil(len(train_loader) / args.accum_steps)
    schedule = LRSchedule(optimizer, kind=args.sched, total_steps=steps * args.epochs,
                          warmup_steps=round(args.warmup_epochs * steps), min_lr_ratio=args.min_lr_ratio,
                          plateau_factor=args.plateau_factor, plateau_patience=args.plateau_patience)
    scaler = torch.amp.GradScaler(device.type) if s.amp == "fp16" else None
    criterion = build_criterion(args.loss, weight=loss_weights, label_smoothing=args.label_smoothing,
                                gamma=args.focal_gamma).to(device)
    selector = ModelSelector(args.loss_weight, args.patience, args.min_delta)
    return Training(model, net, eval_net, ddp, optimizer, schedule, scaler, criterion, selector)


# --------------------------------------------------------------------------- resume
def resume_training(args, s: Setup, tr: Training) -> None:
    """Optimiser, schedule, scaler, selector, RNG and history from --resume (its weights were
    loaded, and checked, in setup()); the run goes on at the epoch after the checkpoint's."""
    ck = s.resume
    try:
        tr.optimizer.load_state_dict(ck["optimizer"])
        tr.schedule.load_state_dict(ck["schedule"])
        if tr.scaler is not None and ck.get("scaler"):
            tr.scaler.load_state_dict(ck["scaler"])
        tr.selector.load_state_dict(ck["selector"])
        set_rng_state(ck["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        fail(PROG, f"--resume {args.resume}: its optimiser, schedule, selector or RNG state does "
                   f"not fit this run ({type(e).__name__}: {one_line(e)})")
    tr.history = list(ck.get("history") or [])
    tr.shards = dict(ck.get("shards") or {})
    tr.start_epoch = ck["epoch"] + 1
    tr.in_epoch = ck.get("in_epoch")
    epoch, samples = place(ck)
    where = f", after {samples} samples of its shard" if tr.in_epoch else ""
    say(s.info, f"resumed from {args.resume}: epoch {epoch + 1} of {args.epochs}{where}")


# --------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class Outputs:
    config: dict  # the options and what they resolved to: config.json, and "args" in checkpoints
    logger: RunLogger
    make_bar: Callable  # (total, desc) -> a tqdm bar, disabled off rank 0 and with --no_progress
    ckpt_meta: dict  # what every checkpoint records besides the state


def open_outputs(args, s: Setup, data: Data, tr: Training) -> Outputs:
    """config.json, the run logger (CSV, TensorBoard, W&B) and the run's description line."""
    info, device, splits, classes = s.info, s.device, s.splits, s.splits.classes
    train_loader, model = data.train_loader, tr.model
    main_proc = info.is_main
    log_dir, model_dir = s.log_dir, s.model_dir
    config = plain({**{k: v for k, v in vars(args).items() if not k.startswith("_")},
                    "log_dir": log_dir, "model_dir": model_dir, "classes": classes,
                    "world_size": info.world_size, "distributed": info.describe(),
                    "device": str(device), "amp_effective": s.amp,
                    "decoder": train_loader.backend, "decoder_reason": train_loader.reason})
    wandb_opts = None
    if args.wandb:
        wandb_opts = {"project": args.wandb_project, "name": args.wandb_name, "mode": args.wandb_mode}
    try:
        logger = RunLogger(log_dir, enabled=main_proc, tensorboard=None if args.tensorboard else False,
                           wandb=wandb_opts, config=config)
    except ImportError as e:
        fail(PROG, one_line(e))
    if main_proc:
        model_dir.mkdir(parents=True, exist_ok=True)
        write_json(config, log_dir / "config.json")
        for note in logger.notes:
            say(info, f"note: {note}")
    n_params = sum(p.numel() for p in model.parameters())
    say(info, f"{args.model}: {n_params / 1e6:.2f} M parameters, {len(classes)} classes {classes}; "
              f"train {len(splits.train)} / val {len(splits.val)} / test "
              f"{len(splits.test) if splits.test is not None else 0} videos; clips {args.clip_len}x"
              f"{args.size}px; decoder {train_loader.backend}; device {device}"
              + (f" x{info.world_size} ({info.backend})" if info.distributed else ""))
    say(info, f"logs -> {log_dir}   checkpoints -> {model_dir}")
    make_bar = progress_bar(args.progress and main_proc)
    ckpt_meta = {"model_name": args.model, "model_kwargs": s.model_kwargs, "classes": classes,
                 "args": config, "eval": dataclasses.asdict(data.test_settings)}
    return Outputs(config, logger, make_bar, ckpt_meta)


def progress_bar(enabled: bool):
    from tqdm import tqdm

    def make(total, desc, leave=False):
        return tqdm(total=total, desc=desc, leave=leave, disable=not enabled, dynamic_ncols=True,
                    file=sys.stderr, mininterval=0.5)
    return make


# --------------------------------------------------------------------------- one epoch
def run_epoch(args, s: Setup, data: Data, tr: Training, out: Outputs, epoch: int) -> tuple[dict, object]:
    """Train one epoch, validate, score: the epoch's record (appended to the history) and the
    validation predictions."""
    info, device, splits, classes = s.info, s.device, s.splits, s.splits.classes
    t0 = time.perf_counter()
    stats = train_epoch(args, s, data, tr, out, epoch)
    tr.model.eval()
    val_preds = evaluate_clips(tr.eval_net, splits.val, data.val_settings, device, info=info)
    if len(val_preds.labels) == 0:
        raise UsageError(f"val: no readable video: all {len(splits.val)} of {splits.val.source} were "
                         f"skipped ({first_reason(val_preds.skipped)}); a best checkpoint cannot be "
                         "chosen on nothing (fix the files, or give another --val_dir)")
    val = classification_metrics(val_preds.labels, val_preds.logits, classes)
    val_loss = val.get("loss") if val.get("loss") is not None else math.inf
    score, is_best = tr.selector.update(epoch, val_loss, val.get("auroc"))
    tr.schedule.epoch_end(val_loss)
    # Train loss/accuracy: the mean over every rank's clips.
    totals = all_gather_objects((stats["loss_sum"], stats["correct"], stats["clips"], stats["nonfinite"],
                                 stats["step_losses"]), info)
    n = sum(t[2] for t in totals)
    record = {
        "epoch": epoch, "lr": tr.optimizer.param_groups[-1]["lr"],
        "train_loss": sum(t[0] for t in totals) / n, "train_accuracy": sum(t[1] for t in totals) / n,
        "train_clips": n, "train_clips_per_s": stats["clips_per_s"] * info.world_size,
        "train_data_wait": stats["data_wait"], "train_time_s": stats["time_s"],
        "val_loss": val.get("loss"), "val_accuracy": val.get("accuracy"),
        "val_balanced_accuracy": val.get("balanced_accuracy"), "val_f1_macro": val.get("f1_macro"),
        "val_auroc": val.get("auroc"), "score": score, "best": is_best,
        "epoch_time_s": time.perf_counter() - t0, "val": val,
        "train_nonfinite": sum(t[3] for t in totals), "train_step_losses": step_means([t[4] for t in totals]),
    }
    tr.history.append(record)
    return record, val_preds


def step_means(per_rank: list[list]) -> list:
    """Each step's loss, the mean over the ranks (None for a skipped, non-finite step)."""
    out = []
    for losses in itertools.zip_longest(*per_rank):
        finite = [v for v in losses if v is not None]
        out.append(sum(finite) / len(finite) if finite and len(finite) == len(losses) else None)
    return out


def train_epoch(args, s: Setup, data: Data, tr: Training, out: Outputs, epoch: int) -> dict:
    """One pass over this rank's shard (train_one_epoch's stats); the first epoch also
    records how the clips fell on the ranks."""
    from accel import DevicePrefetcher

    info, device, train_loader, train_tf = s.info, s.device, data.train_loader, data.train_tf
    state = EpochState()
    if tr.in_epoch is not None and tr.in_epoch["epoch"] == epoch:  # resumed mid-epoch
        state = EpochState.from_state_dict(tr.in_epoch["ranks"][info.rank])
    tr.in_epoch = None
    train_loader.set_epoch(epoch)
    epoch_batches = len(train_loader)
    train_loader.set_epoch(epoch, start=state.samples)
    aug = torch.Generator()  # reseeded every step (LongRunHooks), as are the global RNGs
    batches = DevicePrefetcher(train_loader, device, transform=train_tf, generator=aug)
    hooks = epoch_hooks(args, s, data, tr, out, epoch, aug)
    bar = out.make_bar(len(train_loader), f"epoch {epoch + 1}/{args.epochs}")
    try:
        stats = train_one_epoch(tr.net, tr.model, tr.criterion, tr.optimizer, tr.schedule, batches,
                                scaler=tr.scaler, ddp=tr.ddp, accum_steps=args.accum_steps,
                                clip_grad_norm=args.clip_grad_norm, progress=bar, print_freq=args.print_freq,
                                state=state, hooks=hooks)
    finally:
        hooks.close()
        bar.close()
    seen = all_gather_objects(stats.pop("video_ids"), info)
    shard_record = {"batches_per_rank": all_gather_objects(epoch_batches, info),
                    "clips_per_rank": [len(x) for x in seen],
                    # clips read on two or more ranks (pairwise, for any number of ranks)
                    "overlap": len({i for a, b in itertools.combinations(map(set, seen), 2)
                                    for i in a & b})}
    if not tr.shards:
        tr.shards = shard_record
    if shard_record["clips_per_rank"] and sum(shard_record["clips_per_rank"]) == 0:
        raise UsageError(f"train: no readable video: all {len(s.splits.train)} of {s.splits.train.source} "
                         f"were skipped ({first_reason(train_loader.skipped)})")
    return stats


def epoch_hooks(args, s: Setup, data: Data, tr: Training, out: Outputs, epoch: int,
                aug: torch.Generator) -> LongRunHooks:
    """Mid-epoch checkpoints, preemption, non-finite losses and stall warnings for one epoch."""
    opts = LongRunOptions(args.save_every_steps, args.save_every_minutes, args.max_nonfinite, args.stall_warn_s)
    rolling = RollingCheckpoints(s.model_dir, keep=args.keep_checkpoints)
    train_items = s.splits.train.items

    def write(ranks: list[dict]) -> Path:
        state = training_state(out, tr, epoch - 1, {"epoch": epoch, "ranks": ranks})
        return rolling.save(state, epoch, ranks[0]["samples"])

    def describe(batch) -> str:
        ids = torch.as_tensor(batch.video_id).reshape(-1).tolist()
        return ", ".join(train_items[i].path for i in ids) or "none (all skipped)"

    return LongRunHooks(opts, info=s.info, device=s.device, epoch=epoch, seed=args.seed, generator=aug,
                        decoder=data.train_loader.backend, flag=s.flag, write=write, describe=describe,
                        say=lambda line: say(s.info, line))


# --------------------------------------------------------------------------- save
def training_state(out: Outputs, tr: Training, epoch: int, in_epoch: dict | None) -> dict:
    """A full checkpoint: ``epoch`` is the last finished one; ``in_epoch`` where the next stands."""
    scaler = tr.scaler
    return {**out.ckpt_meta, "model": tr.model.state_dict(), "optimizer": tr.optimizer.state_dict(),
            "schedule": tr.schedule.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "selector": tr.selector.state_dict(), "history": tr.history, "rng": rng_state(),
            "shards": tr.shards, "in_epoch": in_epoch}


def save_epoch(s: Setup, tr: Training, out: Outputs, record: dict) -> None:
    """Rank 0: the checkpoints (best.pt when best, last.pt always), the logs and plots so far."""
    model_dir, log_dir = s.model_dir, s.log_dir
    is_best = record["best"]
    state = {**training_state(out, tr, record["epoch"], None),
             "metrics": {k: v for k, v in record.items() if k not in ("val", "train_step_losses")}}
    # best.pt first: a run killed in between resumes from the older last.pt and
    # redoes this epoch. last.pt is then a hard link, not a second full write.
    if is_best:
        save_checkpoint(state, model_dir / "best.pt")
        link_or_copy(model_dir / "best.pt", model_dir / "last.pt")
    else:
        save_checkpoint(state, model_dir / "last.pt")
    out.logger.log({k: v for k, v in record.items() if k not in ("val", "train_step_losses")}, step=record["epoch"])
    write_metrics(log_dir, out.config, s.splits.classes, tr.history, tr.selector, tr.shards, test=None,
                  skipped=None)
    plot_history(log_dir, tr.history)


def epoch_line(args, record: dict) -> str:
    val_loss = record["val_loss"] if record["val_loss"] is not None else math.inf
    auroc = "n/a" if record["val_auroc"] is None else f"{record['val_auroc']:.3f}"
    return (f"epoch {record['epoch'] + 1}/{args.epochs}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.3f} | val loss {val_loss:.4f} acc "
            f"{record['val_accuracy'] or 0:.3f} auroc {auroc} | score {record['score']:.4f}"
            f"{' (best)' if record['best'] else ''} | {record['train_clips_per_s']:.1f} clips/s, "
            f"data wait {record['train_data_wait']:.0%}, {record['epoch_time_s']:.1f} s"
            + (f" | {record['train_nonfinite']} non-finite losses skipped" if record["train_nonfinite"] else ""))


# --------------------------------------------------------------------------- final test
def gather_skipped(s: Setup, train_loader: ClipBatchLoader, val_preds) -> dict:
    """{split: [[path, reason]]}: files missing at start-up, then those skipped on any rank."""
    train_skipped = sorted({tuple(x) for part in all_gather_objects(list(train_loader.skipped), s.info)
                            for x in part})
    val_skipped = val_preds.skipped if val_preds is not None else []
    skipped = {"train": [list(x) for x in train_skipped], "val": [list(x) for x in val_skipped]}
    for name, gone in s.missing.items():
        skipped.setdefault(name, [])[:0] = [list(x) for x in gone]
    return skipped


def final_test(args, s: Setup, data: Data, out: Outputs, skipped: dict) -> dict | None:
    """Rank 0: the best checkpoint (last.pt without one) on the test split, reloaded from disk;
    its reports go to log_dir and its skipped files into ``skipped``. None without a test split."""
    from accel.deploy.perf import optimize

    info, device, splits, model_dir, log_dir = s.info, s.device, s.splits, s.model_dir, s.log_dir
    test_settings, make_bar, logger = data.test_settings, out.make_bar, out.logger
    if splits.test is None or not len(splits.test):
        return None
    best = model_dir / ("best.pt" if (model_dir / "best.pt").exists() else "last.pt")
    ck = read_checkpoint(best)
    test_model = model_from_checkpoint(ck, source=best)
    test_net = optimize(test_model, channels_last=args.channels_last, amp=s.amp, compile=False,
                        device=device)
    report = evaluate_split(test_net, splits.test, test_settings, device,
                            progress_factory=lambda n, d: make_bar(n, f"test {d}"))
    test_public = {"checkpoint": str(best), "epoch": ck["epoch"], **public(report)}
    skipped["test"] = skipped.get("test", []) + report["skipped"]
    write_report_files(report, splits.test, log_dir, prefix="test")
    if not report["clip"].get("n"):
        say(info, f"warning: test: no readable video: all {len(splits.test)} of {splits.test.source} "
                  "were skipped (see the list below)")
    say(info, summary_line("test clip-level", report["clip"]))
    if "video" in report:
        say(info, summary_line(f"test video-level ({report['video']['windows_per_video']:.1f} "
                               "windows/video)", report["video"]))
    logger.summary({f"test_{k}": v for k, v in report["clip"].items()}
                   | {f"test_video_{k}": v for k, v in report.get("video", {}).items()})
    return test_public


def write_reports(s: Setup, tr: Training, out: Outputs, skipped: dict, test_public: dict | None) -> None:
    """Rank 0: the skipped-file list, the final metrics.json and plots; closes the logger."""
    info, log_dir, model_dir = s.info, s.log_dir, s.model_dir
    skipped = {k: [[p, explain_skip(p, r)] for p, r in v] for k, v in skipped.items()}
    unique = list(dict.fromkeys((p, r) for v in skipped.values() for p, r in v))
    for line in skipped_summary(unique, f"{log_dir / 'metrics.json'}, key \"skipped\""):
        say(info, line)
    write_metrics(log_dir, out.config, s.splits.classes, tr.history, tr.selector, tr.shards, test=test_public,
                  skipped=skipped)
    plot_history(log_dir, tr.history)
    out.logger.close()
    say(info, f"metrics: {log_dir / 'metrics.json'}   plots: {log_dir}/*.png   "
              f"best checkpoint: {model_dir / 'best.pt'}")


def first_reason(skipped) -> str:
    if not skipped:
        return "no reason recorded"
    path, reason = list(skipped)[0]
    return f"first: {path}: {explain_skip(path, reason)}"


def write_metrics(log_dir: Path, config: dict, classes, history, selector: ModelSelector, shards,
                  *, test, skipped) -> None:
    best = selector.best_epoch
    doc = {
        "model": config["model"], "classes": classes, "config": config,
        "epochs": history, "best_epoch": best, "best_score": selector.best_score if best >= 0 else None,
        "best_val": next((h["val"] for h in history if h["epoch"] == best), None),
        "ddp": shards, "distributed": config.get("distributed"), "test": test,
    }
    if skipped is not None:
        doc["skipped"] = skipped
        doc["num_skipped"] = len({tuple(x) for v in skipped.values() for x in v})
    write_json(doc, log_dir / "metrics.json")


def plot_history(log_dir: Path, history: list[dict]) -> None:
    from accel.train.plots import plot_curves

    if not history:
        return
    plot_curves(history, ["train_loss", "val_loss"], log_dir / "loss_curves.png", title="loss", ylabel="loss")
    plot_curves(history, ["train_accuracy", "val_accuracy", "val_auroc"], log_dir / "accuracy_curves.png",
                title="accuracy", ylabel="accuracy / AUROC")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
    sys.exit(0)
