"""The optimiser (AdamW or SGD, a lower learning rate for a pretrained trunk) and the
learning-rate schedule (warm-up, then cosine or plateau), stepped and saved with the run."""
from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, *, name: str, lr: float, weight_decay: float,
                    backbone_lr_mult: float = 1.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over the trainable parameters; the trunk (``model.backbone``) at
    ``lr * backbone_lr_mult`` (layer-wise LR for pretrained trunks)."""
    groups = param_groups(model, lr=lr, backbone_lr=lr * backbone_lr_mult, weight_decay=weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (everything frozen?)")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"optimizer must be adamw, adam or sgd; got {name!r}")


def param_groups(model: nn.Module, *, lr: float, backbone_lr: float | None = None,
                 weight_decay: float | None = None) -> list[dict]:
    """Optimiser groups for any model. One with a ``backbone`` submodule (the trunk pretrained
    weights load into) gets two, each named: "backbone" at ``backbone_lr`` (default ``lr / 10``)
    and "head" (everything else) at ``lr``, leaving out frozen parameters and empty groups;
    any other model one group, "all"."""
    backbone_lr = lr * 0.1 if backbone_lr is None else backbone_lr
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        in_trunk = {id(p) for p in backbone.parameters()}
        split = [("backbone", [p for p in backbone.parameters() if p.requires_grad], backbone_lr),
                 ("head", [p for p in model.parameters() if id(p) not in in_trunk and p.requires_grad], lr)]
        split = [s for s in split if s[1]]
    else:
        split = [("all", [p for p in model.parameters() if p.requires_grad], lr)]
    groups = []
    for name, params, group_lr in split:
        group: dict = {"params": params, "lr": group_lr, "name": name}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay
        groups.append(group)
    return groups


class LRSchedule:
    """Per-step learning rate: linear warmup, then cosine annealing, reduce-on-plateau or
    constant. One object, one plain state dict (so a resumed run continues exactly).

    cosine: from the base LR to ``base * min_lr_ratio`` over the steps after warmup.
    plateau: multiply by ``plateau_factor`` when the validation loss has not improved for
    more than ``plateau_patience`` epochs (call :meth:`epoch_end`).
    """

    KINDS = ("cosine", "plateau", "constant")

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str = "cosine", total_steps: int,
                 warmup_steps: int = 0, min_lr_ratio: float = 0.0, plateau_factor: float = 0.1,
                 plateau_patience: int = 2) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"scheduler must be one of {', '.join(self.KINDS)}; got {kind!r}")
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, warmup_steps)
        self.min_lr_ratio = min_lr_ratio
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.step_count = 0
        self.scale = 1.0
        self.best = math.inf
        self.bad_epochs = 0
        self._apply()

    def factor(self) -> float:
        s = self.step_count
        warm = (s + 1) / self.warmup_steps if s < self.warmup_steps else 1.0
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (s - self.warmup_steps) / span))
            main = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            main = self.scale
        return warm * main

    def _apply(self) -> None:
        f = self.factor()
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def step(self) -> None:
        """After every optimiser step."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, val_loss: float) -> None:
        if self.kind != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best * (1 - 1e-4):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.plateau_patience:
                self.scale *= self.plateau_factor
                self.bad_epochs = 0
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"kind": self.kind, "step_count": self.step_count, "scale": self.scale,
                "best": self.best, "bad_epochs": self.bad_epochs, "base_lrs": list(self.base_lrs),
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count, self.scale = state["step_count"], state["scale"]
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.base_lrs = list(state["base_lrs"])
        self._apply()
