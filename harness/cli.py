"""The `harness` command line: thin Typer commands over the library (harness.*, analysis.*).

Every command takes `--db URL` (else $HARNESS_DB, else sqlite:///results.db). Bad input ends
with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Optional

import typer

from harness.store import db, queue
from harness.protocol import grids
from harness.errors import HarnessError
from harness.protocol.spec import MAX_NOISE, MIN_TAU

app = typer.Typer(help=__doc__.split("\n\n")[0] + "\n\nStart with `harness grids`; the demo: "
                  f"`harness enqueue --grid smoke --db {db.DEMO_URL}`, then `harness work --until-empty "
                  f"--db {db.DEMO_URL}` and `harness report --table 2 --db {db.DEMO_URL}`.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tune_app = typer.Typer(help="Hyper-parameters chosen on validation from the `tune` grid.", no_args_is_help=True)
app.add_typer(tune_app, name="tune")

DbOpt = typer.Option(None, "--db", help="SQLAlchemy URL (default: $HARNESS_DB or sqlite:///results.db).")


def fail_cleanly(fn):
    """Turn HarnessError, and any database error, into one line on stderr and exit status 2."""
    from sqlalchemy.exc import DBAPIError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        except DBAPIError as exc:  # one the harness has no better words for: still one line
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            typer.echo(f"error: the database failed: {type(exc.orig).__name__}: {first}", err=True)
            raise typer.Exit(2)
    return wrapper


# ---- option parsing -----------------------------------------------------------------------

def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _lower(value: str | None) -> str | None:
    """Names of choices (losses, reductions, modes) are case-insensitive: reports print `CE`.
    Lower-cased here, before any JobSpec exists, so job ids never depend on the spelling."""
    return None if value is None else value.lower()


def _numbers(value: str | None, kind, name: str, allow_full: bool = False) -> list | None:
    items = _split(value)
    if items is None:
        return None
    out = []
    for item in items:
        if allow_full and item.lower() in ("full", "all", "none"):
            out.append(None)
            continue
        try:
            out.append(kind(item))
        except ValueError:
            raise HarnessError(f"{name}: {item!r} is not a {'number' if kind is float else 'whole number'}"
                               + (" (or 'full')" if allow_full else "")) from None
    if not out:
        raise HarnessError(f"{name} is empty")
    return out


MAX_ATTEMPTS = 1000  # attempts per job: beyond this a failing job only burns machine time
MAX_SEEDS = 100_000  # seeds one enqueue may expand to: a typo must not build a list of 10**20


SEEDS_HELP = ("How many seeds, or which: 5 = a count, seeds 0–4; 3-3 = seed 3 alone; 2-6 = seeds 2 "
              "to 6; 0,3,7 = those seeds.")


def _seeds(value: str | None) -> list[int] | None:
    """'5' = seeds 0–4 (a count); '3-3' = seed 3; '2-6' = seeds 2 to 6; '0,3,7' = those seeds."""
    if value is None:
        return None
    value = value.strip()
    try:
        if "," not in value and "-" in value.lstrip("-"):
            lo, hi = (int(v) for v in value.split("-", 1))
            _seed_count(value, hi - lo + 1)
            return list(range(lo, hi + 1))
        if "," not in value:
            k = int(value)
            if k <= 0:  # most likely one particular seed was meant: say how to ask for it
                raise HarnessError(f"--seeds {value}: a single number is a count of seeds from 0 "
                                   f"(--seeds 5 = seeds 0–4); for seed {abs(k)} alone give "
                                   f"--seeds {abs(k)}-{abs(k)}, for several a list (--seeds 0,3,7)")
            _seed_count(value, k)
            return list(range(k))
        return [int(v) for v in _split(value)]
    except ValueError:
        raise HarnessError(f"--seeds {value!r}: expected a count (5 = seeds 0–4), one seed as a range "
                           "(3-3), a range (2-6) or a list (0,3,7)") from None


def _seed_count(value: str, count: int) -> None:
    if count > MAX_SEEDS:
        raise HarnessError(f"--seeds {value} asks for {count} seeds, more than {MAX_SEEDS}; "
                           "for particular seeds give a list: --seeds 0,3,7")


def _stage1_n(value: str | None) -> int | None:
    """--stage1-n: one number, or 'full' (the default: the whole SST-2 training set)."""
    items = _numbers(value, int, "--stage1-n", allow_full=True)
    if items is None:
        return None
    if len(items) != 1:
        raise HarnessError(f"--stage1-n takes one number (or 'full'), got {value!r}")
    if items[0] is not None and items[0] <= 0:
        raise HarnessError(f"--stage1-n must be a positive number of examples, got {items[0]}")
    return items[0]


# ---- commands -----------------------------------------------------------------------------

@app.command("grids")
@fail_cleanly
def grids_cmd():
    """List the named experimental designs and how many jobs each expands to."""
    width = max(len(name) for name in grids.GRIDS)
    for g in grids.GRIDS.values():
        try:
            count = f"{len(grids.expand(g)):>4} jobs"
        except HarnessError:  # a v2 grid before the convergence study has chosen its budgets
            count = "   ? jobs (step budgets not chosen yet: --steps)"
        typer.echo(f"{g.name:<{width}} v{g.version} {count}  {g.description}")


@app.command()
@fail_cleanly
def enqueue(
    grid: str = typer.Option(..., "--grid", "-g", help="Grid to enqueue (see `harness grids`)."),
    tasks: Optional[str] = typer.Option(None, help="Comma list of tasks, e.g. sst2,qnli."),
    n: Optional[str] = typer.Option(None, "--n", help="Comma list of training-set sizes; 'full' = all."),
    seeds: Optional[str] = typer.Option(None, help=SEEDS_HELP),
    losses: Optional[str] = typer.Option(None, help="Comma list of ce, ce+scl."),
    noise: Optional[str] = typer.Option(None, help=f"Comma list of back-translation temperatures T: 0 = clean, else 0 < T ≤ {MAX_NOISE} (the paper's: 0.3–0.9)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Comma list of batch sizes."),
    model: Optional[str] = typer.Option(None, help="Hub id or local folder of the encoder."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (the epoch protocol: validation after each)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="A budget in optimizer steps instead of epochs (protocol v2): the data is passed over as often as the steps take."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="With --steps: validate every K steps and after the last (default: after the last only)."),
    lam: Optional[float] = typer.Option(None, "--lam", help="λ of (1−λ)·CE + λ·SCL, in [0, 1]."),
    tau: Optional[float] = typer.Option(None, "--tau", help=f"SCL temperature τ ≥ {MIN_TAU} (the paper's: 0.1–0.9)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (AdamW)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per example."),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio", help="Linear warm-up share of steps."),
    scl_reduction: Optional[str] = typer.Option(None, "--scl-reduction", help="mean (default) or sum over anchors."),
    noise_mode: Optional[str] = typer.Option(None, "--noise-mode", help="augment (default) or replace."),
    batching: Optional[str] = typer.Option(
        None, "--batching", help="How training batches are formed: fixed (default; fairseq, the "
        "paper's code: one seeded permutation cut into batches, only their order changes per "
        "epoch), reshuffle (a new permutation every epoch, as HF Trainer) or length (length-grouped: "
        "fast for full-data runs)."),
    sampling: Optional[str] = typer.Option(
        None, "--sampling", help="How the N training examples are drawn: uniform (default; the "
        "paper's 'sampled') or stratified (equal count per class, as LM-BFF)."),
    stage1_n: Optional[str] = typer.Option(None, "--stage1-n", help="transfer grid: train the SST-2 stage-1 model on a sample of this many examples ('full' = all, the paper's)."),
    stage1_epochs: Optional[int] = typer.Option(None, "--stage1-epochs", min=1, help="transfer grid: epochs of stage 1 (default min(epochs, 5))."),
    tuned: bool = typer.Option(False, "--tuned", help="fewshot, noise, transfer: lr, λ, τ and warm-up per task from `harness tune select`."),
    max_attempts: int = typer.Option(queue.MAX_ATTEMPTS, "--max-attempts", min=1, help="Attempts before a job is failed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be enqueued; write nothing."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the model check (configuration, files, max length): for a machine that does not hold the models its workers have."),
    db_url: Optional[str] = DbOpt,
):
    """Expand a grid into jobs and add those not already in the database.

    The smoke grid (a demo) goes to its own database, sqlite:///demo.db, unless --db or
    $HARNESS_DB names one: a demo never mixes with a campaign's results.db.
    """
    from harness.enqueue import plan_jobs

    g = grids.get_grid(grid)
    if g.name == grids.DEMO_GRID and db_url is None and not os.environ.get("HARNESS_DB"):
        db_url = db.DEMO_URL
    if max_attempts > MAX_ATTEMPTS:
        raise HarnessError(f"--max-attempts {max_attempts}: at most {MAX_ATTEMPTS}")
    overrides = dict(
        tasks=_split(tasks), ns=_numbers(n, int, "--n", allow_full=True), seeds=_seeds(seeds),
        losses=_split(_lower(losses)), noises=_numbers(noise, float, "--noise"),
        batch_sizes=_numbers(batch_size, int, "--batch-size"), model=model, epochs=epochs,
        steps=steps, eval_every=eval_every, lam=lam,
        tau=tau, lr=lr, max_length=max_length, warmup_ratio=warmup_ratio,
        scl_reduction=_lower(scl_reduction), noise_mode=_lower(noise_mode),
        batching=_lower(batching), sampling=_lower(sampling), stage1_epochs=stage1_epochs,
        stage1_n=_stage1_n(stage1_n))
    # --tuned reads the stored choices, so the database must exist already, even for a dry run
    engine = db.open_db(db_url) if tuned else None
    jobs = plan_jobs(g, overrides, check_models=not no_check, tuned=engine)  # everything, before the database
    if dry_run:
        for spec, dep in jobs[:20]:
            typer.echo(f"{spec.job_id}  {spec.to_json()}" + (f"  after {dep}" if dep else ""))
        if len(jobs) > 20:
            typer.echo(f"... and {len(jobs) - 20} more")
        typer.echo(f"dry run: grid {grid} has {len(jobs)} jobs; nothing written")
        return
    engine = engine or db.open_db(db_url, create=True)
    added, existing = queue.enqueue(engine, grid, [s for s, _ in jobs], max_attempts=max_attempts,
                                    depends={s.job_id: d for s, d in jobs if d})
    url = engine.url.render_as_string(hide_password=True)
    typer.echo(f"grid {grid}: added {added} jobs, {existing} already existed ({url})")
    if existing:  # the same spec over edited data is the same job: say when its result is stale
        _warn_changed_data(engine, job_ids=[s.job_id for s, _ in jobs])
    if db_url == db.DEMO_URL:
        typer.echo(f"the demo's own database; run it with `harness work --until-empty --db {url}`, "
                   f"then `harness report --table 2 --db {url}`")


@app.command()
@fail_cleanly
def work(
    gpu: Optional[int] = typer.Option(None, "--gpu", help="CUDA device index; default: the CPU."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", min=1, help="Stop after this many jobs."),
    until_empty: bool = typer.Option(False, "--until-empty", help="Exit when nothing is left to claim."),
    idle_exit: Optional[float] = typer.Option(
        None, "--idle-exit", min=0.0, help="Exit once nothing could be claimed for this many "
        "seconds (expired leases are taken back first); above --lease-seconds, a killed worker's "
        "job is picked up before the last workers leave. Default: keep polling."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Take only this grid's jobs."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Per-job artifacts folder."),
    lease_seconds: float = typer.Option(queue.LEASE_SECONDS, "--lease-seconds", min=1.0,
                                        help="Lease length; a heartbeat renews it every quarter."),
    runner: str = typer.Option("harness.training.finetune:fine_tune", "--runner", hidden=True),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine; "
                                "each gets cores/K threads (--max-jobs applies to each)."),
    no_bar: bool = typer.Option(False, "--no-bar", hidden=True, help="Log lines, no live bar."),
    db_url: Optional[str] = DbOpt,
):
    """Claim jobs one at a time, fine-tune, write the metrics back; repeat.

    Run one per GPU, on as many machines as share the database, or `--workers K` to share this
    machine's cores (or one GPU) between K. SIGINT/SIGTERM hand the current job back to the queue
    and exit (a repeated SIGTERM is the same request; a second SIGINT stops at once); a killed
    worker's job is re-run once its lease expires. A GPU fault hands the job back and exits with
    status 3: start the worker again.
    """
    from harness.runtime import threads

    threads.prepare_process()  # before torch loads: the OpenMP wait policy is read only then
    from harness.runtime.device import DEVICE_FAULT_EXIT, DeviceFault

    if grid is not None:
        grids.get_grid(grid)
    engine = db.open_db(db_url)
    if workers > 1:
        from harness.runtime.local_workers import run_local_workers

        args = [f"--runs-dir={runs_dir}", f"--lease-seconds={lease_seconds}", f"--runner={runner}",
                "--no-bar", *(["--gpu", str(gpu)] if gpu is not None else []),
                *(["--max-jobs", str(max_jobs)] if max_jobs else []),
                *(["--until-empty"] if until_empty else []), *(["--grid", grid] if grid else []),
                *(["--idle-exit", str(idle_exit)] if idle_exit is not None else []),
                *(["--quiet"] if quiet else []), *(["--db", db_url] if db_url else [])]
        raise typer.Exit(run_local_workers(workers, args))
    from harness.worker import Worker, WorkerOptions

    opts = WorkerOptions(gpu=gpu, max_jobs=max_jobs, until_empty=until_empty, idle_exit=idle_exit,
                         grid=grid, runs_dir=runs_dir, lease_seconds=lease_seconds, runner=runner,
                         quiet=quiet)
    from harness.display import ProgressDisplay

    with ProgressDisplay(enabled=not quiet and not no_bar) as display:
        worker = Worker(engine, opts, display=display.update)
        worker.install_signal_handlers()
        try:
            done = worker.run()
        except DeviceFault as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(DEVICE_FAULT_EXIT)
    typer.echo(f"worker {worker.name}" + (f" (stopped by {worker.stopped_by})" if worker.stopped_by else "")
               + f": {done} done, {worker.failed} failed"
               + (f", {worker.stored_kept} results stored that were kept in their run folders"
                  if worker.stored_kept else "")
               + (f", {worker.kept} results kept in their run folders (database unreachable; the "
                  "next worker to reach it stores them)" if worker.kept else "")
               + (f" (nothing was queued{f' of grid {grid}' if grid else ''} in "
                  f"{engine.url.render_as_string(hide_password=True)})"
                  if until_empty and not done + worker.failed + worker.kept else ""), err=True)


@app.command()
@fail_cleanly
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           job: Optional[str] = typer.Option(None, "--job", help="One job (id or unique prefix) in full: spec, attempts, tracebacks."),
           db_url: Optional[str] = DbOpt):
    """Queued, running (with progress), done and failed jobs by grid; recent failures."""
    from harness.status import job_detail, queue_status

    engine = db.open_db(db_url, readonly=True)
    if job is not None:
        d = job_detail(engine, job)
        if as_json:
            typer.echo(json.dumps(d, indent=2))
        else:
            from harness.display import render_job

            render_job(d)
        return
    s = queue_status(engine)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    from harness.display import render_status

    render_status(s)


@app.command()
@fail_cleanly
def cancel(grid: Optional[str] = typer.Option(None, "--grid"), job: Optional[list[str]] = typer.Option(None, "--job", help="Job id or unique prefix (repeatable)."),
           db_url: Optional[str] = DbOpt):
    """Withdraw queued jobs (all of a grid, or the given --job ids)."""
    engine, ids = _jobs_engine(grid, job, db_url)
    typer.echo(f"cancelled {queue.cancel(engine, job_ids=ids, grid=grid)} jobs")


@app.command()
@fail_cleanly
def retry(grid: Optional[str] = typer.Option(None, "--grid"), job: Optional[list[str]] = typer.Option(None, "--job", help="Job id or unique prefix (repeatable)."),
          data_changed: bool = typer.Option(False, "--data-changed", help="Instead: run again the done jobs (all, or of --grid / --job) trained on other data than the mirror holds now; each result is replaced when its new run finishes."),
          db_url: Optional[str] = DbOpt):
    """Put failed and cancelled jobs back in the queue with fresh attempts (or, with
    --data-changed, done jobs whose data files changed since they ran)."""
    from harness.store import provenance

    engine, ids = _jobs_engine(grid, job, db_url, any_job=data_changed)
    if data_changed:
        changes = provenance.changed_data(engine, job_ids=ids, grid=grid)
        typer.echo(f"re-queued {provenance.requeue(engine, changes)} done jobs whose data changed")
        return
    typer.echo(f"re-queued {queue.retry(engine, job_ids=ids, grid=grid)} jobs")
    _warn_changed_data(engine, job_ids=ids, grid=grid)


def _warn_changed_data(engine, **which) -> None:
    """One line on stderr when finished jobs (those named by `which`, or all) were trained on
    other data than the mirror holds now (harness.store.provenance)."""
    from harness.store import provenance

    changes = provenance.changed_data(engine, **which)
    if changes:
        typer.echo(f"warning: {provenance.describe(changes)}", err=True)


def _jobs_engine(grid: str | None, job: list[str] | None, db_url: str | None, any_job: bool = False):
    """The database of cancel/retry and the whole ids of --job (ids or unique prefixes), after
    checking that the grid and every job named exist: a typo says so instead of "0 jobs".
    any_job: neither --grid nor --job is needed (all jobs)."""
    if not grid and not job and not any_job:
        raise HarnessError("say which jobs: --grid G or --job ID (repeatable)")
    engine = db.open_db(db_url)
    if grid and grid not in queue.grids_in(engine):
        if grid in grids.GRIDS:
            raise HarnessError(f"no jobs of grid {grid!r} in this database")
        raise HarnessError(f"unknown grid {grid!r}; known grids: {', '.join(grids.GRIDS)}")
    from harness.status import find_job

    return engine, [find_job(engine, j) for j in job or []] or None


@app.command()
@fail_cleanly
def report(
    table: Optional[int] = typer.Option(None, "--table", "-t", help="Paper table: 2 few-shot, 3 noise, 4 GLUE, 5 batch size, 7 transfer; 8: our extension of 3 (noisy texts replace the originals)."),
    fmt: str = typer.Option("terminal", "--format", "-f", help="terminal | markdown | latex | csv | json."),
    aggregation: str = typer.Option("top3", "--aggregation", "-a", help="top3 (the paper's: test score of the top 3 of 10 runs by validation) or mean (all seeds)."),
    model: Optional[str] = typer.Option(None, help="Only results of this model (its Hub id, or the "
                                        "last part of it: paraphrase-MiniLM-L3-v2)."),
    grid: Optional[str] = typer.Option(None, "--grid", "-g", help="Only results of this grid (see `harness grids`)."),
    all_: bool = typer.Option(False, "--all", help="Write every table and figure as one Markdown + HTML "
                              "report (minutes; it says what it is doing). Its claims pool the campaign's "
                              "runs only: the paper's grids, their own seeds, the tuned settings."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for --all."),
    db_url: Optional[str] = DbOpt,
):
    """A table of the paper from the database, the paper's numbers beside ours, with significance tests.

    The terminal format fits the terminal (at most 100 columns). Every run of the table is shown,
    each setting in its own section; `--all` writes the report, whose claims pool the campaign's
    evidence only (analysis/evidence.py).
    """
    import analysis

    aggregation = _choice(aggregation, tuple(analysis.AGGREGATIONS), "--aggregation")
    if all_:
        import time

        engine, start = db.open_db(db_url, readonly=True), time.monotonic()
        say = lambda line: typer.echo(f"[{time.monotonic() - start:5.0f}s] {line}", err=True)  # noqa: E731
        path = analysis.write_report(engine, out, aggregation=aggregation, progress=say)
        typer.echo(f"report written to {path} (and {path.with_suffix('.html')})")
        _warn_changed_data(engine)
        return
    if table is None:
        raise HarnessError("say which table: --table 2|3|4|5|7|8, or --all --out DIR for everything")
    _choice(table, analysis.TABLES, "--table")
    _choice(fmt, analysis.FORMATS, "--format")
    engine = db.open_db(db_url, readonly=True)
    df = analysis.load_results(engine)
    model = _narrow(df, "model", model, lambda m, want: m.rsplit("/", 1)[-1] == want)
    _narrow(df, "grid", grid)
    _warn_changed_data(engine)  # after the filters: a bad one is refused in one line
    if grid is not None:
        df = df[df["grid"] == grid]
    t = analysis.build_table(df, table, aggregation=aggregation, model=model, db=engine)
    if fmt == "terminal":
        from analysis.evidence import demo_note
        from analysis.render import WIDTH

        width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
        # first what a demo's runs are (not evidence) and where the campaign's results are
        note = demo_note(df[df["job_id"].isin({j for c in t.cells for j in c.job_ids})])
        if note:
            typer.echo("\n".join(textwrap.fill(line, width, break_on_hyphens=False)
                                 for line in note.splitlines()) + "\n")
        typer.echo(analysis.render(t, fmt, width=width))
    else:
        typer.echo(analysis.render(t, fmt))
    if t.layout.noise_summary and fmt in ("terminal", "markdown"):
        typer.echo("\n" + analysis.render_noise_summary(analysis.noise_summary(engine), fmt))


def _narrow(df, column: str, value: str | None, alias=None) -> str | None:
    """The value of --model / --grid as the results name it; one line naming those there are
    when no finished job has it (alias(name, value): another spelling that names one of them)."""
    if value is None:
        return None
    there = sorted(df[column].unique())
    if value in there:
        return value
    matches = [v for v in there if alias is not None and alias(v, value)]
    if len(matches) == 1:
        return matches[0]
    raise HarnessError(f"no finished job of {column} {value!r} in this database; "
                       + (f"{column}s here: {', '.join(there)}" if there else "it holds no results yet"))


def _choice(value, allowed, name: str):
    if value not in allowed:
        raise HarnessError(f"{name} {value}: choose one of {', '.join(map(str, allowed))}")
    return value


@app.command()
@fail_cleanly
def plot(
    kind: str = typer.Argument("all", help="variance | noise | tsne | all."),
    out: Path = typer.Option(Path("plots"), "--out", help="Folder for the PNG and PDF files."),
    task: str = typer.Option("sst2", help="Task of the t-SNE figure."),
    n: Optional[str] = typer.Option("20", "--n", help="N of the t-SNE figure ('full' = full data)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the t-SNE figure (default: the first with both losses)."),
    model: Optional[str] = typer.Option(None, help="Only results of this model."),
    db_url: Optional[str] = DbOpt,
):
    """Variance across seeds, noise curves, and the t-SNE of test-set [CLS] embeddings (CE beside CE+SCL)."""
    import analysis

    _choice(kind, ("variance", "noise", "tsne", "all"), "plot kind")
    (n_value,) = _numbers(n, int, "--n", allow_full=True)
    engine = db.open_db(db_url, readonly=True)
    df = analysis.load_results(engine)
    # What each figure needs, said when a figure is skipped for want of it.
    needs = {
        "variance": ("finished runs of SST-2, QNLI or MNLI at N = 20, 100 or 1000 on clean data",
                     lambda: analysis.plot_variance(df, out, model=model)),
        "noise": ("finished runs of SST-2, QNLI or MNLI at N = 100 (the noise grid)",
                  lambda: analysis.plot_noise(df, out, model=model)),
        "tsne": (f"a CE and a CE+SCL run of {task} at N = {n} on the same seed"
                 + (f" {seed}" if seed is not None else "") + " with stored embeddings",
                 lambda: analysis.plot_tsne(engine, out, task=task, n=n_value, seed=seed, model=model)),
    }
    paths, skipped = [], []
    for name, (need, make) in needs.items():
        if kind in (name, "all"):
            made = make()
            if not made:
                skipped.append(f"the {name} plot needs {need}" + (f" of model {model}" if model else ""))
            paths += made
    if not paths:
        raise HarnessError("nothing to plot: " + "; ".join(skipped) + "; none are in the database")
    for why in skipped:
        typer.echo(f"skipped: {why}; none are in the database", err=True)
    for p in paths:
        typer.echo(str(p))


@app.command()
@fail_cleanly
def convergence(
    grid: str = typer.Option("convergence", "--grid", help="The study's grid (its jobs run with --steps and --eval-every)."),
    tolerance: float = typer.Option(0.5, help="Points of validation accuracy below CE's best that count as converged."),
    plot_dir: Optional[Path] = typer.Option(None, "--plot", help="Also draw the curves into this folder (convergence.png/.pdf)."),
    db_url: Optional[str] = DbOpt,
):
    """Protocol v2's convergence study: the step budget each N needs, from the validation curves.

    Run the study first: `harness enqueue --grid convergence && harness work --until-empty`
    (108 long jobs: both small models, SST-2/QNLI/MNLI at N = 20, 100, 1000, both losses, 3 seeds).
    """
    from analysis.convergence import budget_per_n, budgets, design, render_budgets
    from analysis.load import load_curves
    from analysis.plots import plot_convergence

    if not 0 < tolerance < 100:
        raise HarnessError(f"--tolerance {tolerance}: give points of accuracy, e.g. 0.5")
    curves = load_curves(db.open_db(db_url, readonly=True), grid)
    table = budgets(curves, tolerance / 100)
    try:
        planned = design(grid)
    except HarnessError:  # a grid of one's own that `harness grids` does not list: nothing to compare
        planned = {}
    typer.echo(render_budgets(table, tolerance / 100, **planned))
    if plot_dir is not None and not curves.empty:
        for path in plot_convergence(curves, plot_dir, budget_per_n(table) if not table.empty else None):
            typer.echo(str(path))


@app.command()
@fail_cleanly
def bench(
    model: str = typer.Option("sentence-transformers/paraphrase-MiniLM-L3-v2", help="Hub id or local folder."),
    task: str = typer.Option("sst2"),
    batch_size: int = typer.Option(16, "--batch-size", min=2),
    steps: int = typer.Option(30, min=5, help="Timed optimisation steps per variant."),
    max_length: int = typer.Option(128, "--max-length", min=8),
    repeats: int = typer.Option(3, min=1, help="Interleaved repetitions per variant; medians are reported."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="CUDA device; default: the CPU."),
):
    """Time our training loop next to a plain Hugging Face Trainer doing the same work, in one process."""
    from harness.bench import format_bench, run_bench
    from harness.protocol.tasks import get_task
    from harness.worker import select_device

    get_task(task)
    r = run_bench(model, task=task, batch_size=batch_size, steps=steps, max_length=max_length,
                  repeats=repeats, device=select_device(gpu))
    typer.echo(format_bench(r))


@app.command()
@fail_cleanly
def baseline(
    job: str = typer.Option(..., "--job", help="A finished job: its id or a unique prefix."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Train this many epochs, validating every epoch (default: the job's own budget)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Train this many optimizer steps instead."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=1, help="With --steps: validate every K steps (default: once per epoch's worth of steps)."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="CUDA device; default: the CPU."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    db_url: Optional[str] = DbOpt,
):
    """Train a finished job's examples again with a plain Hugging Face Trainer and a standard
    recipe, validate and test on the same examples, and print both side by side."""
    from harness.runtime import threads

    threads.prepare_process()  # as a worker runs: passive OpenMP waits (read when torch loads) ...
    from harness.baseline import format_comparison, run_baseline
    from harness.worker import select_device

    threads.apply_threads()  # ... and no more threads than cores, so the times compare
    engine = db.open_db(db_url, readonly=True)
    c = run_baseline(engine, job, epochs=epochs, steps=steps, eval_every=eval_every, device=select_device(gpu))
    typer.echo(json.dumps(c.to_dict(), indent=1, ensure_ascii=False) if as_json else format_comparison(c))


@tune_app.command("select")
@fail_cleanly
def tune_select(
    model: str = typer.Option(grids.GRIDS["tune"].base["model"], help="The model the tune grid ran."),
    grid: str = typer.Option("tune", "--grid", help="The tuning grid: tune (protocol v1) or tune-v2."),
    tasks: Optional[str] = typer.Option(None, help="Comma list of tasks (default: every task tuned)."),
    db_url: Optional[str] = DbOpt,
):
    """Choose per task: the learning rate by CE's mean validation score over the tuning seeds, then
    λ and τ by CE+SCL's at that learning rate; store the choice and the numbers behind it."""
    from harness import tuning

    engine = db.open_db(db_url)
    choices = tuning.select(engine, model=model, tasks=_split(tasks), grid=grid)  # refuses before writing
    tuning.store(engine, choices)
    for c in choices:
        typer.echo(f"{c.task:<6} {c.model}: lr {c.lr:g}, λ {c.lam:g}, τ {c.tau:g} (warm-up {c.warmup_ratio:g}); "
                   f"validation {c.metric} CE {c.ce_val_score:.4f}, CE+SCL {c.scl_val_score:.4f} "
                   f"(mean of seeds {', '.join(map(str, c.seeds))}, {len(c.candidates)} settings tried)")


@tune_app.command("scl")
@fail_cleanly
def tune_scl(
    model: str = typer.Option(grids.GRIDS["tune"].base["model"], help="The model the tune grid ran."),
    grid: str = typer.Option("tune", "--grid", help="The tuning grid: tune (protocol v1) or tune-v2."),
    tasks: Optional[str] = typer.Option(None, help="Comma list of tasks (default: every task tuned)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be enqueued; write nothing."),
    db_url: Optional[str] = DbOpt,
):
    """Tuning in two steps (after `enqueue --grid tune --losses ce`): once CE's tuning runs are
    done, enqueue CE+SCL over the grid's λ × τ at CE's chosen learning rate only."""
    from harness import tuning

    engine = db.open_db(db_url)
    specs = tuning.scl_step(engine, model=model, tasks=_split(tasks), grid=grid)  # refuses before writing
    if dry_run:
        typer.echo(f"dry run: {len(specs)} CE+SCL tuning jobs at lr "
                   + ", ".join(sorted({f"{s.task} {s.lr:g}" for s in specs})) + "; nothing written")
        return
    added, existing = queue.enqueue(engine, grid, specs)
    typer.echo(f"grid {grid}: added {added} CE+SCL jobs, {existing} already existed")


@db_app.command("upgrade")
@fail_cleanly
def db_upgrade(db_url: Optional[str] = DbOpt):
    """Create the schema, or migrate it to this harness's revision (Alembic); prints before -> after.

    Workers refuse a database at an older revision until then. It runs in one transaction."""
    before, after = db.upgrade(db.make_engine(db_url))
    typer.echo(f"schema revision {before or 'none'} -> {after}" + (" (up to date)" if before == after else ""))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
