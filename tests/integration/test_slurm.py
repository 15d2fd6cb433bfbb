"""scripts/slurm_array.sbatch under a real Slurm: a one-node cluster on this machine (munge,
slurmctld, slurmd, started by scripts/slurm_local.sh) runs the script as a job array against a
fresh PostgreSQL database, the way the README's "Many machines" section submits it, and the queue
must come through scancel and kill -9 with every job done exactly once.

Jobs are the `gated` test runner (tests/integration/slurm_gate.py): no model; each waits at a gate
until the test has cancelled one task and killed the other's worker, then takes a second. A
machine without Slurm fails these tests (`.ci/run` installs it); they are never skipped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from paths import REPO
from test_workers import enqueue, rows, start_worker, wait_for, worker_env

SCRIPT = REPO / "scripts" / "slurm_array.sbatch"
CLUSTER = REPO / "scripts" / "slurm_local.sh"
JOBS = 6  # the grid: two array tasks share it
JOB_SECONDS = "1"  # each job's length once the gate is open
LEASE = "4"  # seconds: a killed worker's job is back in the queue this long after its last heartbeat
IDLE_EXIT = "6"  # seconds without a job to claim before a task ends


@pytest.fixture(scope="module")
def slurm() -> None:
    """The one-node cluster: Debian's packages installed where missing, then started if it is not
    running (scripts/slurm_local.sh install and start are idempotent). Where Slurm cannot be
    installed or started, the tests fail with the reason; they are never skipped."""
    installed = subprocess.run([str(CLUSTER), "install"], capture_output=True, text=True, timeout=900)
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if installed.returncode != 0 or missing:
        pytest.fail(f"Slurm is not installed here ({', '.join(missing) or 'packages'} missing) and "
                    f"could not be:\n{installed.stdout}{installed.stderr}", pytrace=False)
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm_local.sh start failed:\n{started.stdout}{started.stderr}", pytrace=False)


def sbatch(*args: str, cwd: Path, env: dict) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def in_squeue(array: str) -> set[str]:
    """The array's tasks Slurm still lists (pending, running or completing)."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i"], capture_output=True,
                         text=True, timeout=30)
    return set(out.stdout.split())


def task_of(pid: int) -> str | None:
    """The array task a process runs in, from its environment (the cluster is this machine)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"SLURM_ARRAY_TASK_ID=")]
    return found[0] if found else None


def running(engine) -> dict[str, int]:
    """job id -> pid of the worker running it, for the attempts under way."""
    return dict(rows(engine, "select job_id, pid from attempts where outcome = 'running'"))


def job_states(array: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"ArrayTaskId=(\d+) .*?JobState=(\w+)", out.stdout))


@pytest.mark.postgres
@pytest.mark.slurm
def test_slurm_array_survives_scancel_and_kill_9_and_ends_when_the_queue_is_empty(slurm, pg_url, tmp_path):
    engine = enqueue(pg_url, JOBS)
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    env = worker_env(HARNESS_DB=pg_url, HARNESS_TEST_SLOW_SECONDS=JOB_SECONDS, HARNESS_TEST_GATE=str(gate),
                     HARNESS_IDLE_EXIT=IDLE_EXIT, HARNESS_RUNS_DIR=str(runs))
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():  # the script's default venv
        env["HARNESS_VENV"] = sys.prefix
    # submitted from a folder of its own, as the README does; the logs land there
    array = sbatch("--array=0-1", "--cpus-per-task=1", str(SCRIPT), "--runner", "slurm_gate:gated",
                   "--lease-seconds", LEASE, cwd=tmp_path, env=env)
    logs = {t: tmp_path / f"harness-{array}_{t}.log" for t in ("0", "1")}

    def log(t: str) -> str:
        return logs[t].read_text() if logs[t].exists() else ""

    def started(job_id: str, pid: int) -> bool:
        return (runs / job_id / f"started.{pid}").exists()

    def working() -> dict[str, tuple[str, int]]:
        """array task -> (job, worker pid) for the tasks whose worker is inside a job."""
        return {task_of(pid): (job, pid) for job, pid in running(engine).items() if started(job, pid)}

    try:
        # both tasks inside a job (held at the gate); scancel one: it hands its job back, once
        wait_for(lambda: {"0", "1"} <= working().keys(), timeout=90,
                 what=f"both array tasks inside a job (logs: {log('0')} {log('1')})")
        (cancelled_job, _), (killed_job, pid) = working()["1"], working()["0"]
        subprocess.run(["scancel", f"{array}_1"], check=True, timeout=30)
        wait_for(lambda: f"{array}_1" not in in_squeue(array), timeout=60, what="task 1 to end")
        assert rows(engine, f"select status from jobs where id = '{cancelled_job}'") == [("queued",)]

        # kill -9 the other task's worker, still inside its job: the task starts a fresh one
        os.kill(pid, signal.SIGKILL)
        gate.touch()

        # the array ends by itself once the queue stays empty
        wait_for(lambda: not in_squeue(array), timeout=120, what=f"the array to end (logs: {log('0')})")
    finally:
        subprocess.run(["scancel", array], timeout=30)

    # every job done exactly once; one hand-back (scancel) and one lost attempt (kill -9)
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", JOBS)]
    assert rows(engine, "select count(*), count(distinct job_id) from results") == [(JOBS, JOBS)]
    assert Counter(o for (o,) in rows(engine, "select outcome from attempts")) == {
        "done": JOBS, "interrupted": 1, "lost": 1}
    assert rows(engine, f"select outcome from attempts where job_id = '{cancelled_job}' order by id") == [
        ("interrupted",), ("done",)]
    assert rows(engine, f"select outcome from attempts where job_id = '{killed_job}' order by id") == [
        ("lost",), ("done",)]
    # task 0 finished both the cancelled task's job and its own killed worker's
    assert f"done {cancelled_job}" in log("0") and f"done {killed_job}" in log("0")

    cancelled, survivor = log("1"), log("0")
    for text in (cancelled, survivor):
        assert "Traceback" not in text and "FATAL" not in text, text
    assert cancelled.count("handing the current job back") == 1, cancelled
    assert cancelled.count(f"handed back {cancelled_job}") == 1, cancelled
    assert "stopped by SIGTERM" in cancelled and "worker exited (status 0) after SIGTERM" in cancelled, cancelled
    assert "worker stopped by signal KILL" in survivor and "starting a fresh one (1 of 5)" in survivor, survivor
    assert f"nothing to claim for {IDLE_EXIT}s: exiting" in survivor, survivor
    assert "worker exited (status 0); task done" in survivor, survivor
    assert job_states(array) == {"0": "COMPLETED", "1": "CANCELLED"}


def test_a_repeated_sigterm_is_one_request(sqlite_url, tmp_path):
    """What scancel does to a worker under the script: SIGTERM from Slurm, then the script's copy.
    The worker hands its job back once and exits 0; it does not stop at once."""
    engine = enqueue(sqlite_url, 1)
    (job_id,) = rows(engine, "select id from jobs")[0]
    w = start_worker(sqlite_url, "slow", tmp=tmp_path, HARNESS_TEST_SLOW_SECONDS="60")
    wait_for(lambda: any((tmp_path / "runs" / job_id).glob("started.*")), what="job start")
    w.send_signal(signal.SIGTERM)
    time.sleep(0.1)  # the first one handled: two signals sent at once arrive as one
    w.send_signal(signal.SIGTERM)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err, err
    assert rows(engine, "select status, attempts from jobs") == [("queued", 0)]
    assert rows(engine, "select outcome from attempts") == [("interrupted",)]
