"""Data: loading a task's splits (Hub or local mirror) and the paper's few-shot protocol.

Source. By default splits come from the Hugging Face Hub through
`datasets.load_dataset(hub_path, hub_config, split=...)`. With `HARNESS_DATA_DIR` set (or a
`data_dir` argument) they come from the local mirror `<dir>/<task>/<split>.jsonl`, also loaded with
`datasets`, so nothing after loading knows the difference. Rows without an `idx` column get their
row number as idx. Every row is checked first (harness.protocol.rows: non-empty texts, a label the
task can take, an idx no other row of the split has), and each split's content digest is kept for
the job's data fingerprint (harness.protocol.fingerprint).

Protocol (the same for every run of a task: all splits below use the fixed PROTOCOL_SEED, never
the job's seed, and are stratified by label; STS-B by its label rounded to an integer):

* Tasks with a separate evaluation split (GLUE: validation / validation_matched; TREC: test):
  the evaluation split is cut into a test half (ceil(M/2) rows: SST-2 872 → 436) and the other
  half, from which min(spec.val_size, half) validation examples are drawn (SST-2: all 436;
  MNLI: 500 of 4,907). The training pool is the whole training split.
* Tasks whose data is a single split (MR, CR, MPQA, SUBJ: eval_split == train_split) and the
  test-only samples (yelp_polarity, amazon_polarity_sample: no train split): the one split is cut
  into a test half (ceil(M/2)), a validation reserve of min(500, floor(M/5)) rows, and the rest is
  the training pool (MR 10,662 → 5,331 / 500 / 4,831; Yelp 1,000 → 500 / 200 / 300). Validation is
  min(spec.val_size, reserve) of the reserve. The pool never depends on val_size, so the same seed
  samples the same training examples whatever the validation size.

Training sample (`spec.sampling`). `uniform` (the default, as the paper reads: "N examples
sampled from the training set"): the pool is permuted by rng(seed) and the first n taken, so the
sample depends only on (task, seed, n) and N = 20 is a subset of N = 100 for the same seed; a class
may then be rare or absent. `stratified` (as LM-BFF samples K per class): the same permutation, and
from it the first n // k examples of every one of the k classes; the n % k remaining examples go to
classes chosen by the same seeded stream (MNLI N = 20: 7/7/6). `per_class` = K asks for exactly K
of every class (the transfer protocol: 20 per class). The sample never depends on the loss, λ or
τ, so CE and CE+SCL jobs with the same seed train on the same examples. n = None (and no
per_class) = the whole pool. Each job records its sample's class counts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.errors import DataError, HarnessError
from harness.protocol.mirrors import HUB, mirror
from harness.protocol.rows import MISSING, check_ids, check_rows, read_jsonl
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import HUB_ROWS, TaskSpec, get_task

DATA_DIR_ENV = "HARNESS_DATA_DIR"
PROTOCOL_SEED = 20201102  # fixed per-task test/validation split (arXiv 2011.01403's month)
SAMPLE_SALT = 7919  # separates the training-sample stream from other uses of the job's seed
VAL_RESERVE_MAX = 500  # single-split tasks: validation reserve, the paper's "500 examples"
VAL_RESERVE_FRACTION = 0.2  # ... but at most this share of a small set (Yelp, Amazon samples)


@dataclass(frozen=True)
class Examples:
    """Rows of one source split, in a fixed order. All arrays have length len(self)."""

    split: str  # the source split the rows come from (for the tokenisation cache)
    rows: np.ndarray  # int64 positions in the source split
    idx: np.ndarray  # int64 the data set's own example ids
    labels: np.ndarray  # int64 class ids, or float32 scores for regression
    texts: tuple[tuple[str, ...], ...]  # one tuple of text columns per row

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: np.ndarray) -> Examples:
        positions = np.asarray(positions, dtype=np.int64)
        return Examples(self.split, self.rows[positions], self.idx[positions],
                        self.labels[positions], tuple(self.texts[i] for i in positions))


@dataclass(frozen=True)
class ProtocolSplits:
    test: Examples
    validation: Examples
    pool: Examples  # the training pool the job samples from
    source: str  # "hub" or the local folder
    files: dict[str, str]  # each split read -> its content digest (harness.protocol.fingerprint)


# ---- source -------------------------------------------------------------------------------
def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local mirror in use (argument, else $HARNESS_DATA_DIR, else ../shared/data beside the
    clone: harness.protocol.mirrors), or None for the Hub."""
    value = data_dir if data_dir is not None else mirror(DATA_DIR_ENV)
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise HarnessError(f"data folder {path} (from ${DATA_DIR_ENV}) does not exist "
                           f"(unset it, or set it to '{HUB}', to read from the Hugging Face Hub)")
    return path


def _source_name(data_dir: Path | None) -> str:
    return "hub" if data_dir is None else str(data_dir)


def load_split(task: str | TaskSpec, split: str, data_dir: str | Path | None = None):
    """One split of a task as a `datasets.Dataset`, every row checked (cached per process, and
    read again when the file changes)."""
    task = _as_task(task)
    source = _source_name(resolve_data_dir(data_dir))
    return _load_split(task, split, source, _stamp(task.name, source))[0]


def _as_task(task: str | TaskSpec) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else get_task(task)


def _stamp(task_name: str, source: str) -> tuple:
    """What the in-process caches of a task's data are keyed by besides its name: the size and
    modification time of each of its local files, so an edited file is never served from memory."""
    if source == "hub":
        return ()
    folder = Path(source) / task_name
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                        for p in folder.glob("*.jsonl") for st in [p.stat()]))


def source_splits(task: TaskSpec) -> tuple[str, ...]:
    """The splits of the task that the protocol reads: the evaluation split, and the training
    split where it is another one."""
    if task.train_split is not None and task.train_split != task.eval_split:
        return (task.eval_split, task.train_split)
    return (task.eval_split,)


@lru_cache(maxsize=32)
def _load_split(task: TaskSpec, split: str, source: str, stamp: tuple = ()):
    """(the split as a `datasets.Dataset`, what identifies its content): the sha256 of the
    mirror's file as read, or "hub:" and the Hub copy's `datasets` fingerprint."""
    import datasets

    if source == "hub":
        try:
            ds = datasets.load_dataset(task.hub_path, task.hub_config, split=split)
        except Exception as exc:  # offline, renamed data set, ...: say which and how to avoid it
            raise HarnessError(f"cannot load {task.hub_path}/{task.hub_config or ''} split {split} "
                               f"from the Hub ({type(exc).__name__}: {str(exc)[:200]}); set "
                               f"{DATA_DIR_ENV} to a local mirror") from exc
        columns = {c: ds[c] if c in ds.column_names else [MISSING] * len(ds)
                   for c in (*task.text_columns, "label")}
        where = lambda i: f"{task.hub_path} split {split} row {i}"  # noqa: E731
        check_rows(task, columns, where)
        if "idx" in ds.column_names:
            check_ids(ds["idx"], where, lambda i: f"row {i}")
        digest = f"hub:{getattr(ds, '_fingerprint', None) or 'unknown'}"  # the Hub copy's version
    else:
        path = Path(source) / task.name / f"{split}.jsonl"
        if not path.is_file():
            raise HarnessError(f"the local mirror has no {path}")
        columns, lines, digest = read_jsonl(path, (*task.text_columns, "label", "idx"))
        check_rows(task, columns, lambda i: f"{path}:{lines[i]}")
        if all(v is MISSING for v in columns["idx"]):
            del columns["idx"]
        else:
            for i, v in enumerate(columns["idx"]):
                if v is MISSING:
                    raise DataError(f"{path}:{lines[i]}: the row has no idx, while other rows have one")
                if not isinstance(v, int) or isinstance(v, bool):
                    raise DataError(f"{path}:{lines[i]}: idx {v!r} is not a whole number")
            check_ids(columns["idx"], lambda i: f"{path}:{lines[i]}", lambda i: f"line {lines[i]}")
        ds = datasets.Dataset.from_dict(columns)
    if "idx" not in ds.column_names:
        ds = ds.add_column("idx", list(range(len(ds))))
    return ds, digest


def _examples(task: TaskSpec, split: str, source: str, files: dict[str, str]) -> Examples:
    """The split's rows; its content digest goes into `files` (split -> digest)."""
    ds, files[split] = _load_split(task, split, source, _stamp(task.name, source))
    columns = [ds[c] for c in task.text_columns]
    labels = np.asarray(ds["label"], dtype=np.float32 if task.is_regression else np.int64)
    return Examples(split, np.arange(len(ds), dtype=np.int64), np.asarray(ds["idx"], dtype=np.int64),
                    labels, tuple(zip(*columns)))


# ---- fixed protocol splits ----------------------------------------------------------------
def _strata(task: TaskSpec, labels: np.ndarray) -> np.ndarray:
    return np.rint(labels).astype(np.int64) if task.is_regression else labels


def _stratified_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(len(strata)) whose every prefix keeps the label distribution.

    Each row gets a key (rank within its shuffled class + a uniform offset) / class size; sorting
    by it interleaves the classes proportionally, so any prefix is a stratified sample.
    """
    keys = np.empty(len(strata))
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        ranks = rng.permutation(len(members))
        keys[members] = (ranks + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


def protocol_splits(task: str | TaskSpec, val_size: int = 500,
                    data_dir: str | Path | None = None) -> ProtocolSplits:
    """The task's fixed test / validation / training-pool division (see the module docstring)."""
    task = _as_task(task)
    source = _source_name(resolve_data_dir(data_dir))
    return _protocol_splits(task, val_size, source, _stamp(task.name, source))


@lru_cache(maxsize=64)
def _protocol_splits(task: TaskSpec, val_size: int, source: str, stamp: tuple = ()) -> ProtocolSplits:
    # The division itself lives undecorated in _divide, where mutation testing reaches it
    # (scripts/mutation.py: mutmut leaves decorated functions alone).
    return _divide(task, val_size, source)


def _divide(task: TaskSpec, val_size: int, source: str) -> ProtocolSplits:
    files: dict[str, str] = {}
    evaluation = _examples(task, task.eval_split, source, files)
    rng = np.random.default_rng([PROTOCOL_SEED, len(evaluation)])
    order = _stratified_order(_strata(task, evaluation.labels), rng)
    n_test = math.ceil(len(order) / 2)
    test, rest = order[:n_test], order[n_test:]
    if task.train_split is not None and task.train_split != task.eval_split:
        validation = rest[:min(val_size, len(rest))]
        pool = _examples(task, task.train_split, source, files)
    else:  # one split holds everything: carve a validation reserve and a training pool from it
        reserve = _val_reserve(len(order))
        validation = rest[:min(val_size, reserve)]
        pool = evaluation.take(np.sort(rest[reserve:]))
    # Sorted positions: the protocol fixes which rows, not an order the training would depend on.
    return ProtocolSplits(evaluation.take(np.sort(test)), evaluation.take(np.sort(validation)),
                          pool, source, files)


def _val_reserve(rows: int) -> int:
    return min(VAL_RESERVE_MAX, int(rows * VAL_RESERVE_FRACTION))


# ---- the job's training sample -----------------------------------------------------------
def sample_size(spec: JobSpec, task: TaskSpec) -> int | None:
    """Training examples the spec asks for (None = the whole pool); `task` is the spec's."""
    if spec.per_class is not None:
        return spec.per_class * task.num_labels
    return spec.n


def sample_train(pool: Examples, n: int | None, seed: int, per_class: int | None = None,
                 task: TaskSpec | None = None, sampling: str = "uniform") -> Examples:
    """The job's training examples, a function of (pool, n, seed, per_class, sampling) only."""
    rng = np.random.default_rng([SAMPLE_SALT, seed])
    order = rng.permutation(len(pool))
    if per_class is not None or (sampling == "stratified" and n is not None):
        strata = _strata(task, pool.labels) if task is not None else pool.labels
        classes = np.unique(strata)
        if per_class is not None:
            wanted = np.full(len(classes), per_class)
        else:
            wanted = np.full(len(classes), n // len(classes))
            wanted[rng.permutation(len(classes))[:n % len(classes)]] += 1
        chosen = []
        for value, k in zip(classes, wanted):
            members = order[strata[order] == value][:k]
            if len(members) < k:
                raise HarnessError(f"class {value} has {len(members)} training examples, "
                                   f"fewer than the {k} a stratified sample needs")
            chosen.append(members)
        return pool.take(np.sort(np.concatenate(chosen)))
    if n is None:
        return pool
    if n > len(pool):
        raise HarnessError(f"N = {n} is larger than the training pool ({len(pool)} examples)")
    return pool.take(np.sort(order[:n]))


# ---- fast checks at enqueue time ----------------------------------------------------------
def check_task(task: TaskSpec) -> None:
    if task.train_split is None and task.eval_split is None:
        raise HarnessError(f"task {task.name} has no training data")


def _rows(task_name: str, split: str, source: str) -> int | None:
    """Row count of a split without loading it: lines of the local file, or the Hub table."""
    if source == "hub":
        return HUB_ROWS.get((task_name, split))
    path = os.path.join(source, task_name, f"{split}.jsonl")  # str, not Path: a hot path
    try:
        st = os.stat(path)  # one call: existence, and the key that keeps the count fresh
    except FileNotFoundError:
        raise HarnessError(f"task {task_name} has no {split} split in the local mirror ({path})") from None
    return _count_lines(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _count_lines(path: str, size: int, mtime_ns: int) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def train_pool_size(task: str | TaskSpec, data_dir: str | Path | None = None) -> int | None:
    """Size of the task's training pool under the protocol (None: unknown without loading)."""
    task = _as_task(task)
    check_task(task)
    source = _source_name(resolve_data_dir(data_dir))
    if task.train_split is not None and task.train_split != task.eval_split:
        return _rows(task.name, task.train_split, source)
    rows = _rows(task.name, task.eval_split, source)
    if rows is None:
        return None
    return rows - math.ceil(rows / 2) - _val_reserve(rows)


def check_spec_against_task(spec: JobSpec, task: TaskSpec | None = None) -> None:
    """Raise HarnessError (one line) if the task (the spec's, looked up if not given) cannot take
    the spec's loss or sampling."""
    task = task or get_task(spec.task)
    if spec.uses_scl and task.is_regression:
        raise HarnessError(f"CE+SCL is undefined for the regression task {task.name}: "
                           "use --losses ce")
    if spec.sampling == "stratified" and task.is_regression:
        raise HarnessError(f"stratified sampling needs classes; {task.name} is a regression task: "
                           "use --sampling uniform")
    if spec.per_class is not None:
        if task.is_regression:
            raise HarnessError(f"examples per class make no sense for the regression task {task.name}")
        if spec.n is not None and spec.n != spec.per_class * task.num_labels:
            raise HarnessError(f"N = {spec.n} disagrees with {spec.per_class} per class × "
                               f"{task.num_labels} classes")


def check_spec_against_data(spec: JobSpec, data_dir: str | Path | None = None) -> None:
    """Raise HarnessError (one line) if the task or its data cannot serve the spec: every split
    the protocol reads exists, and the pool holds N. Cached per task: fast."""
    task = get_task(spec.task)
    check_spec_against_task(spec, task)
    source = _source_name(resolve_data_dir(data_dir))
    if task.train_split is not None and task.train_split != task.eval_split:
        _rows(task.name, task.eval_split, source)  # raises if the mirror lacks it (train: below)
    wanted = sample_size(spec, task)
    pool = train_pool_size(task, data_dir)
    if pool is not None and pool <= 0:
        raise HarnessError(f"task {task.name} has no training examples under the protocol")
    if wanted is not None and pool is not None and wanted > pool:
        what = (f"{spec.per_class} per class × {task.num_labels} classes" if spec.per_class
                else f"N = {wanted}")
        raise HarnessError(f"{what} is larger than the {task.name} training pool "
                           f"({pool} examples)")
