"""What a person sees: the worker's live progress bar and the `harness status` tables (rich)."""

from __future__ import annotations

import json
import sys

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

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


WORKER_COLUMN_WIDTH = 100  # below this many columns `status` leaves the worker out of the running table


def render_status(s: dict, console: Console | None = None) -> None:
    """The queue as rich tables, readable at 80 columns (piped output, a Slurm log): the short
    columns (task, N, T, seed, loss) keep their width, the long ones (worker, progress, error)
    wrap or are cut."""
    console = console or Console()
    console.print(f"database: {s['database']}")
    if not s["counts"]:
        console.print(f"no jobs yet: `harness enqueue --grid G --db {s['database']}` adds a grid's "
                      "(`harness grids` lists them)")
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
        rows = []
        for j in s["running"]:
            p = j["progress"] or {}
            prog = (f"{p.get('phase', '')} epoch {p.get('epoch', 0)}/{p.get('epochs', 0)} "
                    f"step {p.get('step', 0)}/{p.get('steps', 0)}"
                    + (f" loss {p['loss']:.3f}" if p.get("loss") is not None else "")
                    + (f" eta {p['eta_seconds']:.0f}s" if p.get("eta_seconds") else "")) if p else "-"
            rows.append([j["job_id"], j["task"], str(j["n"] or "full"), f"{j['noise']:g}", str(j["seed"]),
                         j["loss"], prog, _lease(j), j["worker"] or "-"])
        header = ["job", "task", "n", "T", "seed", "loss", "progress", "lease left", "worker"]
        if console.width < WORKER_COLUMN_WIDTH:  # the progress needs the room more
            header, rows = header[:-1], [r[:-1] for r in rows]
        # whole job ids and the short columns at any width; progress and worker wrap
        console.print(_table("running", header, rows, console.width, wrap={"worker", "progress"}))
        if s.get("stale"):
            console.print(f"{s['stale']} stale: the lease expired (worker gone); the next "
                          "`harness work` puts them back in the queue")
    if s["recent_failures"]:
        # One line per error, whole job ids: the error column is cut to the width left.
        rows = [[j["job_id"], j["task"], str(j["n"] or "full"), str(j["seed"]), j["loss"], j["status"],
                 str(j["attempts"]), (j["error"] or "").splitlines()[0] if j["error"] else ""]
                for j in s["recent_failures"]]
        console.print(_table("recent errors", ["job", "task", "n", "seed", "loss", "status", "tries",
                                               "error"], rows, console.width, cut={"error"}))
        console.print("`harness status --job ID` shows a job's attempts with their tracebacks")


def _table(title: str, header: list[str], rows: list[list[str]], width: int, wrap=(), cut=()) -> Table:
    """A status table in `width` columns whose columns keep their content's width (rich would
    squeeze them to blanks), but those in `wrap` (folded onto more lines) and one in `cut` (one
    line, cut with an ellipsis to the width left)."""
    natural = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(header)]
    fixed = sum(w for col, w in zip(header, natural) if col not in wrap and col not in cut)
    left = max(len("error"), width - fixed - 3 * (len(header) - 1))  # a divider and 2 of padding each
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    for i, col in enumerate(header):
        if col in wrap:
            t.add_column(col, overflow="fold")
        elif col in cut:
            t.add_column(col, no_wrap=True, overflow="ellipsis", width=min(natural[i], left))
        else:
            t.add_column(col, no_wrap=True, width=natural[i])
    for r in rows:
        t.add_row(*map(Text, r))  # as text: an error's "[Errno 2]" is not rich markup
    return t


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
    r = d.get("result")
    if r:
        out.append(f"result: test {r['metric']} {r['test_score']:.4f} at epoch {r['best_epoch']}, the one "
                   f"with the best validation score ({r['val_score']:.4f}); trained on {r['n_train']} "
                   f"examples, tested on {r['n_test']}; {r['train_seconds']:.0f} s training; "
                   f"finished {r['finished_at']}")
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
