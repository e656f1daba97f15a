"""Metrics, selection score, losses, samplers, LR schedule, checkpoints: the pieces train.py and
evaluate.py share, tested without training."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from accel.checkpoint import (load_checkpoint, plain, rng_state, save_checkpoint, seed_everything,
                              set_rng_state)
from accel.distributed import ShardedSampler, ShardSampler
from accel.engine import LRSchedule
from accel.losses import FocalLoss, build_criterion, class_weights, sampling_weights
from accel.metrics import (ModelSelector, aggregate_by_video, auroc, classification_metrics,
                           cross_entropy, softmax)


# --------------------------------------------------------------------------- metrics
def test_classification_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + 2.0 * np.eye(3)[labels] * (rng.random(60) < 0.7)[:, None]
    m = classification_metrics(labels, logits, ["a", "b", "c"])
    preds = logits.argmax(1)
    assert m["n"] == 60
    assert m["accuracy"] == pytest.approx((preds == labels).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, softmax(logits), multi_class="ovr"))
    assert np.asarray(m["confusion_matrix"]).sum() == 60
    assert m["per_class"]["b"]["support"] == int((labels == 1).sum())
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert m["loss"] == pytest.approx(ref)
    json.dumps(m, allow_nan=False)  # plain JSON, no NaN


def test_binary_auroc_uses_positive_class():
    from sklearn.metrics import roc_auc_score

    labels = np.array([0, 0, 1, 1, 1, 0])
    logits = np.array([[2, 0], [1, 0], [0, 1], [0, 3], [1, 0], [0, 0.5]], dtype=float)
    assert auroc(labels, softmax(logits), 2) == pytest.approx(roc_auc_score(labels, softmax(logits)[:, 1]))


def test_undefined_values_are_none_not_nan():
    m = classification_metrics([1, 1, 1], np.array([[0, 1.0], [1, 0], [0, 2]]), ["neg", "pos"])
    assert m["auroc"] is None                       # one class present: no ROC
    assert m["per_class"]["neg"]["accuracy"] is None  # no samples of that class
    json.dumps(m, allow_nan=False)
    assert classification_metrics([], np.zeros((0, 2)), ["a", "b"])["accuracy"] is None


def test_aggregate_by_video_averages_logits():
    ids = np.array([5, 2, 5, 2, 9])
    logits = np.array([[1.0, 0], [0, 1], [3, 0], [0, 3], [1, 1]])
    labels = np.array([1, 0, 1, 0, 1])
    vid, mean, lab = aggregate_by_video(ids, logits, labels)
    assert vid.tolist() == [2, 5, 9]
    np.testing.assert_allclose(mean, [[0, 2], [2, 0], [1, 1]])
    assert lab.tolist() == [0, 1, 1]


def test_cross_entropy_plain():
    assert cross_entropy(np.array([[0.0, 0.0]]), np.array([1])) == pytest.approx(math.log(2))


# --------------------------------------------------------------------------- selection
def test_selector_score_mixes_loss_and_auroc():
    s = ModelSelector(loss_weight=0.3)
    score, best = s.update(0, 1.0, 0.8)
    assert best and score == pytest.approx(0.3 * 1.0 + 0.7 * 0.8)
    # loss doubles (normalised 0.5), AUROC rises: 0.15 + 0.665 = 0.815 < 0.86
    score, best = s.update(1, 2.0, 0.95)
    assert score == pytest.approx(0.3 * 0.5 + 0.7 * 0.95) and not best
    assert s.bad_epochs == 1
    # loss_weight 0: AUROC alone decides
    a = ModelSelector(loss_weight=0.0)
    a.update(0, 0.1, 0.7)
    assert a.update(1, 5.0, 0.71)[1]
    # loss_weight 1: loss alone decides
    b = ModelSelector(loss_weight=1.0)
    b.update(0, 0.5, 0.99)
    assert not b.update(1, 0.6, 1.0)[1]
    assert b.update(2, 0.4, 0.5)[1]  # a new lowest loss wins at loss_weight 1
    # the best epoch is re-scored with the new normaliser: lower loss, same AUROC wins
    c = ModelSelector(loss_weight=0.3)
    c.update(0, 1.0, 0.9)
    assert c.update(1, 0.9, 0.9)[1]


def test_selector_patience_and_state():
    s = ModelSelector(loss_weight=0.3, patience=2)
    s.update(0, 1.0, 0.9)
    s.update(1, 1.5, 0.8)
    assert not s.should_stop
    s.update(2, 1.6, 0.7)
    assert s.should_stop and s.best_epoch == 0
    t = ModelSelector(loss_weight=0.3, patience=2)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict() and t.should_stop
    assert ModelSelector(0.5).score(1.0, None) == pytest.approx(0.5 + 0.25)  # AUROC n/a -> 0.5
    with pytest.raises(ValueError):
        ModelSelector(loss_weight=1.5)


# --------------------------------------------------------------------------- losses
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


# --------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("weights", [None, torch.rand(23, generator=torch.Generator().manual_seed(3))])
def test_sharded_sampler_disjoint_equal_and_deterministic(weights):
    shards = []
    for rank in range(2):
        s = ShardedSampler(23, rank=rank, world_size=2, seed=7, weights=weights)
        s.set_epoch(4)
        shards.append(list(s))
        assert len(shards[-1]) == len(s) == 11
    single = ShardedSampler(23, seed=7, weights=weights)
    single.set_epoch(4)
    order = single.global_order()[:22]
    # the two ranks take alternate positions of one global order: disjoint positions
    assert sorted(shards[0] + shards[1]) == sorted(order)
    if weights is None:
        assert not set(shards[0]) & set(shards[1])
    again = ShardedSampler(23, rank=1, world_size=2, seed=7, weights=weights)
    again.set_epoch(4)
    assert list(again) == shards[1]
    again.set_epoch(5)
    assert list(again) != shards[1]


def test_shard_sampler_covers_everything_once():
    parts = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))


# --------------------------------------------------------------------------- schedule
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


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    seed_everything(5)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
             "args": {"out": tmp_path, "sizes": (1, 2)}, "rng": rng_state(), "best": -math.inf}
    path = save_checkpoint(state, tmp_path / "c.pt")
    expect = (torch.rand(3), np.random.rand(), __import__("random").random())
    ck = torch.load(path, weights_only=True)  # plain types only
    assert ck["args"]["out"] == str(tmp_path) and ck["epoch"] == 3
    set_rng_state(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(expect[0], again[0]) and expect[1:] == again[1:]
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_checkpoint_errors(tmp_path):
    from accel.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_checkpoint(tmp_path / "other.pt")


def test_plain_keeps_int_keys_and_tuples():
    out = plain({1: (2, 3), "p": __import__("pathlib").Path("/x"), "n": np.float32(1.5)})
    assert out == {1: (2, 3), "p": "/x", "n": 1.5}


def test_plots_write_png(tmp_path):
    from accel.plots import plot_confusion_matrix, plot_curves, plot_per_class_accuracy, plot_roc

    hist = [{"epoch": 0, "a": 1.0, "b": None}, {"epoch": 1, "a": 0.5, "b": 0.7}]
    files = [plot_curves(hist, ["a", "b"], tmp_path / "c.png", title="t", ylabel="y"),
             plot_confusion_matrix([[3, 1], [0, 2]], ["x", "y"], tmp_path / "cm.png"),
             plot_roc([0, 1, 1, 0], softmax(np.array([[1, 0], [0, 1], [0.2, 0], [0, 0.1]])), ["x", "y"],
                      tmp_path / "roc.png"),
             plot_per_class_accuracy([0.5, None], ["x", "y"], tmp_path / "pc.png")]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optimizer_groups_freeze_and_layerwise_lr():
    from accel.engine import build_optimizer
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
