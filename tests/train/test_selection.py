"""Model selection: the score that mixes loss and AUROC, patience, state."""
from __future__ import annotations

import pytest

from accel.train.selection import ModelSelector


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
