"""Which epoch is best, and when to stop: :class:`ModelSelector` (the laryngoscopy seed's
loss-and-AUROC score with patience)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ModelSelector:
    """The laryngoscopy seed's selection score and early stopping.

    ``score = loss_weight * lowest_loss / val_loss + (1 - loss_weight) * auroc``: the
    validation loss is normalised by the lowest loss seen so far (1.0 for the epoch that has
    it), so both terms live in [0, 1]; higher is better. ``loss_weight`` = 1 selects on loss
    alone, 0 on AUROC alone. An epoch is the new best when its score beats the best epoch's
    score *under the same normaliser* (the seed compared against a score frozen with an older
    normaliser, which let a later, lower loss never win at loss_weight = 1). An AUROC that
    cannot be computed (one class in the validation set) counts as 0.5. ``patience`` epochs
    in a row without a new best stop training (0 never stops).
    """

    loss_weight: float = 0.3
    patience: int = 0
    min_delta: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_loss: float = math.inf
    best_auroc: float | None = None
    lowest_loss: float = math.inf
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss_weight <= 1.0:
            raise ValueError(f"loss_weight must be in [0, 1], got {self.loss_weight}")

    def score(self, val_loss: float, val_auroc: float | None, lowest: float | None = None) -> float:
        lowest = min(self.lowest_loss, val_loss) if lowest is None else lowest
        normalised = lowest / max(val_loss, 1e-12) if math.isfinite(val_loss) else 0.0
        a = 0.5 if val_auroc is None else val_auroc
        return self.loss_weight * normalised + (1.0 - self.loss_weight) * a

    def update(self, epoch: int, val_loss: float, val_auroc: float | None) -> tuple[float, bool]:
        """Score this epoch; returns (score, is_best)."""
        if math.isfinite(val_loss):
            self.lowest_loss = min(self.lowest_loss, val_loss)
        s = self.score(val_loss, val_auroc, self.lowest_loss)
        previous = (self.score(self.best_loss, self.best_auroc, self.lowest_loss)
                    if self.best_epoch >= 0 else -math.inf)
        if s > previous + self.min_delta:
            self.best_score, self.best_epoch, self.bad_epochs = s, epoch, 0
            self.best_loss, self.best_auroc = val_loss, val_auroc
            return s, True
        self.bad_epochs += 1
        return s, False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    _STATE = ("best_score", "best_epoch", "best_loss", "best_auroc", "lowest_loss", "bad_epochs")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])
