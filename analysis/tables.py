"""The paper's tables from the results frame, with the paper's numbers beside ours.

`build_table(df, table)` is pure over the frame from `load_results` (plus, if given the database,
one query for the test predictions behind the example-level test); `render(table, fmt)` turns
the result into text. Cells are never hidden: a cell with no runs shows "missing", a cell with fewer
runs than the paper's protocol says how many it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from analysis import selection, stats
from analysis.layouts import FULL_TRAIN_ROWS, LAYOUTS, Layout, budget_caption, protocol_from
from harness.protocol.paper import LOSS_LABELS, TASK_LABELS

AGGREGATIONS = {
    "top3": "mean ± std of the test scores of the top 3 runs by validation score (the paper's number); "
            "runs tied in validation score at the boundary of the top 3 count alike: the figure is the average "
            "over every equally likely choice of them, never a tie-break by seed",
    "mean": "mean ± std of the test scores over all runs",
}
TOP_K = 3
VAL_SIZE_NOTE = ("val_size is an upper bound: a run validates on min(val_size, the examples its task "
                 "spares for validation), so SST-2's runs validate on 436 (the half of its 872-row "
                 "validation split that is not the test set); harness/protocol/data.py has the rule.")
ALPHA = 0.05
CUT_SHORT_MARK = "†"  # beside a cell where training may have been cut short (Cell.cut_short)


@dataclass(frozen=True)
class Row:
    """One row of a section: the loss it stands for and, where a section holds several CE+SCL
    settings, which one."""
    loss: str  # ce | ce+scl | baseline (a transfer run that starts from the pre-trained model)
    setting: tuple[float, float, str] | None = None  # (λ, τ, reduction over anchors)

    @property
    def scl(self) -> bool:
        return self.loss == "ce+scl"

    @property
    def label(self) -> str:
        """As printed: "CE", "CE+SCL" (or "CE+SCL λ=… τ=… mean" for a setting), "baseline"."""
        if self.setting is None:
            return LOSS_LABELS.get(self.loss, self.loss)
        lam, tau, reduction = self.setting
        return f"{LOSS_LABELS[self.loss]} λ={lam:g} τ={tau:g} {reduction}"


CE, SCL, BASELINE = Row("ce"), Row("ce+scl"), Row("baseline")


@dataclass
class Cell:
    section: str
    group: object  # raw value (N, task, batch size, ...)
    row: Row
    col: object  # raw value (task, T, ...) or a derived column's label
    n_runs: int  # runs with a score in the cell
    n_used: int  # runs behind the number (top 3, or all)
    n_expected: int | None  # runs the paper's protocol has, if it says
    mean: float | None
    std: float | None
    paper_mean: float | None = None
    paper_std: float | None = None
    flags: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    n_last: int = 0  # runs whose selected checkpoint was the last one they evaluated
    n_known: int = 0  # runs for which that is known (selection.selected_last)
    tie_decided: bool = False  # runs tied at the top-3 boundary outnumbered its free slots

    @property
    def cut_short(self) -> bool:
        """More than selection.CUT_SHORT_SHARE of the runs selected their last checkpoint:
        training may have stopped while validation was still improving."""
        return selection.cut_short(self.n_last, self.n_known)

    @property
    def loss(self) -> str:
        return self.row.loss

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper_mean is None else self.mean - self.paper_mean


@dataclass
class CellTest:
    """CE against one CE+SCL row in one cell."""
    section: str
    group: object
    col: object
    row: Row
    comparison: stats.Comparison
    pairs: list[tuple[str, str]]  # (CE job, CE+SCL job) matched by seed
    paper_p: float | None = None


@dataclass
class TrendTest:
    """Does CE+SCL − CE change with the columns of a seed-unit derived column (Table 3: with T)?"""
    section: str
    group: object
    row: Row
    levels: tuple  # the member columns, as numbers (the x of the slope)
    test: stats.TestResult  # t-test of the per-seed slopes
    mean_slope: float  # points per unit of the level
    ci: tuple[float, float]  # bootstrap 95% interval of the mean slope, over seeds
    p_holm: float = float("nan")  # over the trend tests of the table


@dataclass
class Section:
    label: str  # the model, plus the setting when one model has several
    model: str
    caption: str  # hyper-parameters shared by the runs
    rows: list[Row]
    # "v1" (the epoch protocol), "v2" (protocol v2's step budgets) or a budget of one's own
    # ("200 steps"): a claim is answered by each model under each protocol on its own
    protocol: str = "v1"


@dataclass
class Table:
    number: int
    title: str
    aggregation: str
    layout: Layout
    sections: list[Section]
    cells: list[Cell]
    tests: list[CellTest]
    scale: float  # 100 when scores are stored as fractions
    notes: list[str]
    trends: list[TrendTest] = field(default_factory=list)

    def cell(self, section, group, row: Row | str, col) -> Cell | None:
        """The cell at (section, group, row, col); row: a Row or its label ("CE", "CE+SCL", ...)."""
        label = row if isinstance(row, str) else row.label
        return next((c for c in self.cells
                     if (c.section, c.group, c.row.label, c.col) == (section, group, label, col)), None)

    @property
    def models(self) -> list[str]:
        return sorted({s.model for s in self.sections})

    def for_model(self, model: str) -> Table:
        """This table restricted to one model's sections (its Holm-adjusted p are already the
        model's own, see `_adjust`)."""
        return self.where(lambda s: s.model == model)

    def where(self, keep: Callable[[Section], bool]) -> Table:
        """This table restricted to the sections `keep` accepts (e.g. one model under one
        protocol; Holm's correction runs within each (model, protocol), see `_adjust`)."""
        labels = {s.label for s in self.sections if keep(s)}
        return replace(self, sections=[s for s in self.sections if s.label in labels],
                       cells=[c for c in self.cells if c.section in labels],
                       tests=[t for t in self.tests if t.section in labels],
                       trends=[t for t in self.trends if t.section in labels])


def build_table(df: pd.DataFrame, table: int, aggregation: str = "top3", model: str | None = None,
                db=None, *, n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> Table:
    """One of the paper's tables (2, 3, 4, 5, 7), or our extension of Table 3 (8), from the frame of `load_results`.

    aggregation: "top3" (the paper's) or "mean". model: keep only this model; otherwise one
    section per model (and per training setting). db: the database (Engine, URL or path), to add
    the example-level test over the stored test predictions. Tests use every run of a cell, paired
    by seed, not only the top 3. seed: seeds every resampling test.
    """
    if table not in LAYOUTS:
        raise ValueError(f"no table {table}; tables: {', '.join(map(str, LAYOUTS))}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    lay = LAYOUTS[table]
    sub = lay.select(df)
    if model is not None:
        sub = sub[sub["model"] == model]
    sub = sub[sub["value"].notna()].copy()
    sub["_last"] = selection.selected_last(sub)
    scale = 100.0 if len(sub) and sub["value"].abs().max() <= 1.0 else 1.0
    sub, sections = _sections(sub, lay)
    notes = [f"Each cell: {AGGREGATIONS[aggregation]}; [k of m]: k runs behind the number out of m "
             "finished; 'x of 10 seeds' where fewer than the paper's runs finished; 'missing' where none did."] \
        + list(lay.notes)
    if scale == 100.0:
        notes.append("Scores are stored as fractions and shown ×100.")
    if "val_size" in lay.signature:  # the spec's name reads like a count; it is a cap
        notes.append(VAL_SIZE_NOTE)
    if lay.describe is not None:
        notes += lay.describe(df, sub)
    if len({s.model for s in sections}) > 1:
        notes.append("Several models are in the database: one section per model.")
    # The order the tests' resampling sees (the top 3 never depends on it: analysis.selection).
    sub = sub.sort_values(["val_score", "seed"], ascending=[False, True], na_position="last", kind="stable")
    runs = {k: g for k, g in sub.groupby(["_section", "_group", "_row", "_col"], sort=False)}
    cells, tests, trends = [], [], []
    rng = np.random.default_rng(seed)
    for sec in sections:
        for g in lay.groups:
            for row in sec.rows:
                for c in list(lay.cols) + list(lay.derived):
                    cells.append(_cell(lay, runs, sec, g, row, c, aggregation, scale))
            for row in sec.rows:
                if not row.scl:
                    continue
                for c in list(lay.cols) + list(lay.derived):
                    t = _test(lay, runs, sec, g, row, c, scale, n_resamples, rng)
                    if t is not None:
                        tests.append(t)
                if lay.by_seed is not None:
                    trend = _trend(lay, runs, sec, g, row, scale, n_resamples, rng)
                    if trend is not None:
                        trends.append(trend)
    notes += _selection_notes(cells, aggregation)
    if db is not None:
        _example_tests(tests, db, n_resamples, rng)
    _adjust(tests, trends, {s.label: (s.model, s.protocol) for s in sections})
    return Table(table, lay.title, aggregation, lay, sections, cells, tests, scale, notes, trends)


def _selection_notes(cells: list[Cell], aggregation: str) -> list[str]:
    """How often ties decided a top-3 cell, and the legend of the cut-short mark (†)."""
    have = [c for c in cells if c.n_runs]
    notes = []
    if aggregation == "top3":
        notes.append(f"Ties at the top-3 boundary decided {sum(c.tie_decided for c in have)} of "
                     f"{len(have)} cells ('k tied for m slots'): there the number averages over "
                     "every equally likely choice of the tied runs.")
    notes.append(f"{CUT_SHORT_MARK} {sum(c.cut_short for c in have)} of {len(have)} cells: more than "
                 f"{selection.CUT_SHORT_SHARE:.0%} of the cell's runs selected the last checkpoint they "
                 "evaluated (the last epoch, or the last step of a step budget), so training may have "
                 "been cut short.")
    return notes


def _adjust(tests: list[CellTest], trends: list[TrendTest], model_of: dict[str, tuple]) -> None:
    """Holm's correction over the tests of each (model, protocol) in the table: each model answers
    the paper's question on its own under each protocol, so running a second model, or the same
    model under protocol v2, leaves the first one's verdicts as they were."""
    for model in set(model_of.values()):
        mine = [t for t in tests if model_of[t.section] == model]
        for attr, out in (("primary", "p_holm"), ("example_test", "example_p_holm")):
            ps = [getattr(t.comparison, attr).p if getattr(t.comparison, attr) else np.nan for t in mine]
            for t, p in zip(mine, stats.holm(ps)):
                setattr(t.comparison, out, float(p))
        mine_trends = [t for t in trends if model_of[t.section] == model]
        for t, p in zip(mine_trends, stats.holm([t.test.p for t in mine_trends])):
            t.p_holm = float(p)


# ---- sections, cells, tests ------------------------------------------------------------------

def _sections(sub: pd.DataFrame, lay: Layout) -> tuple[pd.DataFrame, list[Section]]:
    sub = sub.copy()
    sig = [k for k in lay.signature if k in sub]  # frames from before a field existed lack it
    if sub.empty:
        sub["_section"], sub["_row"] = pd.Series(dtype=object), pd.Series(dtype=object)
        return sub, []
    sub["_section"] = sub.groupby(sig, dropna=False, sort=True).ngroup()
    sections, labels = [], {}
    per_model = sub.groupby("model")["_section"].nunique()
    sub["_row"] = sub["_loss"].map(Row)
    for sid, g in sub.groupby("_section", sort=True):
        first = g.iloc[0]
        per_task = g.loc[g["loss"] == "ce+scl", ["task", "lam", "tau", "scl_reduction"]].drop_duplicates()
        scl = per_task[["lam", "tau", "scl_reduction"]].drop_duplicates()
        # under a step budget the spec's epochs field is unused: the caption names the budget
        by_steps = "budget" in sig and not pd.isna(first["budget"])
        shown = [k for k in sig if k != "model" and not pd.isna(first[k]) and not (by_steps and k == "epochs")]
        caption = ", ".join(budget_caption(first[k]) if k == "budget" else f"{k} {first[k]}" for k in shown)
        if "grid" in g:  # which design the runs came from: a demo reads as one at once
            names = sorted(g["grid"].unique())
            caption = f"grid{'s' if len(names) > 1 else ''} {', '.join(names)}; {caption}"
        if len(scl) == 1:
            lam, tau, red = scl.iloc[0]
            caption += f"; CE+SCL with λ={lam:g}, τ={tau:g}, SCL {red} over anchors"
        elif len(per_task) and not per_task["task"].duplicated().any():
            # one setting per task (chosen per task on validation, `--tuned`): one CE+SCL row, its
            # setting per task in the caption, rather than a row per setting, empty for other tasks
            caption += "; CE+SCL with " + "; ".join(
                f"{TASK_LABELS.get(t, t)} λ={lam:g}, τ={tau:g}" for t, lam, tau, _ in
                sorted(per_task.itertuples(index=False), key=lambda r: task_order(r[0])))
            caption += f", SCL {', '.join(sorted(set(per_task['scl_reduction'])))} over anchors"
        else:  # several SCL settings for a task: one row each, each compared with CE
            s = g[g["_loss"] == "ce+scl"]
            sub.loc[s.index, "_row"] = pd.Series([Row("ce+scl", setting) for setting in zip(
                s["lam"], s["tau"], s["scl_reduction"])], index=s.index, dtype=object)
        modes = sorted(set(g["noise_mode"].dropna()))
        if modes:
            caption += f"; noisy copies: {', '.join(modes)}"
        present = set(sub.loc[g.index, "_row"])
        rows = [CE] + (sorted((r for r in present if r.scl), key=lambda r: r.label) or [SCL])
        if lay.baseline_row or BASELINE in present:
            rows.append(BASELINE)
        label = str(first["model"])
        if per_model[first["model"]] > 1:  # name the hyper-parameters that tell its sections apart
            same = sub.loc[sub["model"] == first["model"], sig]
            differ = [k for k in sig if same[k].nunique(dropna=False) > 1]
            if "budget" in differ and "epochs" in differ:  # v1 against v2: the budget says it
                differ.remove("epochs")
            label += " [" + ", ".join(_setting(k, first[k]) for k in differ) + "]"
        labels[sid] = label
        protocol = protocol_from(first["budget"]) if "budget" in sig else "v1"
        sections.append(Section(label, str(first["model"]), caption, rows, protocol))
    sub["_section"] = sub["_section"].map(labels)
    return sub, sections


def _setting(key: str, value) -> str:
    """A section label's part for one setting: 'lr 0.0001'; a budget by its name ('v2 budgets',
    '200 steps', 'epochs' for the epoch protocol)."""
    if key == "budget":
        return "epochs" if pd.isna(value) else str(value)
    return f"{key} {value}"


def task_order(task: str) -> int:
    """The paper's order of tasks (SST-2, QNLI, MNLI, ...), other tasks after them."""
    order = list(TASK_LABELS)
    return order.index(task) if task in order else len(order)


def _members(lay: Layout, c) -> list:
    return list(lay.derived.get(c, (c,)))


def _cell(lay, runs, sec, g, row, c, aggregation, scale) -> Cell:
    parts = [runs.get((sec.label, g, row, m)) for m in _members(lay, c)]
    present = [p for p in parts if p is not None]
    agg = selection.aggregate([(p["val_score"].to_numpy(float), p["value"].to_numpy(float) * scale)
                               for p in present], None if aggregation == "mean" else TOP_K)
    n_runs = sum(len(p) for p in present)
    last = pd.concat([p["_last"] for p in present]) if present else pd.Series(dtype="boolean")
    ref = lay.paper(g, c, row.loss) if row != BASELINE else None
    cell = Cell(sec.label, g, row, c, n_runs, agg.n_used,
                None if c in lay.derived else lay.expected, agg.mean, agg.std,
                ref[0] if ref else None, ref[1] if ref else None,
                job_ids=[j for p in present for j in p["job_id"].tolist()],
                n_last=int(last.sum()), n_known=int(last.notna().sum()), tie_decided=agg.tie_decided)
    if agg.tie_decided:
        cell.flags.append(f"{agg.tied} tied for {agg.slots} slot{'s' if agg.slots > 1 else ''}")
    if lay.cell_flags is not None and present:
        cell.flags += lay.cell_flags(pd.concat(present))
    if c in lay.derived and len(present) < len(parts):
        cell.flags.append(f"{len(present)} of {len(parts)} columns")
    if present and FULL_TRAIN_ROWS.get(c) and any(p["n"].isna().any() for p in present):  # full data
        n_train = pd.concat([p["n_train"] for p in present]).dropna()
        full = FULL_TRAIN_ROWS.get(c)
        if full and len(n_train) and n_train.min() < full:
            cell.flags.append(f"subset: {int(n_train.min()):,} of {full:,} training rows")
    return cell


def _keyed(lay, runs, sec, g, row, c, scale) -> tuple[np.ndarray, list, dict] | None:
    """A row's runs in column c (or in its member columns): scores, (column, seed) keys, and
    job ids by key; None when it has no run there."""
    parts = [(m, runs.get((sec.label, g, row, m))) for m in _members(lay, c)]
    parts = [(m, p) for m, p in parts if p is not None]
    if not parts:
        return None
    vals = np.concatenate([p["value"].to_numpy() for _, p in parts]) * scale
    keys = [(m, s) for m, p in parts for s in p["seed"].tolist()]
    jobs = [j for _, p in parts for j in p["job_id"].tolist()]
    return vals, keys, dict(zip(keys, jobs))


def _test(lay, runs, sec, g, row, c, scale, n_resamples, rng) -> CellTest | None:
    a, b = _keyed(lay, runs, sec, g, CE, c, scale), _keyed(lay, runs, sec, g, row, c, scale)
    if a is None or b is None:
        return None
    (va, ka, ja), (vb, kb, jb) = a, b
    if c == lay.by_seed:  # one unit per seed: its gap averaged over the columns both losses have
        ma, mb, seeds = _seed_matrices(va, ka, vb, kb, _members(lay, c))
        keep = np.isfinite(ma).any(axis=1)
        comp = stats.compare(stats.seed_means(ma)[keep], stats.seed_means(mb)[keep], seeds[keep],
                             seeds[keep], n_resamples=n_resamples, rng=rng)
    else:
        comp = stats.compare(va, vb, ka, kb, n_resamples=n_resamples, rng=rng)
    if lay.baseline_row:  # the transfer claim is about variance too
        comp.extra.append(stats.levene(va, vb))
    pairs = [(ja[k], jb[k]) for k in kb if k in ja]
    paper_p = lay.paper_p(g, c) if lay.paper_p is not None else None
    return CellTest(sec.label, g, c, row, comp, pairs, paper_p)


def _seed_matrices(va, ka, vb, kb, levels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CE and CE+SCL scores as (seeds, levels) matrices from runs keyed (level, seed); NaN where
    either loss lacks the run, so both matrices hold the same (level, seed) pairs."""
    seeds = np.array(sorted({s for _, s in ka} & {s for _, s in kb}))
    row, col = {s: i for i, s in enumerate(seeds)}, {m: j for j, m in enumerate(levels)}
    out = []
    for vals, keys in ((va, ka), (vb, kb)):
        m = np.full((len(seeds), len(levels)), np.nan)
        for v, (lvl, s) in zip(vals, keys):
            if s in row:
                m[row[s], col[lvl]] = v
        out.append(m)
    both = np.isfinite(out[0]) & np.isfinite(out[1])
    return np.where(both, out[0], np.nan), np.where(both, out[1], np.nan), seeds


def _trend(lay, runs, sec, g, row, scale, n_resamples, rng) -> TrendTest | None:
    a = _keyed(lay, runs, sec, g, CE, lay.by_seed, scale)
    b = _keyed(lay, runs, sec, g, row, lay.by_seed, scale)
    if a is None or b is None:
        return None
    levels = _members(lay, lay.by_seed)
    ma, mb, _ = _seed_matrices(a[0], a[1], b[0], b[1], levels)
    x = np.array(levels, float)
    slopes = stats.seed_slopes(mb - ma, x)
    slopes = slopes[np.isfinite(slopes)]
    if slopes.size == 0:
        return None
    ci = stats.bootstrap_ci_diff(np.zeros(slopes.size), slopes, paired=True,
                                 n_resamples=n_resamples, rng=rng)
    return TrendTest(sec.label, g, row, tuple(levels), stats.slope_t(mb - ma, x),
                     float(slopes.mean()), ci)


def _example_tests(tests: list[CellTest], db, n_resamples, rng) -> None:
    from analysis.load import load_correct

    correct = load_correct(db, [j for t in tests for pair in t.pairs for j in pair])
    for t in tests:
        pairs = [(correct[a], correct[b]) for a, b in t.pairs if a in correct and b in correct]
        if not pairs:
            continue
        common = pairs[0][0].index
        for ca, cb in pairs:
            common = common.intersection(ca.index).intersection(cb.index)
        if len(common) == 0:
            continue
        ca = np.stack([x.loc[common].to_numpy() for x, _ in pairs])
        cb = np.stack([y.loc[common].to_numpy() for _, y in pairs])
        t.comparison.example_test = stats.paired_bootstrap_examples(
            ca, cb, n_resamples=stats.resamples_for(len(common), n_resamples), rng=rng)
        t.comparison.extra.append(stats.mcnemar_pooled(ca, cb))

