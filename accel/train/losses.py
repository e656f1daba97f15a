"""Losses and class-imbalance tools: class weights, focal loss, count^-tau sampling weights."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def class_weights(counts: Sequence[int], mode: str = "balanced") -> torch.Tensor | None:
    """Per-class loss weights from training counts.

    ``balanced``: ``n / (K * count_k)`` (sklearn's convention; all ones for balanced data).
    ``none``: ``None``. A comma-separated list of numbers gives the weights directly.
    A class with no training samples gets weight 0.
    """
    k = len(counts)
    if mode == "none":
        return None
    if mode == "balanced":
        c = torch.as_tensor(counts, dtype=torch.float64)
        w = torch.where(c > 0, c.sum() / (k * c.clamp(min=1)), torch.zeros_like(c))
        return w.float()
    try:
        values = [float(v) for v in mode.split(",")]
    except ValueError:
        raise ValueError(f"class weights must be 'none', 'balanced' or {k} comma-separated "
                         f"numbers, got {mode!r}") from None
    if len(values) != k or any(v < 0 for v in values):
        raise ValueError(f"class weights: expected {k} non-negative numbers (one per class), got {mode!r}")
    return torch.tensor(values, dtype=torch.float32)


def sampling_weights(labels: Sequence[int], num_classes: int, tau: float = 1.0) -> torch.Tensor:
    """Per-sample weights ``count[label]^-tau`` for a WeightedRandomSampler.

    tau = 1 draws every class equally often; tau = 0 is plain uniform sampling; values in
    between soften the rebalancing (seed 001's ``w_i = count_i^-tau``).
    """
    ids = torch.as_tensor(list(labels), dtype=torch.int64)
    counts = torch.bincount(ids, minlength=num_classes).double()
    per_class = counts.clamp(min=1).pow(-float(tau))
    return per_class[ids]


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y``, mean.

    ``weight`` plays alpha (per-class weights); ``label_smoothing`` smooths the target as
    in ``F.cross_entropy``. gamma = 0 equals (weighted) cross-entropy.
    """

    weight: torch.Tensor | None  # a buffer

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        k = logits.shape[1]
        onehot = F.one_hot(target, k).to(logp.dtype)
        if self.label_smoothing:
            onehot = onehot * (1 - self.label_smoothing) + self.label_smoothing / k
        focal = (1 - logp.exp()).pow(self.gamma)
        loss = -(onehot * focal * logp)
        if self.weight is not None:
            loss = loss * self.weight.to(loss)
        loss = loss.sum(dim=1)
        if self.weight is not None:
            # Normalise like weighted cross-entropy: by the weights of the targets.
            return loss.sum() / self.weight.to(loss)[target].sum().clamp(min=1e-12)
        return loss.mean()


class BinaryLogitLoss(nn.Module):
    """Binary cross-entropy on one logit (seed 003's ``BCEWithLogitsLoss``).

    Takes the two-class logits a ``binary_logit`` model returns, ``[0, z]`` (any two-class
    logits work: z = l1 - l0), and integer targets 0/1. Class weights ``(w0, w1)`` become
    ``pos_weight = w1 / w0``; label smoothing pulls targets towards 0.5.
    """

    pos_weight: torch.Tensor | None  # a buffer

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if weight is not None and len(weight) != 2:
            raise ValueError(f"BCE is for two classes; got {len(weight)} class weights")
        pos_weight = None if weight is None else (weight[1] / weight[0].clamp(min=1e-12)).reshape(1)
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != 2:
            raise ValueError(f"BCE needs a binary model (two-class logits), got {logits.shape[1]} classes")
        z = (logits[:, 1] - logits[:, 0]).float()
        t = target.to(z.dtype) * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(z, t, pos_weight=self.pos_weight)


LOSSES = ("ce", "focal", "bce")


def build_criterion(kind: str = "ce", *, weight: torch.Tensor | None = None,
                    label_smoothing: float = 0.0, gamma: float = 2.0) -> nn.Module:
    """``ce`` (cross-entropy), ``focal`` or ``bce`` (binary, one logit), with optional class
    weights and label smoothing."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if kind == "bce":
        return BinaryLogitLoss(weight, label_smoothing)
    if kind == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if kind == "focal":
        return FocalLoss(gamma, weight=weight, label_smoothing=label_smoothing)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {kind!r}")
