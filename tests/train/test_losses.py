"""Class weights, sampling weights, focal and cross-entropy losses."""
from __future__ import annotations

import pytest
import torch

from accel.train.losses import FocalLoss, build_criterion, class_weights, sampling_weights


def test_class_weights_and_sampling_weights():
    w = class_weights([10, 30, 60], "balanced")
    assert torch.allclose(w, torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    assert class_weights([5, 5], "balanced").tolist() == [1.0, 1.0]
    assert class_weights([5, 5], "none") is None
    assert class_weights([5, 5], "1,3").tolist() == [1.0, 3.0]
    with pytest.raises(ValueError):
        class_weights([5, 5], "1,2,3")
    sw = sampling_weights([0, 0, 0, 1], 2, tau=1.0)
    assert torch.allclose(sw, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    assert torch.allclose(sampling_weights([0, 0, 0, 1], 2, tau=0.0), torch.ones(4, dtype=torch.float64))
    # tau = 1: each class drawn equally often in expectation
    per_class = [sw[torch.tensor([0, 0, 0, 1]) == c].sum().item() for c in (0, 1)]
    assert per_class[0] == pytest.approx(per_class[1])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_gamma0_equals_cross_entropy(smoothing, weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=g)
    target = torch.randint(0, 4, (16,), generator=g)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0]) if weighted else None
    focal = FocalLoss(0.0, weight=w, label_smoothing=smoothing)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, weight=w, label_smoothing=smoothing)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-5)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[5.0, 0.0], [0.2, 0.0]])
    target = torch.tensor([0, 0])
    per = [FocalLoss(2.0)(logits[i:i + 1], target[i:i + 1]).item() for i in range(2)]
    ce = [torch.nn.functional.cross_entropy(logits[i:i + 1], target[i:i + 1]).item() for i in range(2)]
    assert per[0] / ce[0] < per[1] / ce[1] < 1
    with pytest.raises(ValueError):
        build_criterion("hinge")
