"""Text forms of a Table: terminal, markdown, latex (a grid like the paper's, ours / paper / Δ per
row, then every test of every cell), csv and json (long format: one record per cell and per test).
"""

from __future__ import annotations

import io
import json
import math
import textwrap

import pandas as pd

from analysis.stats import format_p
from analysis.tables import AGGREGATIONS, BASELINE, CE, CUT_SHORT_MARK, SCL

FORMATS = ("terminal", "markdown", "latex", "csv", "json")
WIDTH = 100  # columns of the terminal format: cells wrap inside it
DASH = "—"
MISSING = "missing"  # a cell of ours with no finished run


def render(table, fmt: str = "terminal", *, width: int = WIDTH) -> str:
    """The table as text in one of FORMATS; the terminal format fits `width` columns."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return cell_records(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(to_dict(table), indent=1, default=_jsonable, ensure_ascii=False)
    out = [_heading(width, table, fmt)]
    if not table.sections:
        out.append(_para(width, f"No results in the database for Table {table.number}: every cell of ours "
                         "is missing.", fmt))
        out.append(_format_grid(width, *_missing_grid(table), fmt))
    for sec in table.sections:
        out.append(_subheading(width, f"Model: {sec.label}", fmt))
        out.append(_para(width, f"Setting: {sec.caption}. Our models are not the paper's "
                         "RoBERTa-large: compare directions and sizes, not digits.", fmt))
        header, rows = _grid(table, sec)
        out.append(_format_grid(width, header, rows, fmt))
        header, rows = _tests_grid(table, sec)
        if rows:
            out.append(_para(width, "Significance of CE+SCL − CE in each cell (every run, paired by seed):", fmt))
            out.append(_format_grid(width, header, rows, fmt, records=True))
        header, rows = _trends_grid(table, sec)
        if rows:
            out.append(_para(width, "Does the CE+SCL − CE gap change with the column? Each seed's gap regressed "
                             "on the column's value, the slopes tested against 0 over seeds "
                             "(Holm over these rows):", fmt))
            out.append(_format_grid(width, header, rows, fmt, records=True))
    out.append("\n".join(_para(width, "Note: " + n, fmt) for n in table.notes))
    return "\n\n".join(out) + "\n"


# ---- cell text ------------------------------------------------------------------------------------

def _num(x, digits=1) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def cell_text(cell, aggregation: str) -> str:
    if cell.n_runs == 0:
        return MISSING + (f" [0 of {cell.n_expected} seeds]" if cell.n_expected else "")
    s = _num(cell.mean) + (f" ± {_num(cell.std)}" if cell.std is not None else "")
    if cell.cut_short:
        s += f" {CUT_SHORT_MARK}"
    bits = [f"{cell.n_used} of {cell.n_runs}" if aggregation == "top3" else f"n={cell.n_runs}"]
    if cell.n_expected and cell.n_runs < cell.n_expected:
        bits.append(f"{cell.n_runs} of {cell.n_expected} seeds")
    return f"{s} [{'; '.join(bits + cell.flags)}]"


def _paper_text(cell) -> str:
    if cell.paper_mean is None:
        return DASH
    return _num(cell.paper_mean) + (f" ± {_num(cell.paper_std)}" if cell.paper_std is not None else "")


def _diff_text(cell) -> str:
    return DASH if cell.diff is None else f"{cell.diff:+.1f}"


def _p_text(test) -> str:
    c = test.comparison
    if c.primary is None:
        return "p n/a (too few runs)"
    return f"{c.primary.p_text()} {c.primary.test}; Holm {_bare(c.primary.p_text(c.p_holm))}"


def _bare(p_text: str) -> str:
    """'p=0.03' -> '0.03', 'p<1.2e-04' -> '<1.2e-04', for a p printed beside another."""
    return p_text[2:] if p_text.startswith("p=") else p_text[1:]


def _col_labels(table) -> list:
    lay = table.layout
    return list(lay.cols) + list(lay.derived), [lay.col_text(c) for c in list(lay.cols) + list(lay.derived)]


def _grid(table, sec) -> tuple[list[str], list[list[str]]]:
    lay = table.layout
    cols, labels = _col_labels(table)
    header = ["", "loss", ""] + labels
    rows = []
    by_key = {(c.group, c.row, c.col): c for c in table.cells if c.section == sec.label}
    tests = {(t.group, t.row, t.col): t for t in table.tests if t.section == sec.label}
    for g in lay.groups:
        first = True
        for row in sec.rows:
            cells = [by_key[(g, row, c)] for c in cols]
            has_paper = any(c.paper_mean is not None for c in cells)
            glabel = lay.group_label(g) if first else ""
            rows.append([glabel, row.label, "ours"] + [cell_text(c, table.aggregation) for c in cells])
            if has_paper:
                rows.append(["", "", "paper"] + [_paper_text(c) for c in cells])
                rows.append(["", "", "Δ ours − paper"] + [_diff_text(c) for c in cells])
            first = False
        for row in sec.rows:
            if row.scl:
                rows.append(["", f"{row.label} vs CE", "p"]
                            + [_p_text(tests[(g, row, c)]) if (g, row, c) in tests
                               else "p n/a (a side has no runs)" for c in cols])
                if lay.paper_p is not None:
                    rows.append(["", "", "paper p (test not stated)"]
                                + [format_p(tests[(g, row, c)].paper_p) if (g, row, c) in tests else DASH
                                   for c in cols])
    return header, rows


def _missing_grid(table) -> tuple[list[str], list[list[str]]]:
    """The table's grid when no run of it is in the database: the paper's numbers, ours missing."""
    lay = table.layout
    cols, labels = _col_labels(table)
    losses = [CE, SCL] + ([BASELINE] if lay.baseline_row else [])
    ours = MISSING + (f" [0 of {lay.expected} seeds]" if lay.expected else "")
    rows = []
    for g in lay.groups:
        for i, row in enumerate(losses):
            rows.append([lay.group_label(g) if i == 0 else "", row.label, "ours"] + [ours] * len(cols))
            paper = [lay.paper(g, c, row.loss) for c in cols]
            if any(p is not None for p in paper):
                rows.append(["", "", "paper"] + [DASH if p is None else _num(p[0]) + (
                    f" ± {_num(p[1])}" if p[1] is not None else "") for p in paper])
    return ["", "loss", ""] + labels, rows


def _tests_grid(table, sec) -> tuple[list[str], list[list[str]]]:
    header = ["cell", "runs CE / CE+SCL (pairs)", "Δ mean [bootstrap 95% CI]", "effect size",
              "tests (p, test)", "Holm-adjusted p (primary)", "example-level (test predictions)"]
    rows = []
    for t in table.tests:
        if t.section != sec.label:
            continue
        c = t.comparison
        where = " ".join(x for x in (table.layout.group_label(t.group),
                                     table.layout.col_text(t.col), t.row.label) if x)
        if t.col == table.layout.by_seed:
            where += " (seed means)"
        ci = f"{c.mean_diff:+.2f} [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]"
        tests = "; ".join(f"{x.p_text()} {x.test}" for x in c.tests + [e for e in c.extra
                                                                        if "McNemar" not in e.test])
        ex = DASH
        if c.example_test is not None:
            mc = [e for e in c.extra if "McNemar" in e.test]
            ex = (f"{c.example_test.p_text()} {c.example_test.test} (n={c.example_test.n} examples, "
                  f"Holm {_bare(c.example_test.p_text(c.example_p_holm))})"
                  + (f"; {mc[0].p_text()} {mc[0].test}" if mc else ""))
        holm = f"{c.primary.p_text(c.p_holm)} ({c.primary.test})" if c.primary else DASH
        rows.append([where, f"{c.n_a} / {c.n_b} ({c.n_pairs})", ci, f"{c.effect_name} {_num(c.effect, 2)}",
                     tests, holm, ex])
    return header, rows


def _trends_grid(table, sec) -> tuple[list[str], list[list[str]]]:
    lay = table.layout
    header = ["", "row", "seeds", "mean slope, points per unit [bootstrap 95% CI]", "p (test)",
              "Holm-adjusted p"]
    rows = []
    for t in table.trends:
        if t.section != sec.label:
            continue
        x = t.test
        levels = ", ".join(lay.col_text(v) for v in t.levels)
        rows.append([lay.group_label(t.group), f"{t.row.label} − CE over {levels}", str(x.n),
                     f"{t.mean_slope:+.1f} [{t.ci[0]:+.1f}, {t.ci[1]:+.1f}]",
                     f"{x.p_text()} ({x.test})", x.p_text(t.p_holm)])
    return header, rows


# ---- grid formats -------------------------------------------------------------------------------

def _heading(width, table, fmt) -> str:
    t = f"Table {table.number}. {table.title} — aggregation: {table.aggregation}"
    if fmt == "terminal":
        t = _para(width, t, fmt)
        return t + "\n" + "=" * max(map(len, t.splitlines()))
    return {"markdown": "### " + t, "latex": "% " + t}[fmt]


def _subheading(width, text, fmt) -> str:
    return {"terminal": _para(width, text, fmt), "markdown": "#### " + text, "latex": "% " + text}[fmt]


def _para(width, text, fmt) -> str:
    if fmt == "terminal":
        return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)
    return "% " + text if fmt == "latex" else text


def _format_grid(width, header, rows, fmt, records: bool = False) -> str:
    """The grid in fmt. records: in the terminal, one wrapped paragraph per row ("first cell:
    header value | header value ..."), for grids of long text that no 100 columns could hold."""
    if fmt == "markdown":
        esc = lambda s: str(s).replace("|", "\\|")
        lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
        return "\n".join(lines)
    if fmt == "latex":
        esc = lambda s: (str(s).replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%")
                         .replace("_", "\\_").replace("#", "\\#").replace("±", "$\\pm$")
                         .replace("Δ", "$\\Delta$").replace("λ", "$\\lambda$").replace("τ", "$\\tau$")
                         .replace("—", "---").replace("−", "$-$"))
        lines = ["\\begin{tabular}{" + "l" * len(header) + "}", "\\hline",
                 " & ".join(map(esc, header)) + " \\\\", "\\hline"]
        lines += [" & ".join(map(esc, r)) + " \\\\" for r in rows]
        return "\n".join(lines + ["\\hline", "\\end{tabular}"])
    if records:
        return "\n".join(textwrap.fill(f"{r[0]}: " + " | ".join(f"{h}: {x}" for h, x in zip(header[1:], r[1:])),
                                        width, subsequent_indent="    ", break_on_hyphens=False)
                          for r in rows)
    return _terminal_grid(header, rows, width)


LABEL_COLUMNS = 3  # group, loss, ours/paper/Δ: the terminal grid's labels, wrapped before the numbers
LABEL_WIDTH = 14  # a label column may wrap to this ("paper p (test not stated)" on two lines)


def _terminal_grid(header, rows, width) -> str:
    """A rich table in `width` columns, cells wrapped at spaces, the label columns before the
    numbers; a rule under the header and before each row whose first cell starts a new group."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    natural = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    labels = [min(w, LABEL_WIDTH) for w in natural[:LABEL_COLUMNS]]
    gaps = len(natural) - 1  # the box's one-space divider between two columns (no padding)
    share = (width - sum(labels) - gaps) // max(1, len(natural) - LABEL_COLUMNS)
    grid = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    for j, h in enumerate(header):
        if j < LABEL_COLUMNS:
            grid.add_column(Text(str(h)), max_width=LABEL_WIDTH, overflow="fold")
        else:
            grid.add_column(Text(str(h)), width=min(natural[j], share), overflow="fold")
    for i, r in enumerate(rows):
        grid.add_row(*(Text(str(x)) for x in r),
                     end_section=i + 1 < len(rows) and bool(rows[i + 1][0]) and len(rows) > 1)
    console = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    console.print(grid)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


# ---- long formats -------------------------------------------------------------------------------

def cell_records(table) -> pd.DataFrame:
    """One row per cell; CE+SCL rows carry the tests of CE+SCL against CE in that cell."""
    tests = {(t.section, t.group, t.row, t.col): t for t in table.tests}
    recs = []
    for c in table.cells:
        r = {"table": table.number, "aggregation": table.aggregation, "section": c.section,
             "group": c.group, "row": c.row.label, "col": c.col, "loss": c.loss, "n_runs": c.n_runs,
             "n_used": c.n_used, "n_expected": c.n_expected, "mean": c.mean, "std": c.std,
             "paper_mean": c.paper_mean, "paper_std": c.paper_std, "diff": c.diff,
             "flags": "; ".join(c.flags), "tie_decided": c.tie_decided, "n_last": c.n_last,
             "n_known_last": c.n_known, "cut_short": c.cut_short, "text": cell_text(c, table.aggregation)}
        t = tests.get((c.section, c.group, c.row, c.col))
        if t is not None:
            r.update(_test_record(t))
        recs.append(r)
    return pd.DataFrame.from_records(recs)


def _test_record(t) -> dict:
    c = t.comparison
    r = {"n_pairs": c.n_pairs, "mean_diff": c.mean_diff, "ci_low": c.ci[0], "ci_high": c.ci[1],
         "effect_name": c.effect_name, "effect": c.effect,
         "primary_test": c.primary.test if c.primary else None,
         "p_primary": c.primary.p if c.primary else None, "p_holm": c.p_holm, "paper_p": t.paper_p}
    for x in c.tests + c.extra:
        r[f"p[{x.test}]"] = x.p
    for x in c.tests + c.extra:
        if x.resamples:  # its p cannot go below 1 / (resamples + 1)
            r[f"resamples[{x.test}]"] = x.resamples
    if c.example_test is not None:
        r.update(example_test=c.example_test.test, example_p=c.example_test.p, example_p_holm=c.example_p_holm,
                 example_resamples=c.example_test.resamples)
    return r


def _trend_record(t) -> dict:
    return {"section": t.section, "group": t.group, "row": t.row.label, "levels": list(t.levels),
            "test": t.test.test, "seeds": t.test.n, "mean_slope": t.mean_slope, "ci_low": t.ci[0],
            "ci_high": t.ci[1], "t": t.test.statistic, "p": t.test.p, "p_holm": t.p_holm}


def to_dict(table) -> dict:
    """Everything in the table as plain JSON-ready data (NaN as None)."""
    cells = cell_records(table)
    cells = cells[[k for k in cells.columns if k in _CELL_KEYS]]
    tests = [{"section": t.section, "group": t.group, "col": t.col, "row": t.row.label, **_test_record(t),
              "pairs": t.pairs} for t in table.tests]
    return _clean({"table": table.number, "title": table.title, "aggregation": table.aggregation,
                   "aggregation_meaning": AGGREGATIONS[table.aggregation], "models": table.models,
                   "notes": table.notes,
                   "sections": [{"label": s.label, "model": s.model, "caption": s.caption,
                                 "rows": [r.label for r in s.rows]}
                                for s in table.sections],
                   "cells": cells.to_dict(orient="records"), "tests": tests,
                   "trends": [_trend_record(t) for t in table.trends]})


_CELL_KEYS = ("table", "aggregation", "section", "group", "row", "col", "loss", "n_runs", "n_used",
              "n_expected", "mean", "std", "paper_mean", "paper_std", "diff", "flags", "tie_decided", "n_last",
              "n_known_last", "cut_short", "text")


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is pd.NA:
        return None
    return x


def _jsonable(x):
    return str(x)
