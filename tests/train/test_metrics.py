"""Clip and video metrics against scikit-learn, and their undefined values."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from accel.train.metrics import aggregate_by_video, auroc, classification_metrics, cross_entropy, softmax


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
