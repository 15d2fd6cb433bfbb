"""Which results each of the paper's tables holds, and where each run goes in it.

A layout selects rows by spec content (task, n, noise, loss, batch size, init_from, per_class),
never by grid name (but for leaving out the tuning runs, whose test scores are never reported),
and tags each selected run with its place: `_group` (a block of rows), `_col` (a column), `_loss`
(the loss the row stands for) and `value` (the score shown). Pure pandas, vectorised over the
whole results frame. The tables' tasks, N, T, batch sizes and published numbers come from
`harness.protocol.paper`; what differs between tables is a field of its layout, never a test of its number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from harness.protocol import grids, paper
from harness.protocol.tasks import HUB_ROWS

# Columns that must match for two runs to sit in one section (and to be paired): the model and
# the training hyper-parameters, how batches were formed and how the sample was drawn. The SCL
# settings (λ, τ, reduction) split rows, not sections.
SIGNATURE = ("model", "lr", "batch_size", "epochs", "budget", "max_length", "warmup_ratio",
             "weight_decay", "val_size", "batching", "sampling")  # budget: step_budget()
V2_BUDGET = "v2 budgets"  # step_budget()'s value for a run at its N's protocol-v2 budget


def step_budget(df: pd.DataFrame) -> pd.Series:
    """A run's training budget as a setting of its section: NA under the epoch protocol (its
    epochs say it); V2_BUDGET where it trained for the budget the convergence study chose for its
    N (`grids.V2_BUDGETS`: the budgets differ by N, yet a table's N = 20, 100 and 1000 runs of
    protocol v2 belong in one section); else 'S steps', a budget of one's own."""
    if "steps" not in df:
        return pd.Series(pd.NA, index=df.index, dtype=object)

    def label(n, steps):
        if pd.isna(steps):
            return pd.NA
        if grids.budget_for(grids.V2_BUDGETS, None if pd.isna(n) else n) == int(steps):
            return V2_BUDGET
        return f"{int(steps)} steps"
    return pd.Series([label(n, s) for n, s in zip(df["n"], df["steps"])], index=df.index, dtype=object)


def protocol_from(budget) -> str:
    """The protocol of a run with this step_budget() value: "v1" (epochs), "v2" (its N's
    protocol-v2 budget) or the budget of one's own ("200 steps")."""
    return "v1" if pd.isna(budget) else "v2" if budget == V2_BUDGET else str(budget)


def protocol_of(df: pd.DataFrame) -> pd.Series:
    """Each run's protocol (protocol_from). Runs of different protocols are never pooled or paired."""
    return step_budget(df).map(protocol_from).astype(object)


PROTOCOL_NAMES = {"v1": "protocol v1 (epochs)", "v2": "protocol v2 (step budgets)"}


def protocol_name(protocol: str) -> str:
    """How the report, its figures and its tables name a protocol ('200 steps' names itself)."""
    return PROTOCOL_NAMES.get(protocol, protocol)


def budget_caption(value) -> str:
    """How a section's caption names its budget (step_budget's value)."""
    if value != V2_BUDGET:
        return str(value)
    per_n = ", ".join(f"N={n}: {s}" for n, s in sorted(grids.V2_BUDGETS.items()))
    return f"protocol v2's step budgets ({per_n} steps; validation every {grids.V2_EVAL_EVERY})"

# Full training-set sizes (the Hub's); a full-data run that trained on fewer rows is flagged (the
# local mirror holds 9,999-row subsets of QNLI and MNLI).
FULL_TRAIN_ROWS = {task: HUB_ROWS[(task, "train")] for task in paper.GLUE.tasks}


@dataclass(frozen=True)
class Layout:
    number: int
    title: str
    design: paper.Design  # the paper's experiment the table reproduces
    select: Callable[[pd.DataFrame], pd.DataFrame]
    groups: tuple  # raw group values, in order
    group_label: Callable[[object], str]
    cols: tuple  # raw column values, in order
    col_label: Callable[[object], str]
    paper: Callable[[object, object, str], tuple | None]  # (group, col, loss) -> (mean, std)
    paper_p: Callable[[object, object], float | None] | None = None  # (group, col) -> the paper's p
    derived: dict = field(default_factory=dict)  # column label -> raw member columns, pooled
    expected: int | None = None  # runs per cell the paper's protocol has
    signature: tuple = SIGNATURE
    baseline_row: bool = False
    notes: tuple = ()
    # (all results, the selected runs) -> notes about the data actually used (sizes, samples)
    describe: Callable[[pd.DataFrame, pd.DataFrame], list] | None = None
    # a cell's runs -> flags shown in the cell (e.g. a contrastive batch below the batch size)
    cell_flags: Callable[[pd.DataFrame], list] | None = None
    # A derived column whose members share each seed's training sample (Table 3's noisy copies of
    # one sample): its tests take seeds as units, and the gap's per-seed slope against the member
    # columns is tested too (does the gap grow with T?).
    by_seed: str | None = None
    noise_summary: bool = False  # shown with how much the back-translation changed the texts

    def col_text(self, c) -> str:
        return str(c) if c in self.derived else (self.col_label(c) or str(c))


# The grid whose runs chose the hyper-parameters on validation (harness.tuning): their test
# scores are never reported; the report shows their validation scores in the tuning table.
# Runs that choose the protocol, never reported as its results: the tuning grids (their seeds
# choose lr, λ, τ) and protocol v2's convergence study (its curves choose the step budgets).
STUDY_GRIDS = ("tune", "tune-v2", "convergence")


def reported(df: pd.DataFrame) -> pd.Series:
    """Runs a table or figure may report: all but the tuning and convergence-study runs."""
    return ~df["grid"].isin(STUDY_GRIDS)


def _clean(df: pd.DataFrame) -> pd.Series:
    """Plain fine-tuning runs: no transfer stage, no per-class sampling, not a tuning run."""
    return df["init_from"].isna() & df["per_class"].isna() & reported(df)


def _tag(df: pd.DataFrame, mask: pd.Series, group: str | pd.Series, col: str, value: str) -> pd.DataFrame:
    out = df.loc[mask].copy()
    out["_group"] = out[group] if isinstance(group, str) and group in out else group
    out["_col"] = out[col]
    out["_loss"] = out["loss"]
    out["value"] = out[value].astype(float)
    out["budget"] = step_budget(out)
    return out


def _t2(df):
    d = paper.FEWSHOT
    m = _clean(df) & (df["noise"] == 0) & df["n"].isin(d.ns) & df["task"].isin(d.tasks)
    return _tag(df, m, "n", "task", "test_score")


def _t3(df):
    d = paper.NOISE
    m = (_clean(df) & df["n"].isin(d.ns) & df["noise"].isin(d.noises) & df["task"].isin(d.tasks)
         & (df["noise_mode"].fillna("augment") == "augment"))  # the paper's: copies beside the originals
    return _tag(df, m, "task", "noise", "test_score")


# Our extension of Table 3 (grid noise-replace): the back-translations replace the originals.
HARSH = paper.Design(paper.NOISE.tasks, paper.NOISE.ns, noises=(0.0,) + grids.HARSH_NOISES, samples=5)


def _t8(df):
    d = HARSH
    m = _clean(df) & df["n"].isin(d.ns) & df["task"].isin(d.tasks)
    noisy = m & (df["noise_mode"] == "replace") & df["noise"].isin(d.noises)
    # the clean runs of a setting (SIGNATURE, its budget as steps) that has replaced-noise runs:
    # without those, Table 8 would only repeat Table 2's N = 100 cells
    keys = [c for c in ("task", "steps", *SIGNATURE) if c in df]
    ran = set(df.loc[noisy, keys].astype(str).itertuples(index=False, name=None))
    setting = pd.Series([k in ran for k in df[keys].astype(str).itertuples(index=False, name=None)],
                        index=df.index, dtype=bool)
    return _tag(df, noisy | (m & (df["noise"] == 0) & setting), "task", "noise", "test_score")


def _t4(df):
    m = _clean(df) & df["n"].isna() & (df["noise"] == 0) & df["task"].isin(paper.GLUE.tasks)
    acc = _tag(df, m, "accuracy", "task", "test_accuracy")
    metric = _tag(df, m, "task metric", "task", "test_score")
    return pd.concat([acc, metric], ignore_index=True)


def _t5(df):
    d = paper.BATCH
    m = (_clean(df) & df["n"].isna() & (df["noise"] == 0) & df["task"].isin(d.tasks)
         & df["batch_size"].isin(d.batch_sizes))
    return _tag(df, m, "batch_size", "task", "test_accuracy")


def _t7(df):
    m = (df["noise"] == 0) & df["task"].isin(paper.TRANSFER.tasks) & (
        df["init_from"].notna() | df["per_class"].notna())
    out = _tag(df, m, "", "task", "test_score")
    # A transfer run's row is the loss its SST-2 source model was trained with (from the source's
    # own result, else its own loss); runs that start from the pre-trained model are the baseline.
    source_loss = out["init_from"].map(df.set_index("job_id")["loss"])
    out["_loss"] = source_loss.fillna(out["loss"]).where(out["init_from"].notna(), "baseline")
    return out


def _t5_flags(runs: pd.DataFrame) -> list[str]:
    """The SCL term sees one forward batch; say so where that was fewer than batch_size examples."""
    if "scl_batch_size" not in runs:
        return []
    seen = runs["scl_batch_size"].dropna()
    small = seen[seen < runs.loc[seen.index, "batch_size"]]
    return [f"contrastive batch {int(small.min())}"] if len(small) else []


def _t5_describe(df: pd.DataFrame, sub: pd.DataFrame) -> list[str]:
    if "scl_batch_size" not in sub or sub.empty:
        return []
    seen = sub.groupby("batch_size")["scl_batch_size"].agg(["min", "max"]).dropna()
    if seen.empty:
        return ["No run of this table recorded its contrastive batch size (older results)."]
    parts = [f"batch {bs}: {int(r['min'])}" + ("" if r["min"] == r["max"] else f"–{int(r['max'])}")
             for bs, r in seen.iterrows()]
    return ["Contrastive batch actually seen by the SCL term (results.scl_batch_size, per run): "
            + ", ".join(parts) + "."]


# Where the transfer targets' data come from. The test-set size tells the local mirror's samples
# (Yelp-2: 1,000 of the official 38,000 test rows → 500 tested) from the Hub's full test splits.
_TRANSFER_SOURCES = {
    "yelp_polarity": (19_000, "Yelp-2: {n} test examples from a 1,000-row sample of the official "
                              "yelp_polarity test split (38,000 rows), lower-cased and tokenised"),
    "amazon_polarity_sample": (200_000, "Amazon-2*: {n} test examples from a 1,600-review sample built "
                                        "from Amazon Review Full by the polarity rule (1–2 stars "
                                        "negative, 4–5 positive), not the official amazon_polarity rows"),
}


def _t7_describe(df: pd.DataFrame, sub: pd.DataFrame) -> list[str]:
    notes = []
    for task, (hub_test, text) in _TRANSFER_SOURCES.items():
        n_test = sub.loc[sub["task"] == task, "n_test"].dropna()
        if len(n_test) and int(n_test.max()) < hub_test:
            notes.append(text.format(n=f"{int(n_test.max()):,}") + "; not the paper's test set.")
    sources = sub["init_from"].dropna().unique()
    stage1 = df[df["job_id"].isin(sources)]
    for _, s in stage1.sort_values("loss").iterrows():
        full = FULL_TRAIN_ROWS.get(s["task"])
        size = ("the full training set" if pd.isna(s["n"]) else
                f"a random sample of {int(s['n']):,} of its {full:,} training examples (a CPU-sized demo, "
                "not the paper's full-data stage 1)")
        notes.append(f"Stage 1 ({paper.LOSS_LABELS.get(s['loss'], s['loss'])}): {paper.TASK_LABELS.get(s['task'], s['task'])}, "
                     f"{size}, {int(s['epochs'])} epochs, test accuracy {100 * s['test_score']:.1f}.")
    missing = len(sources) - len(stage1)
    if missing:
        notes.append(f"{missing} stage-1 model(s) have no result in this database.")
    return notes


def _fmt_noise(t) -> str:
    return "original" if t == 0 else f"T={t:g}"


LAYOUTS = {
    2: Layout(2, "Few-shot learning (Table 2): test accuracy, noise 0", paper.FEWSHOT, _t2,
              paper.FEWSHOT.ns, lambda g: f"N={g}", paper.FEWSHOT.tasks, paper.TASK_LABELS.get,
              lambda g, c, loss: paper.TABLE2.get((c, g, loss)),
              paper_p=lambda g, c: paper.TABLE2_P.get((c, g)), expected=paper.FEWSHOT.samples),
    3: Layout(3, "Noisy training data at N=100 (Table 3): test accuracy against back-translation "
                 "temperature T", paper.NOISE, _t3, paper.NOISE.tasks, paper.TASK_LABELS.get,
              paper.NOISE.noises, _fmt_noise, lambda g, c, loss: paper.TABLE3.get((g, c, loss)),
              derived={"average": paper.NOISE.noisy}, expected=paper.NOISE.samples, by_seed="average",
              noise_summary=True,
              notes=("'average' pools the runs of the four noisy temperatures (as the paper's "
                     "average column does). Its tests take seeds as units: each seed's CE+SCL − CE "
                     "gap averaged over the T it has for both losses, because a seed's noisy sets "
                     "are copies of one training sample and its (T, seed) pairs are not independent.",)),
    4: Layout(4, "Full-data GLUE (v1 Table 2): test accuracy, and each task's GLUE metric", paper.GLUE, _t4,
              ("accuracy", "task metric"), str, paper.GLUE.tasks, paper.TASK_LABELS.get,
              lambda g, c, loss: paper.TABLE4.get((c, loss)) if g == "accuracy" else None,
              derived={"average": paper.GLUE.tasks},
              notes=("The paper's numbers are validation-set scores that look like accuracy "
                     "(a CoLA MCC of 86 is implausible); ours are on the held-out test half.",
                     "task metric: MCC for CoLA, F1 for MRPC, accuracy for the others.")),
    5: Layout(5, "Batch size (v1 Table 3): CE+SCL test accuracy, full data", paper.BATCH, _t5,
              paper.BATCH.batch_sizes, lambda g: f"batch {g}", paper.BATCH.tasks, paper.TASK_LABELS.get,
              lambda g, c, loss: paper.TABLE5.get((c, g)) if loss == "ce+scl" else None,
              signature=tuple(c for c in SIGNATURE if c != "batch_size"),
              notes=(f"The paper's batch-size numbers come from {paper.BATCH.model}.",
                     "The SCL term is computed over the examples of one forward batch: there is no "
                     "gradient accumulation (it would not enlarge the contrastive batch), so a batch "
                     "that does not fit in memory fails its job with that reason instead of being "
                     "split."),
              describe=_t5_describe, cell_flags=_t5_flags),
    7: Layout(7, "Transfer from SST-2 to related tasks (v1 Table 7): 20 examples per class", paper.TRANSFER,
              _t7, ("",), lambda g: "", paper.TRANSFER.tasks, paper.TASK_LABELS.get,
              lambda g, c, loss: paper.TABLE7.get((c, loss)), baseline_row=True,
              notes=("Rows CE / CE+SCL: the loss of the SST-2 model the run started from "
                     "(spec.init_from); baseline: no SST-2 stage (init_from empty, per_class set).",),
              describe=_t7_describe),
    8: Layout(8, "Our extension of Table 3 (not in the paper): the noisy texts replace the originals, "
                 "N=100, T up to 2.0", HARSH, _t8, HARSH.tasks, paper.TASK_LABELS.get, HARSH.noises,
              _fmt_noise, lambda g, c, loss: None, derived={"average": grids.HARSH_NOISES},
              expected=HARSH.samples, by_seed="average",
              notes=("Not the paper's design: each training example is replaced by its back-translation "
                     "(the paper adds the copy beside the original), at temperatures up to 2.0 (the "
                     "paper's go to 0.9), so that CE has a degradation to resist; 'original' is the "
                     "clean N = 100 runs, shared with Table 3. 'average' pools the noisy temperatures, "
                     "seeds as units, as in Table 3. How much the noise changed the texts and their "
                     "tokens: under Table 3.",)),
}
TABLES = tuple(LAYOUTS)  # the tables `harness report --table` builds
