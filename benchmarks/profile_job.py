"""Where one job's time goes: set-up, forward, backward, optimizer, validation, test.

    python benchmarks/profile_job.py --budgets 20:75,100:100,1000:325
    python benchmarks/profile_job.py --task qnli --n 100 --budgets 100:100 --losses ce,ce+scl --repeats 3

Runs the real `fine_tune` on a protocol-v2 spec (a step budget, validation every 25 steps) for
each N, with clocks around the functions `fine_tune` calls, and prints each phase's seconds and
share of the job's wall time:

    setup       data, tokens, model, optimizer (before the first step)
    collate     building each training batch from the cached tokens
    forward     the training forward pass and the loss (`compute_loss`), of which the SCL term
                (`supervised_contrastive_loss`, which CE jobs also compute, detached, as a monitor)
    backward    `loss.backward()`
    optimizer   the rest of a training step: the loss check, AdamW, the schedule, zero_grad
    validation  every validation pass (prediction and metrics, keeping the best weights)
    test        the one test pass
    other       what is left: progress, logging, the result's assembly

The clocks wrap the functions from outside; the code that runs is the code a worker runs. On a
GPU every clock synchronises the device first, which costs a little overlap. The machine is shared:
the load average is printed, shares and ratios are what count, and --repeats interleaves runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

SMALL_MODEL = "sentence-transformers/paraphrase-MiniLM-L3-v2"
PHASES = ("setup", "collate", "forward", "of which SCL", "backward", "optimizer", "validation", "test",
          "other")


class Clocks:
    """Seconds per phase, accumulated by wrappers; `sync` waits for the device before each read."""

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def wrap(self, name, fn, name_of=None):
        def timed(*args, **kwargs):
            phase = name_of(kwargs) if name_of else name
            self.sync()
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1
        return timed


def profile(spec, device: str = "cpu", data_dir=None) -> dict:
    """Run `spec` through fine_tune with clocks; its phases in seconds, steps and wall time."""
    from harness.training import finetune
    from harness.training.runner import RunContext

    dev = torch.device(device)
    clocks = Clocks(dev)
    backward = torch.Tensor.backward
    patches = [
        mock.patch.object(finetune, "compute_loss", clocks.wrap("forward", finetune.compute_loss)),
        mock.patch.object(finetune, "supervised_contrastive_loss",
                          clocks.wrap("of which SCL", finetune.supervised_contrastive_loss)),
        mock.patch.object(finetune, "train_step", clocks.wrap("step", finetune.train_step)),
        mock.patch.object(finetune, "collate", clocks.wrap("collate", finetune.collate)),
        mock.patch.object(finetune, "predict", clocks.wrap(
            "evaluation", finetune.predict, lambda kw: "test" if kw.get("phase") == "test" else "validation")),
        mock.patch.object(torch.Tensor, "backward", clocks.wrap("backward", backward)),
    ]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as run_dir:
        for p in patches:
            stack.enter_context(p)
        started = time.perf_counter()
        result = finetune.fine_tune(spec, RunContext(run_dir=Path(run_dir), device=device), data_dir=data_dir)
        wall = time.perf_counter() - started
    s = clocks.seconds
    setup = next(v for split, _, name, v, *_ in result.metrics if split == "setup" and name == "seconds")
    phases = {
        "setup": setup, "collate": s["collate"], "forward": s["forward"], "of which SCL": s["of which SCL"],
        "backward": s["backward"], "optimizer": s["step"] - s["forward"] - s["backward"],
        # the prediction passes; the rest of a validation (metrics, copying the best weights) is
        # small and stays in "other"
        "validation": s["validation"], "test": s["test"],
    }
    phases["other"] = wall - sum(v for k, v in phases.items() if k != "of which SCL")
    return {"spec": spec, "wall": wall, "steps": clocks.calls["step"], "validations":
            clocks.calls["validation"], "phases": phases, "test_score": result.test_score}


def render(rows: list[dict]) -> str:
    """One column per profiled job (median over repeats): seconds and share of wall time."""
    head = ["phase"] + [f"{r['label']}" for r in rows]
    lines = [head]
    for phase in PHASES:
        cells = [phase]
        for r in rows:
            v = r["phases"][phase]
            cells.append(f"{v:7.1f} s {100 * v / r['wall']:5.1f}%")
        lines.append(cells)
    lines.append(["wall"] + [f"{r['wall']:7.1f} s" for r in rows])
    lines.append(["steps, validations"] + [f"{r['steps']}, {r['validations']}" for r in rows])
    per_step = lambda r, k: 1000 * r["phases"][k] / max(r["steps"], 1)  # noqa: E731
    lines.append(["ms/step fwd+bwd+opt"] + [
        f"{per_step(r, 'forward'):.0f}+{per_step(r, 'backward'):.0f}+{per_step(r, 'optimizer'):.0f}"
        for r in rows])
    lines.append(["ms per validation"] + [
        f"{1000 * r['phases']['validation'] / max(r['validations'], 1):.0f}" for r in rows])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def median_of(runs: list[dict], label: str) -> dict:
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return {"label": label, "wall": med([r["wall"] for r in runs]), "steps": runs[0]["steps"],
            "validations": runs[0]["validations"],
            "phases": {k: med([r["phases"][k] for r in runs]) for k in PHASES}}


def main(argv=None) -> None:
    from harness.protocol.grids import V2_EVAL_EVERY
    from harness.protocol.spec import JobSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=SMALL_MODEL)
    p.add_argument("--task", default="sst2")
    p.add_argument("--budgets", default="20:75,100:100,1000:325",
                   help="N:steps pairs: the step budget of each N profiled")
    p.add_argument("--n", help="profile only these N (comma list)")
    p.add_argument("--eval-every", type=int, default=V2_EVAL_EVERY)
    p.add_argument("--losses", default="ce", help="comma list: ce, ce+scl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs per job; medians reported")
    p.add_argument("--gpu", type=int, help="CUDA device; default: the CPU")
    args = p.parse_args(argv)
    try:
        budgets = {int(n): int(s) for n, s in (pair.split(":") for pair in args.budgets.split(","))}
    except ValueError:
        sys.exit(f"--budgets {args.budgets!r}: give N:steps pairs, e.g. 20:75,100:100")
    if args.n:
        budgets = {n: budgets[n] for n in map(int, args.n.split(",")) if n in budgets}
    device = "cpu" if args.gpu is None else f"cuda:{args.gpu}"
    specs = [(f"N={n} {loss} ({steps} steps)",
              JobSpec.make(task=args.task, n=n, seed=args.seed, loss=loss, model=args.model, lr=args.lr,
                           warmup_ratio=0.1, steps=steps, eval_every=args.eval_every, max_length=128))
             for n, steps in budgets.items() for loss in args.losses.split(",")]
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    for _ in range(args.repeats):
        for label, spec in specs:
            runs[label].append(profile(spec, device))
            print(f"  {label}: {runs[label][-1]['wall']:.1f} s", file=sys.stderr)
    print(f"profile: {args.model} on {args.task}, {device} ({torch.get_num_threads()} threads), "
          f"validation every {args.eval_every} steps, median of {args.repeats} "
          f"(load average {load} -> {'/'.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(render([median_of(runs[label], label) for label, _ in specs]))


if __name__ == "__main__":
    main()
