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

Reading order: ``main`` runs ``setup`` (every check of the inputs, before any training; the
options become one frozen ``TrainConfig``), ``build_data``, ``build_training`` (model, optimiser,
resumed state), ``open_outputs``, then ``train_loop`` (per epoch ``run_epoch`` and
``save_epoch``) and ``report`` (``final_test``, metrics.json, plots).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from accel import DecodeOptions, ManifestError, VideoDecodeError, build_loader
from accel.cli import Options, Parser, UsageError, fail, flagged, one_line, resolve_device
from accel.data.loader import ClipBatchLoader
from accel.data.manifests import CsvOptions, check_present
from accel.data.samplers import ShardedSampler
from accel.data.splits import Splits, load_splits
from accel.data.transforms import ClipTransform
from accel.deploy.perf import COMPILE_MODES
from accel.io.diagnose import explain_skip
from accel.train import checkpoint, evaluation, tracking
from accel.train.config import TrainConfig, add_train_args
from accel.train.distributed import DistInfo, all_gather_objects, barrier, destroy, init_distributed
from accel.train.engine import EpochState, train_one_epoch
from accel.train.longrun import LongRunHooks, LongRunOptions, RunStopped
from accel.train.losses import class_weights, sampling_weights
from accel.train.metrics import classification_metrics
from accel.train.preempt import EXIT_PREEMPTED, PreemptionFlag, exit_status_help
from accel.train.rng import seed_everything
from accel.train.rolling import RollingCheckpoints, newest_checkpoint, place
from accel.train.state import Training
from models import resolve_data_config
from models.checkpoint import model_from_checkpoint

PROG = "train.py"


def get_args_parser() -> Parser:
    p = Parser(prog=PROG, description="Train a video classifier (CPU, one GPU, or torchrun DDP).",
               epilog=exit_status_help() + ".")
    from models import list_models

    add_train_args(p, models=list_models(), model_type=model_name, compile_modes=COMPILE_MODES)
    return p


def model_name(text: str) -> str:
    """argparse type: a registered model or a seed's alias, as the registered name."""
    import argparse

    from models import resolve_model_name

    try:
        return resolve_model_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --------------------------------------------------------------------------- set-up
@dataclasses.dataclass
class Setup:
    """What set-up found: the resolved options, the processes, the data, the model."""
    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    splits: Splits
    model: nn.Module
    model_kwargs: dict
    amp: str | None  # the effective autocast dtype (None off CUDA)
    resume: dict | None  # the checkpoint resumed
    missing: dict  # split -> [(path, reason)] of listed files that do not exist
    flag: PreemptionFlag = dataclasses.field(default_factory=PreemptionFlag)  # SIGTERM / SIGUSR1 seen

    log_dir: Path = Path()  # set-up's resolved cfg.log_dir, cfg.model_dir
    model_dir: Path = Path()


def say(info: DistInfo, *msg) -> None:
    if info.is_main:
        print(*msg, flush=True)


def setup(args: Options) -> Setup:
    """Everything that can fail because of a wrong input, before any training. The options
    become one frozen TrainConfig; what set-up resolves is filled in with replace()."""
    cfg = TrainConfig.from_options(args)
    cfg.check_options()
    cfg, resume, notes = resume_checkpoint(cfg, args.given)
    cfg = cfg.replace(model=cfg.default_model())
    cfg.check_inputs()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device.type, timeout_s=cfg.dist_timeout)
    for note in notes:
        say(info, f"note: {note}")
    partial = (resume or {}).get("in_epoch")
    if partial and len(partial["ranks"]) != info.world_size:
        raise UsageError(f"--resume {cfg.resume}: saved mid-epoch by {len(partial['ranks'])} processes; "
                         f"resume it with as many (not {info.world_size}), or from last.pt")
    splits, missing = read_splits(cfg, info, resume)
    given_model = {"segments", "model_arg"} & args.given
    with mismatch_as_usage_error(cfg.resume):
        kwargs = cfg.model_options() if resume is None else \
            checkpoint.resumed_model_options(resume, cfg.model_options() if given_model else None)
    model, cfg = setup_model(cfg, info, len(splits.classes), kwargs, resume)
    amp = None if cfg.amp == "none" else cfg.amp
    if amp and device.type != "cuda":
        say(info, f"note: --amp {amp} is for CUDA; training in float32 on {device}")
        amp = None
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log_dir, model_dir = cfg.output_dirs()
    cfg = cfg.replace(log_dir=str(log_dir), model_dir=str(model_dir))
    return Setup(cfg, info, device, splits, model, kwargs, amp, resume, missing, log_dir=log_dir, model_dir=model_dir)


def resume_checkpoint(cfg: TrainConfig, given: frozenset[str]) -> tuple[TrainConfig, dict | None, list[str]]:
    """The checkpoint to resume (``--resume FILE``, or ``auto``: the newest readable one in the
    output folder, the default when torchrun restarts the workers) and the options it restores;
    returns them and the lines saying what was chosen and what differs."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if cfg.resume is None and restarted and (cfg.out_dir or cfg.model_dir or cfg.log_dir):
        cfg = cfg.replace(resume="auto")
    notes: list[str] = []
    ck = None
    if cfg.resume == "auto":
        if not (cfg.out_dir or cfg.model_dir or cfg.log_dir):
            raise UsageError("--resume auto looks for checkpoints in --out_dir or --model_dir: give one")
        folder = cfg.output_dirs()[1]
        path, ck, notes = newest_checkpoint(folder, require=checkpoint.RESUME_ENTRIES)
        cfg = cfg.replace(resume=str(path) if path is not None else None)
        notes.append(f"--resume auto: {path}" + (f" (torchrun restart {restarted})" if restarted else "")
                     if path is not None else f"--resume auto: no checkpoint in {folder}: starting fresh")
    if cfg.resume is None:
        return cfg, None, notes
    ck = ck or checkpoint.read_checkpoint(cfg.resume, require=checkpoint.RESUME_ENTRIES)
    with mismatch_as_usage_error(cfg.resume):
        changes, replaced = checkpoint.resumed_options(ck, cfg.as_dict(), given)
    notes += [f"--{r.option} {r.value} replaces the checkpoint's {r.saved}" for r in replaced]
    return cfg.replace(**changes), ck, notes


@contextlib.contextmanager
def mismatch_as_usage_error(path: str):
    """The resume policy's refusal as one line naming the flags."""
    try:
        yield
    except checkpoint.ResumeMismatch as e:
        if e.option == "model_kwargs":
            raise UsageError(f"--resume {path}: the checkpoint's model options are {e.saved}, not {e.value}") from None
        raise UsageError(f"--resume {path}: the checkpoint was trained with --{e.option} {e.saved}, "
                         f"not --{e.option} {e.value}") from None


def read_splits(cfg: TrainConfig, info: DistInfo, resume: dict | None) -> tuple[Splits, dict]:
    """Train / val / test manifests without the listed files that do not exist (named here, and
    returned as {split: [(path, reason)]}); their classes must suit --loss, --resume and the
    number of processes."""
    options = CsvOptions(cfg.path_column, cfg.label_column, cfg.video_root)
    splits = load_splits(cfg.data_dir, cfg.test_dir, val_dir=cfg.val_dir, val_fraction=cfg.val_fraction,
                         seed=cfg.seed, options=options)
    if cfg.loss == "bce" and len(splits.classes) != 2:
        raise UsageError(f"--loss bce is for two classes; the data has {len(splits.classes)} "
                         f"({splits.classes}): use --loss ce")
    missing = {}
    for name in ("train", "val", "test"):
        m = getattr(splits, name)
        if m is not None and len(m):
            present, gone, warning = check_present(m, what=name, strict=cfg.on_error == "raise")
            if warning:
                setattr(splits, name, present)
                missing[name] = gone
                say(info, flagged(warning))
    if resume is not None and list(resume["classes"]) != splits.classes:
        raise UsageError(f"--resume: checkpoint classes {resume['classes']} differ from the data's "
                         f"{splits.classes}")
    if info.world_size > len(splits.train):
        raise UsageError(f"{len(splits.train)} training videos cannot feed {info.world_size} processes")
    return splits, missing


def setup_model(cfg: TrainConfig, info: DistInfo, num_classes: int, kwargs: dict,
                resume: dict | None) -> tuple[nn.Module, TrainConfig]:
    """The model (resumed weights loaded), checked to take the clips; the config with the
    model's clip length and size filled in where not given."""
    from models import PretrainedUnavailable, create_model

    seed_everything(cfg.seed)  # the random initial weights depend on the seed only
    try:
        model = create_model(cfg.model, num_classes=num_classes, pretrained=cfg.pretrained,
                             checkpoint_path=cfg.weights, **kwargs)
    except PretrainedUnavailable as e:
        url = re.search(r"download (\S+) elsewhere", str(e))
        where = f"download {url.group(1)} elsewhere and " if url else ""
        raise UsageError(f"--pretrained: cannot fetch {cfg.model}'s trunk weights here (no network?); "
                         f"{where}give the file with --weights FILE instead of --pretrained") from None
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise UsageError(f"--model {cfg.model}: {one_line(e)}") from None
    if cfg.freeze_backbone:
        if not hasattr(model, "freeze_backbone"):
            raise UsageError(f"--freeze_backbone: {cfg.model} has no separate trunk")
        model.freeze_backbone()
    if resume is not None:
        checkpoint.load_model_state(model, resume, source=cfg.resume)  # a mismatch is one line, exit 2
    if getattr(model, "backbone_frozen", False) and not (cfg.pretrained or cfg.weights or cfg.resume):
        say(info, f"warning: {cfg.model}'s trunk is frozen but has random weights (no --pretrained, no "
                  "--weights): only the layers after it learn. Give --weights FILE (torchvision's weights "
                  "file for the trunk, e.g. resnet18-f37072fd.pth, or a checkpoint), --pretrained with "
                  "network, or train the trunk too with --model_arg freeze_backbone=False")
    data_config = resolve_data_config(model)
    size = cfg.size or data_config.size
    cfg = cfg.replace(clip_len=cfg.clip_len or data_config.clip_len, size=size, decode_size=cfg.decode_size or size)
    model.eval()  # one clip through it (no gradients, CPU): a clip the model cannot take is one line
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, cfg.clip_len, cfg.size, cfg.size))
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"--model {cfg.model} cannot take {cfg.clip_len}-frame clips of "
                         f"{cfg.size}px: {one_line(e)}") from None
    finally:
        model.train()
    return model, cfg


# --------------------------------------------------------------------------- main
def error_line(e: BaseException, s: Setup | None) -> str | None:
    """The one line an expected failure ends the run with (None: a bug, shown in full)."""
    if isinstance(e, (UsageError, checkpoint.CheckpointError)):
        return one_line(e)
    if isinstance(e, ManifestError):
        return flagged(e)
    if isinstance(e, VideoDecodeError):
        return f"--on_error raise: {e.path}: {explain_skip(e.path, e.reason)}"
    if isinstance(e, RuntimeError) and s is not None and s.info.distributed and "timed out" in str(e).lower():
        return (f"rank {s.info.rank}: no answer from another process within --dist_timeout "  # Gloo, NCCL
                f"{s.cfg.dist_timeout:g} s (stopped or hung?): {one_line(e)}")
    return None


def main(args: Options) -> dict:
    s = None
    try:
        s = setup(args)                                    # set-up: every input checked
        s.flag.install()
        try:
            data = build_data(s)                           # data
            tr = build_training(s, data)                   # model, optimiser, resumed state
            run = open_outputs(s, data, tr)
            result, val_skipped = train_loop(s, run)       # loop: train, validate, save
            return report(s, run, result, val_skipped)     # report: final test, metrics, plots
        finally:
            s.flag.uninstall()
            destroy(s.info)
    except RunStopped as e:
        if s is not None and s.info.is_main:
            print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.status) from None
    except Exception as e:
        line = error_line(e, s)
        if line is None or args.debug:
            raise
        fail(PROG, line)


def train_loop(s: Setup, run: Run) -> tuple[dict, list]:
    """The epochs (train, validate, save) until the last, early stopping or a signal; the
    result so far and the last validation's skipped files."""
    info, tr = s.info, run.tr
    stopped_early, val_preds = False, None
    for epoch in range(tr.start_epoch, s.cfg.epochs):
        record, val_preds = run_epoch(s, run, epoch)
        if info.is_main:
            save_epoch(s, run, record)
        say(info, tracking.epoch_line(record, s.cfg.epochs))
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
    result = {"history": tr.history, "best_epoch": tr.selector.best_epoch, "stopped_early": stopped_early}
    return result, val_preds.skipped if val_preds else []


def report(s: Setup, run: Run, result: dict, val_skipped: list) -> dict:
    """Rank 0: the best checkpoint on the test split, the skipped files, metrics.json, plots."""
    info, tr = s.info, run.tr
    skipped = tracking.gather_skipped(info, run.data.train_loader.skipped, val_skipped, s.missing)
    barrier(info)
    if info.is_main:
        test_public = final_test(s, run, skipped)
        if test_public is not None:
            result["test"] = test_public
        for line in tracking.write_reports(s.log_dir, run.config, s.splits.classes, tr.history,
                                           tr.selector, tr.shards, test=test_public, skipped=skipped):
            say(info, line)
        run.logger.close()
        say(info, f"metrics: {s.log_dir / 'metrics.json'}   plots: {s.log_dir}/*.png   "
                  f"best checkpoint: {s.model_dir / 'best.pt'}")
    barrier(info)
    return result


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """What the epochs read: the training loader and transform, how val and test clips are read."""
    train_loader: ClipBatchLoader
    train_tf: ClipTransform  # augmentation and normalisation of the training clips, on the device
    val_settings: evaluation.EvalSettings
    test_settings: evaluation.EvalSettings
    loss_weights: torch.Tensor | None  # the criterion's class weights


def build_data(s: Setup) -> Data:
    """The training loader (this rank's shard, class-balanced with --balanced_sampler), its
    augmentation, how validation and test clips are read, and the loss's class weights."""
    cfg, info, train = s.cfg, s.info, s.splits.train
    for note in s.splits.notes:
        say(info, f"note: {note}")
    weights_mode = cfg.class_weights
    if weights_mode == "auto":
        weights_mode = "none" if cfg.balanced_sampler else "balanced"
    loss_weights = class_weights(train.class_counts(), weights_mode)
    sample_w = sampling_weights(train.labels, len(s.splits.classes), cfg.sampler_tau) \
        if cfg.balanced_sampler else None
    sampler = ShardedSampler(len(train), rank=info.rank, world_size=info.world_size,
                             seed=cfg.seed, shuffle=True, weights=sample_w)
    per_rank = len(sampler)
    train_loader = build_loader(
        train, batch_size=cfg.batch_size, clip_len=cfg.clip_len, strategy=cfg.train_sampling,
        frame_size=(cfg.decode_size, cfg.decode_size), backend=cfg.decoder,
        num_workers=cfg.num_workers, sampler=sampler,
        # A last batch of one clip breaks BatchNorm in training mode: drop it then.
        drop_last=per_rank % cfg.batch_size == 1 and per_rank > 1,
        # Workers restart each epoch, so nothing a decoder leaks (torchcodec keeps ~1 KB per
        # file it opened, for good) outlives an epoch, whatever the watchdog's limits are set
        # to (it also replaces a decode child after recycle_after_clips clips or
        # recycle_rss_growth_mb of growth). Not for the seed: each index carries its epoch
        # (EpochSampler). Kept False, the behaviour the scripts have always had.
        persistent_workers=False, on_error=cfg.on_error, seed=cfg.seed, device=s.device,
        decode=DecodeOptions(stride=cfg.frame_stride, rotate=cfg.autorotate))
    if len(train_loader) == 0:
        fail(PROG, "no training batches")
    mean, std = resolve_data_config(s.model).stats  # the model's, as in every evaluation
    return Data(train_loader, train_transform(cfg, mean, std),
                evaluation.EvalSettings.of_run(cfg, cfg.val_sampling, mean=mean, std=std, video_level=False),
                evaluation.EvalSettings.of_run(cfg, cfg.test_sampling, mean=mean, std=std,
                                               video_level=cfg.video_eval), loss_weights)


def train_transform(cfg: TrainConfig, mean, std) -> ClipTransform:
    """--augment full (crop, flip, rotate, colour), flip, or none; normalised for the model."""
    if cfg.augment == "full":
        return ClipTransform(cfg.size, train=True, mean=mean, std=std)
    if cfg.augment == "flip":
        return ClipTransform(cfg.size, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), rotate_deg=0.0,
                             brightness=0.0, contrast=0.0, saturation=0.0, mean=mean, std=std)
    return ClipTransform(cfg.size, train=False, mean=mean, std=std)


# --------------------------------------------------------------------------- model and optimiser
def build_training(s: Setup, data: Data) -> Training:
    """Model on the device (SyncBN and DDP when distributed, optimised), optimiser, LR schedule,
    loss; resumed from --resume (its weights were loaded, and checked, in setup())."""
    from accel.deploy.perf import optimize, to_channels_last

    cfg, info, device, model = s.cfg, s.info, s.device, s.model
    model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    ddp = None
    if info.distributed:
        if cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    compile_mode = cfg.compile or False
    net = optimize(ddp if ddp is not None else model, channels_last=cfg.channels_last, amp=s.amp,
                   compile=compile_mode, device=device)
    eval_net = optimize(model, channels_last=cfg.channels_last, amp=s.amp, compile=compile_mode, device=device)
    tr = Training.build(cfg, model, net, eval_net, ddp, device=device, amp=s.amp,
                        batches_per_epoch=len(data.train_loader), loss_weights=data.loss_weights)
    if s.resume is not None:
        try:
            tr.load_state_dict(s.resume)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            fail(PROG, f"--resume {cfg.resume}: its optimiser, schedule, selector or RNG state does "
                       f"not fit this run ({type(e).__name__}: {one_line(e)})")
        epoch, samples = place(s.resume)
        where = f", after {samples} samples of its shard" if tr.in_epoch else ""
        say(info, f"resumed from {cfg.resume}: epoch {epoch + 1} of {cfg.epochs}{where}")
    return tr


# --------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class Run:
    """What the loop reads and changes, beside the set-up: the data, the training state, and
    where the numbers go."""
    data: Data
    tr: Training
    config: dict  # the options and what they resolved to: config.json, and "args" in checkpoints
    logger: tracking.RunLogger
    make_bar: Callable  # (total, desc) -> a tqdm bar, disabled off rank 0 and with --no_progress
    ckpt_meta: dict  # what every checkpoint records besides the state


def open_outputs(s: Setup, data: Data, tr: Training) -> Run:
    """config.json, the run logger (CSV, TensorBoard, W&B) and the run's description line."""
    cfg, info, splits, classes = s.cfg, s.info, s.splits, s.splits.classes
    loader = data.train_loader
    config = checkpoint.plain({**cfg.as_dict(), "classes": classes, "world_size": info.world_size,
                               "distributed": info.describe(), "device": str(s.device), "amp_effective": s.amp,
                               "decoder": loader.backend, "decoder_reason": loader.reason})
    wandb = {"project": cfg.wandb_project, "name": cfg.wandb_name, "mode": cfg.wandb_mode} if cfg.wandb else None
    try:
        logger = tracking.RunLogger(s.log_dir, enabled=info.is_main, wandb=wandb, config=config,
                                    tensorboard=None if cfg.tensorboard else False)
    except ImportError as e:
        fail(PROG, f"--wandb: {one_line(e)}" if e.name == "wandb" else one_line(e))
    if info.is_main:
        s.model_dir.mkdir(parents=True, exist_ok=True)
        tracking.write_json(config, s.log_dir / "config.json")
        for note in logger.notes:
            say(info, f"note: {note}")
    n_params = sum(p.numel() for p in tr.model.parameters())
    say(info, f"{cfg.model}: {n_params / 1e6:.2f} M parameters, {len(classes)} classes {classes}; "
              f"train {len(splits.train)} / val {len(splits.val)} / test "
              f"{len(splits.test) if splits.test is not None else 0} videos; clips {cfg.clip_len}x"
              f"{cfg.size}px; decoder {loader.backend}; device {s.device}"
              + (f" x{info.world_size} ({info.backend})" if info.distributed else ""))
    say(info, f"logs -> {s.log_dir}   checkpoints -> {s.model_dir}")
    ckpt_meta = {"model_name": cfg.model, "model_kwargs": s.model_kwargs, "classes": classes, "args": config,
                 "config": checkpoint.plain(cfg.as_dict()), "eval": dataclasses.asdict(data.test_settings)}
    return Run(data, tr, config, logger, tracking.progress_bar(cfg.progress and info.is_main), ckpt_meta)


# --------------------------------------------------------------------------- one epoch
def run_epoch(s: Setup, run: Run, epoch: int) -> tuple[dict, object]:
    """Train one epoch, validate, score: the epoch's record (appended to the history) and the
    validation predictions."""
    info, splits, tr = s.info, s.splits, run.tr
    t0 = time.perf_counter()
    stats = train_epoch(s, run, epoch)
    tr.model.eval()
    val_preds = evaluation.evaluate_clips(tr.eval_net, splits.val, run.data.val_settings, s.device, info=info)
    if len(val_preds.labels) == 0:
        raise UsageError(f"val: no readable video: all {len(splits.val)} of {splits.val.source} were "
                         f"skipped ({tracking.first_reason(val_preds.skipped)}); a best checkpoint cannot be "
                         "chosen on nothing (fix the files, or give another --val_dir)")
    val = classification_metrics(val_preds.labels, val_preds.logits, splits.classes)
    val_loss = val.get("loss") if val.get("loss") is not None else math.inf
    score, is_best = tr.selector.update(epoch, val_loss, val.get("auroc"))
    tr.schedule.epoch_end(val_loss)
    record = tracking.epoch_record(info, epoch, lr=tr.optimizer.param_groups[-1]["lr"], stats=stats, val=val,
                                   score=score, best=is_best, epoch_time_s=time.perf_counter() - t0)
    tr.history.append(record)
    return record, val_preds


def train_epoch(s: Setup, run: Run, epoch: int) -> dict:
    """One pass over this rank's shard (train_one_epoch's stats); the first epoch also
    records how the clips fell on the ranks."""
    from accel import DevicePrefetcher

    cfg, info, tr, train_loader = s.cfg, s.info, run.tr, run.data.train_loader
    state = EpochState()
    if tr.in_epoch is not None and tr.in_epoch["epoch"] == epoch:  # resumed mid-epoch
        state = EpochState.from_state_dict(tr.in_epoch["ranks"][info.rank])
    tr.in_epoch = None
    train_loader.set_epoch(epoch)
    epoch_batches = len(train_loader)
    train_loader.set_epoch(epoch, start=state.samples)
    aug = torch.Generator()  # reseeded every step (LongRunHooks), as are the global RNGs
    batches = DevicePrefetcher(train_loader, s.device, transform=run.data.train_tf, generator=aug)
    hooks = epoch_hooks(s, run, epoch, aug)
    bar = run.make_bar(len(train_loader), f"epoch {epoch + 1}/{cfg.epochs}")
    try:
        stats = train_one_epoch(tr.net, tr.model, tr.criterion, tr.optimizer, tr.schedule, batches,
                                scaler=tr.scaler, ddp=tr.ddp, accum_steps=cfg.accum_steps,
                                clip_grad_norm=cfg.clip_grad_norm, progress=bar, print_freq=cfg.print_freq,
                                state=state, hooks=hooks)
    finally:
        hooks.close()
        bar.close()
    shard_record = tracking.shard_record(info, stats.pop("video_ids"), epoch_batches)
    if not tr.shards:
        tr.shards = shard_record
    if shard_record["clips_per_rank"] and sum(shard_record["clips_per_rank"]) == 0:
        raise UsageError(f"train: no readable video: all {len(s.splits.train)} of {s.splits.train.source} "
                         f"were skipped ({tracking.first_reason(train_loader.skipped)})")
    return stats


def epoch_hooks(s: Setup, run: Run, epoch: int, aug: torch.Generator) -> LongRunHooks:
    """Mid-epoch checkpoints, preemption, non-finite losses and stall warnings for one epoch."""
    cfg = s.cfg
    opts = LongRunOptions(cfg.save_every_steps, cfg.save_every_minutes, cfg.max_nonfinite, cfg.stall_warn_s)
    rolling = RollingCheckpoints(s.model_dir, keep=cfg.keep_checkpoints)
    train_items = s.splits.train.items

    def write(ranks: list[dict]) -> Path:
        state = training_state(run, epoch - 1, {"epoch": epoch, "ranks": ranks})
        return rolling.save(state, epoch, ranks[0]["samples"])

    def describe(batch) -> str:
        ids = torch.as_tensor(batch.video_id).reshape(-1).tolist()
        return ", ".join(train_items[i].path for i in ids) or "none (all skipped)"

    return LongRunHooks(opts, info=s.info, device=s.device, epoch=epoch, seed=cfg.seed, generator=aug,
                        decoder=run.data.train_loader.backend, flag=s.flag, write=write, describe=describe,
                        say=lambda line: say(s.info, line))


# --------------------------------------------------------------------------- save
def training_state(run: Run, epoch: int, in_epoch: dict | None) -> dict:
    """A full checkpoint: what every one records (options, classes...) and the training state."""
    return {**run.ckpt_meta, **run.tr.state_dict(epoch, in_epoch)}


def save_epoch(s: Setup, run: Run, record: dict) -> None:
    """Rank 0: the checkpoints (best.pt when best, last.pt always), the logs and plots so far."""
    tr, logged = run.tr, {k: v for k, v in record.items() if k not in ("val", "train_step_losses")}
    state = {**training_state(run, record["epoch"], None), "metrics": logged}
    # best.pt first: a run killed in between resumes from the older last.pt and
    # redoes this epoch. last.pt is then a hard link, not a second full write.
    if record["best"]:
        checkpoint.save_checkpoint(state, s.model_dir / "best.pt")
        checkpoint.link_or_copy(s.model_dir / "best.pt", s.model_dir / "last.pt")
    else:
        checkpoint.save_checkpoint(state, s.model_dir / "last.pt")
    run.logger.log(logged, step=record["epoch"])
    tracking.write_metrics(s.log_dir, run.config, s.splits.classes, tr.history, tr.selector, tr.shards,
                           test=None, skipped=None)
    tracking.plot_history(s.log_dir, tr.history)


# --------------------------------------------------------------------------- final test
def final_test(s: Setup, run: Run, skipped: dict) -> dict | None:
    """Rank 0: the best checkpoint (last.pt without one) on the test split, reloaded from disk;
    its reports go to log_dir and its skipped files into ``skipped``. None without a test split."""
    from accel.deploy.perf import optimize

    test, make_bar = s.splits.test, run.make_bar
    if test is None or not len(test):
        return None
    best = s.model_dir / ("best.pt" if (s.model_dir / "best.pt").exists() else "last.pt")
    ck = checkpoint.read_checkpoint(best)
    test_net = optimize(model_from_checkpoint(ck, source=best), channels_last=s.cfg.channels_last, amp=s.amp,
                        compile=False, device=s.device)
    report = evaluation.evaluate_split(test_net, test, run.data.test_settings, s.device,
                                       progress_factory=lambda n, d: make_bar(n, f"test {d}"))
    skipped["test"] = skipped.get("test", []) + report["skipped"]
    evaluation.write_report_files(report, test, s.log_dir, prefix="test")
    if not report["clip"].get("n"):
        say(s.info, f"warning: test: no readable video: all {len(test)} of {test.source} "
                    "were skipped (see the list below)")
    for line in evaluation.summary_lines(report):
        say(s.info, line)
    run.logger.summary({f"test_{k}": v for k, v in report["clip"].items()}
                           | {f"test_video_{k}": v for k, v in report.get("video", {}).items()})
    return {"checkpoint": str(best), "epoch": ck["epoch"], **evaluation.public(report)}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
    sys.exit(0)
