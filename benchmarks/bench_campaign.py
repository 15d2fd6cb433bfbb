"""Campaign throughput: where a grid's jobs spend their time, and how long the whole grid takes.

    python benchmarks/bench_campaign.py --grid fewshot --model sentence-transformers/paraphrase-MiniLM-L3-v2 --compare
    python benchmarks/bench_campaign.py --grid fewshot --cpu-time --no-floor --compare full-train
    python benchmarks/bench_campaign.py --throughput --jobs 4 [--busy]
    python benchmarks/bench_campaign.py --eval-passes
    python benchmarks/bench_campaign.py --grid fewshot-v2 --budgets 20:75,100:100,1000:300 --no-floor

Table mode runs a fixed sample of the grid (its first seed: one job per task × N × loss) through
the real worker on scratch SQLite databases, in this process, and prints per job: wall (claim to
stored result), setup (data, tokens, model), training, validation (every epoch), test, and the
floor of each phase: the forward and backward passes alone for the same examples (pre-built
batches, nothing else; evaluation floors use the plain model in 32-row length-sorted batches).
Model and data loading is done once before the jobs and printed on its own, as a worker pays it
once. The whole-grid estimate scales each sample job's wall by the number of grid jobs that share
its task, N and loss. With --compare every job also runs with a baseline, interleaved job by job so
both columns see the same load: `legacy` (the default) is the code before issue 11 (legacy
evaluation, `fine_tune(eval_mode="legacy")`, and the full training forward pass), `full-train`
only the full training forward pass (`train_forward="full"`) instead of harness.training.packed; the test
predictions of the two are compared example by example.

Throughput mode runs a fixed set of jobs with `harness work --until-empty` as 1 worker and as 2
workers (`--workers 2`), each on its own scratch database, and prints the total times; with
--busy it also runs 1 worker alone and beside a busy process (a two-thread matrix-product loop, the
kind of neighbour a campaign meets on a shared machine).

Eval-passes mode times one validation pass per task, legacy against the cheaper path, in CPU
seconds of one thread: the figure the machine's other load disturbs least.

The machine is shared: the load average is printed before and after, and ratios are what count.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

SMALL_MODEL = "sentence-transformers/paraphrase-MiniLM-L3-v2"
FLOOR_EVAL_BATCH = 32


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ---- table mode -------------------------------------------------------------------------------
def sample(grid_name: str, overrides: dict, budgets: dict | None = None):
    """(sample jobs, grid jobs per sample job): the grid's first seed, and how many grid jobs
    share each sample job's task, N, noise, batch size and loss. `budgets` ({N: steps}) stands in
    for a protocol-v2 grid's step budgets before the convergence study has recorded them."""
    import dataclasses

    from harness.protocol import grids

    grid = grids.get_grid(grid_name)
    if budgets:
        grid = dataclasses.replace(grid, step_budgets=budgets)
    jobs = [s for s, _ in grids.expand(grid, **overrides)]
    key = lambda s: (s.task, s.n, s.per_class, s.noise, s.batch_size, s.loss)  # noqa: E731
    counts = collections.Counter(key(s) for s in jobs)
    first = jobs[0].seed
    # Small N first: a run cut short still has every task's few-shot jobs.
    picked = sorted((s for s in jobs if s.seed == first), key=lambda s: (s.n or 0, s.task))
    return picked, [counts[key(s)] for s in picked], len(jobs)


def warm_up(specs) -> float:
    """Load the model, every task's splits and their tokens once (what a worker pays once)."""
    from harness.training.batching import encode
    from harness.training.inputs import prepare_data
    from harness.training.models import build_model, load_pretrained
    from harness.protocol.tasks import get_task

    started = time.perf_counter()
    for s in {s.task: s for s in specs}.values():
        pre = load_pretrained(s.model)
        data = prepare_data(s)
        for ex in (data.validation, data.test):
            encode(pre.tokenizer, pre.tokenizer_id, get_task(s.task).name, ex, s.max_length)
        build_model(s.model, get_task(s.task).num_labels, 0)
    return time.perf_counter() - started


def floors(spec, eval_cache: dict) -> dict:
    """Seconds of the forward+backward passes alone (training: the job's epoch-1 batches, times
    its passes over the data) and of the forward passes alone (validation × the job's validations,
    test once)."""
    import torch

    from harness.training.batching import collate, encode, eval_batches, train_batches
    from harness.training.inputs import prepare_data
    from harness.training.finetune import StepPlan, compute_loss
    from harness.training.models import build_model, load_pretrained
    from harness.training.packed import supported
    from harness.protocol.tasks import get_task

    task = get_task(spec.task)
    pre = load_pretrained(spec.model)
    data = prepare_data(spec)
    tok = functools.partial(encode, pre.tokenizer, pre.tokenizer_id, task.name, max_length=spec.max_length)
    model = build_model(spec.model, task.num_labels, 0)
    enc = tok(data.train)
    labels = torch.as_tensor(data.train.labels)
    batches = [(collate(enc, p, "cpu"), labels[p]) for p in
               train_batches(enc.lengths, spec.batch_size, spec.batching, spec.effective_train_seed, 1)]
    model.train()
    packed = supported(model)  # the training forward pass the job uses
    started = time.perf_counter()
    for batch, y in batches:
        loss, _, _ = compute_loss(model, batch, y, spec, task, packed)
        loss.backward()
        model.zero_grad(set_to_none=True)
    plan = StepPlan.of(spec, len(data.train))  # passes over the data and validations: epochs or a step budget
    train = (time.perf_counter() - started) * plan.total_steps / plan.steps_per_epoch
    if spec.task not in eval_cache:
        model.eval()
        out = {}
        for name, ex in (("validation", data.validation), ("test", data.test)):
            e = tok(ex)
            pre_built = [collate(e, p, "cpu") for p in eval_batches(e.lengths, FLOOR_EVAL_BATCH)]
            with torch.inference_mode():
                started = time.perf_counter()
                for b in pre_built:
                    model(**b)
                out[name] = time.perf_counter() - started
        eval_cache[spec.task] = out
    e = eval_cache[spec.task]
    return {"train": train, "validation": e["validation"] * len(plan.validation_steps()), "test": e["test"]}


# The code paths --compare sets against today's ("fast"): fine_tune's keyword arguments.
VARIANTS = {"fast": {}, "legacy": dict(eval_mode="legacy", train_forward="full"),
            "full-train": dict(train_forward="full")}


class Variant:
    """One code path (VARIANTS): its scratch database and worker."""

    def __init__(self, mode: str, folder: Path, grid: str):
        from harness.store import db
        from harness.training.finetune import fine_tune
        from harness.worker import Worker, WorkerOptions

        self.mode, self.grid = mode, grid
        self.engine = db.open_db(f"sqlite:///{folder / f'{mode}.db'}", create=True)
        opts = WorkerOptions(runs_dir=folder / f"runs-{mode}", quiet=True, max_jobs=0)
        self.worker = Worker(self.engine, opts, runner=functools.partial(fine_tune, **VARIANTS[mode]))

    def run(self, spec) -> dict:
        """Enqueue and run one job; its wall time, phase times and test predictions."""
        from harness.store import packing, queue

        queue.enqueue(self.engine, self.grid, [spec])
        job = spec.job_id
        w = self.worker
        w.opts.max_jobs = w.done + w.failed + 1
        started, cpu_started = time.perf_counter(), time.process_time()
        w.run()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        with self.engine.connect() as c:
            rows = c.execute(sa.text("select split, sum(value) from metrics where job_id = :j and "
                                     "name = 'seconds' group by split"), {"j": job}).all()
            packed = c.execute(sa.text("select * from test_predictions where job_id = :j"),
                               {"j": job}).mappings().first()
        phases = dict(rows)
        # Jobs store their test predictions packed, one row per job (harness.store.results).
        preds = [] if packed is None else list(zip(*(packing.unpack_predictions(packed)[i].tolist()
                                                     for i in (0, 2))))
        if not preds:
            raise RuntimeError(f"{self.mode}: job {job} left no result")
        return {"job": job, "wall": wall, "cpu": cpu, "setup": phases.get("setup", 0.0),
                "train": phases.get("train", 0.0), "validation": phases.get("validation", 0.0),
                "test": phases.get("test", 0.0), "predictions": preds}


def parse_budgets(text: str | None) -> dict | None:
    """'20:75,100:100' -> {20: 75, 100: 100}."""
    if not text:
        return None
    try:
        return {int(n): int(steps) for n, steps in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        sys.exit(f"--budgets {text!r}: give N:steps pairs, e.g. 20:75,100:100,1000:300")


def table(args) -> None:
    import torch

    from harness.runtime import threads

    overrides = dict(model=args.model, tasks=args.tasks and args.tasks.split(","),
                     ns=args.n and [int(x) for x in args.n.split(",")], epochs=args.epochs)
    specs, counts, grid_jobs = sample(args.grid, overrides, parse_budgets(args.budgets))
    threads.apply_threads()
    print(f"campaign benchmark: grid {args.grid} ({grid_jobs} jobs), sample of {len(specs)} "
          f"(seed {specs[0].seed}), model {specs[0].model}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}; load {load()}")
    loading = warm_up(specs)
    print(f"model and data loading, once per worker process: {loading:.1f}s")
    modes = ["fast", args.compare] if args.compare else ["fast"]
    eval_floor: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = [Variant(m, Path(tmp), args.grid) for m in modes]
        head = (f"{'job':<30}{'path':>11}{'wall':>8}{'cpu':>8}{'setup':>7}{'train':>8}{'valid':>8}{'test':>8}"
                f"  | floor {'train':>6}{'valid':>7}{'test':>7}  | wall/floor train valid  test  load")
        print(head)
        totals = {m: collections.defaultdict(float) for m in modes}
        agree = total = 0
        for i, spec in enumerate(specs):
            order = variants if i % 2 == 0 else variants[::-1]  # interleaved: A B, B A, ...
            runs = {v.mode: v.run(spec) for v in order}
            fl = floors(spec, eval_floor) if args.floor else None
            label = f"{spec.task} n={spec.n} {spec.loss}"
            for m in modes:
                r = runs[m]
                for k in ("wall", "cpu", "setup", "train", "validation", "test"):
                    totals[m][k] += r[k] * counts[i]
                line = (f"{label:<30}{m:>11}{r['wall']:8.1f}{r['cpu']:8.1f}{r['setup']:7.1f}{r['train']:8.1f}"
                        f"{r['validation']:8.1f}{r['test']:8.1f}")
                if fl:
                    line += (f"  | {fl['train']:11.1f}{fl['validation']:7.1f}{fl['test']:7.1f}  | "
                             f"{r['train'] / fl['train']:15.2f}{r['validation'] / fl['validation']:6.2f}"
                             f"{r['test'] / fl['test']:6.2f}")
                print(line + f"  {load()}", flush=True)
            if len(modes) == 2:
                a, b = runs[modes[0]]["predictions"], runs[modes[1]]["predictions"]
                agree += sum(x == y for x, y in zip(a, b))
                total += max(len(a), len(b))
    hours = {m: (t["wall"] + loading) / 3600 for m, t in totals.items()}
    print(f"\nwhole grid ({grid_jobs} jobs, each sample job's wall × the grid jobs it stands for, "
          "plus one loading):")
    for m in modes:
        t = totals[m]
        print(f"  {m:<10} {hours[m]:5.2f} h  (training {t['train'] / 3600:.2f} h, validation "
              f"{t['validation'] / 3600:.2f} h, test {t['test'] / 3600:.2f} h, setup {t['setup'] / 3600:.2f} h)")
    if args.cpu_time:
        # One thread per job: K = cores one-thread workers (`harness work --workers K`) on a quiet
        # machine each keep a core busy, so the grid takes its CPU seconds / cores. CPU seconds of
        # one thread move little with the neighbours' load, unlike wall time.
        cores = os.cpu_count()
        print(f"whole grid from CPU seconds (1 thread per job, {cores} one-thread workers on a quiet "
              f"{cores}-core machine):")
        for m in modes:
            print(f"  {m:<10} {(totals[m]['cpu'] + loading * cores) / 3600 / cores:5.2f} h  "
                  f"({totals[m]['cpu'] / 3600:.2f} CPU-hours)")
    if len(modes) == 2:
        base = modes[1]
        ratio = f"{hours[base] / hours['fast']:.2f}x wall"
        if args.cpu_time:
            ratio += f", {totals[base]['cpu'] / totals['fast']['cpu']:.2f}x CPU"
        print(f"  {base} / fast: {ratio}; test predictions the same on {agree} of {total} examples "
              f"({agree / max(total, 1):.2%}) over the sample jobs")
    print(f"load average at the end: {load()}")


# ---- evaluation passes --------------------------------------------------------------------------
def eval_passes(args) -> None:
    """One validation pass per task: legacy, token batches only, and the whole cheaper path, in CPU
    seconds of one thread (min of `repeats`, interleaved): a figure the neighbours' load barely
    moves, unlike wall time."""
    import torch

    from harness.training import first_token
    from harness.training.batching import encode
    from harness.training.inputs import prepare_data
    from harness.training.evaluate import predict
    from harness.training.models import build_model, load_pretrained
    from harness.protocol.spec import JobSpec
    from harness.protocol.tasks import get_task

    torch.set_num_threads(1)
    pre = load_pretrained(args.model)
    print(f"evaluation passes, 1 thread, CPU seconds (min of {args.repeats}); load {load()}")
    for name in (args.tasks or "sst2,qnli,mnli").split(","):
        task = get_task(name)
        data = prepare_data(JobSpec.make(task=name, n=20, seed=0, model=args.model))
        model = build_model(args.model, task.num_labels, 0)
        enc = encode(pre.tokenizer, pre.tokenizer_id, task.name, data.validation, 128)
        times = collections.defaultdict(list)
        supported = first_token.supported
        for _ in range(args.repeats):
            for variant in ("legacy", "token batches only", "fast"):
                first_token.supported = (lambda m: False) if variant == "token batches only" else supported
                started = time.process_time()
                predict(model, enc, "cpu", mode="legacy" if variant == "legacy" else "fast")
                times[variant].append(time.process_time() - started)
        first_token.supported = supported
        best = {k: min(v) for k, v in times.items()}
        print(f"  {name} validation ({len(enc.lengths)} examples): "
              + ", ".join(f"{k} {v:.2f}s" for k, v in best.items())
              + f"; legacy / fast {best['legacy'] / best['fast']:.2f}x")


# ---- throughput mode --------------------------------------------------------------------------
BUSY = """
import torch, time
torch.set_num_threads(2)
a = torch.randn(384, 384); b = torch.randn(384, 384)
end = time.time() + {seconds}
while time.time() < end:
    for _ in range(50):
        a @ b
"""


def drain(workers: int, args, folder: Path, tag: str) -> tuple[float, float]:
    """Wall and CPU seconds (all worker processes) of `harness work --workers K --until-empty`
    on the fixed job set. CPU seconds do not depend on how busy the machine is: fewer for the
    same jobs means less work wasted (spinning, threads waiting on each other)."""
    from harness.store import db, queue
    from harness.protocol import grids

    url = f"sqlite:///{folder / f'{tag}.db'}"
    engine = db.open_db(url, create=True)
    overrides = dict(model=args.model, tasks=[args.task], ns=[args.n_jobs_n], seeds=list(range(args.jobs)),
                     losses=["ce"], epochs=args.epochs)
    queue.enqueue(engine, "fewshot", [s for s, _ in grids.expand(grids.get_grid("fewshot"), **overrides)])
    command = [sys.executable, "-m", "harness.cli", "work", "--db", url, "--until-empty", "--quiet",
               "--runs-dir", str(folder / f"runs-{tag}"), "--workers", str(workers)]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    with engine.connect() as c:
        done = c.execute(sa.text("select count(*) from results")).scalar()
    assert done == args.jobs, f"{tag}: {done} of {args.jobs} jobs finished"
    return seconds, cpu


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def throughput(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"throughput: {args.jobs} jobs ({args.task} N={args.n_jobs_n}, {args.epochs} epochs, "
              f"{args.model}), {os.cpu_count()} cores; load {load()}")
        one, one_cpu = drain(1, args, folder, "one")
        print(f"  1 worker  ({os.cpu_count()} threads): {one:7.1f}s wall, {one_cpu:7.1f}s CPU  load {load()}",
              flush=True)
        two, two_cpu = drain(2, args, folder, "two")
        print(f"  2 workers (1 thread each): {two:7.1f}s wall, {two_cpu:7.1f}s CPU  load {load()}", flush=True)
        print(f"  1 worker / 2 workers: wall {one / two:.2f}x, CPU {one_cpu / two_cpu:.2f}x")
        if args.busy:
            busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=20 * one + 60)],
                                    env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
            try:
                time.sleep(3)
                beside, _ = drain(1, args, folder, "beside")
                print(f"  1 worker beside a busy 2-thread process: {beside:7.1f}s  load {load()}", flush=True)
                beside2, _ = drain(2, args, folder, "beside2")
                print(f"  2 workers beside a busy 2-thread process: {beside2:7.1f}s  load {load()}")
            finally:
                busy.kill()
                busy.wait()
            print(f"  slowdown beside the busy process: 1 worker {beside / one:.2f}x, "
                  f"2 workers {beside2 / two:.2f}x (the busy process asks for 2 of the "
                  f"{os.cpu_count()} cores: a fair share leaves the workers half the machine, 2x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="fewshot")
    p.add_argument("--model", default=SMALL_MODEL)
    p.add_argument("--tasks", help="narrow the sample, e.g. sst2,qnli")
    p.add_argument("--n", help="narrow the sample's N, e.g. 20,100")
    p.add_argument("--epochs", type=int)
    p.add_argument("--budgets", help="a v2 grid's step budget per N before the study records them, "
                                     "e.g. 20:75,100:100,1000:300")
    p.add_argument("--compare", nargs="?", const="legacy", choices=[v for v in VARIANTS if v != "fast"],
                   help="also run a baseline path: legacy (before issue 11, the default) or full-train "
                        "(the full training forward pass instead of harness.training.packed)")
    p.add_argument("--cpu-time", action="store_true",
                   help="1 thread per job; also estimate the grid from CPU seconds ÷ cores")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor timings")
    p.add_argument("--throughput", action="store_true", help="1 worker against 2 workers")
    p.add_argument("--jobs", type=int, default=4, help="throughput: jobs in the fixed set")
    p.add_argument("--task", default="sst2", help="throughput: task of the fixed set")
    p.add_argument("--jobs-n", dest="n_jobs_n", type=int, default=20, help="throughput: N of each job")
    p.add_argument("--busy", action="store_true", help="throughput: also beside a busy process")
    p.add_argument("--eval-passes", action="store_true", help="CPU seconds of one validation pass per task")
    p.add_argument("--repeats", type=int, default=3, help="eval-passes: repetitions per variant")
    args = p.parse_args()
    from harness.runtime import threads

    if args.cpu_time:
        os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported
    threads.prepare_process()  # passive OpenMP waits, as a worker: before torch is imported
    if args.eval_passes:
        eval_passes(args)
    elif args.throughput:
        args.epochs = args.epochs or 10
        throughput(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
