"""`harness work`: claim a job, run it, write the result back; repeat.

The worker owns all database traffic for a job. While the runner trains, a heartbeat thread renews
the lease and publishes progress; SIGINT/SIGTERM ask the runner to stop at its next step and the
job is handed back to the queue, so a worker that stops cleanly never leaves a job `running`.
A repeated SIGTERM is the same request (a scheduler's cancel reaches every process of a job, and a
wrapper script may pass on its own copy); a second SIGINT (Ctrl-C again) stops at once.
A GPU fault that leaves the CUDA context unusable hands the job back too (without using up an
attempt) and stops the worker with DeviceFault, for its scheduler to start a fresh process.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Callable

from sqlalchemy.engine import Engine

from harness.training import artifacts
from harness.store import dependencies, pending, queue
from harness.runtime import threads
from harness.runtime.device import DeviceFault, configure_gpu, free_memory, is_device_fault, prepare_gpu_process
from harness.runtime.memory import keep_freed_memory
from harness.errors import (DatabaseFileError, DatabaseUnavailable, HarnessError, JobInterrupted,
                            PermanentJobError)
from harness.store.jobs import Outcome, Status
from harness.training.runner import DEFAULT_RUNNER, Progress, RunContext, RunResult, Runner, load_runner

POLL_SECONDS = 5.0  # idle wait between claims when the queue is empty (without --until-empty)
REQUEUE_EVERY_SECONDS = 10.0  # how often a worker looks for expired leases of other workers
PROGRESS_EVERY_SECONDS = 5.0  # heartbeat period (at most lease/4), so `harness status` stays fresh
MAX_DEFERRALS = 3  # a job handed back this often for an unusable source model fails instead
MAX_DEVICE_FAULTS = 3  # a job under which the GPU failed this often (on any worker) fails instead
DB_OUTAGE_SECONDS = 600.0  # between jobs, wait this long for an unreachable database, then exit
DB_BACKOFF_MAX_SECONDS = 10.0  # longest wait between two tries to reach the database


def is_permanent(exc: BaseException) -> bool:
    """Whether another attempt would fail the same way. Bad data, bad configuration, a model that
    cannot be loaded or lacks its encoder (HarnessError, PermanentJobError) will not change; a
    database that cannot be reached will, and so may anything unforeseen (a crash, a CUDA error)."""
    return (isinstance(exc, (PermanentJobError, HarnessError))
            and not isinstance(exc, DatabaseUnavailable))


@dataclass
class WorkerOptions:
    gpu: int | None = None
    max_jobs: int | None = None
    until_empty: bool = False
    idle_exit: float | None = None  # exit once nothing could be claimed for this long (seconds)
    grid: str | None = None
    runs_dir: Path = Path("runs")
    lease_seconds: float = queue.LEASE_SECONDS
    runner: str = DEFAULT_RUNNER
    quiet: bool = False


def select_device(gpu: int | None) -> str:
    """'cpu', or 'cuda:N' after checking that device N exists (before any CUDA context exists)."""
    if gpu is None:
        return "cpu"
    if gpu < 0:
        raise HarnessError(f"--gpu takes a device index ≥ 0, got {gpu}")
    import torch

    prepare_gpu_process()
    count = torch.cuda.device_count()
    if count == 0:
        raise HarnessError(f"--gpu {gpu}: no CUDA device is visible on {socket.gethostname()} "
                           "(no GPU, no driver, or a CPU-only torch build); leave out --gpu to use the CPU")
    if gpu >= count:
        raise HarnessError(f"--gpu {gpu}: no such CUDA device; this machine has {count} "
                           f"(indices 0–{count - 1})")
    torch.cuda.set_device(gpu)
    configure_gpu()
    return f"cuda:{gpu}"


@cache
def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("harness", "torch", "transformers", "datasets", "numpy", "sqlalchemy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@cache
def _git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


class _Heartbeat(threading.Thread):
    """Renews the lease (and publishes progress) every few seconds; flags `lost` if the job is no
    longer ours."""

    def __init__(self, engine: Engine, claim: queue.Claim, lease_seconds: float):
        super().__init__(daemon=True, name=f"heartbeat-{claim.job_id}")
        self.engine, self.claim, self.lease_seconds = engine, claim, lease_seconds
        self.progress: dict | None = None
        self.lost = threading.Event()
        self.fatal: DatabaseFileError | None = None  # the database file went bad: stop the job
        self.renewed = time.monotonic()  # when the lease was last renewed (as this process saw it)
        self._halt = threading.Event()

    @property
    def lease_left(self) -> float:
        return self.renewed + self.lease_seconds - time.monotonic()

    def run(self) -> None:
        while not self._halt.wait(min(PROGRESS_EVERY_SECONDS, self.lease_seconds / 4)):
            try:
                beat = time.monotonic()
                if not queue.heartbeat(self.engine, self.claim, self.progress, self.lease_seconds):
                    self.lost.set()
                    return
                self.renewed = beat
            except DatabaseFileError as exc:
                self.fatal = exc
                return
            except Exception as exc:  # a database hiccup: try again at the next beat
                print(f"heartbeat failed ({exc}); retrying", file=sys.stderr)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Worker:
    def __init__(self, engine: Engine, opts: WorkerOptions, runner: Runner | None = None,
                 display: Callable | None = None):
        self.engine, self.opts = engine, opts
        self.runner = runner or load_runner(opts.runner)
        keep_freed_memory()  # faster CPU steps: see harness.runtime.memory
        self.threads = threads.apply_threads()  # never more than the cores: see harness.runtime.threads
        self.device = select_device(opts.gpu)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_requested = threading.Event()
        self.stopped_by: str | None = None  # the signal that asked this worker to stop
        self.display = display
        self.done = self.failed = self.kept = 0  # kept: results left in their run folder, not stored yet
        self.stored_kept = 0  # results kept in a run folder (by any worker) that this one stored
        self._kept_ids: set[str] = set()  # jobs whose result this worker kept

    # -- signals --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGINT or SIGTERM: hand the current job back, then exit. A second SIGINT stops at once;
        a repeated SIGTERM is the same request (Slurm's scancel signals every process of the job,
        the batch script as well as the worker, and the script passes its copy on), so SIGTERM is
        ignored from then on: ignored, not handled, so that one arriving while Python shuts down
        (when handlers written in Python are reset) does not kill the process either."""
        def handler(signum, _frame):
            if self.stop_requested.is_set():  # only SIGINT comes here twice: Ctrl-C again, stop now
                raise KeyboardInterrupt
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stopped_by = signal.Signals(signum).name
            self.stop_requested.set()
            self._say(f"{self.stopped_by}: handing the current job back, then exiting "
                      "(SIGINT, Ctrl-C, to stop at once)")
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Work until told to stop, the job limit is reached, or nothing could be claimed for
        idle_exit seconds (until_empty: at once). Before leaving, expired leases of other workers
        are taken back: a killed worker's job is work left."""
        last_requeue = 0.0
        idle_limit = 0.0 if self.opts.until_empty else self.opts.idle_exit
        idle_since = time.monotonic()
        waiting = False  # said that the queue is empty, until a job comes
        while not self.stop_requested.is_set():
            if (self.opts.max_jobs is not None
                    and self.done + self.failed + self.kept >= self.opts.max_jobs):
                break
            if time.monotonic() - last_requeue > REQUEUE_EVERY_SECONDS:
                self._reach(self._housekeeping)
                last_requeue = time.monotonic()
            claim = self._reach(lambda: queue.claim(
                self.engine, self.name, grid=self.opts.grid, pid=os.getpid(),
                device=_device_name(self.device), versions=_versions(), git_rev=_git_rev(),
                lease_seconds=self.opts.lease_seconds))
            if claim is None:
                idle = time.monotonic() - idle_since
                if idle_limit is not None and idle >= idle_limit:
                    if self._reach(lambda: queue.requeue_stale(self.engine)):
                        continue
                    if idle_limit > 0:
                        self._say(f"nothing to claim for {idle:.0f}s: exiting")
                    break
                if not waiting:  # once, not every poll: a silent worker looks hung
                    waiting = True
                    self._say(f"no queued jobs{f' of grid {self.opts.grid}' if self.opts.grid else ''} in "
                              f"{self.engine.url.render_as_string(hide_password=True)}: waiting for some "
                              f"(every {POLL_SECONDS:g} s"
                              + (f"; exiting after {idle_limit:g} s idle" if idle_limit else "")
                              + "); Ctrl-C stops, --until-empty exits instead")
                self.stop_requested.wait(POLL_SECONDS if idle_limit is None
                                         else min(POLL_SECONDS, idle_limit - idle))
                continue
            waiting = False
            failed = self.failed
            self.run_one(claim)
            if self.failed > failed:  # what the failed job held is garbage now: give it back
                free_memory(self.device)
            idle_since = time.monotonic()
        return self.done

    def _housekeeping(self) -> None:
        """Expired leases back to the queue; results kept while the database was away stored."""
        queue.requeue_stale(self.engine)
        for job_id, stored in pending.store_kept(self.engine, self.opts.runs_dir):
            self.stored_kept += stored
            if job_id in self._kept_ids:  # ours: no longer kept, and done if it was stored
                self._kept_ids.discard(job_id)
                self.kept -= 1
                self.done += stored
            self._say(f"stored the kept result of {job_id}" if stored else
                      f"dropped the kept result of {job_id}: the job was finished meanwhile")

    def _reach(self, fn):
        """fn(), waiting with back-off while the database cannot be reached (a transient state),
        up to DB_OUTAGE_SECONDS; then the error goes up and the worker exits."""
        started, delay = time.monotonic(), 0.5
        while True:
            try:
                return fn()
            except DatabaseUnavailable as exc:
                waited = time.monotonic() - started
                if waited + delay > DB_OUTAGE_SECONDS or self.stop_requested.is_set():
                    raise
                if waited == 0 or delay >= DB_BACKOFF_MAX_SECONDS:
                    self._say(f"database unreachable ({exc}); waiting up to "
                              f"{DB_OUTAGE_SECONDS - waited:.0f}s")
                self.stop_requested.wait(delay)
                delay = min(delay * 2, DB_BACKOFF_MAX_SECONDS)

    # -- one job: run it, then record how it ended ----------------------------------------
    def run_one(self, claim: queue.Claim) -> None:
        """Run one claimed job under a heartbeat, then record how it ended: its result, a failure,
        or the job handed back. What must stop the worker is raised after it is recorded."""
        spec = claim.spec
        label = (f"{claim.job_id} {spec.task} n={spec.n or 'full'} T={spec.noise:g} "
                 f"seed={spec.seed} {spec.loss}")
        self._say(f"start {label} (attempt {claim.attempt}, {self.device})")
        run_dir = self.opts.runs_dir / claim.job_id
        run_dir.mkdir(parents=True, exist_ok=True)
        beat = _Heartbeat(self.engine, claim, self.opts.lease_seconds)
        beat.start()
        started = time.monotonic()
        ctx = self._context(run_dir, beat, label)
        try:
            if not self._link_models(claim, ctx, run_dir):
                beat.stop()
                return
            result = self.runner(spec, ctx)
        except BaseException as exc:
            beat.stop()
            self._record_error(claim, exc, beat, label)
            return
        self._record_result(claim, result, time.monotonic() - started, run_dir, beat, label)

    def _context(self, run_dir: Path, beat: _Heartbeat, label: str) -> RunContext:
        """What the runner sees of the worker: progress goes out with the heartbeat (and to the
        display); the runner stops at its next step once the worker is asked to stop, or the
        heartbeat has lost the lease or found the database file gone bad."""
        def on_progress(p: Progress) -> None:
            beat.progress = asdict(p)
            if self.display:
                self.display(label, p)

        return RunContext(run_dir=run_dir, device=self.device, progress=on_progress,
                          should_stop=lambda: (self.stop_requested.is_set() or beat.lost.is_set()
                                               or beat.fatal is not None),
                          cache_dir=self.opts.runs_dir / ".cache")

    def _record_error(self, claim: queue.Claim, exc: BaseException, beat: _Heartbeat, label: str) -> None:
        """How a job that raised ends (its heartbeat already stopped). JobInterrupted: handed back,
        unless the lease was lost, or the heartbeat found the database file gone bad (raised).
        KeyboardInterrupt: handed back, then raised. A device fault: see _record_device_fault. A bad
        database file: raised. Anything else fails the attempt, permanently where another attempt
        would fail the same way (is_permanent), and is raised after if it is not an Exception."""
        if isinstance(exc, JobInterrupted):
            if beat.fatal is not None:
                raise beat.fatal from None
            if beat.lost.is_set():
                self._say(f"lost the lease of {label}; another worker may run it")
            else:
                queue.release(self.engine, claim)
                self._say(f"handed back {label}")
            return
        if isinstance(exc, KeyboardInterrupt):
            queue.release(self.engine, claim, "worker interrupted")
            raise exc
        if is_device_fault(exc):
            raise self._record_device_fault(claim, exc) from exc
        if isinstance(exc, DatabaseFileError):
            raise exc
        permanent = is_permanent(exc)
        self.failed += 1
        try:
            status = queue.fail(self.engine, claim, exc, permanent=permanent)
        except DatabaseUnavailable as db_exc:
            status = f"not recorded ({db_exc}); the job returns to the queue when its lease expires"
        self._say(f"FAILED {label}: {type(exc).__name__}: {exc} -> {status}"
                  + (" (permanent: not retried)" if permanent and status == Status.FAILED else ""))
        if not isinstance(exc, Exception):
            raise exc

    def _record_device_fault(self, claim: queue.Claim, exc: BaseException) -> DeviceFault:
        """The GPU failed under the job: hand it back for a fresh process, or fail it once the GPU
        has failed under it MAX_DEVICE_FAULTS times. Returns the DeviceFault that stops the worker."""
        line = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        faults = queue.count_attempts(self.engine, claim.job_id, Outcome.DEVICE_FAULT)
        if faults + 1 >= MAX_DEVICE_FAULTS:
            # the job itself faults (e.g. a label out of range): stop it poisoning workers
            queue.fail(self.engine, claim, PermanentJobError(
                f"the GPU failed under this job {MAX_DEVICE_FAULTS} times: {line}"), permanent=True)
            self.failed += 1
        else:
            queue.release(self.engine, claim, f"device fault on {self.device}: {line}",
                          outcome=Outcome.DEVICE_FAULT)
        return DeviceFault(f"{self.device} failed ({line}) in job {claim.job_id}; "
                           "the process's CUDA context is unusable: restart the worker")

    def _record_result(self, claim: queue.Claim, result: RunResult, wall: float, run_dir: Path,
                       beat: _Heartbeat, label: str) -> None:
        """The resolved config beside the job's files, then the result into the database (_store);
        the heartbeat keeps the lease until the result is stored or kept."""
        (run_dir / "config.json").write_text(json.dumps(
            {"job_id": claim.job_id, "spec": claim.spec.canonical(), "resolved": result.config,
             "versions": _versions(), "git_rev": _git_rev(), "device": self.device}, indent=2,
            default=str))
        try:
            written = self._store(claim, result, wall, run_dir, beat, label)
        finally:
            beat.stop()
        if written is None:
            return
        if written:
            self.done += 1
            self._say(f"done {label}: {result.metric} val {result.val_score:.4f} "
                      f"test {result.test_score:.4f} ({wall:.1f}s)")
        else:
            self._say(f"result of {label} discarded: the lease was lost meanwhile")

    def _store(self, claim: queue.Claim, result, wall: float, run_dir: Path, beat: _Heartbeat,
               label: str) -> bool | None:
        """queue.finish, retried with back-off while the database is unreachable and the lease
        lasts (the heartbeat keeps renewing it once the database is back). When the lease runs
        out, or the database file went bad, the result is kept in run_dir for the next contact
        (harness.store.pending). None: not stored now."""
        delay = 0.5
        while True:
            try:
                return queue.finish(self.engine, claim, result, wall_seconds=wall)
            except DatabaseUnavailable as exc:
                if beat.lease_left < delay:
                    path = pending.keep(run_dir, self.engine, claim, result, wall)
                    self.kept += 1
                    self._kept_ids.add(claim.job_id)
                    self._say(f"database unreachable ({exc}): the result of {label} is kept in "
                              f"{path}; a worker stores it at its next contact with the database")
                    return None
                self._say(f"database unreachable while storing {label}: retrying in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, DB_BACKOFF_MAX_SECONDS)
            except DatabaseFileError as exc:
                path = pending.keep(run_dir, self.engine, claim, result, wall)
                raise DatabaseFileError(f"{exc}; the result of {claim.job_id} is kept in {path}") from None
            except Exception as exc:  # the database refused the result: record it, keep working
                self.failed += 1
                status = queue.fail(self.engine, claim, exc)
                self._say(f"FAILED to store the result of {label}: {type(exc).__name__}: {exc} -> {status}")
                return None

    def _link_models(self, claim: queue.Claim, ctx: RunContext, run_dir: Path) -> bool:
        """Models in and out of a job. A job others depend on saves its model under run_dir/model.
        A job that starts from another's model gets that folder once its sha256 checks out; if
        the files are gone or changed, the source job goes back to the queue (once, however many
        dependents notice) and this job is handed back unrun, without using up an attempt.
        False: the job was handed back."""
        if dependencies.has_dependents(self.engine, claim.job_id):
            ctx.save_model_dir = run_dir / "model"
        source = claim.spec.init_from
        if source is None:
            return True
        stored = dependencies.stored_model(self.engine, source)
        why = artifacts.problem(*(stored or (None, None)))
        if why is None:
            ctx.init_model_dir, ctx.init_model_sha256 = Path(stored[0]), stored[1]
            return True
        if dependencies.deferrals(self.engine, claim.job_id) >= MAX_DEFERRALS:
            raise PermanentJobError(f"the model of {source} was unusable {MAX_DEFERRALS} times "
                                    f"(last: {why}); do all workers see the same runs folder?")
        requeued = dependencies.redo(self.engine, source, f"job {claim.job_id} needs its model, but {why}")
        queue.release(self.engine, claim, f"waiting for {source} to run again: {why}",
                      outcome=Outcome.DEFERRED)
        self._say(f"model of {source} unusable ({why}): "
                  + ("re-queued it" if requeued else "it is already queued again")
                  + f"; handed back {claim.job_id}")
        return False

    def _say(self, msg: str) -> None:
        if not self.opts.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
