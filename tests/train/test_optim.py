"""LR schedules (cosine with warm-up, plateau) and optimiser parameter groups."""
from __future__ import annotations

import pytest
import torch

from accel.train.optim import LRSchedule


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_schedule_with_warmup():
    opt = _opt(1.0)
    s = LRSchedule(opt, kind="cosine", total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    lrs = [s.get_last_lr()[0]]
    for _ in range(12):
        s.step()
        lrs.append(s.get_last_lr()[0])
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # warmup
    assert lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.1)
    # state round trip continues identically
    t = LRSchedule(_opt(1.0), kind="cosine", total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    opt2 = _opt(1.0)
    s2 = LRSchedule(opt2, kind="cosine", total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    for _ in range(5):
        s2.step()
    t.load_state_dict(s2.state_dict())
    assert t.get_last_lr() == s2.get_last_lr()


def test_plateau_schedule():
    s = LRSchedule(_opt(1.0), kind="plateau", total_steps=10, plateau_factor=0.5, plateau_patience=1)
    for loss in (1.0, 0.9, 0.95, 0.96):
        s.epoch_end(loss)
    assert s.get_last_lr()[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        LRSchedule(_opt(), kind="step", total_steps=1)


def test_optimizer_groups_freeze_and_layerwise_lr():
    from accel.train.optim import build_optimizer
    from models import create_model

    m = create_model("tsn_resnet18", num_classes=3)
    opt = build_optimizer(m, name="adamw", lr=1e-3, weight_decay=0.01, backbone_lr_mult=0.1)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"backbone": pytest.approx(1e-4), "head": pytest.approx(1e-3)}
    m.freeze_backbone()
    opt = build_optimizer(m, name="sgd", lr=1e-3, weight_decay=0.0)
    assert [g["name"] for g in opt.param_groups] == ["head"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == \
        sum(p.numel() for p in m.head.parameters())
