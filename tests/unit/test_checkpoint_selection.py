"""Model selection in harness.training.finetune: after each validation pass `_keep_if_best` keeps the
weights with the best validation score, ties to the earlier pass. Validation curves that peak
early, in the middle, at the end, and tie; that the selection pass reads validation rows only is
tests/e2e/test_model_selection.py."""

from __future__ import annotations

import math

import pytest
import torch

from harness.training.checkpoint import TrainState
from harness.training.finetune import _keep_if_best


class Weights(torch.nn.Module):
    """A model whose one weight says which epoch it was trained to."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def train_to(self, epoch: int) -> None:
        with torch.no_grad():
            self.w.fill_(float(epoch))


def select(curve: list[float]) -> TrainState:
    """Run the selection over a validation curve (score of epoch 1, 2, ...); each epoch's accuracy
    is its score minus 0.01, so that the kept accuracy says which epoch it came from."""
    state, model = TrainState(), Weights()
    for epoch, score in enumerate(curve, 1):
        model.train_to(epoch)
        _keep_if_best(state, epoch, {"score": score, "accuracy": score - 0.01}, model)
    model.train_to(99)  # training goes on after the last pass: the kept copy must not follow
    return state


@pytest.mark.parametrize("curve,best", [
    ([0.9, 0.6, 0.7, 0.5], 1),  # peaks early: later epochs are worse
    ([0.5, 0.7, 0.9, 0.6], 3),  # peaks in the middle
    ([0.5, 0.6, 0.7, 0.8], 4),  # rises to the end
    ([0.6, 0.8, 0.8, 0.7], 2),  # a tie: the earlier epoch
    ([0.8, 0.8, 0.8, 0.8], 1),  # flat: the first
    ([0.5, 0.7, 0.6, 0.7], 2),  # a later epoch equals the best: still the earlier one
])
def test_the_best_validation_epoch_is_kept_ties_to_the_earlier(curve, best):
    state = select(curve)
    assert state.best_epoch == best
    assert state.best_score == curve[best - 1]
    assert state.best_accuracy == pytest.approx(curve[best - 1] - 0.01)
    assert state.best_weights["w"].tolist() == [float(best)] * 2  # that epoch's weights, a copy
    assert state.best_weights["w"].device.type == "cpu"


def test_the_first_pass_is_kept_whatever_its_score():
    """A first validation score of NaN (or −inf) still leaves weights to test."""
    state = select([math.nan])
    assert state.best_epoch == 1 and state.best_weights is not None
    state = select([-math.inf, 0.2])
    assert state.best_epoch == 2 and state.best_score == 0.2


def test_a_regression_score_keeps_no_accuracy():
    state, model = TrainState(), Weights()
    _keep_if_best(state, 1, {"score": 0.4}, model)
    assert state.best_accuracy is None and state.best_score == 0.4
