"""harness.baseline without training: the Trainer's budget from a job's spec or the options, and
the side-by-side text (the Trainer itself: tests/e2e/test_baseline.py)."""

from types import SimpleNamespace

import pytest

from harness.baseline import Comparison, Side, format_comparison, trainer_budget
from harness.errors import HarnessError
from harness.protocol.spec import JobSpec

V1 = JobSpec.make(task="sst2", n=20, seed=3, epochs=10, lr=1e-4)


def test_an_epoch_budget_validates_every_epoch():
    assert trainer_budget(V1, 2) == dict(num_train_epochs=10, eval_strategy="epoch", save_strategy="epoch",
                                         total_steps=20)
    assert trainer_budget(V1, 2, epochs=100)["num_train_epochs"] == 100
    assert trainer_budget(V1, 2, epochs=100)["total_steps"] == 200


def test_a_step_budget_validates_every_k_steps():
    v2 = SimpleNamespace(epochs=10, steps=300, eval_every=25)  # a protocol-v2 spec
    assert trainer_budget(v2, 2) == dict(max_steps=300, eval_strategy="steps", eval_steps=25,
                                         save_strategy="steps", save_steps=25, total_steps=300)
    assert trainer_budget(v2, 2, eval_every=50)["eval_steps"] == 50
    assert trainer_budget(v2, 2, epochs=5)["num_train_epochs"] == 5  # the option wins
    # --steps on an epoch-budget job: validation once per epoch's worth of steps by default
    assert trainer_budget(V1, 7, steps=70)["eval_steps"] == 7
    assert trainer_budget(SimpleNamespace(epochs=10, steps=300, eval_every=None), 2)["eval_steps"] == 2


def test_contradicting_options_are_refused():
    with pytest.raises(HarnessError, match="not both"):
        trainer_budget(V1, 2, epochs=3, steps=30)
    with pytest.raises(HarnessError, match="--eval-every goes with a step budget"):
        trainer_budget(V1, 2, epochs=3, eval_every=5)


def test_both_sides_are_printed_with_the_time_ratio():
    ours = Side("10 epochs", "epoch 7", 0.5711, 0.5849, 0.5711, 0.5849, 12.0)
    theirs = Side("100 epochs", "epoch 34", 0.6124, 0.6307, 0.6124, 0.6307, 48.0)
    c = Comparison("abc", "fewshot", V1, "accuracy", 20, 436, 436, ours, theirs, [(2, 0.5)],
                   {"both": 200, "ours only": 55, "Trainer only": 75, "neither": 106}, "cpu")
    text = format_comparison(c)
    assert "job abc (fewshot): sst2, N = 20, seed 3, CE" in text
    lines = text.splitlines()
    assert next(x for x in lines if x.startswith("budget")).split() == ["budget", "10", "epochs", "100", "epochs"]
    assert next(x for x in lines if x.startswith("test accuracy")).split()[-2:] == ["58.5", "63.1"]
    assert next(x for x in lines if x.startswith("selected")).split()[-4:] == ["epoch", "7", "epoch", "34"]
    assert "Trainer / ours = 4.00x" in text and "Trainer only 75" in text
    assert c.to_dict()["spec"]["epochs"] == 10
