"""The contract between the worker and what it runs for a job.

A runner is any callable `runner(spec, ctx) -> RunResult`; the real one is
`harness.training.finetune.fine_tune`. The worker owns the database: a runner never touches it, it only
reports progress through `ctx` and returns everything to be stored in one RunResult.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from harness.protocol.spec import JobSpec

if TYPE_CHECKING:  # not imported here: the queue reads RunResult without loading torch
    from harness.training.artifacts import Artifact
    from harness.noise.sets import NoiseSet

DEFAULT_RUNNER = "harness.training.finetune:fine_tune"


@dataclass
class Progress:
    phase: str  # "prepare" | "noise" | "train" | "eval"
    epoch: int = 0  # 1-based while training
    epochs: int = 0
    step: int = 0  # optimizer steps done in this job
    steps: int = 0  # total optimizer steps of this job
    loss: float | None = None  # running training loss
    eta_seconds: float | None = None


@dataclass
class RunContext:
    run_dir: Path  # runs/<job_id>/: log, resolved config, checkpoints
    device: str = "cpu"  # "cpu" or "cuda:N" (the worker has already selected the GPU)
    progress: Callable[[Progress], None] = lambda p: None
    should_stop: Callable[[], bool] = lambda: False  # True: raise JobInterrupted at the next step
    cache_dir: Path | None = None  # where tokenised data and noisy sets are cached
    # Other jobs start from this job's model (it is a transfer stage 1): save the selected
    # epoch's weights here and return their record in RunResult.artifact.
    save_model_dir: Path | None = None
    # spec.init_from's stored model, already checked against its recorded sha256 by the worker:
    # start from these weights instead of the pretrained ones.
    init_model_dir: Path | None = None
    init_model_sha256: str | None = None  # recorded in the resolved config


@dataclass
class RunResult:
    metric: str  # the task's metric name (accuracy | f1 | mcc | pearson)
    val_score: float  # metric on validation at the selected epoch
    test_score: float  # metric on test at the selected epoch
    val_accuracy: float | None
    test_accuracy: float | None
    best_epoch: int  # the epoch of the selected weights
    n_train: int
    n_test: int
    # Seconds spent training and evaluating: every epoch's training and validation, and the one
    # test pass; data, noise, tokens, model set-up and saving excluded. A job resumed from a
    # checkpoint counts its earlier attempts' epochs too (TrainState.seconds): the job's time.
    train_seconds: float
    scl_batch_size: int | None = None  # examples the SCL term sees per step (largest forward batch)
    # split, epoch, name, value[, step]: step-budget jobs key their validation rows by step too
    metrics: list[tuple] = field(default_factory=list)
    predictions: list[tuple[int, float, float]] = field(default_factory=list)  # example idx, label, prediction
    embeddings: np.ndarray | None = None  # float16, (n_test, hidden): test-set [CLS] vectors
    embedding_examples: list[int] = field(default_factory=list)
    embedding_labels: list[float] = field(default_factory=list)
    train_examples: list[int] = field(default_factory=list)  # idx of the training examples used
    sampling: str | None = None  # how they were drawn: uniform | stratified | full
    class_counts: dict[str, int] | None = None  # training examples per class (None: regression)
    config: dict[str, Any] = field(default_factory=dict)  # resolved configuration (versions excluded)
    noise_set: NoiseSet | None = None  # the back-translated training set used
    artifact: Artifact | None = None  # the saved model (ctx.save_model_dir)
    best_step: int | None = None  # a step budget's selected optimizer step (None: epoch protocol)


class Runner(Protocol):
    def __call__(self, spec: JobSpec, ctx: RunContext) -> RunResult: ...


def load_runner(path: str = DEFAULT_RUNNER) -> Runner:
    """Import 'package.module:function'."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
