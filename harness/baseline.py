"""`harness baseline`: a finished job trained again by a plain Hugging Face `Trainer`, side by side.

Our CE numbers are only as good as our training loop. This takes a finished job, rebuilds the
examples it trained and was tested on (harness.training.inputs; the training ids are checked
against `train_examples`, the test ids against its stored predictions), and fine-tunes
`AutoModelForSequenceClassification` from the same pretrained model with the stock `Trainer` and
a standard recipe: AdamW (torch), the job's learning rate, batch size, weight decay and warm-up,
linear decay, validation on the same examples every epoch (or every K steps), the best
checkpoint's weights kept (`load_best_model_at_end`; ties keep the earlier one, as ours do), then
tested once. It shares none of our loop's code: not the batching, the model build, the packed
forward pass or the evaluation path. The Trainer always trains with cross-entropy; for a CE+SCL
job it is the CE reference of the same examples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.errors import HarnessError
from harness.hf_trainer import accelerate_device, quiet_transformers, trainer_arguments, trainer_dataset
from harness.protocol.paper import LOSS_LABELS
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import get_task
from harness.runtime.device import precision
from harness.status import find_job
from harness.store import db
from harness.store.packing import unpack_predictions
from harness.training.evaluate import predictions, task_metrics
from harness.training.inputs import prepare_data
from harness.training.models import resolve_model

EVAL_BATCH_SIZE = 64  # the Trainer's evaluation batch (its default, 8, is slow on a CPU)
RECIPE = ("AutoModelForSequenceClassification + transformers.Trainer: cross-entropy, AdamW (torch), "
          "linear warm-up and decay, the best validation checkpoint kept")


@dataclass(frozen=True)
class Side:
    """One training of the job's examples: ours (as stored) or the Trainer's."""
    budget: str  # "10 epochs", "200 steps"
    selected: str  # the checkpoint validation chose: "epoch 7", "step 120"
    val_score: float
    test_score: float
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float  # training and evaluation (ours: results.train_seconds)


@dataclass(frozen=True)
class Comparison:
    job_id: str
    grid: str
    spec: JobSpec
    metric: str  # the task's metric (val_score, test_score)
    n_train: int
    n_validation: int
    n_test: int
    ours: Side
    trainer: Side
    history: list[tuple[int, float]]  # the Trainer's (optimizer step, validation score) per evaluation
    # test examples by who got them right: both, ours only, the Trainer's only, neither
    test_agreement: dict[str, int] | None
    device: str

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "spec": self.spec.canonical()}


@dataclass(frozen=True)
class StoredJob:
    """What the database holds of a finished job that the baseline needs."""
    job_id: str
    grid: str
    spec: JobSpec
    result: dict  # its results row
    train_examples: list[int]
    test_predictions: tuple[np.ndarray, np.ndarray] | None  # (example ids, predictions)


def stored_job(engine: Engine, job: str) -> StoredJob:
    """The finished job `job` (an id or a unique prefix): its spec, result row, training example
    ids and test predictions. A job that is not finished, or not one the baseline can re-train
    (back-translated data, a transfer job's stage-1 start), is refused in one line."""
    job_id = find_job(engine, job)
    r, te, tp = db.results, db.train_examples, db.test_predictions
    with db.connect(engine) as conn:
        result = conn.execute(sa.select(r).where(r.c.job_id == job_id)).mappings().first()
        if result is None:
            status = conn.execute(sa.select(db.jobs.c.status).where(db.jobs.c.id == job_id)).scalar()
            raise HarnessError(f"job {job_id} has no result (status {status}): the baseline re-trains "
                               "finished jobs")
        examples = conn.execute(sa.select(te.c.examples).where(te.c.job_id == job_id)).scalar()
        packed = conn.execute(sa.select(tp).where(tp.c.job_id == job_id)).mappings().first()
    spec = JobSpec.from_json(result["spec"])
    if spec.noise > 0:
        raise HarnessError(f"job {job_id} trained on back-translated copies (noise T = {spec.noise:g}); "
                           "the baseline re-trains jobs on clean examples only")
    if spec.init_from is not None:
        raise HarnessError(f"job {job_id} starts from job {spec.init_from}'s fine-tuned model; the "
                           "baseline starts from the pretrained model only")
    if examples is None:
        raise HarnessError(f"job {job_id} has no stored training examples (train_examples)")
    test = None
    if packed is not None:
        ids, _, preds = unpack_predictions(packed)
        test = (ids, preds)
    return StoredJob(job_id, result["grid"], spec, dict(result), json.loads(examples), test)


def trainer_budget(spec, steps_per_epoch: int, epochs: int | None = None, steps: int | None = None,
                   eval_every: int | None = None) -> dict:
    """The Trainer's budget and validation schedule (TrainingArguments fields, and `total_steps`):
    `epochs` (validating every epoch) or `steps` (validating every `eval_every` steps, default
    one epoch's worth, and at the last step) when given, else the job's own: its step budget
    (spec.steps, spec.eval_every) if it has one, else its epochs."""
    if epochs is not None and steps is not None:
        raise HarnessError("give --epochs or --steps, not both")
    if eval_every is not None and epochs is not None:
        raise HarnessError("--eval-every goes with a step budget (--steps), not --epochs")
    if epochs is None and steps is None:
        steps = getattr(spec, "steps", None)  # a step budget (protocol v2) or None
        if steps is None:
            epochs = spec.epochs
        elif eval_every is None:
            eval_every = getattr(spec, "eval_every", None)
    if steps is not None:
        every = eval_every or steps_per_epoch
        return dict(max_steps=steps, eval_strategy="steps", eval_steps=every, save_strategy="steps",
                    save_steps=every, total_steps=steps)
    return dict(num_train_epochs=epochs, eval_strategy="epoch", save_strategy="epoch",
                total_steps=epochs * steps_per_epoch)


def run_baseline(engine: Engine, job: str, *, epochs: int | None = None, steps: int | None = None,
                 eval_every: int | None = None, device: str = "cpu",
                 data_dir: str | Path | None = None) -> Comparison:
    """Train the finished job `job`'s examples with a plain Trainer (module docstring) and return
    its scores beside the job's stored ones. epochs / steps / eval_every: the Trainer's budget
    (default: the job's, see trainer_budget). device: "cpu" or "cuda:N"."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    from transformers import Trainer, set_seed
    from transformers.trainer_callback import PrinterCallback

    stored = stored_job(engine, job)
    spec, task = stored.spec, get_task(stored.spec.task)
    data = prepare_data(spec, data_dir, task)
    _check_examples(stored, data)
    steps_per_epoch = math.ceil(len(data.train) / spec.batch_size)
    budget = trainer_budget(spec, steps_per_epoch, epochs, steps, eval_every)
    total_steps = budget.pop("total_steps")
    dev = torch.device(device)
    path = resolve_model(spec.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    label_dtype = np.float32 if task.is_regression else np.int64
    train, val, test = (trainer_dataset(x, tokenizer, spec.max_length, label_dtype)
                        for x in (data.train, data.validation, data.test))
    seed = spec.effective_train_seed

    def metrics(p):
        return task_metrics(task, p.label_ids, p.predictions)

    with tempfile.TemporaryDirectory() as out, accelerate_device(dev), quiet_transformers():
        set_seed(seed)  # the head's draw
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels)
        started = time.perf_counter()  # training and evaluation, as ours count (train_seconds)
        args = trainer_arguments(
            dev, output_dir=out, per_device_train_batch_size=spec.batch_size,
            per_device_eval_batch_size=EVAL_BATCH_SIZE, learning_rate=spec.lr,
            weight_decay=spec.weight_decay, warmup_steps=int(spec.warmup_ratio * total_steps),
            lr_scheduler_type="linear", optim="adamw_torch", seed=seed, **budget,
            load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True,
            save_total_limit=1, save_only_model=True, logging_strategy="no", report_to=[],
            disable_tqdm=True, use_cpu=dev.type == "cpu", bf16=precision(dev)["dtype"] == "bfloat16")
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics)
        trainer.remove_callback(PrinterCallback)  # a line per evaluation; format_comparison says what counts
        trainer.train()
        best_step = trainer.state.best_global_step
        history = [(int(h["step"]), float(h["eval_score"])) for h in trainer.state.log_history
                   if "eval_score" in h]
        test_logits = trainer.predict(test).predictions
        seconds = time.perf_counter() - started
        # validation again, untimed: the kept weights must score what the selection saw
        val_logits = trainer.predict(val).predictions
    val_m = task_metrics(task, data.validation.labels, val_logits)
    test_m = task_metrics(task, data.test.labels, test_logits)
    if "num_train_epochs" in budget:
        budget_text = _count(budget["num_train_epochs"], "epoch")
        selected = f"epoch {math.ceil(best_step / steps_per_epoch)}"
    else:
        budget_text, selected = _count(budget["max_steps"], "step"), f"step {best_step}"
    theirs = Side(budget_text, selected, val_m["score"], test_m["score"], val_m.get("accuracy"),
                  test_m.get("accuracy"), seconds)
    agreement = _agreement(stored, data.test.idx, data.test.labels, predictions(task, test_logits), task)
    return Comparison(stored.job_id, stored.grid, spec, task.metric, len(data.train), len(data.validation),
                      len(data.test), _ours(stored), theirs, history, agreement, str(dev))


def _check_examples(stored: StoredJob, data) -> None:
    """The rebuilt examples are the job's: the same training ids as `train_examples`, and the
    same test ids as its stored predictions (else the data changed since it ran)."""
    got = sorted(int(i) for i in data.train.idx)
    if got != sorted(stored.train_examples):
        differ = len(set(got) ^ set(stored.train_examples))
        raise HarnessError(f"job {stored.job_id} trained on other examples than the data give now "
                           f"({differ} ids differ from its train_examples): the data set changed since it ran")
    ids = None if stored.test_predictions is None else stored.test_predictions[0]
    n_test = stored.result["n_test"]
    if ids is not None:
        differ = len(set(ids.tolist()) ^ set(data.test.idx.tolist()))
    else:  # no stored predictions: the count is all there is to check
        differ = 0 if n_test is None else abs(n_test - len(data.test))
    if differ:
        raise HarnessError(f"job {stored.job_id} was tested on other examples than the data give now "
                           f"({differ} test examples differ): the data set changed since it ran")


def _ours(stored: StoredJob) -> Side:
    r, spec = stored.result, stored.spec
    steps = getattr(spec, "steps", None)
    if steps is not None:
        budget, best = _count(steps, "step"), r.get("best_step")
        selected = "step ?" if best is None else f"step {best}"
    else:
        budget, selected = _count(spec.epochs, "epoch"), f"epoch {r['best_epoch']}"
    return Side(budget, selected, r["val_score"], r["test_score"], r["val_accuracy"], r["test_accuracy"],
                r["train_seconds"])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _agreement(stored: StoredJob, ids, labels, theirs, task) -> dict[str, int] | None:
    """Test examples by who predicted them right (classification, with our stored predictions)."""
    if stored.test_predictions is None or task.is_regression:
        return None
    ours = dict(zip(stored.test_predictions[0].tolist(), stored.test_predictions[1].tolist()))
    a = np.array([ours[int(i)] for i in ids]) == labels
    b = np.asarray(theirs) == labels
    return {"both": int((a & b).sum()), "ours only": int((a & ~b).sum()),
            "Trainer only": int((~a & b).sum()), "neither": int((~a & ~b).sum())}


def format_comparison(c: Comparison) -> str:
    """Both trainings of the job's examples, side by side."""
    s = c.spec
    n = "full data" if s.n is None else f"N = {s.n}"
    head = [f"job {c.job_id} ({c.grid}): {s.task}, {n}, seed {s.seed}, {LOSS_LABELS.get(s.loss, s.loss)}; {s.model}",
            f"the job's {c.n_train} training examples (its train_examples), {c.n_validation} validation "
            f"and {c.n_test} test examples; lr {s.lr:g}, batch {s.batch_size}, weight decay "
            f"{s.weight_decay:g}, warm-up {s.warmup_ratio:g}, max length {s.max_length}",
            f"Trainer: {RECIPE}; on {c.device}"]
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}"
    rows = [("", "ours (harness)", "Trainer"), ("budget", c.ours.budget, c.trainer.budget),
            ("selected on validation", c.ours.selected, c.trainer.selected),
            (f"validation {c.metric}", pct(c.ours.val_score), pct(c.trainer.val_score)),
            (f"test {c.metric}", pct(c.ours.test_score), pct(c.trainer.test_score))]
    if c.metric != "accuracy" and c.ours.test_accuracy is not None:
        rows += [("validation accuracy", pct(c.ours.val_accuracy), pct(c.trainer.val_accuracy)),
                 ("test accuracy", pct(c.ours.test_accuracy), pct(c.trainer.test_accuracy))]
    rows.append(("train + evaluation seconds", f"{c.ours.seconds:.1f}", f"{c.trainer.seconds:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = head + [""] + ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"time: Trainer / ours = {c.trainer.seconds / c.ours.seconds:.2f}x (ours: as stored by "
                 "its worker, on that machine and load)")
    if c.test_agreement:
        lines.append("test examples right: " + ", ".join(f"{k} {v}" for k, v in c.test_agreement.items()))
    return "\n".join(lines)
