"""What a person sees: the worker's live progress bar and the `harness status` tables (rich)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness.training import runner
from harness.store.jobs import Status


class ProgressDisplay:
    """One bar for the job in hand: job, epoch, step, loss and ETA. Silent when not a terminal."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("step {task.completed}/{task.total}"),
                            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
                            TimeRemainingColumn(), console=Console(stderr=True), disable=not self.enabled)
        self._task = None
        self._label = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, label: str, p: runner.Progress) -> None:
        if not self.enabled:
            return
        loss = "-" if p.loss is None else f"{p.loss:.4f}"
        if label != self._label:
            if self._task is not None:
                self.bar.remove_task(self._task)
            self._task = self.bar.add_task(label, total=p.steps or None, epoch="-", loss="-")
            self._label = label
        self.bar.update(self._task, completed=p.step, total=p.steps or None,
                        epoch=f"{p.epoch}/{p.epochs}" if p.epochs else p.phase, loss=loss,
                        description=f"{label} [{p.phase}]")


def render_status(s: dict) -> None:
    console = Console()
    console.print(f"database: {s['database']}")
    if not s["counts"]:
        console.print("no jobs yet: `harness enqueue --grid smoke` adds some")
        return
    t = Table(title="jobs by grid")
    statuses = [s.value for s in Status]
    t.add_column("grid")
    for st in statuses:
        t.add_column(st, justify="right")
    t.add_column("total", justify="right")
    for grid, c in s["counts"].items():
        t.add_row(grid, *[str(c.get(st, 0)) for st in statuses], str(sum(c.values())))
    console.print(t)
    if s["running"]:
        r = Table(title="running")
        for col in ("job", "task", "n", "T", "seed", "loss", "worker", "progress", "lease left"):
            # whole job ids at any width (they are what --job takes); the rest may be cut
            r.add_column(col, no_wrap=True, min_width=16 if col == "job" else None,
                         overflow="fold" if col == "job" else "ellipsis")
        for j in s["running"]:
            p = j["progress"] or {}
            prog = (f"{p.get('phase', '')} epoch {p.get('epoch', 0)}/{p.get('epochs', 0)} "
                    f"step {p.get('step', 0)}/{p.get('steps', 0)}"
                    + (f" loss {p['loss']:.3f}" if p.get("loss") is not None else "")
                    + (f" eta {p['eta_seconds']:.0f}s" if p.get("eta_seconds") else "")) if p else "-"
            r.add_row(j["job_id"], j["task"], str(j["n"] or "full"), f"{j['noise']:g}", str(j["seed"]),
                      j["loss"], j["worker"] or "-", prog, _lease(j))
        console.print(r)
        if s.get("stale"):
            console.print(f"{s['stale']} stale: the lease expired (worker gone); the next "
                          "`harness work` puts them back in the queue")
    if s["recent_failures"]:
        # One line per error, whole job ids: the error column is cut to the width left.
        f = Table(title="recent errors")
        f.add_column("job", no_wrap=True, min_width=16)
        for col in ("task", "n", "seed", "loss", "status", "tries"):
            f.add_column(col, no_wrap=True, overflow="ellipsis")
        f.add_column("error", no_wrap=True, overflow="ellipsis", ratio=1)
        for j in s["recent_failures"]:
            f.add_row(j["job_id"], j["task"], str(j["n"] or "full"), str(j["seed"]), j["loss"],
                      j["status"], str(j["attempts"]), (j["error"] or "").splitlines()[0] if j["error"] else "")
        console.print(f)
        console.print("`harness status --job ID` shows a job's attempts with their tracebacks")


def _lease(j: dict) -> str:
    left = j["lease_left_seconds"]
    if left is None:
        return "-"
    return f"stale ({-left:.0f}s ago)" if j.get("stale") else f"{left:.0f}s"


def render_job(d: dict) -> None:
    """`harness status --job ID`: the spec, the state and every attempt's whole traceback."""
    out = [f"job {d['job_id']} (grid {d['grid']}): {d['status']}"
           + (" — stale: the lease expired" if d["stale"] else "")
           + f", attempt {d['attempts']} of {d['max_attempts']}"]
    if d["error"]:
        out.append(f"last error: {d['error']}")
    out.append("spec: " + json.dumps(d["spec"], sort_keys=True))
    for r in d["history"]:
        out.append(f"\n--- attempt {r['attempt']} (id {r['attempt_id']}) on {r['worker']} "
                   f"[{r['device'] or '-'}]: {r['outcome']}, {r['started_at']} → {r['ended_at'] or '…'}")
        if r.get("data"):
            out.append(_data_line(r["data"], d["spec"].get("max_length")))
        if r["error"]:
            out.append(r["error"].rstrip())
    if d.get("data_now"):
        out.append(f"\nthe mirror now holds other data (fingerprint {d['data_now']}): "
                   f"`harness retry --data-changed --job {d['job_id']}` runs it again")
    print("\n".join(out))


def _data_line(facts: dict, max_length: int | None) -> str:
    cut = facts.get("truncated") or {}
    return (f"data: fingerprint {facts.get('data_fingerprint', '-')}"
            + (f"; examples longer than max_length {max_length} tokens, cut: "
               + ", ".join(f"{split} {k}" for split, k in cut.items()) if cut else ""))
