"""`fine_tune(spec, ctx) -> RunResult`: one job, read top to bottom.

Phases: data (protocol splits + the seed's sample) → tokens (cached) → model (cached pretrained
weights, head drawn with the job's seed) → train, validating every epoch and keeping the best
epoch's weights (ties → the earlier epoch) → test the selected weights once.

The objective is the paper's `(1 − λ)·CE + λ·SCL` on the final-layer [CLS] vector, taken from the
same forward pass as the logits. CE jobs still log the SCL value of their batches (detached, τ =
SCL_MONITOR_TAU) as a diagnostic; it never enters their loss.

The SCL term sees only the examples of one forward batch: there is no gradient accumulation, so the
contrastive batch is the batch size (or the training set, if smaller), recorded as
`scl_batch_size`. A training batch that does not fit in memory fails the job permanently, with that
reason (evaluation halves its batch first), unless other processes share the GPU: then the job is
retried, as a neighbour may have taken the memory.

Transfer (spec.init_from): the worker passes the stage-1 model's folder (ctx.init_model_dir); the
model is built from the pretrained cache as usual and the stored weights are copied over it, the
classification head too when the label counts agree (else the head stays the job's seeded draw;
`init_head` in the resolved config says which). A job others start from (ctx.save_model_dir) saves
its selected epoch's weights there, and checkpoints every epoch so that it resumes if stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.training import artifacts
from harness.training.batching import MEGA_BATCHES, collate, encode, train_batches
from harness.training.checkpoint import CHECKPOINT_MIN_EPOCH_SECONDS, Checkpointer, TrainState
from harness.protocol.data import PROTOCOL_SEED, Examples
from harness.training.inputs import JobData, prepare_data
from harness.runtime.device import (OutOfMemory, SharedDeviceOutOfMemory, autocast_for, is_out_of_memory,
                            precision, shares_gpu)
from harness.errors import JobInterrupted, PermanentJobError
from harness.training.evaluate import (EVAL_BATCH_SIZE, eval_batch_size, eval_batch_tokens, predict, predictions,
                              task_metrics)
from harness.training.loss import NO_POSITIVE_HANDLING, normalize, supervised_contrastive_loss
from harness.training.models import build_model, forward, load_pretrained, model_build
from harness.training.packed import packed_encoder
from harness.training.packed import supported as packed_supported
from harness.training.runner import Progress, RunContext, RunResult
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import TaskSpec, get_task

from harness.protocol.paper import PAPER_TAU as SCL_MONITOR_TAU  # τ of the SCL value CE jobs log (not optimise)
TRAIN_FORWARDS = ("packed", "full")  # harness.training.packed, or the model's own forward pass
CHECKPOINT_POLICIES = ("auto", "always", "never")  # auto: full-data jobs, jobs others start from, or epochs > 60 s


def compute_loss(model, batch: dict[str, torch.Tensor], labels: torch.Tensor, spec: JobSpec,
                 task: TaskSpec, packed: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass → (loss, ce, scl). Logits and Φ(x) come from the same forward; `packed`:
    without padding and with the last layer for the first token only (harness.training.packed)."""
    with packed_encoder(model, batch["attention_mask"]) if packed else contextlib.nullcontext():
        logits, cls = forward(model, batch)
    logits = logits.float()
    if task.is_regression:
        ce = F.mse_loss(logits.squeeze(-1), labels)
        scl = ce.new_zeros(())
    else:
        ce = F.cross_entropy(logits, labels)
        z = normalize(cls)
        if spec.uses_scl:
            scl = supervised_contrastive_loss(z, labels, spec.tau, spec.scl_reduction)
        else:
            scl = supervised_contrastive_loss(z.detach(), labels, SCL_MONITOR_TAU)
    loss = (1 - spec.lam) * ce + spec.lam * scl
    return loss, ce, scl


def train_step(model, optimizer, scheduler, batch, labels, spec: JobSpec, task: TaskSpec,
               autocast=contextlib.nullcontext, where: str = "", packed: bool = False) -> torch.Tensor:
    """One optimisation step; returns [loss, ce, scl] (float64, CPU) of the batch.

    A non-finite loss fails the job (PermanentJobError) before the optimizer touches the weights.
    """
    with autocast():
        loss, ce, scl = compute_loss(model, batch, labels, spec, task, packed)
    parts = torch.stack([loss.detach(), ce.detach(), scl.detach()]).double().cpu()
    if not torch.isfinite(parts[0]):  # a sync point per step; the loss is logged anyway
        raise PermanentJobError(f"non-finite loss at {where or 'a training step'}")
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return parts


def make_optimizer(model, spec: JobSpec, fused: bool = True) -> tuple[torch.optim.Optimizer, bool]:
    """AdamW, no weight decay on biases and LayerNorm weights; fused where the build allows.

    Returns the optimizer and whether it is the fused one."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if not fused:
        return torch.optim.AdamW(groups, lr=spec.lr), False
    try:
        return torch.optim.AdamW(groups, lr=spec.lr, fused=True), True
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/build
        return torch.optim.AdamW(groups, lr=spec.lr), False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def fine_tune(spec: JobSpec, ctx: RunContext, *, checkpoint: str = "auto",
              data_dir: str | Path | None = None, fused: bool = True,
              eval_mode: str = "fast", train_forward: str = "packed") -> RunResult:
    """Fine-tune `spec.model` on `spec.task` as the spec says; see the module docstring.

    checkpoint: after each epoch but the last, "auto" (see _checkpoint_due), "always" or "never".
        fused exists for the benchmark's ablation; eval_mode "legacy" selects the evaluation
        path the campaign benchmark compares against (harness.training.evaluate.predict), and
        train_forward "full" the model's own forward pass in training (else harness.training.packed,
        where the model allows it: the same values up to the last bits, at lower cost).
    """
    if checkpoint not in CHECKPOINT_POLICIES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_POLICIES}")
    if train_forward not in TRAIN_FORWARDS:
        raise ValueError(f"train_forward must be one of {TRAIN_FORWARDS}")
    spec.validate_fields()  # a job queued before a bound existed (τ, T) fails with its reason
    task = get_task(spec.task)
    if spec.uses_scl and task.is_regression:
        raise PermanentJobError(f"CE+SCL is undefined for the regression task {task.name}")
    device = torch.device(ctx.device)
    seed = spec.effective_train_seed
    setup_started = time.perf_counter()
    ctx.progress(Progress("prepare", epochs=spec.epochs))  # (a step budget's passes: known below)

    # ---- data and tokens ----------------------------------------------------------------
    data = prepare_data(spec, data_dir, task)
    train, noise_set = data.train, None
    if spec.noise > 0:
        ctx.progress(Progress("noise", epochs=spec.epochs))
        train, noise_set = _noisy_train(spec, train, ctx)
    pre = load_pretrained(spec.model)
    tok = functools.partial(encode, pre.tokenizer, pre.tokenizer_id, task.name, max_length=spec.max_length,
                            cache_dir=ctx.cache_dir)
    enc_train, enc_val, enc_test = tok(train), tok(data.validation), tok(data.test)
    noise_tokens = {} if noise_set is None else _noise_token_change(tok(data.train), enc_train)
    # examples cut to max_length, per split: recorded (metrics and config), never silent
    truncated = {"train": enc_train.truncated, "validation": enc_val.truncated, "test": enc_test.truncated}
    label_dtype = torch.float32 if task.is_regression else torch.long
    train_labels = torch.as_tensor(train.labels, dtype=label_dtype)

    # ---- model and optimisation -----------------------------------------------------------
    seed_everything(seed)
    model = build_model(spec.model, task.num_labels, seed, device)
    init_head = _start_from_stored_model(model, spec, ctx)  # transfer only; else None
    model.train()
    packed = train_forward == "packed" and packed_supported(model)
    optimizer, is_fused = make_optimizer(model, spec, fused)
    plan = StepPlan.of(spec, len(train))
    scheduler = plan.linear_schedule(optimizer)
    autocast, _ = autocast_for(device)
    # A job stopped after a checkpointed epoch resumes after it; any other job starts afresh.
    ckpt = Checkpointer(Path(ctx.run_dir), spec.job_id)
    state = ckpt.load(model, optimizer, scheduler, device) or TrainState()
    resumed_from = state.epoch

    # ---- train ------------------------------------------------------------------------------
    scl_batch_size = None if task.is_regression else min(spec.batch_size, len(train))
    keep_model = ctx.save_model_dir is not None
    def _validate(state: TrainState, model, epoch: int, step: int, loss: float) -> None:
        """The selection pass: validation rows only, never test rows; keeps the best weights."""
        ctx.progress(Progress("eval", epoch, plan.epochs, step, plan.total_steps, loss))
        val_started = time.perf_counter()
        logits, _ = predict(model, enc_val, device, autocast, phase="validation", mode=eval_mode)
        scores = task_metrics(task, data.validation.labels, logits)
        at = (step,) if plan.by_steps else ()  # step-budget jobs key their validation rows by step too
        state.metrics.append(("validation", epoch, "seconds", time.perf_counter() - val_started, *at))
        state.metrics += [("validation", epoch, k, v, *at) for k, v in scores.items() if k != "score"]
        _keep_if_best(state, epoch, scores, model, step)

    started = time.perf_counter()
    # Phase times (split "seconds" rows, like training's): the campaign benchmark reads them.
    state.metrics.append(("setup", None, "seconds", started - setup_started))
    with _memory_errors(spec, device):  # a batch that does not fit fails the job, with that reason
        step = state.epoch * plan.steps_per_epoch
        epoch = state.epoch
        while step < plan.total_steps:
            epoch += 1
            epoch_started = time.perf_counter()
            sums, seen = torch.zeros(3, dtype=torch.float64), 0
            # the epoch's batches: a function of (seed, epoch), so resumable and shared by CE/CE+SCL
            for positions in train_batches(enc_train.lengths, spec.batch_size, spec.batching, seed, epoch):
                if step == plan.total_steps:  # a step budget can end inside an epoch
                    break
                if ctx.should_stop():
                    raise JobInterrupted(f"stop requested at epoch {epoch} step {step + 1}")
                batch = collate(enc_train, positions, device)
                labels = train_labels[positions].to(device, non_blocking=True)
                parts = train_step(model, optimizer, scheduler, batch, labels, spec, task, autocast,
                                   where=f"epoch {epoch} step {step + 1}", packed=packed)
                step += 1
                sums += parts * len(positions)
                seen += len(positions)
                elapsed = time.perf_counter() - started
                done_here = step - resumed_from * plan.steps_per_epoch
                ctx.progress(Progress("train", epoch, plan.epochs, step, plan.total_steps, float(parts[0]),
                                      elapsed / done_here * (plan.total_steps - step)))
                if plan.validates_after_step(step):
                    _validate(state, model, epoch, step, float(parts[0]))
            means = (sums / max(seen, 1)).tolist()
            epoch_train_seconds = time.perf_counter() - epoch_started  # validations included below
            for name, value in zip(("loss", "ce", "scl"), means):
                state.metrics.append(("train", epoch, name, value))
            if plan.validates_after_epoch:
                epoch_train_seconds = time.perf_counter() - epoch_started  # without its validation
                _validate(state, model, epoch, step, means[0])
            state.metrics.append(("train", epoch, "seconds", epoch_train_seconds))
            state.epoch = epoch
            state.seconds += time.perf_counter() - epoch_started
            if (plan.validates_after_epoch and epoch < spec.epochs
                    and _checkpoint_due(checkpoint, spec, keep_model, epoch_train_seconds)):
                ckpt.save(state, model, optimizer, scheduler, device)

        # ---- test the selected epoch once ------------------------------------------------------
        test_started = time.perf_counter()
        ctx.progress(Progress("eval", state.best_epoch, plan.epochs, step, plan.total_steps))
        model.load_state_dict(state.best_weights)
        logits, embeddings = predict(model, enc_test, device, autocast, with_embeddings=True, phase="test",
                                     mode=eval_mode)
    test = task_metrics(task, data.test.labels, logits)
    state.metrics += [("test", state.best_epoch, k, v) for k, v in test.items() if k != "score"]
    if scl_batch_size is not None:
        state.metrics.append(("train", None, "scl_batch_size", scl_batch_size))
    state.metrics += [(split, None, "truncated", k) for split, k in truncated.items()]
    state.metrics += [("train", None, name, value) for name, value in noise_tokens.items()]
    state.seconds += time.perf_counter() - test_started
    state.metrics.append(("test", state.best_epoch, "seconds", time.perf_counter() - test_started))
    artifact = None
    if keep_model:  # the selected epoch's weights, for the jobs that start from this one
        artifact = artifacts.save_model(model, Path(ctx.save_model_dir), dict(
            job_id=spec.job_id, model=spec.model, task=spec.task, num_labels=task.num_labels,
            best_epoch=state.best_epoch, val_score=state.best_score))
    ckpt.delete()

    config = _resolved_config(spec, ctx, task, data, n_train=len(train), device=device, plan=plan,
                              is_fused=is_fused, eval_mode=eval_mode, packed=packed, model_path=pre.path,
                              checkpoint=checkpoint, resumed_from=resumed_from,
                              scl_batch_size=scl_batch_size, init_head=init_head, artifact=artifact,
                              truncated=truncated)
    return RunResult(
        metric=task.metric, val_score=state.best_score, test_score=test["score"],
        val_accuracy=state.best_accuracy, test_accuracy=test.get("accuracy"),
        best_epoch=state.best_epoch, best_step=state.best_step if plan.by_steps else None,
        n_train=len(train), n_test=len(data.test),
        train_seconds=state.seconds, scl_batch_size=scl_batch_size, metrics=state.metrics,
        predictions=[(int(i), float(y), float(p)) for i, y, p in
                     zip(data.test.idx, data.test.labels, predictions(task, logits))],
        embeddings=embeddings, embedding_examples=[int(i) for i in data.test.idx],
        embedding_labels=[float(y) for y in data.test.labels],
        train_examples=[int(i) for i in data.train.idx], sampling=data.sampling,
        class_counts=data.class_counts(task), config=config,
        noise_set=noise_set, artifact=artifact)


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """A job's optimizer steps: one per training batch, the first warmup_steps of them warming up
    the linear schedule. The epoch protocol runs `epochs` passes and validates after each; a step
    budget (spec.steps, protocol v2) runs exactly that many steps, passing over the data as often
    as they take (the last pass may stop inside an epoch), and validates every `eval_every` steps
    and after the last."""
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: int  # passes over the data (the last one partial under a step budget)
    eval_every: int | None = None  # None: after every epoch

    @classmethod
    def of(cls, spec: JobSpec, n_train: int) -> StepPlan:
        steps_per_epoch = math.ceil(n_train / spec.batch_size)
        if spec.steps is not None:
            total, every = spec.steps, spec.eval_every or spec.steps
            return cls(steps_per_epoch, total, int(spec.warmup_ratio * total),
                       math.ceil(total / steps_per_epoch), every)
        total_steps = steps_per_epoch * spec.epochs
        return cls(steps_per_epoch, total_steps, int(spec.warmup_ratio * total_steps), spec.epochs)

    @property
    def by_steps(self) -> bool:
        return self.eval_every is not None

    @property
    def validates_after_epoch(self) -> bool:
        return not self.by_steps

    def validates_after_step(self, step: int) -> bool:
        return self.by_steps and (step % self.eval_every == 0 or step == self.total_steps)

    def validation_steps(self) -> list[int]:
        """The optimizer steps after which a step-budget job validates."""
        if not self.by_steps:
            return [e * self.steps_per_epoch for e in range(1, self.epochs + 1)]
        return sorted({*range(self.eval_every, self.total_steps + 1, self.eval_every), self.total_steps})

    def linear_schedule(self, optimizer):
        """Linear warm-up to the peak learning rate over warmup_steps, then linear decay to 0."""
        from transformers import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(optimizer, self.warmup_steps, self.total_steps)


def _start_from_stored_model(model, spec: JobSpec, ctx: RunContext) -> str | None:
    """Transfer: copy spec.init_from's stored weights (ctx.init_model_dir) over the freshly built
    model. Returns how the head was set (artifacts.HEAD_KEPT or HEAD_REINITIALISED), None for a
    job that starts from the pretrained weights."""
    if spec.init_from is None:
        return None
    if ctx.init_model_dir is None:
        raise PermanentJobError(f"job starts from {spec.init_from}'s model, but no model folder "
                                "was given (run it through `harness work`)")
    source = artifacts.manifest(Path(ctx.init_model_dir)).get("model")
    if source != spec.model:
        raise PermanentJobError(f"job {spec.init_from}'s model was fine-tuned from {source!r}, "
                                f"this job uses {spec.model!r}")
    return artifacts.load_into(model, Path(ctx.init_model_dir))


def _keep_if_best(state: TrainState, epoch: int, scores: dict, model, step: int | None = None) -> None:
    """Keep these weights if their validation score is the best so far: strictly better only, so
    ties keep the earlier evaluation (epoch, or step under a step budget)."""
    if scores["score"] > state.best_score or state.best_weights is None:
        state.best_score, state.best_epoch, state.best_step = scores["score"], epoch, step
        state.best_accuracy = scores.get("accuracy")
        # on the host: a second copy of the model on the GPU would take a job's headroom
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint_due(policy: str, spec: JobSpec, keep_model: bool, epoch_train_seconds: float) -> bool:
    """Whether to checkpoint after an epoch (before the last), so that a stopped job resumes there.
    "auto": full-data jobs, jobs others start from (keep_model), and epochs that train longer than
    CHECKPOINT_MIN_EPOCH_SECONDS; short few-shot jobs simply run again."""
    if policy != "auto":
        return policy == "always"
    full_data = spec.n is None and spec.per_class is None
    return full_data or keep_model or epoch_train_seconds > CHECKPOINT_MIN_EPOCH_SECONDS


def _resolved_config(spec: JobSpec, ctx: RunContext, task: TaskSpec, data: JobData, *, n_train: int,
                     device: torch.device, plan: StepPlan, is_fused: bool, eval_mode: str, packed: bool,
                     model_path: str, checkpoint: str, resumed_from: int, scl_batch_size: int | None,
                     init_head: str | None, artifact: artifacts.Artifact | None,
                     truncated: dict[str, int]) -> dict:
    """The job's configuration as it ran (RunResult.config): the spec, then every choice made
    while running it, with the data, model files and transfer source it used."""
    return {**spec.canonical(),
            "train_seed": spec.effective_train_seed, "device": str(device), **precision(device),
            "threads": torch.get_num_threads(),  # CPU threads: the report's CPU-hours (analysis.cost)
            "model_build": model_build(spec.model, task.num_labels),
            **dataclasses.asdict(plan), "optimizer": "AdamW" + (" (fused)" if is_fused else ""),
            "schedule": "linear", "batching": spec.batching,
            "train_forward": "packed" if packed else "full",
            "mega_batches": MEGA_BATCHES if spec.batching == "length" else None,
            "eval_mode": eval_mode,
            "eval_batch_size": EVAL_BATCH_SIZE if eval_mode == "fast" else eval_batch_size(device),
            "eval_batch_tokens": eval_batch_tokens(device) if eval_mode == "fast" else None,
            "phi": "final-layer first token ([CLS]/<s>)",
            "scl_no_positive": NO_POSITIVE_HANDLING, "scl_reduction": spec.scl_reduction,
            "scl_monitor_tau": None if spec.uses_scl else SCL_MONITOR_TAU,
            "n_train": n_train, "n_validation": len(data.validation), "n_test": len(data.test),
            "train_pool": data.pool_size, "sampling": data.sampling,
            "class_counts": data.class_counts(task), "protocol_seed": PROTOCOL_SEED,
            "data_source": data.source, "data_fingerprint": data.fingerprint,
            "data_files": data.files, "truncated": truncated, "model_path": model_path,
            "checkpoint_policy": checkpoint, "resumed_from_epoch": resumed_from,
            "selection": ("best validation score, ties → earlier step" if plan.by_steps
                          else "best validation score, ties → earlier epoch"),
            "embeddings": "test-set final-layer [CLS], not normalised, float16",
            "scl_batch_size": scl_batch_size, "gradient_accumulation": 1,
            "scl_batch": "the examples of one forward batch (no accumulation, no memory bank)",
            "init_model_dir": None if ctx.init_model_dir is None else str(ctx.init_model_dir),
            "init_model_sha256": ctx.init_model_sha256, "init_head": init_head,
            "saved_model": None if artifact is None else artifact.record()}


@contextlib.contextmanager
def _memory_errors(spec: JobSpec, device: torch.device):
    """Out-of-memory while training or evaluating → an error naming the phase and batch size:
    PermanentJobError on a device of our own (another attempt would fail the same way),
    SharedDeviceOutOfMemory (retried) where other processes hold memory on the GPU."""
    try:
        yield
    except BaseException as exc:
        if not is_out_of_memory(exc):
            raise
        oom = exc if isinstance(exc, OutOfMemory) else OutOfMemory("training", spec.batch_size, exc)
        name = str(device)
        if device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(device)})"
        message = f"{oom.phase}: batch {oom.batch_size} does not fit in memory on {name}: {oom.detail}"
        if shares_gpu(device):
            raise SharedDeviceOutOfMemory(message + " (other processes use this GPU: retrying)") from exc
        raise PermanentJobError(message) from exc


def _noise_token_change(clean, enc_train) -> dict[str, float]:
    """How much the noisy copies changed the token ids this job trains on (harness.noise.tokens):
    the copies are the whole training set (replace) or its second half (augment)."""
    from harness.noise.tokens import token_change

    copies = enc_train.input_ids[len(enc_train.input_ids) - len(clean.input_ids):]
    return token_change(clean.input_ids, copies)


def _noisy_train(spec: JobSpec, train: Examples, ctx: RunContext):
    """Back-translated training texts (harness.noise), added to or replacing the originals.

    The noisy copies depend on (texts, T, backend, spec.seed) only, so CE and CE+SCL jobs of a seed
    see the same noise. They keep their original's idx and label.
    """
    from harness.noise.sets import noisy_texts

    def tick(done: int, total: int) -> None:
        ctx.progress(Progress(phase="noise", step=done, steps=total))
        if ctx.should_stop():
            raise JobInterrupted()

    noisy, record = noisy_texts([tuple(t) for t in train.texts], temperature=spec.noise,
                                backend=spec.noise_backend, seed=spec.seed,
                                cache_dir=ctx.cache_dir, progress=tick)
    # The token cache is keyed by the texts themselves; the tag only files noisy texts apart.
    tag = f"{train.split}+noise"
    copies = dataclasses.replace(train, split=tag, texts=tuple(tuple(t) for t in noisy))
    if spec.noise_mode == "replace":
        return copies, record
    # Augment: originals and copies in one Examples (rows: positions in the source split).
    return Examples(tag, np.concatenate([train.rows, copies.rows]),
                    np.concatenate([train.idx, copies.idx]),
                    np.concatenate([train.labels, copies.labels]), train.texts + copies.texts), record
