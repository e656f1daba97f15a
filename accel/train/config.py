"""A training run's options: the flags that set them (:func:`add_train_args`) and, frozen,
what they resolve to (:class:`TrainConfig`, one field per flag).

``train.py`` builds one from its parsed command line in ``setup()``; what set-up resolves
(the model's name, its clip length and size, where outputs go, the checkpoint resumed) is
filled in with :meth:`TrainConfig.replace`, never by changing the arguments in place. Every
checkpoint records it (``"config"``), so a resumed run starts from the checkpoint's options
and overlays only those given again (:func:`accel.train.checkpoint.resumed_options`).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from ..cli import (
    Parser,
    UsageError,
    key_value,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from ..data.loader import LOADER_BACKENDS, LoaderBackend
from ..data.reading import ON_ERROR, OnError
from ..data.sampling import STRATEGIES
from ..io.backends import AUTO_ORDER
from .losses import LOSSES
from .optim import LRSchedule


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of ``train.py``, by its argument name (see ``train.py --help``)."""

    # data
    data_dir: str | None
    val_dir: str | None
    test_dir: str | None
    video_root: str | None
    path_column: str | None
    label_column: str | None
    val_fraction: float
    clip_len: int | None  # None until set-up fills in the model's
    size: int | None  # likewise
    decode_size: int | None  # likewise (default: size)
    train_sampling: str
    val_sampling: str
    test_sampling: str
    frame_stride: int
    decoder: LoaderBackend
    autorotate: bool
    num_workers: int
    on_error: OnError
    augment: str
    # model
    model: str | None  # None until set-up chooses the default
    pretrained: bool
    weights: str | None
    model_arg: tuple[tuple[str, Any], ...]
    segments: int | None
    freeze_backbone: bool
    backbone_lr_mult: float
    sync_bn: bool
    # optimisation
    epochs: int
    batch_size: int
    eval_batch_size: int | None
    lr: float
    opt: str
    weight_decay: float
    momentum: float
    sched: str
    warmup_epochs: float
    min_lr_ratio: float
    plateau_factor: float
    plateau_patience: int
    clip_grad_norm: float
    accum_steps: int
    loss: str
    focal_gamma: float
    label_smoothing: float
    class_weights: str
    balanced_sampler: bool
    sampler_tau: float
    # model selection and stopping
    loss_weight: float
    patience: int
    min_delta: float
    # speed
    device: str
    dist_timeout: float
    amp: str
    channels_last: bool
    compile: str | None
    deterministic: bool
    # evaluation
    video_eval: bool
    video_stride: int | None
    window_stride: int | None
    max_windows: int
    # output
    out_dir: str | None
    log_dir: str | None  # set-up resolves both folders
    model_dir: str | None
    resume: str | None  # a checkpoint file once set-up resolved "auto"
    seed: int
    debug: bool
    print_freq: int
    progress: bool
    tensorboard: bool
    wandb: bool
    wandb_project: str
    wandb_name: str | None
    wandb_mode: str
    # long runs
    save_every_steps: int
    save_every_minutes: float
    keep_checkpoints: int
    max_nonfinite: int
    stall_warn_s: float

    @classmethod
    def from_options(cls, options: Any, **changes: Any) -> TrainConfig:
        """From parsed arguments (or any object with one attribute per option), with ``changes``."""
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(cls)}
        values.update(changes)
        values["model_arg"] = tuple(tuple(kv) for kv in values["model_arg"] or ())
        return cls(**values)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_options(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (what checkpoints and ``config.json`` record)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def model_options(self) -> dict[str, Any]:
        """The model's keyword options (``--model_arg``, ``--segments``, ``--loss bce``)."""
        kwargs = dict(self.model_arg)
        if self.segments is not None:
            kwargs["num_segments"] = self.segments
        if self.loss == "bce":
            kwargs["binary_logit"] = True
        return kwargs

    def output_dirs(self) -> tuple[Path, Path]:
        """(log_dir, model_dir): each given one, else out_dir, else ``runs/MODEL_TIME``."""
        if self.log_dir or self.model_dir:
            log_dir = Path(self.log_dir or self.model_dir or "")
            model_dir = Path(self.model_dir or self.log_dir or "")
        else:
            out = Path(self.out_dir or f"runs/{self.model}_{datetime.now():%Y%m%d-%H%M%S}")
            log_dir = model_dir = out
        if self.out_dir and not self.log_dir:
            log_dir = Path(self.out_dir)
        if self.out_dir and not self.model_dir:
            model_dir = Path(self.out_dir)
        return log_dir, model_dir

    # -- checks of the command line (UsageError: one line naming the flags) ---------------
    def check_options(self) -> None:
        """Option values that cannot work, whatever the data."""
        if self.decode_size is not None and self.size is not None and self.decode_size < self.size // 4:
            raise UsageError(f"--decode_size {self.decode_size} is far below --size {self.size}")
        if self.class_weights not in ("auto", "balanced", "none"):
            try:
                [float(v) for v in self.class_weights.split(",")]
            except ValueError:
                raise UsageError(f"--class_weights must be auto, balanced, none or numbers, "
                                 f"got {self.class_weights!r}") from None
        if self.decoder == "dali":
            from accel.data.dali import dali_unavailable_message

            why_not = dali_unavailable_message("gpu", None if self.device == "auto" else self.device)
            if why_not:
                raise UsageError(f"--decoder dali: {why_not}")

    def default_model(self) -> str:
        """--model, else from the flags: --segments means seed 004's late fusion."""
        if self.model is None:
            return "r3d_18_late_fusion" if self.segments is not None else "resnet50_lstm"
        if self.segments is not None and self.model != "r3d_18_late_fusion":
            raise UsageError(f"--segments is an option of r3d_18_late_fusion, not of {self.model}: "
                             "add --model r3d_18_late_fusion (or drop --segments)")
        return self.model

    def check_inputs(self) -> None:
        """The data paths exist (after --resume filled them in); --wandb has its package."""
        if self.data_dir is None:
            raise UsageError("--data_dir is required (the dataset folder or CSV), unless --resume is given")
        for name in ("data_dir", "val_dir", "test_dir", "video_root"):
            v = getattr(self, name)
            if v is not None and not Path(v).exists():
                raise UsageError(f"--{name} {v}: no such file or folder")
        if self.wandb:
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise UsageError("--wandb needs the wandb package: pip install 'vidaccel[wandb]' "
                                 "(or drop --wandb)")


# --------------------------------------------------------------------------- the flags
def add_train_args(p: Parser, *, models: Sequence[str], model_type: Callable[[str], str],
                   compile_modes: Sequence[str]) -> None:
    """train.py's options, by group. The script names the registered ``models`` and parses a
    model name (``model_type``: accel never imports the models) and the torch.compile modes
    (``accel.deploy.perf``)."""
    add_data_args(p.add_argument_group("data"))
    add_model_args(p.add_argument_group("model"), models, model_type)
    add_optimisation_args(p.add_argument_group("optimisation"))
    add_selection_args(p.add_argument_group("model selection and stopping"))
    add_speed_args(p.add_argument_group("speed"), compile_modes)
    add_evaluation_args(p.add_argument_group("evaluation"))
    add_output_args(p.add_argument_group("output"))
    add_long_run_args(p.add_argument_group("long runs (README: Long runs)"))


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


def add_model_args(g, models: Sequence[str], model_type: Callable[[str], str]) -> None:
    g.add("--model", type=model_type, metavar="NAME",
          help=f"one of {', '.join(models)}, or a seed's name (tsm_resnet, r2plus1d, cnnlstm...); "
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


def add_speed_args(g, compile_modes: Sequence[str]) -> None:
    g.add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add("--dist_timeout", type=positive_float, default=300.0,
          help="seconds a DDP collective waits for a silent rank before the run fails (default 300)")
    g.add("--amp", nargs="?", const="bf16", choices=("none", "bf16", "fp16"), default="none",
          help="mixed precision on CUDA (--amp alone = bf16; fp16 uses a GradScaler)")
    g.add_flag("--channels_last", True, "channels-last weights and clips (default on; --no_channels_last)")
    g.add("--compile", nargs="?", const="default", choices=compile_modes, default=None,
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
