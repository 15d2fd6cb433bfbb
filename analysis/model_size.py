"""Does the gain of CE+SCL change with the model? (issue 12, P3: Table 2 with a second encoder.)

The paper has one model; this compares CE+SCL's gain over CE between models, cell by cell of a
built Table 2. A seed's gain is its CE+SCL score minus its CE score (the pairs the table's own test
used); the gains of two models are compared with Welch's t-test, seeds as units (the seeds of two
models are different training runs, so nothing pairs them), Holm over the cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.layouts import protocol_name
from analysis.tables import ALPHA, Table
from harness.protocol.paper import TASK_LABELS


@dataclass
class GainComparison:
    group: object  # N
    col: object  # task
    reference: str  # the model the others are compared with
    model: str
    gains_ref: np.ndarray  # points, one per seed pair
    gains: np.ndarray
    test: stats.TestResult  # Welch's t-test of gains (model) against gains (reference)
    p_holm: float = float("nan")

    @property
    def diff(self) -> float:
        return float(self.gains.mean() - self.gains_ref.mean())


def seed_gains(table: Table, df: pd.DataFrame) -> dict[tuple[str, object, object], np.ndarray]:
    """(model, N, task) -> each seed's CE+SCL − CE gain in points, from the pairs of the table's
    tests. Only cells with one CE+SCL row (one setting per task) count: a gain is a model's."""
    model_of = {s.label: s.model for s in table.sections}
    sel = table.layout.select(df)  # the table's score of each run, as its cells show it
    value = sel.drop_duplicates("job_id").set_index("job_id")["value"]
    out: dict[tuple[str, object, object], list[np.ndarray]] = {}
    for t in table.tests:
        if not t.pairs or t.col in table.layout.derived:
            continue
        ce, scl = (value.loc[[p[i] for p in t.pairs]].to_numpy(float) for i in (0, 1))
        out.setdefault((model_of[t.section], t.group, t.col), []).append((scl - ce) * table.scale)
    return {k: v[0] for k, v in out.items() if len(v) == 1}


def compare_models(table: Table, df: pd.DataFrame, reference: str | None = None) -> list[GainComparison]:
    """Each other model's gain against the reference model's (default: the model with the most
    runs in the table), in every (N, task) cell both have; Holm over all of them."""
    gains = seed_gains(table, df)
    models = pd.Series([m for m, _, _ in gains]).value_counts()
    if len(models) < 2:
        return []
    ref = reference or str(models.index[0])
    out = []
    for (model, g, c), x in sorted(gains.items(), key=lambda kv: (str(kv[0][0]), _order(kv[0][1:]))):
        base = gains.get((ref, g, c))
        if model == ref or base is None:
            continue
        out.append(GainComparison(g, c, ref, model, base, x, stats.welch_t(base, x)))
    for comp, p in zip(out, stats.holm([c.test.p for c in out])):
        comp.p_holm = float(p)
    return out


def _order(key) -> tuple:
    g, c = key
    tasks = list(TASK_LABELS)
    return (g, tasks.index(c) if c in tasks else len(tasks), str(c))


def render_model_size(table: Table, df: pd.DataFrame) -> str:
    """The report's section: a sentence of verdict and a table of gains per (N, task) and model;
    under each protocol on its own where the table holds several (v1's runs are never compared
    with v2's: they trained for different budgets)."""
    protocols = sorted({s.protocol for s in table.sections})
    if len(protocols) <= 1:
        return _render_models(table, df)
    return "\n\n".join(f"**{protocol_name(p).capitalize()}.** " + _render_models(table.where(lambda s, p=p: s.protocol == p), df)
                         for p in protocols)


def _render_models(table: Table, df: pd.DataFrame) -> str:
    comps = compare_models(table, df)
    if not comps:
        models = ", ".join(f"`{m}`" for m in table.models) or "none"
        return (f"Table 2 has runs of one model only ({models}): nothing to compare yet. "
                "`scripts/campaign.sh p3` runs the second one.")
    ref = comps[0].reference
    lines = [f"Each seed's gain is its CE+SCL score minus its CE score (points, test accuracy); each "
             f"model's gains are compared with `{ref}`'s by Welch's t-test, seeds as units, Holm "
             f"over the {len(comps)} cells; α = {ALPHA}. Models are named by their last path part below.", ""]
    short = lambda m: m.rsplit("/", 1)[-1]  # noqa: E731
    diff = [c for c in comps if c.p_holm < ALPHA]
    for model in dict.fromkeys(c.model for c in comps):
        mine = [c for c in comps if c.model == model]
        by_n = {}
        for c in mine:
            by_n.setdefault(c.group, []).append(c)
        means = "; ".join(f"N={g}: `{short(ref)}` {np.mean([c.gains_ref.mean() for c in cs]):+.1f}, "
                          f"`{short(model)}` {np.mean([c.gains.mean() for c in cs]):+.1f}"
                          for g, cs in by_n.items())
        k = sum(c in diff for c in mine)
        lines.append(f"**`{model}` against `{ref}`**: mean gain over tasks {means} points. The gain "
                     f"differs significantly in {k} of {len(mine)} cells.")
    lines += ["", f"| N | task | gain `{short(ref)}` | model | its gain | difference | p | Holm-adjusted p |",
              "|---|---|---|---|---|---|---|---|"]
    for c in comps:
        lines.append(f"| {c.group} | {TASK_LABELS.get(c.col, c.col)} | {_gain(c.gains_ref)} | `{short(c.model)}` | "
                     f"{_gain(c.gains)} | {c.diff:+.1f} | {c.test.p_text()} | {c.test.p_text(c.p_holm)} |")
    lines += ["", "Gains: mean ± sd over seeds [n seeds]."]
    return "\n".join(lines)


def _gain(x: np.ndarray) -> str:
    sd = f" ± {x.std(ddof=1):.1f}" if x.size > 1 else ""
    return f"{x.mean():+.1f}{sd} [{x.size}]"
