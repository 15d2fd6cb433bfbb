#!/usr/bin/env python3
"""Mutation testing of the modules that decide results: mutmut makes one small bug at a time in
them and runs, against each, the fast tests that run the function it changed; a test that fails
kills the bug. Prints a score per module and every surviving bug that
tests/mutation_equivalents.md does not explain (each needs a test that kills it, or a sentence
there saying why no test can).

    .venv/bin/pip install -e '.[test,mutation]'
    .venv/bin/python scripts/mutation.py                  # every module below
    .venv/bin/python scripts/mutation.py loss objective   # some of them
    .venv/bin/python scripts/mutation.py --report         # the last run's scores again, nothing run
    .venv/bin/python scripts/mutation.py stats --survivors  # only the last run's survivors, again
    .venv/bin/python scripts/mutation.py --list           # what each module's run mutates

A command of its own, not part of the test suite: CPU-heavy (it runs niced), it starts from a fresh
copy of the tree in mutants/ every time, and it needs what the tests need (../shared and the
PostgreSQL server). mutmut's settings (the files, the fast tests) are pyproject.toml's
[tool.mutmut]; which functions of each file count is SCOPES below. Exit status 1 when a survivor
is unexplained.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENTS = REPO / "tests" / "mutation_equivalents.md"
SHARED = REPO.parent / "shared"


@dataclass(frozen=True)
class Scope:
    path: str  # the file, relative to the repository
    functions: tuple[str, ...] | None  # "name" or "Class.method"; None: every function in it
    what: str


# The parts of each file that decide a result. Left out: a file's loading, rendering and
# bookkeeping around them (fine_tune's orchestration is covered by its spies, not mutated here:
# ~550 mutants of a whole training run each).
SCOPES = {
    "loss": Scope("harness/training/loss.py", None, "the SCL term"),
    "objective": Scope("harness/training/finetune.py",
                       ("compute_loss", "train_step", "_keep_if_best", "StepPlan.of"),
                       "the objective (1 − λ)·CE + λ·SCL, one step, the steps, model selection"),
    "batching": Scope("harness/training/batching.py", None, "token-cache keys and files, batches"),
    "data": Scope("harness/protocol/data.py",
                  ("Examples.take", "_strata", "_stratified_order", "_divide", "_val_reserve",
                   "sample_size", "sample_train", "train_pool_size"),
                  "test / validation / pool splits, training samples"),
    "stats": Scope("analysis/stats.py", None, "tests, intervals, effect sizes, Holm"),
    "tables": Scope("analysis/tables.py",
                    ("build_table", "_adjust", "_members", "_cell", "_keyed", "_test", "_seed_matrices",
                     "_trend", "_example_tests", "Table.cell", "Table.for_model"),
                    "cells (top 3 by validation), pairing, Holm per model"),
    "claims": Scope("analysis/report.py",
                    ("_verdict_line", "_summary", "_trend_summary", "_mean_gain", "_claims", "_model_claims"),
                    "the verdict on each claim and its headline count"),
    "queue": Scope("harness/store/queue.py",
                   ("claim", "heartbeat", "_owns", "_end_attempt", "finish", "_adopt", "fail", "release",
                    "requeue_stale"),
                   "claim, lease, finish, fail, release, requeue"),
}

CAUGHT = ("killed", "timeout")
RETEST = ("survived", "not checked", "check was interrupted by user")  # what --survivors runs again


def globs(scope: Scope) -> list[str]:
    """mutmut's names for the scope's mutants: <module>.x_<function>__mutmut_<n>, and
    <module>.xǁ<Class>ǁ<method>__mutmut_<n> for methods."""
    module = scope.path.removesuffix(".py").replace("/", ".")
    if scope.functions is None:
        return [f"{module}.*"]
    return [f"{module}.x" + ("ǁ".join(["", *f.split(".")]) if "." in f else f"_{f}") + "__mutmut_*"
            for f in scope.functions]


def function_of(mutant: str) -> str:
    """'analysis.stats.x_compare__mutmut_3' -> 'compare'; '…xǁTableǁcell__mutmut_1' -> 'Table.cell'."""
    name = mutant.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    return ".".join(name.split("ǁ")[1:]) if name.startswith("xǁ") else name.removeprefix("x_")


def environment() -> dict[str, str]:
    """The tests run in mutants/, a copy of the tree one folder further from ../shared: name it."""
    env = dict(os.environ)
    if SHARED.is_dir():
        env.setdefault("HARNESS_TEST_SHARED", str(SHARED))
        env.setdefault("HARNESS_DATA_DIR", str(SHARED / "data"))
        env.setdefault("HARNESS_MODEL_DIR", str(SHARED / "models"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per mutant run; --jobs runs them side by side
    return env


def run(scopes: list[Scope], jobs: int, survivors: bool = False) -> None:
    """Mutate the scopes afresh; with `survivors`, test again only the last run's survivors of
    them (against the tests as they are now: a new test kills them or not) and the mutants a
    stopped run never reached, keeping every other verdict. Only valid while the modules' code is
    unchanged since that run."""
    mutmut = Path(sys.executable).parent / "mutmut"
    if not mutmut.exists():
        sys.exit(f"no mutmut beside {sys.executable}: pip install -e '.[test,mutation]'")
    kept = {}
    if survivors:
        names = [m for s in scopes for m, status in _statuses(s).items() if status in RETEST]
        if not names:
            print("no survivors of the last run to test again")
            return
        kept = {s: _exit_codes(s) for s in scopes}
    else:
        shutil.rmtree(REPO / "mutants", ignore_errors=True)  # no verdict survives from an older tree
        names = [g for s in scopes for g in globs(s)]
    try:
        done = subprocess.run([str(mutmut), "run", "--max-children", str(jobs), *names], cwd=REPO,
                              env=environment(), preexec_fn=lambda: os.nice(10))
    finally:
        _restore(kept, set(names))
    if done.returncode != 0:
        sys.exit(f"mutmut run failed (exit status {done.returncode})")


def _meta(scope: Scope) -> Path:
    return REPO / "mutants" / (scope.path + ".meta")


def _exit_codes(scope: Scope) -> dict[str, int | None]:
    meta = _meta(scope)
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def _restore(kept: dict[Scope, dict[str, int | None]], retested: set[str]) -> None:
    """Put back the verdicts a --survivors run did not test again. mutmut forgets every verdict
    whose tests changed (a test file was added to the selection, say), although a mutant an older
    test killed is still killed while that test is there; the re-tested ones keep their new verdict."""
    for scope, codes in kept.items():
        meta = _meta(scope)
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        now = data["exit_code_by_key"]
        for key, code in codes.items():
            if key not in retested and code is not None and now.get(key) is None:
                now[key] = code
        meta.write_text(json.dumps(data))


# ---- the report ------------------------------------------------------------------------------

def _statuses(scope: Scope) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    codes = _exit_codes(scope)
    patterns = globs(scope)
    return {k: status_by_exit_code[c] for k, c in codes.items() if any(fnmatch.fnmatch(k, p) for p in patterns)}


def _diff(mutant: str, scope: Scope) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(REPO)  # mutmut reads mutants/ from the working folder
    try:
        return get_diff_for_mutant(mutant, path=scope.path)
    finally:
        os.chdir(cwd)


def mutated_code(diff: str) -> str:
    """What a mutant reads instead: its changed lines, without inline comments, spaces collapsed
    (the key of an entry in tests/mutation_equivalents.md)."""
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if not added:
        added = ["removed: " + line[1:] for line in diff.splitlines()
                 if line.startswith("-") and not line.startswith("---")]
    return " ".join(" ".join(re.split(r"\s+#\s", line, maxsplit=1)[0].split()) for line in added)


ENTRY = re.compile(r"^- `(?P<path>[^`]+)` `(?P<function>[^`]+)`: `(?P<code>.+)`\s*$")


def equivalents() -> list[dict]:
    """The entries of tests/mutation_equivalents.md: a line `- `file` `function`: `mutated code``,
    then the reason on the lines below it."""
    if not EQUIVALENTS.exists():
        return []
    return [dict(m.groupdict(), code=" ".join(m["code"].split()))
            for m in map(ENTRY.match, EQUIVALENTS.read_text().splitlines()) if m]


def report(names: list[str]) -> int:
    entries, used, unexplained = equivalents(), set(), []
    rows = [("module", "file", "mutants", "killed", "timeout", "equivalent", "survived", "score")]
    for name in names:
        scope = SCOPES[name]
        statuses = _statuses(scope)
        caught = {s: sum(1 for v in statuses.values() if v == s) for s in CAUGHT}
        equivalent, survived = 0, []
        for mutant, status in sorted(statuses.items()):
            if status in CAUGHT:
                continue
            diff = _diff(mutant, scope)
            code = mutated_code(diff)
            match = next((i for i, e in enumerate(entries) if e["path"] == scope.path
                          and e["function"] == function_of(mutant) and e["code"] == code), None)
            if match is not None and status == "survived":
                used.add(match)
                equivalent += 1
            else:
                survived.append(mutant)
                unexplained.append((mutant, status, scope, code, diff))
        total = len(statuses)
        score = (caught["killed"] + caught["timeout"]) / (total - equivalent) if total > equivalent else float("nan")
        rows.append((name, scope.path, str(total), str(caught["killed"]), str(caught["timeout"]),
                     str(equivalent), str(len(survived)), "—" if not total else f"{100 * score:.1f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("\nscore: (killed + timeout) / (mutants − equivalent); equivalent: survivors explained in "
          f"{EQUIVALENTS.relative_to(REPO)}")
    for mutant, status, scope, code, diff in unexplained:
        print(f"\n{status}: {mutant}\n  entry key: - `{scope.path}` `{function_of(mutant)}`: `{code}`")
        print("\n".join("  " + line for line in diff.splitlines()[2:]))
    chosen = {SCOPES[n].path for n in names}
    stale = [e for i, e in enumerate(entries) if i not in used and e["path"] in chosen]
    for e in stale:
        print(f"\nstale entry (no surviving mutant reads it): `{e['path']}` `{e['function']}`: `{e['code']}`")
    return 1 if unexplained else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", choices=[[], *SCOPES], metavar="MODULE",
                        help=f"any of: {', '.join(SCOPES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)),
                        help="mutants tested side by side (default: one per core)")
    parser.add_argument("--report", action="store_true", help="only print the last run's scores")
    parser.add_argument("--list", action="store_true", help="print what each module's run mutates")
    parser.add_argument("--survivors", action="store_true",
                        help="test again only the last run's survivors (after adding tests for them) "
                             "and the mutants it did not reach")
    args = parser.parse_args()
    names = args.modules or list(SCOPES)
    if args.list:
        for n in names:
            s = SCOPES[n]
            print(f"{n:10} {s.path:30} {', '.join(s.functions) if s.functions else 'every function'}: {s.what}")
        return
    if not args.report:
        run([SCOPES[n] for n in names], args.jobs, args.survivors)
    sys.exit(report(names))


if __name__ == "__main__":
    main()
