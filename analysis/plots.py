"""The paper's figures and two of ours, from the database: PNG and PDF, matplotlib Agg.

plot_variance: each seed's test score, CE beside CE+SCL, same-seed runs joined, boxes behind.
plot_noise: score against back-translation temperature T for each loss, mean ± std band.
plot_tsne: t-SNE of the stored test-set [CLS] embeddings, CE beside CE+SCL (paper Figure 2).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.layouts import HARSH, protocol_name, protocol_of, reported  # noqa: E402
from analysis.load import load_embeddings, load_results  # noqa: E402
from harness.protocol.paper import FEWSHOT, LOSS_LABELS, NOISE, TASK_LABELS  # noqa: E402

COLORS = {"ce": "tab:blue", "ce+scl": "tab:orange"}
DPI = 120
TSNE_MAX_POINTS = 1_000  # per panel, sampled; t-SNE is O(n²) per iteration
TSNE_EXACT_MAX = 500


def _frame(df_or_db) -> pd.DataFrame:
    return df_or_db if isinstance(df_or_db, pd.DataFrame) else load_results(df_or_db)


def _scale(values: pd.Series) -> float:
    return 100.0 if len(values) and values.abs().max() <= 1.0 else 1.0


def _save(fig, out_dir, name) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _plain_runs(df: pd.DataFrame, mask: pd.Series, model: str | None) -> pd.DataFrame:
    """Rows under `mask` that are plain fine-tuning runs (no transfer stage, no tuning run) with a
    test score."""
    mask = mask & df["init_from"].isna() & df["per_class"].isna() & df["test_score"].notna() & reported(df)
    if model is not None:
        mask = mask & (df["model"] == model)
    return df[mask]


def _by_model(sel: pd.DataFrame):
    """(model, protocol, file-name suffix, runs): one figure per model and protocol, never pooling
    v1's runs with v2's; v1 keeps the plain file name."""
    sel = sel.assign(_protocol=protocol_of(sel))
    for (mdl, proto), g in sel.groupby(["model", "_protocol"]):
        yield mdl, proto, _protocol_suffix(proto), g


def _protocol_suffix(proto: str) -> str:
    """A figure file's name part for its protocol: none for v1 (the names figures had before v2)."""
    return "" if proto == "v1" else f"_{_safe(proto)}"


def _no_runs(ax) -> None:
    """An empty panel says so instead of showing a meaningless axis."""
    ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks([])


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(s))


def plot_variance(df_or_db, out_dir, *, tasks=FEWSHOT.tasks, ns=FEWSHOT.ns,
                  noise: float = 0.0, model: str | None = None) -> list[Path]:
    """Per model, a grid of panels (task × N): each seed's test score for CE and CE+SCL, a grey
    line joining the two runs of one seed, a box plot of each loss behind. Returns PNG and PDF paths."""
    df = _frame(df_or_db)
    sel = _plain_runs(df, df["task"].isin(tasks) & df["n"].isin(ns) & (df["noise"] == noise), model)
    paths = []
    for mdl, proto, suffix, g in _by_model(sel):
        scale = _scale(g["test_score"])
        fig, axes = plt.subplots(len(ns), len(tasks), figsize=(3.2 * len(tasks), 2.8 * len(ns)), squeeze=False)
        for i, n in enumerate(ns):
            for j, task in enumerate(tasks):
                ax = axes[i][j]
                cell = g[(g["task"] == task) & (g["n"] == n)]
                data = [cell.loc[cell["loss"] == loss, "test_score"].to_numpy() * scale for loss in COLORS]
                if all(len(x) for x in data):
                    ax.boxplot(data, positions=[0, 1], widths=0.5, showfliers=False,
                               medianprops={"color": "black"}, boxprops={"color": "0.6"})
                wide = cell.pivot_table(index="seed", columns="loss", values="test_score", aggfunc="first") * scale
                for _, r in wide.iterrows():
                    if all(l in r and pd.notna(r[l]) for l in COLORS):
                        ax.plot([0, 1], [r["ce"], r["ce+scl"]], color="0.5", lw=0.8, alpha=0.7)
                for x, loss in enumerate(COLORS):
                    ax.scatter(np.full(len(data[x]), x), data[x], color=COLORS[loss], s=18, zorder=3,
                               label=LOSS_LABELS[loss])
                ax.set_xticks([0, 1], [LOSS_LABELS[l] for l in COLORS])
                ax.set_xlim(-0.6, 1.6)
                ax.set_title(f"{TASK_LABELS.get(task, task)}, N={n} "
                             f"({len(data[0])} CE / {len(data[1])} CE+SCL runs)", fontsize=9)
                if j == 0:
                    ax.set_ylabel("test accuracy (%)" if scale == 100 else "test score")
                if not len(cell):
                    _no_runs(ax)
        fig.suptitle("Run-to-run variance: each seed's test score (lines join runs on the same sample)")
        fig.text(0.5, -0.01, f"model: {mdl}; {protocol_name(proto)}; noise T={noise:g}; every finished run shown",
                 ha="center", fontsize=8)
        fig.tight_layout()
        paths += _save(fig, out_dir, f"variance_{_safe(mdl)}{suffix}")
    return paths


NOISE_MODES = {"augment": (NOISE.noises, "Robustness to noisy training data", ""),
               "replace": (HARSH.noises, "Our extension: the noisy texts replace the originals", "_replace")}


def plot_noise(df_or_db, out_dir, *, tasks=NOISE.tasks, n: int = NOISE.ns[0],
               model: str | None = None, mode: str = "augment") -> list[Path]:
    """Per model and protocol, one panel per task: mean test score against T for each loss, ± std
    shaded, each run as a faint dot. T = 0 is the clean (original) training set. mode: the
    paper's design ("augment": noisy copies beside the originals, Table 3) or our extension
    ("replace", Table 8)."""
    noises, title, mode_suffix = NOISE_MODES[mode]
    df = _frame(df_or_db)
    noisy_mode = (df["noise_mode"].fillna("augment") == mode) | (df["noise"] == 0)
    sel = _plain_runs(df, df["task"].isin(tasks) & (df["n"] == n).fillna(False)
                      & df["noise"].isin(noises) & noisy_mode, model)
    if not (sel["noise"] > 0).any():  # clean runs alone make no noise figure
        return []
    paths = []
    for mdl, proto, suffix, g in _by_model(sel):
        scale = _scale(g["test_score"])
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
        for j, task in enumerate(tasks):
            ax = axes[0][j]
            for loss, color in COLORS.items():
                cell = g[(g["task"] == task) & (g["loss"] == loss)]
                if cell.empty:
                    continue
                s = cell.groupby("noise")["test_score"].agg(["mean", "std", "count"]) * [scale, scale, 1]
                ax.plot(s.index, s["mean"], marker="o", color=color, label=f"{LOSS_LABELS[loss]} (mean ± std)")
                ax.fill_between(s.index, s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                                color=color, alpha=0.2)
                ax.scatter(cell["noise"], cell["test_score"] * scale, color=color, s=6, alpha=0.35)
            ax.set_title(f"{TASK_LABELS.get(task, task)}, N={n}", fontsize=10)
            ax.set_xlabel("back-translation temperature T (0 = original)")
            ax.set_xticks(noises)
            if j == 0:
                ax.set_ylabel("test accuracy (%)" if scale == 100 else "test score")
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                _no_runs(ax)
        fig.suptitle(title)
        fig.text(0.5, -0.02, f"model: {mdl}; {protocol_name(proto)}; N={n}; runs per point: all finished seeds",
                 ha="center", fontsize=8)
        fig.tight_layout()
        paths += _save(fig, out_dir, f"noise_{_safe(mdl)}_n{n}{mode_suffix}{suffix}")
    return paths


def plot_tsne(db, out_dir, task: str = "sst2", n: int | None = 20, seed: int | None = None, *,
              model: str | None = None, noise: float = 0.0, perplexity: float = 30.0,
              random_state: int = 0, runs: pd.DataFrame | None = None) -> list[Path]:
    """t-SNE of the test-set [CLS] embeddings of one CE run beside the CE+SCL run on the same
    sample (seed). seed=None takes the smallest seed that has embeddings for both losses.
    runs: the results to choose from (default: every finished job of db; the report passes its
    evidence). Returns [] when no such pair is stored."""
    from sklearn.manifold import TSNE

    df = load_results(db) if runs is None else runs
    full = df["n"].isna() if n is None else (df["n"] == n).fillna(False)
    sel = df[(df["task"] == task) & full & (df["noise"] == noise) & df["init_from"].isna()]
    if model is not None:
        sel = sel[sel["model"] == model]
    emb = load_embeddings(db, sel["job_id"].tolist())
    sel = sel[sel["job_id"].isin(list(emb))]
    sel = sel.assign(_protocol=protocol_of(sel))  # a CE run is paired with CE+SCL of its protocol
    pairs = sel.pivot_table(index=["model", "_protocol", "seed"], columns="loss", values="job_id", aggfunc="first")
    pairs = pairs.dropna(subset=[c for c in COLORS if c in pairs.columns]) if set(COLORS) <= set(pairs.columns) else pairs.iloc[0:0]
    if seed is not None:
        pairs = pairs[pairs.index.get_level_values("seed") == seed]
    if pairs.empty:
        return []
    (mdl, proto, sd), row = next(iter(pairs.iterrows()))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, loss in zip(axes, COLORS):
        x, _, y = emb[row[loss]]
        if len(x) > TSNE_MAX_POINTS:
            keep = np.random.default_rng(random_state).choice(len(x), TSNE_MAX_POINTS, replace=False)
            x, y = x[keep], y[keep]
        # Exact gradients below TSNE_EXACT_MAX points: faster there than Barnes–Hut, and no OpenMP.
        z = TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca",
                 method="exact" if len(x) <= TSNE_EXACT_MAX else "barnes_hut",
                 random_state=random_state).fit_transform(x)
        for lab in np.unique(y):
            m = y == lab
            ax.scatter(z[m, 0], z[m, 1], s=8, alpha=0.8, label=f"label {lab:g}")
        ax.set_title(f"{LOSS_LABELS[loss]} (job {row[loss]})", fontsize=10)
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
        ax.legend(fontsize=7, markerscale=2)
    nlabel = "full data" if n is None else f"N={n}"
    fig.suptitle(f"t-SNE of test-set [CLS] embeddings, {TASK_LABELS.get(task, task)}, {nlabel}")
    fig.text(0.5, -0.02, f"model: {mdl}; {protocol_name(proto)}; {nlabel}; seed {sd}; {len(x)} test "
             "examples per panel", ha="center", fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, f"tsne_{task}_{'full' if n is None else n}_seed{sd}_{_safe(mdl)}"
                              f"{_protocol_suffix(proto)}")


def plot_convergence(curves: pd.DataFrame, out_dir, budgets: dict | None = None) -> list[Path]:
    """Protocol v2's convergence study: validation accuracy against optimizer steps, one panel per
    (task, N), a line per (model, loss) averaged over seeds with ± std shaded; a dashed line at each
    N's chosen budget. curves: analysis.load.load_curves; budgets: {n: steps}."""
    from analysis.convergence import mean_curves

    if curves.empty:
        return []
    mean = mean_curves(curves)
    tasks = [t for t in FEWSHOT.tasks if t in set(mean["task"])] or sorted(set(mean["task"]))
    ns = sorted(set(mean["n"].dropna()))
    models = sorted(set(mean["model"]))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(len(tasks), len(ns), figsize=(3.6 * len(ns), 2.8 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, n in enumerate(ns):
            ax = axes[i][j]
            for k, model in enumerate(models):
                for loss, color in COLORS.items():
                    c = mean[(mean["task"] == task) & (mean["n"] == n) & (mean["model"] == model)
                             & (mean["loss"] == loss)].sort_values("step")
                    if c.empty:
                        continue
                    y, sd = c["mean"] * 100, c["std"].fillna(0) * 100
                    ax.plot(c["step"], y, styles[k % len(styles)], color=color, lw=1.2,
                            label=f"{model.split('/')[-1]} {LOSS_LABELS[loss]}")
                    ax.fill_between(c["step"], y - sd, y + sd, color=color, alpha=0.12)
            if budgets and n in budgets:
                ax.axvline(budgets[n], color="0.3", ls="--", lw=0.8)
            ax.set_title(f"{TASK_LABELS.get(task, task)}, N={n}", fontsize=9)
            if i == len(tasks) - 1:
                ax.set_xlabel("optimizer steps")
            if j == 0:
                ax.set_ylabel("validation accuracy (%)")
            if not ax.lines:
                _no_runs(ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7,
                   bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("Convergence study: validation accuracy by step (mean ± std over seeds); "
                 "dashed: the budget chosen for N")
    fig.tight_layout()
    return _save(fig, out_dir, "convergence")
