"""`fine_tune` end to end on the real SST-2 mirror with the real paraphrase-MiniLM-L3-v2 (tiny N,
two epochs, max length 64), run on the CPU."""

import math

import numpy as np
import pytest
import torch

from harness.errors import JobInterrupted, PermanentJobError
from harness.training.finetune import fine_tune
from harness.training.runner import RunContext
from harness.protocol.spec import SMALL_MODEL, JobSpec

TINY = dict(task="sst2", n=24, seed=0, model=SMALL_MODEL, epochs=2, max_length=64, lr=1e-4,
            val_size=64, batch_size=8)


def spec(**kw) -> JobSpec:
    return JobSpec.make(**{**TINY, **kw})


def run(s: JobSpec, tmp_path, **kw):
    return fine_tune(s, RunContext(run_dir=tmp_path / s.job_id, **kw))


def comparable(r):
    metrics = [m for m in r.metrics if m[2] != "seconds"]  # wall-clock times differ, of course
    return (r.val_score, r.test_score, r.best_epoch, metrics, r.predictions, r.train_examples,
            r.embeddings.tobytes())


def test_a_tiny_job_end_to_end(tmp_path):
    seen = []
    s = spec(loss="ce+scl", lam=0.9, tau=0.3)
    r = run(s, tmp_path, progress=seen.append, cache_dir=tmp_path / "cache")
    assert r.metric == "accuracy" and r.test_accuracy == r.test_score and r.best_epoch in (1, 2)
    # the scores are what the stored predictions and per-epoch metrics say, not just any fraction
    assert r.test_score == pytest.approx(np.mean([y == yhat for _, y, yhat in r.predictions]))
    val = {epoch: v for split, epoch, name, v in r.metrics if (split, name) == ("validation", "accuracy")}
    assert sorted(val) == [1, 2] and r.val_score == pytest.approx(max(val.values()))
    assert r.val_score == pytest.approx(val[r.best_epoch])
    assert [(e, v) for split, e, name, v in r.metrics if (split, name) == ("test", "accuracy")] == [
        (r.best_epoch, pytest.approx(r.test_score))]
    assert r.n_train == 24 and len(r.train_examples) == 24 and r.n_test == 436
    assert len(r.predictions) == r.n_test
    assert {y for _, y, _ in r.predictions} == {0.0, 1.0}
    assert r.embeddings.dtype == np.float16 and r.embeddings.shape == (436, 384)
    assert r.embedding_examples == [i for i, _, _ in r.predictions]
    names = {(split, name) for split, _, name, _ in r.metrics}
    assert {("train", "loss"), ("train", "ce"), ("train", "scl"), ("validation", "accuracy"),
            ("test", "accuracy")} <= names
    assert all(math.isfinite(v) for *_, v in r.metrics)
    assert r.config["n_validation"] == 64 and r.config["scl_no_positive"] == "drop"
    assert r.config["data_source"].endswith("data") and r.config["model_path"].endswith("L3-v2")
    assert r.config["threads"] == torch.get_num_threads()  # the report's CPU-hours (analysis.cost)
    steps = [p for p in seen if p.phase == "train"]
    assert len(steps) == r.config["total_steps"] == 6 and steps[-1].step == 6
    assert not (tmp_path / s.job_id / "checkpoint.pt").exists()
    assert list((tmp_path / "cache" / "tokens").glob("*.npz"))  # on-disk token cache


# TREC's short questions (250 test examples) keep the multi-run tests cheap.
FAST = dict(task="trec", val_size=32)


def test_same_job_twice_is_identical(tmp_path):
    s = spec(loss="ce+scl", lam=0.9, tau=0.3, **FAST)
    assert comparable(run(s, tmp_path / "a")) == comparable(run(s, tmp_path / "b"))


def test_interrupt_and_resume(tmp_path):
    s = spec(epochs=2, **FAST)
    reference = fine_tune(s, RunContext(run_dir=tmp_path / "reference"), checkpoint="never")

    stop = {"now": False}

    def progress(p):
        if p.phase == "eval" and p.epoch == 1:
            stop["now"] = True  # asked to stop once epoch 1 is validated

    ctx = RunContext(run_dir=tmp_path / "run", progress=progress, should_stop=lambda: stop["now"])
    with pytest.raises(JobInterrupted):
        fine_tune(s, ctx, checkpoint="always")
    assert (tmp_path / "run" / "checkpoint.pt").exists()

    epochs_seen = []
    resumed = fine_tune(s, RunContext(run_dir=tmp_path / "run", progress=lambda p: epochs_seen.append(
        (p.phase, p.epoch))), checkpoint="always")
    assert resumed.config["resumed_from_epoch"] == 1
    assert min(e for phase, e in epochs_seen if phase == "train") == 2
    assert comparable(resumed) == comparable(reference)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_step_budget_that_ends_at_epoch_ends_is_the_epoch_protocol(tmp_path):
    """Protocol v2 with a budget of two passes, validating after each (N = 24, batch 8: 3 steps a
    pass), trains and selects exactly as the two-epoch job: same curve, same test predictions."""
    epochs = run(spec(epochs=2, **FAST), tmp_path / "epochs")
    steps = run(spec(steps=6, eval_every=3, **FAST), tmp_path / "steps")
    curve = lambda r: [(m[1], m[3]) for m in r.metrics if m[:3:2] == ("validation", "accuracy")]  # noqa: E731
    assert curve(steps) == curve(epochs) and len(curve(steps)) == 2
    assert [m[4] for m in steps.metrics if m[:3:2] == ("validation", "accuracy")] == [3, 6]
    assert (steps.val_score, steps.test_score, steps.predictions) == (
        epochs.val_score, epochs.test_score, epochs.predictions)
    assert steps.best_step == 3 * epochs.best_epoch and epochs.best_step is None


def test_a_step_budget_stops_inside_a_pass_and_validates_every_k_steps(tmp_path):
    seen = []
    r = run(spec(steps=7, eval_every=3, **FAST), tmp_path, progress=seen.append)
    trained = [p.step for p in seen if p.phase == "train"]
    assert trained == list(range(1, 8))  # 7 steps: two passes and one step of the third
    val = {m[4]: m[3] for m in r.metrics if m[:3:2] == ("validation", "accuracy")}
    assert sorted(val) == [3, 6, 7]
    best = max(val.values())
    assert r.best_step == min(s for s, v in val.items() if v == best)  # ties: the earlier step
    assert r.val_score == pytest.approx(best)
    assert r.config["total_steps"] == 7 and r.config["epochs"] == 3 and r.config["eval_every"] == 3
    assert r.config["selection"] == "best validation score, ties → earlier step"
    assert [m[1] for m in r.metrics if m[:3:2] == ("train", "loss")] == [1, 2, 3]


def test_non_finite_loss_fails_the_job(tmp_path):
    with pytest.raises(PermanentJobError, match=r"non-finite loss at epoch \d+ step \d+"):
        run(spec(lr=1e30, epochs=3, **FAST), tmp_path)


def test_ce_scl_on_regression_is_refused(tmp_path):
    with pytest.raises(PermanentJobError, match="regression"):
        run(JobSpec.make(**{**TINY, "task": "stsb", "loss": "ce+scl", "lam": 0.5}), tmp_path)


def test_regression_job_runs(tmp_path):
    r = run(JobSpec.make(**{**TINY, "task": "stsb", "epochs": 1, "val_size": 32}), tmp_path)
    assert r.metric == "pearson" and -1 <= r.test_score <= 1 and r.test_accuracy is None
    assert r.n_test == 750 and len(r.predictions) == 750
    assert any(name == "spearman" for _, _, name, _ in r.metrics)


def test_missing_model_is_a_clear_error(tmp_path):
    from harness.errors import HarnessError
    from harness.training.models import load_pretrained

    with pytest.raises(HarnessError, match="not found"):
        load_pretrained("nobody/no-such-model-xyz")


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    MemoryError(),
])
def test_a_batch_that_does_not_fit_fails_the_job_with_that_reason(error, tmp_path, monkeypatch):
    import harness.training.finetune as ft

    def no_room(*args, **kwargs):
        raise error

    monkeypatch.setattr(ft, "train_step", no_room)
    with pytest.raises(PermanentJobError, match=r"^training: batch 8 does not fit in memory on cpu"):
        run(spec(epochs=1, **FAST), tmp_path)


def test_other_runtime_errors_stay_transient(tmp_path, monkeypatch):
    import harness.training.finetune as ft

    def broken(*args, **kwargs):
        raise RuntimeError("a transient driver hiccup")

    monkeypatch.setattr(ft, "train_step", broken)
    with pytest.raises(RuntimeError, match="hiccup"):
        run(spec(epochs=1, **FAST), tmp_path)


def test_the_contrastive_batch_is_recorded(tmp_path):
    r = run(spec(epochs=1, n=12, batch_size=16, loss="ce+scl", lam=0.9, tau=0.3, **FAST), tmp_path)
    assert r.scl_batch_size == 12  # the whole (smaller) training set: one forward batch
    assert r.config["scl_batch_size"] == 12 and r.config["gradient_accumulation"] == 1
    assert ("train", None, "scl_batch_size", 12) in r.metrics


def test_ce_and_ce_scl_jobs_of_one_seed_train_on_the_same_batches(tmp_path, monkeypatch):
    """The batches are drawn from (seed, epoch) and the examples only, never the loss: a CE and a
    CE+SCL job of one seed see the same batches in the same order, and `fixed` keeps the same
    batch sets in every epoch. The result row records how batches and the sample were made."""
    import harness.training.finetune as ft

    seen: list[list[tuple]] = []
    real = ft.train_batches

    def spy(lengths, batch_size, mode, seed, epoch):
        out = real(lengths, batch_size, mode, seed, epoch)
        seen[-1].append((mode, epoch, [tuple(b.tolist()) for b in out]))
        return out

    monkeypatch.setattr(ft, "train_batches", spy)
    results = []
    for loss in ("ce", "ce+scl"):
        seen.append([])
        results.append(run(spec(loss=loss, **FAST), tmp_path / loss))
    assert seen[0] == seen[1] and len(seen[0]) == 2
    (mode, _, first), (_, _, second) = seen[0]
    assert mode == "fixed" and set(first) == set(second)
    for r in results:
        assert r.sampling == "uniform" and sum(r.class_counts.values()) == 24
        assert r.config["batching"] == "fixed" and r.config["class_counts"] == r.class_counts


def test_loading_a_model_writes_nothing_to_the_terminal(capfd):
    """A worker loads a model per job: transformers' "Loading weights" bar would interleave with
    the worker's own display and fill a quiet worker's log; and the setting is left as found."""
    from transformers.utils import logging as hf_logging

    from harness.training import models
    from paths import SMALL_MODEL_PATH

    capfd.readouterr()
    models._load(SMALL_MODEL, str(SMALL_MODEL_PATH))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert hf_logging.is_progress_bar_enabled()
