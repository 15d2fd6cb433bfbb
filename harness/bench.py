"""`harness bench`: our training loop against a plain Hugging Face Trainer, in one process.

Both train the same model on the same SST-2 examples at the same batch size for the same number
of steps, on the same device. Reported: steps/s and examples/s of each and their ratio; the cost
of a CE+SCL step against a CE step; an ablation that switches off one technique at a time
(length-grouped batches, fused AdamW, the packed forward pass); and the wall time of a whole
N = 20 job against its training+evaluation time (start-up overhead), cold (first job of the
process) and warm.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.hf_trainer import accelerate_device, trainer_arguments, trainer_dataset
from harness.training.batching import collate, encode, length_grouped_batches
from harness.protocol.data import sample_train
from harness.training.inputs import prepare_data
from harness.runtime.memory import keep_freed_memory
from harness.runtime.device import autocast_for, precision
from harness.training.finetune import fine_tune, make_optimizer, seed_everything, train_step
from harness.training.models import build_model, load_pretrained
from harness.training.packed import supported as packed_supported
from harness.protocol.paper import PAPER_LAM, PAPER_TAU
from harness.training.runner import RunContext
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import get_task

WARMUP_STEPS = 3  # untimed steps first: allocator, kernels, caches
BENCH_SEED = 0


def _examples(task: str, n: int, data_dir):
    spec = JobSpec.make(task=task, seed=BENCH_SEED, n=n)
    data = prepare_data(spec, data_dir)
    return data.train


def _our_loop(spec: JobSpec, enc, labels: torch.Tensor, steps: int, device: torch.device, *,
              group: bool = True, fused: bool = True, packed: bool = True) -> float:
    """Seconds for `steps` optimisation steps of our loop (after WARMUP_STEPS untimed ones)."""
    from transformers import get_linear_schedule_with_warmup

    task = get_task(spec.task)
    seed_everything(BENCH_SEED)
    model = build_model(spec.model, task.num_labels, BENCH_SEED, device)
    model.train()
    packed = packed and packed_supported(model)
    optimizer, _ = make_optimizer(model, spec, fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps + WARMUP_STEPS)
    autocast, _ = autocast_for(device)
    batches = length_grouped_batches(enc.lengths, spec.batch_size,
                                     np.random.default_rng(BENCH_SEED), group)
    batches = [b for b in batches if len(b) == spec.batch_size][:steps + WARMUP_STEPS]
    started = 0.0
    for i, positions in enumerate(batches):
        if i == WARMUP_STEPS:
            _sync(device)
            started = time.perf_counter()
        train_step(model, optimizer, scheduler, collate(enc, positions, device),
                   labels[positions].to(device), spec, task, autocast, packed=packed)
    _sync(device)
    return time.perf_counter() - started


def _trainer(spec: JobSpec, examples, tokenizer, steps: int, device: torch.device) -> float:
    """Seconds for `steps` steps of a plain Trainer (default settings, dynamic padding)."""
    from transformers import DataCollatorWithPadding, Trainer

    task = get_task(spec.task)
    ds = trainer_dataset(examples, tokenizer, spec.max_length)
    seed_everything(BENCH_SEED)
    model = build_model(spec.model, task.num_labels, BENCH_SEED, device)
    with tempfile.TemporaryDirectory() as out, accelerate_device(device):
        args = trainer_arguments(
            device, output_dir=out, per_device_train_batch_size=spec.batch_size, learning_rate=spec.lr,
            weight_decay=spec.weight_decay, max_steps=steps + WARMUP_STEPS, report_to=[],
            logging_strategy="no", save_strategy="no", disable_tqdm=True, seed=BENCH_SEED,
            use_cpu=device.type == "cpu", bf16=precision(device)["dtype"] == "bfloat16",
            dataloader_drop_last=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds,
                          data_collator=DataCollatorWithPadding(tokenizer))
        # The Trainer has no per-step hook that is cheap to time: time a short run of its warm-up
        # steps, then the full run, and take the difference (start-up cost cancels).
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
        args.max_steps = WARMUP_STEPS
        short = Trainer(model=model, args=args, train_dataset=ds,
                        data_collator=DataCollatorWithPadding(tokenizer))
        started = time.perf_counter()
        short.train()
        warm = time.perf_counter() - started
    return max(total - warm, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(model: str, task: str = "sst2", batch_size: int = 16, steps: int = 30,
              data_dir: str | Path | None = None, device: str = "cpu", max_length: int = 128,
              fewshot_epochs: int = 3, repeats: int = 3) -> dict:
    """Time our loop against a plain Trainer and break down where the difference comes from."""
    dev = torch.device(device)
    spec = JobSpec.make(task=task, seed=BENCH_SEED, model=model, batch_size=batch_size,
                        max_length=max_length, lr=5e-5)
    scl_spec = JobSpec.make(**{**spec.canonical(), "loss": "ce+scl", "lam": PAPER_LAM, "tau": PAPER_TAU})
    pre = load_pretrained(model)
    examples = _examples(task, batch_size * (steps + WARMUP_STEPS) * 2, data_dir)
    enc = encode(pre.tokenizer, pre.tokenizer_id, get_task(task).name, examples, max_length)
    labels = torch.as_tensor(examples.labels)
    trainer_examples = examples.take(np.arange(batch_size * (steps + 2 * WARMUP_STEPS)))

    def rate(seconds: float) -> dict:
        return {"seconds": seconds, "steps_per_s": steps / seconds,
                "examples_per_s": steps * batch_size / seconds}

    # Each variant runs `repeats` times, interleaved (A B C … A B C …), and its median counts:
    # on a shared 2-core machine a single timing can be off by 2x, interleaving spreads the noise.
    # The worker tunes malloc for the whole process (harness.runtime.memory); the Trainer baseline and
    # the ablation run with glibc's defaults, as a plain script would.
    def tuned(fn, enable=True):
        def run():
            keep_freed_memory(enable)
            try:
                return fn()
            finally:
                keep_freed_memory(False)
        return run

    variants = {
        "ours": tuned(lambda: _our_loop(spec, enc, labels, steps, dev)),
        "trainer": tuned(lambda: _trainer(spec, trainer_examples, pre.tokenizer, steps, dev), False),
        "ce_scl": tuned(lambda: _our_loop(scl_spec, enc, labels, steps, dev)),
        "no_grouping": tuned(lambda: _our_loop(spec, enc, labels, steps, dev, group=False)),
        "no_fused": tuned(lambda: _our_loop(spec, enc, labels, steps, dev, fused=False)),
        "no_packing": tuned(lambda: _our_loop(spec, enc, labels, steps, dev, packed=False)),
        "no_malloc_tuning": tuned(lambda: _our_loop(spec, enc, labels, steps, dev), False),
    }
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(fn())
    med = {k: rate(float(np.median(v))) for k, v in times.items()}
    ours, trainer, scl = med["ours"], med["trainer"], med["ce_scl"]
    ablation = {
        "all techniques": ours["steps_per_s"],
        "without length grouping": med["no_grouping"]["steps_per_s"],
        "without fused AdamW": med["no_fused"]["steps_per_s"],
        "without the packed forward pass": med["no_packing"]["steps_per_s"],
        "without malloc tuning": med["no_malloc_tuning"]["steps_per_s"],
    }

    fewshot = _fewshot_overhead(model, task, batch_size, max_length, fewshot_epochs, data_dir, device)
    return {"model": pre.path, "task": task, "device": str(dev), "batch_size": batch_size,
            "steps": steps, "threads": torch.get_num_threads(), "ours": ours, "trainer": trainer,
            "speedup_vs_trainer": ours["steps_per_s"] / trainer["steps_per_s"],
            "ce_scl": scl, "scl_overhead": ours["steps_per_s"] / scl["steps_per_s"] - 1,
            "ablation_steps_per_s": ablation, "fewshot_n20": fewshot, "repeats": repeats,
            "all_seconds": times, "load_average": (load_before, os.getloadavg()[0]),
            "fewshot_epochs": fewshot_epochs}


def _fewshot_overhead(model: str, task: str, batch_size: int, max_length: int, epochs: int,
                      data_dir: str | Path | None, device: str) -> dict:
    """Wall time of a whole N = 20 job against its training+evaluation time, cold (the first job of
    the process) and warm (the next one, on another seed)."""
    fewshot = {}
    keep_freed_memory()  # as in a worker
    for label in ("cold", "warm"):  # "cold" is cold only if nothing ran before in this process
        job = JobSpec.make(task=task, seed=BENCH_SEED + (label == "warm"), n=20, model=model,
                           batch_size=batch_size, max_length=max_length, epochs=epochs, lr=5e-5)
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            result = fine_tune(job, RunContext(run_dir=Path(run_dir), device=device), data_dir=data_dir)
            wall = time.perf_counter() - started
        fewshot[label] = {"wall_seconds": wall, "train_eval_seconds": result.train_seconds,
                          "ratio": wall / result.train_seconds}
    return fewshot

def format_bench(result: dict) -> str:
    r = result
    lines = [
        f"bench: {r['model']} on {r['task']}, {r['device']} ({r['threads']} threads), "
        f"batch {r['batch_size']}, {r['steps']} timed steps, median of {r['repeats']} interleaved "
        f"runs (load average {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f})",
        f"  ours      {r['ours']['steps_per_s']:7.2f} steps/s  {r['ours']['examples_per_s']:8.1f} examples/s",
        f"  Trainer   {r['trainer']['steps_per_s']:7.2f} steps/s  {r['trainer']['examples_per_s']:8.1f} examples/s",
        f"  speed-up vs plain Trainer: {r['speedup_vs_trainer']:.2f}x",
        f"  CE+SCL step vs CE step: {100 * r['scl_overhead']:+.1f}% time",
        "  ablation (steps/s):",
    ]
    base = r["ablation_steps_per_s"]["all techniques"]
    for name, v in r["ablation_steps_per_s"].items():
        lines.append(f"    {name:26s} {v:7.2f}  ({100 * (v / base - 1):+.1f}%)")
    for label, f in r["fewshot_n20"].items():
        lines.append(f"  N=20 job ({r['fewshot_epochs']} epochs, {label}): wall {f['wall_seconds']:.1f}s, "
                     f"train+eval {f['train_eval_seconds']:.1f}s, ratio {f['ratio']:.2f}")
    return "\n".join(lines)
