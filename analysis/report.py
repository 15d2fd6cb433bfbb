"""One Markdown (and HTML) report: every table, every figure, and a verdict on each claim of the
paper from what the database holds. Numbers are the database's; nothing is tuned toward the paper.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from pathlib import Path

import numpy as np

from analysis import stats
from analysis.convergence import budget_per_n, design, render_budgets, render_previews, study
from analysis.cost import grid_costs, render_costs
from analysis.evidence import EVIDENCE_GRIDS, pooled_text, split
from analysis.layouts import TABLES, protocol_name, protocol_of
from analysis.load import engine_of, load_embeddings, load_results, load_tuning, train_forwards
from analysis.model_size import render_model_size
from analysis.noise import noise_summary, render_noise_summary, render_token_summary, token_summary
from analysis.plots import plot_convergence, plot_noise, plot_tsne, plot_variance
from analysis.render import render
from analysis.selection import CUT_SHORT_SHARE
from analysis.tables import ALPHA, CUT_SHORT_MARK, TOP_K, build_table
from analysis.tuning import render_tuning
from harness.protocol import paper

QUESTION = "Does CE+SCL help small pre-trained encoders the way the paper says it helps RoBERTa-large?"


def write_report(db, out_dir, *, aggregation: str = "top3", n_resamples: int = stats.N_RESAMPLES,
                 figures: bool = True, seed: int = 0, progress=None) -> Path:
    """Write out_dir/report.md and out_dir/report.html (figures under out_dir/figures).

    db: an Engine, URL or SQLite path. aggregation: the number the claims are judged on is always
    the test over every run; aggregation picks which table comes first ("top3" or "mean").
    Every claim, table and figure pools the campaign's evidence only (`analysis.evidence`).
    progress: called with a line as each step starts (the whole report takes minutes).
    Returns the path of report.md.
    """
    say = progress or (lambda line: None)
    started = time.time()  # a figure file older than this run is one it did not make
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine = engine_of(db)
    say("reading the results")
    everything = load_results(engine)
    evidence = split(everything, load_tuning(engine))
    df = evidence.runs
    built = {}
    for n in TABLES:
        say(f"Table {n}: cells and significance tests")
        built[n] = build_table(df, n, aggregation, db=engine, n_resamples=n_resamples, seed=seed)
    other = "mean" if aggregation == "top3" else "top3"
    md = [f"# {QUESTION}",
          "The paper (Gunel et al., ICLR 2021) reports that adding a supervised contrastive term to "
          f"the cross-entropy loss (CE+SCL) helps {paper.PAPER_MODEL} most in few-shot learning, "
          "under noisy training data and in transfer. This report runs the paper's protocol, with "
          "hyper-parameters chosen on validation as the paper chose them, on small pre-trained "
          "encoders on CPUs, and gives a verdict on each claim from the database alone. Cells "
          "marked 'missing' have no finished run yet.",
          f"Generated {dt.datetime.now().isoformat(timespec='seconds')} from "
          f"`{engine.url.render_as_string(hide_password=True)}`: {len(everything)} finished jobs, "
          f"{len(df)} of them the campaign's evidence; "
          f"models: {', '.join(f'`{m}`' for m in sorted(df['model'].unique())) or 'none'}.",
          "**What the claims pool.** Every claim, table and figure below pools only the runs of the "
          f"paper's experiments (grids {', '.join(EVIDENCE_GRIDS)}) on their grid's own "
          "seeds, and a tuned grid's runs only at the tuning choice stored for their model and task "
          "(`analysis/evidence.py`); each claim names the runs it pooled. "
          + (evidence.left_out_text() or "Nothing else is in the database."),
          f"**The models differ from the paper's.** The paper fine-tuned {paper.PAPER_MODEL} "
          f"(RoBERTa-base for the batch-size table) on GPUs; these runs used the models named above. "
          "Compare the direction and size of effects, not the digits.",
          _forward_line(train_forwards(engine)),
          "Significance: every test is two-sided over every finished run of a cell, paired by seed "
          "(CE and CE+SCL jobs with the same task, N, noise, seed, model and hyper-parameters train "
          "on the same examples). The primary test is the paired t-test (Welch's t-test where no "
          f"seeds pair); Holm's correction runs over the cells of each table, each model's on its own; "
          f"α = {ALPHA}. The "
          "example-level test is a paired bootstrap over the stored test predictions; it holds the "
          "trained models fixed, so it ignores seed-to-seed variance and is far more liberal than "
          "the seed-level tests.",
          _selection_rules(),
          "## Claims of the paper"]
    say("claims")
    verdicts = _claims(built, engine, df)
    md += [f"- **{CLAIMS[k]}** {verdicts[k]}" for k in CLAIMS]
    shift = render_protocol_shift(built, df)
    if shift:
        md += [CLAIMS_TITLE_SHIFT, shift]
    md += ["## Does the gain depend on the model? (Table 2)", render_model_size(built[2], df)]
    md += ["## Hyper-parameters chosen on validation", render_tuning(load_tuning(engine))]
    md += ["## Protocol v2: how long to train (the convergence study)",
           *_convergence(engine, out / "figures" if figures else None)]
    preview = render_previews(evidence.left_out["budget"], df)
    if preview:
        md += [preview + "\n" + PLAIN_LOOP]
    for n in TABLES:
        md.append(f"## Table {n}")
        md.append(render(built[n], "markdown"))
        if built[n].layout.noise_summary:
            md.append(render_noise_summary(noise_summary(engine), "markdown"))
            md.append(render_token_summary(token_summary(engine)))
        if built[n].sections:
            say(f"Table {n}, aggregation {other}")
            md.append(render(build_table(df, n, other, n_resamples=n_resamples, seed=seed), "markdown"))
    if figures:
        md.append("## Figures")
        figs = out / "figures"
        say("figures: variance across seeds, noise curves")
        paths = plot_variance(df, figs) + plot_noise(df, figs) + plot_noise(df, figs, mode="replace")
        for n in (20, 100, None):
            say(f"figure: t-SNE of SST-2 embeddings, N = {n or 'full'}")
            paths += plot_tsne(engine, figs, "sst2", n, runs=df)
        for stale in _stale_figures(figs, started):  # so the folder holds exactly what report.md shows
            stale.unlink()
            say(f"removed {stale}: this report no longer makes it")
        pngs = [p for p in paths if p.suffix == ".png"]
        md += [f"![{p.stem}](figures/{p.name})\n\n*{p.stem}* (PDF: `figures/{p.with_suffix('.pdf').name}`)"
               for p in pngs] or ["No figures: the database holds no runs they need."]
    say("appendix: what each grid cost")
    md += ["## Appendix: what each grid cost", render_costs(grid_costs(engine))]
    text = "\n\n".join(md) + "\n"
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(_html(text))
    return path


def _convergence(engine, figs: Path | None) -> list[str]:
    """The study's budget table with its rule, and its curves (a figure) where the study has run."""
    curves, table = study(engine)
    text = [CONVERGENCE_INTRO, render_budgets(table, **design())]
    if figs is not None and not curves.empty:
        png = [p for p in plot_convergence(curves, figs, budget_per_n(table)) if p.suffix == ".png"]
        text += [f"![{p.stem}](figures/{p.name})" for p in png]
    return text


# Issue 21's reference: a plain Hugging Face loop, written independently of this code, on the
# same examples (the numbers are that issue's, not this database's).
PLAIN_LOOP = ("For comparison, issue 21's independent plain `transformers` loop (same 20 SST-2 "
              "training examples and test half, the 3-layer MiniLM, lr 1e-4, batch 16, 100 epochs = "
              "200 steps, epoch chosen on validation) reached a mean test accuracy of 63.1 on seeds 0–4.")

CONVERGENCE_INTRO = (
    "Protocol v1 trained every few-shot job for 10 epochs (20 optimizer steps at N = 20), which an "
    "independent plain loop showed to be too few. Protocol v2 trains each N for a budget in "
    "optimizer steps, validating every 25 steps and keeping the best step's weights. The budgets "
    "come from the `convergence` grid: long runs (1000 steps) of both small models, both losses, "
    "on seeds no table uses; CE's curves choose the budget, CE+SCL's are shown beside them.")


def _selection_rules() -> str:
    """The top-3 rule without seed tie-breaks, and the cut-short warning (analysis.selection)."""
    return ("Top 3 and ties: the paper's number is the mean ± std of the test scores of a cell's "
            f"{TOP_K} runs with the best validation scores. Runs tied in validation score at the "
            f"boundary of the top {TOP_K} count alike, never broken by seed: the mean averages over every "
            "equally likely choice of the tied runs for the free slots, the std is the average std "
            "over those choices; such cells say 'k tied for m slots', and each table's notes say "
            f"how many cells ties decided. {CUT_SHORT_MARK} marks a cell where more than "
            f"{CUT_SHORT_SHARE:.0%} of the runs selected the last checkpoint they evaluated (the "
            "last epoch of an epoch budget, the last step of a step budget): validation may still "
            "have been improving when training stopped, so the budget may be too short there.")


def _stale_figures(figs: Path, started: float) -> list[Path]:
    """Figure files (PNG, PDF) in the report's own figures folder that this run, which started
    at `started` (time.time()), did not write (the convergence study's curves included)."""
    return sorted(p for p in figs.glob("*") if p.suffix in (".png", ".pdf") and p.stat().st_mtime < started)


FORWARDS = {"packed": "packed", "full": "the model's full pass"}  # RunResult.config["train_forward"]


def _forward_line(counts: dict[str, int]) -> str:
    """Which training forward pass the results came from (harness.training.packed or the full one)."""
    parts = ", ".join(f"{FORWARDS.get(k, k)} in {n} jobs" for k, n in sorted(counts.items(), reverse=True))
    return (f"Training forward pass: {parts or 'no finished jobs'}. The packed pass "
            "(`harness/training/packed.py`) computes the full pass's values without the padding and the "
            "unread last-layer rows: the same logits and dropout masks, gradients equal to the last "
            "bits; both kinds count alike in every cell.")


# ---- claims ---------------------------------------------------------------------------------

def _verdict_line(table, t) -> str:
    c = t.comparison
    where = " ".join(x for x in (table.layout.group_label(t.group),
                                 table.layout.col_text(t.col)) if x)
    if t.row.setting is not None:  # one of several CE+SCL settings: say which
        where += f" ({t.row.label})"
    if c.primary is None:
        return f"{where}: cannot be tested ({c.n_a} CE / {c.n_b} CE+SCL runs)"
    p = c.p_holm
    if p < ALPHA:
        word = "significant gain" if c.mean_diff > 0 else "significant loss (CE+SCL worse)"
    else:
        word = "no significant difference"
    return (f"{where}: Δ {c.mean_diff:+.1f} points [95% CI {c.ci[0]:+.1f}, {c.ci[1]:+.1f}], "
            f"{c.primary.p_text()} ({c.primary.test}, {c.n_pairs} pairs), Holm-adjusted "
            f"{c.primary.p_text(p)} → {word}")


def _summary(table, keep) -> str:
    tests = [t for t in table.tests if keep(t)]
    if not tests:
        return "No data in the database to test it."
    sup = sum(1 for t in tests if t.comparison.primary and t.comparison.p_holm < ALPHA and t.comparison.mean_diff > 0)
    con = sum(1 for t in tests if t.comparison.primary and t.comparison.p_holm < ALPHA and t.comparison.mean_diff < 0)
    head = (f"Our data support it in {sup} of {len(tests)} cells (Holm-adjusted p < {ALPHA})"
            + (f" and contradict it in {con}" if con else "") + ". ")
    return head + "; ".join(_verdict_line(table, t) for t in tests) + "."


def _trend_summary(table) -> str:
    """The 'most of all at high T' part: does each seed's gap grow with T?"""
    if not table.trends:
        return "Growth with T: no task has CE and CE+SCL runs at two noisy T."
    lines, grows = [], 0
    for t in table.trends:
        where = table.layout.group_label(t.group) + ("" if t.row.setting is None else f" ({t.row.label})")
        x = t.test
        if not np.isfinite(x.p):
            lines.append(f"{where}: cannot be tested ({x.n} seed(s) with a slope)")
            continue
        if t.p_holm < ALPHA:
            grows += t.mean_slope > 0
            word = "the gap grows with T" if t.mean_slope > 0 else "the gap shrinks with T"
        else:
            word = "no significant change with T"
        lines.append(f"{where}: {t.mean_slope:+.1f} points per unit T [95% CI {t.ci[0]:+.1f}, {t.ci[1]:+.1f}], "
                     f"{x.p_text()} ({x.test}, {x.n} seeds), Holm-adjusted {x.p_text(t.p_holm)} → {word}")
    return (f"Growth with T (each seed's gap regressed on T, slopes tested over seeds): the gap grows "
            f"significantly in {grows} of {len(table.trends)} tasks; " + "; ".join(lines) + ".")


def _mean_gain(table, keep) -> float | None:
    d = [t.comparison.mean_diff for t in table.tests if keep(t) and np.isfinite(t.comparison.mean_diff)]
    return float(np.mean(d)) if d else None


# The paper's claims, then the one our extension of Table 3 (Table 8) asks of the same data design.
CLAIMS = {**{k: v for k, v in paper.CLAIMS.items() if k != "tsne"},
          "noise_replace": "Our extension, not the paper's claim: CE+SCL is more robust than CE when "
                           "the back-translations replace the training texts, most of all at high "
                           "T (Table 8).",
          "tsne": paper.CLAIMS["tsne"]}
# the runs a claim rests on: its table, and which of that table's tests
CLAIM_DATA = {"fewshot": (2, lambda t: t.group in (20, 100)), "fewshot_shrinks": (2, lambda t: t.group == 1000),
              "noise": (3, lambda t: t.col != 0), "glue": (4, lambda t: True), "batch": (5, lambda t: True),
              "transfer": (7, lambda t: True), "noise_replace": (8, lambda t: t.col != 0)}
# the cells whose runs a claim's text rests on (its mean gains too: every N, every T)
CLAIM_POOLS = {**CLAIM_DATA, "fewshot_shrinks": (2, lambda c: True), "noise": (3, lambda c: True),
               "glue": (4, lambda c: c.group == "accuracy"), "noise_replace": (8, lambda c: True)}


def _pooled(table, keep, df) -> str:
    """' Pooled: …' for a claim: the runs of the table's cells it rests on."""
    ids = {j for c in table.cells if keep(c) for j in c.job_ids}
    return _pooled_runs(df[df["job_id"].isin(ids)])


def _pooled_runs(runs) -> str:
    return f" *Pooled: {pooled_text(runs)}.*"


def _views(built, df) -> dict[tuple[str, str], dict]:
    """(model, protocol) -> the tables restricted to that model's sections under that protocol
    (most runs first; v1 before v2)."""
    in_tables = {(s.model, s.protocol) for t in built.values() for s in t.sections}
    models = [str(m) for m in df["model"].value_counts().index]
    keys = sorted(in_tables, key=lambda k: (models.index(k[0]) if k[0] in models else len(models), k[1]))
    return {k: {n: t.where(lambda s, k=k: (s.model, s.protocol) == k) for n, t in built.items()} for k in keys}


def _claims(built, engine, df) -> dict[str, str]:
    """A verdict per claim; with several models or protocols, one per (model, protocol) that has
    runs for it (most runs first), each on its own tests and Holm-adjusted p alone."""
    views = _views(built, df)
    if len(views) <= 1:
        return {**_model_claims(built, df), "tsne": _tsne_claim(engine, df)}
    protocols = {p for _, p in views}
    name = lambda k: f"`{k[0]}`" + (f" under {protocol_name(k[1])}" if len(protocols) > 1 else "")  # noqa: E731
    per = {k: _model_claims(v, df) for k, v in views.items()}
    out = {}
    for key, (n, keep) in CLAIM_DATA.items():
        have = [k for k in views if any(keep(t) for t in views[k][n].tests)]
        if not have:
            out[key] = per[next(iter(views))][key]
            continue
        out[key] = "".join(f"\n  - {name(k)}: {per[k][key]}" for k in have)
        models = {m for m, _ in views}
        missing = sorted(models - {m for m, _ in have})
        if missing:
            out[key] += "\n  - No runs for it with " + ", ".join(f"`{m}`" for m in missing) + "."
    out["tsne"] = _tsne_claim(engine, df)
    return out


CLAIMS_TITLE_SHIFT = "## v1 beside v2: does the verdict depend on how long the baseline trains?"


def _main_effect(t) -> bool:  # Tables 3 and 8: the gap over the noisy T, seeds as units
    return t.col == "average"


# The tests each tested claim's verdict rests on (the claims' text and the v1-beside-v2 table);
# the shrinking gain and the batch sizes are descriptions, not tests.
VERDICT_TESTS = {"fewshot": (2, lambda t: t.group in (20, 100)), "noise": (3, _main_effect),
                 "glue": (4, lambda t: t.group == "accuracy" and t.col != "average"),
                 "transfer": (7, lambda t: True), "noise_replace": (8, _main_effect)}


def _short_verdict(table, keep) -> tuple[str | None, str]:
    """A claim's verdict in a few words: (direction, text). direction: "supported" (significant
    gains only), "contradicted" (significant losses only), "mixed", "not supported" (nothing
    significant), None (no testable cell)."""
    tests = [t for t in table.tests if keep(t)]
    tested = [t for t in tests if t.comparison.primary is not None]
    if not tested:
        return None, ("no data" if not tests else "cannot be tested")
    sig = [t for t in tested if t.comparison.p_holm < ALPHA]
    gains = sum(t.comparison.mean_diff > 0 for t in sig)
    losses = len(sig) - gains
    direction = ("mixed" if gains and losses else "supported" if gains else "contradicted" if losses
                 else "not supported")
    best = min(tested, key=lambda t: t.comparison.p_holm)
    mean = float(np.mean([t.comparison.mean_diff for t in tested]))
    return direction, (f"{direction}: {gains} gain(s), {losses} loss(es) of {len(tested)} cells; "
                       f"mean Δ {mean:+.1f}; smallest Holm-adjusted "
                       f"{best.comparison.primary.p_text(best.comparison.p_holm)}")


def render_protocol_shift(built, df) -> str:
    """v1 beside v2: per claim and model, the verdict under each protocol and whether it moved.
    '' when no model has sections under both protocols."""
    views = _views(built, df)
    both = sorted({m for m, p in views if p == "v1"} & {m for m, p in views if p == "v2"})
    if not both:
        return ""
    lines = [f"| claim | model | {protocol_name('v1')} | {protocol_name('v2')} | moved? |",
             "|---|---|---|---|---|"]
    for key, (n, keep) in VERDICT_TESTS.items():
        for m in both:
            (d1, v1), (d2, v2) = (_short_verdict(views[(m, p)][n], keep) for p in ("v1", "v2"))
            if d1 is None and d2 is None:
                continue
            moved = "—" if d1 is None or d2 is None else "no" if d1 == d2 else f"yes: {d1} → {d2}"
            lines.append(f"| {CLAIMS[key]} | `{m}` | {v1} | {v2} | {moved} |")
    return ("Each tested claim's verdict under protocol v1 (a budget in epochs) and under protocol "
            "v2 (the convergence study's step budgets), per model, from the same tests as the "
            "claims above (each protocol's Holm correction on its own); 'moved?' says whether the verdict's direction changed "
            "(supported, not supported, contradicted, mixed).\n\n" + "\n".join(lines))


def _model_claims(built, df) -> dict[str, str]:
    """The verdicts of the table claims, from tables that hold one model (or several, pooled),
    each with the runs it pooled."""
    out = _verdicts(built)
    return {k: v + _pooled(built[CLAIM_POOLS[k][0]], CLAIM_POOLS[k][1], df) for k, v in out.items()}


def _verdicts(built) -> dict[str, str]:
    t2, t3, t4, t5, t7 = (built[n] for n in (2, 3, 4, 5, 7))
    out = {"fewshot": _summary(t2, VERDICT_TESTS["fewshot"][1])}
    gains = {n: _mean_gain(t2, lambda t, n=n: t.group == n) for n in paper.FEWSHOT.ns}
    if all(g is not None for g in gains.values()):
        shrinks = gains[1000] < min(gains[20], gains[100])
        out["fewshot_shrinks"] = (f"Mean gain of CE+SCL over tasks: N=20 {gains[20]:+.1f}, N=100 {gains[100]:+.1f}, "
                                  f"N=1000 {gains[1000]:+.1f} points: the gain "
                                  f"{'does' if shrinks else 'does not'} shrink at N=1000 (descriptive, no test). "
                                  "At N=1000: " + "; ".join(_verdict_line(t2, t) for t in t2.tests if t.group == 1000) + ".")
    else:
        out["fewshot_shrinks"] = "Not all of N = 20, 100, 1000 have CE and CE+SCL runs in the database."
    out["noise"] = _noise_verdict(t3)
    out["noise_replace"] = _noise_verdict(built[8])
    out["glue"] = _summary(t4, VERDICT_TESTS["glue"][1])
    means = {}
    for c in t5.cells:
        if c.loss == "ce+scl" and c.mean is not None:
            means.setdefault(c.group, []).append(c.mean)
    if len(means) >= 2:
        avg = {b: float(np.mean(v)) for b, v in sorted(means.items())}
        rising = all(np.diff(list(avg.values())) > 0)
        out["batch"] = (", ".join(f"batch {b}: {v:.1f}" for b, v in avg.items())
                        + f" (CE+SCL, mean over tasks): {'rises' if rising else 'does not rise'} with batch "
                        "size (descriptive; the paper gives one run per cell and no test).")
    else:
        out["batch"] = "Fewer than two batch sizes of full-data CE+SCL runs are in the database."
    var = [f"{t7.layout.col_text(t.col)}: {e.p_text()} ({e.test} of equal spread; CE vs CE+SCL {e.detail})"
           for t in t7.tests for e in t.comparison.extra if e.test == "Brown–Forsythe test" and np.isfinite(e.p)]
    out["transfer"] = _summary(t7, VERDICT_TESTS["transfer"][1]) + (" Variance: " + "; ".join(var) + "." if var else "")
    return out


def _noise_verdict(table) -> str:
    """Tables 3 and 8: CE's own drop from the clean runs, the mean gain by T, the main effect over
    the noisy T (seeds as units) and whether the gap grows with T."""
    noisy = [c for c in table.layout.cols if c != 0]
    by_t = {T: _mean_gain(table, lambda t, T=T: t.col == T) for T in noisy}
    trend = ", ".join(f"T={T:g} {g:+.1f}" for T, g in by_t.items() if g is not None)
    return (_ce_drop(table) + (f"Mean gain of CE+SCL over tasks by temperature: {trend} points. " if trend else "")
            + "Main effect over the noisy T, seeds as units: " + _summary(table, _main_effect)
            + " " + _trend_summary(table))


def _ce_drop(table) -> str:
    """What the noise cost CE (mean test score at each noisy T minus clean, per task): without a
    drop there is no robustness to show. '' where no task has clean and noisy CE runs."""
    if not table.sections:
        return ""
    parts, first = [], table.sections[0].label
    for group in table.layout.groups:
        means = {c.col: c.mean for c in table.cells if (c.section, c.group, c.row.label) == (first, group, "CE")
                 and c.mean is not None and c.col in table.layout.cols}
        if 0 in means and len(means) > 1:
            drops = ", ".join(f"T={T:g} {means[T] - means[0]:+.1f}" for T in table.layout.cols if T != 0 and T in means)
            parts.append(f"{table.layout.group_label(group)} {drops}")
    if not parts:
        return ""
    return ("What the noise cost CE (the table's CE number at T minus clean, points): " + "; ".join(parts) + ". ")


def _tsne_claim(engine, df) -> str:
    """Class separation of the stored SST-2 test embeddings: silhouette score by label, CE against
    CE+SCL paired by seed, tested within each (model, N) on its own, Holm over those tests."""
    from sklearn.metrics import silhouette_score

    sel = df[(df["task"] == "sst2") & (df["noise"] == 0) & df["init_from"].isna()]
    emb = load_embeddings(engine, sel["job_id"].tolist())
    if not emb:
        return "No stored embeddings to check it."
    sel = sel[sel["job_id"].isin(list(emb))].copy()
    sel["sil"] = [silhouette_score(emb[j][0], emb[j][2]) if len(np.unique(emb[j][2])) > 1 else np.nan
                  for j in sel["job_id"]]
    sel["size"] = sel["n"].fillna(-1).astype(int)  # -1: full data
    sel["protocol"] = protocol_of(sel)  # v1's runs are never paired with v2's
    wide = sel.pivot_table(index=["model", "protocol", "size", "seed"], columns="loss", values="sil",
                           aggfunc="first")
    if not {"ce", "ce+scl"} <= set(wide.columns):
        return "Embeddings are stored for one loss only."
    wide = wide.dropna(subset=["ce", "ce+scl"])
    if wide.empty:
        return "No seed has embeddings for both losses."
    groups = [(key, g) for key, g in wide.groupby(level=["model", "protocol", "size"])]
    tests = [stats.paired_t(g["ce"], g["ce+scl"]) for _, g in groups]
    several = wide.index.get_level_values("protocol").nunique() > 1
    lines, sup = [], 0
    for ((model, proto, size), g), t, p_holm in zip(groups, tests, stats.holm([t.p for t in tests])):
        where = (f"`{model}`" + (f" under {protocol_name(proto)}" if several else "")
                 + f" {'full data' if size < 0 else f'N={size}'}")
        means = f"CE {g['ce'].mean():.2f}, CE+SCL {g['ce+scl'].mean():.2f} over {len(g)} seed pair(s)"
        if not np.isfinite(t.p):
            lines.append(f"{where}: {means}, too few pairs to test")
            continue
        if p_holm < ALPHA:
            better = g["ce+scl"].mean() > g["ce"].mean()
            sup += better
            word = "supports" if better else "contradicts"
        else:
            word = "no significant difference"
        lines.append(f"{where}: {means}; {t.p_text()} ({t.test}), Holm-adjusted {t.p_text(p_holm)} → {word}")
    return (f"Silhouette score of the SST-2 test embeddings by label (higher = better separated), "
            f"each (model, N) tested on its own: supported in {sup} of {len(groups)}. The t-SNE "
            "figures below show the same embeddings."
            + _pooled_runs(sel[sel.set_index(["model", "protocol", "size", "seed"]).index.isin(wide.index)])
            + "".join(f"\n  - {line}" for line in lines))



def _html(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
        body = MarkdownIt("commonmark").enable("table").render(text)
    except ImportError:  # markdown-it-py comes with typer/rich; plain text otherwise
        body = f"<pre>{html.escape(text)}</pre>"
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;}"
             "table{border-collapse:collapse;font-size:0.85em;margin:1em 0;}"
             "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top;}img{max-width:100%;}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>SCL report</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")
