"""What one job trains and evaluates on, from its spec: the protocol's splits of its task and the
job's training sample (harness.protocol.data says how both are drawn)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.protocol.data import Examples, check_task, protocol_splits, sample_size, sample_train
from harness.protocol.fingerprint import combine
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import TaskSpec, get_task


@dataclass(frozen=True)
class JobData:
    train: Examples
    validation: Examples
    test: Examples
    source: str
    sampling: str  # uniform | stratified | full
    pool_size: int
    files: dict[str, str]  # each split read -> its content digest (harness.protocol.fingerprint)

    @property
    def fingerprint(self) -> str:
        """What the job trained on: recorded with its result, compared with the mirror later."""
        return combine(self.files)

    def class_counts(self, task: TaskSpec) -> dict[str, int] | None:
        """Training examples per class (None for regression): {"0": 9, "1": 11}."""
        if task.is_regression:
            return None
        counts = np.bincount(self.train.labels.astype(np.int64), minlength=task.num_labels)
        return {str(k): int(v) for k, v in enumerate(counts)}


def prepare_data(spec: JobSpec, data_dir: str | Path | None = None,
                 task: TaskSpec | None = None) -> JobData:
    """Everything a job trains and evaluates on. `task` is the spec's task, resolved once by the
    caller (looked up here if not given) and handed down the protocol's functions."""
    task = task or get_task(spec.task)
    check_task(task)
    splits = protocol_splits(task, spec.val_size, data_dir)
    train = sample_train(splits.pool, sample_size(spec, task), spec.seed, spec.per_class, task,
                         spec.sampling)
    sampling = "full" if spec.n is None and spec.per_class is None else spec.sampling
    return JobData(train, splits.validation, splits.test, splits.source, sampling, len(splits.pool),
                   splits.files)
