"""What the epochs change (:class:`Training`): the weights and their wrappers, the optimiser,
LR schedule, gradient scaler, loss and model selector, and the history so far; built from a
:class:`~accel.train.config.TrainConfig`, saved in every checkpoint and restored from one."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .config import TrainConfig
from .losses import build_criterion
from .optim import LRSchedule, build_optimizer
from .rng import rng_state, set_rng_state
from .selection import ModelSelector


@dataclasses.dataclass
class Training:
    model: nn.Module  # the bare model (state_dict, checkpoints)
    net: nn.Module  # what trains: the DDP-wrapped model, optimised (channels-last, AMP, compile)
    eval_net: nn.Module  # what validates: the bare model, optimised
    ddp: nn.Module | None
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None  # fp16 autocast only
    criterion: nn.Module
    selector: ModelSelector
    history: list[dict] = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    in_epoch: dict | None = None  # a mid-epoch checkpoint's epoch and every rank's EpochState
    shards: dict = dataclasses.field(default_factory=dict)  # how the first epoch's clips fell on the ranks

    @classmethod
    def build(cls, cfg: TrainConfig, model: nn.Module, net: nn.Module, eval_net: nn.Module,
              ddp: nn.Module | None, *, device: torch.device, amp: str | None, batches_per_epoch: int,
              loss_weights: torch.Tensor | None) -> Training:
        """The optimiser, LR schedule (stepped per optimiser step), scaler, loss and selector of ``cfg``."""
        optimizer = build_optimizer(model, name=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    backbone_lr_mult=cfg.backbone_lr_mult, momentum=cfg.momentum)
        steps = math.ceil(batches_per_epoch / cfg.accum_steps)
        schedule = LRSchedule(optimizer, kind=cfg.sched, total_steps=steps * cfg.epochs,
                              warmup_steps=round(cfg.warmup_epochs * steps), min_lr_ratio=cfg.min_lr_ratio,
                              plateau_factor=cfg.plateau_factor, plateau_patience=cfg.plateau_patience)
        scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        criterion = build_criterion(cfg.loss, weight=loss_weights, label_smoothing=cfg.label_smoothing,
                                    gamma=cfg.focal_gamma).to(device)
        selector = ModelSelector(cfg.loss_weight, cfg.patience, cfg.min_delta)
        return cls(model, net, eval_net, ddp, optimizer, schedule, scaler, criterion, selector)

    def state_dict(self, epoch: int, in_epoch: dict | None) -> dict:
        """A checkpoint's state: ``epoch`` is the last finished one; ``in_epoch`` where the next stands."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None, "epoch": epoch,
                "selector": self.selector.state_dict(), "history": self.history, "rng": rng_state(),
                "shards": self.shards, "in_epoch": in_epoch}

    def load_state_dict(self, ck: dict) -> None:
        """Optimiser, schedule, scaler, selector, RNG and history of a resumed run (not the
        weights: they are loaded before the model is wrapped); the run goes on at the epoch
        after the checkpoint's. Raises what the ``load_state_dict``s raise when it does not fit."""
        self.optimizer.load_state_dict(ck["optimizer"])
        self.schedule.load_state_dict(ck["schedule"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.selector.load_state_dict(ck["selector"])
        set_rng_state(ck["rng"])
        self.history = list(ck.get("history") or [])
        self.shards = dict(ck.get("shards") or {})
        self.start_epoch = ck["epoch"] + 1
        self.in_epoch = ck.get("in_epoch")
