"""The paper's facts as data: the design of each of its experiments, and its published numbers.

Gunel et al., "Supervised Contrastive Learning for Pre-trained Language Model Fine-tuning", ICLR
2021 (docs/PAPER.md): RoBERTa-large unless said otherwise. `harness.protocol.grids` expands these designs
into jobs and `analysis` lays its tables out by them, the paper's numbers beside ours. What the
paper leaves open (learning rate, epochs, max length) is a grid's choice, not a fact kept here.

Scores are percentages. A value is `(mean, std)`; std is None where the paper prints a single
number. Keys use the harness's task names (harness.protocol.tasks) and raw spec values (n, noise T, batch
size, loss).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

PAPER_MODEL = "roberta-large"
PAPER_LAM, PAPER_TAU = 0.9, 0.3  # the paper's best λ and τ: the defaults of a CE+SCL job
SCL_REDUCTIONS = ("mean", "sum")  # over anchors: SupContrast's mean, or the paper's printed sum
PAPER_SEEDS = 10  # training-set samples per few-shot / noise cell; the paper reports the top 3
PAPER_BATCH_SIZE = 16  # the usual reading of the few-shot runs' batch size

TASK_LABELS = {
    "sst2": "SST-2", "qnli": "QNLI", "mnli": "MNLI", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE",
    "amazon_polarity_sample": "Amazon-2*", "yelp_polarity": "Yelp-2", "mr": "MR", "cr": "CR",
    "mpqa": "MPQA", "subj": "SUBJ",
}
LOSS_LABELS = {"ce": "CE", "ce+scl": "CE+SCL"}


@dataclass(frozen=True)
class Design:
    """One experiment as the paper ran it: the axes its cells cross."""

    tasks: tuple[str, ...]
    ns: tuple[int | None, ...]  # labelled training examples; None = the full training set
    noises: tuple[float, ...] = (0.0,)  # back-translation temperatures T; 0 = clean data
    batch_sizes: tuple[int, ...] = (PAPER_BATCH_SIZE,)
    samples: int | None = None  # training-set samples per cell, where the paper says
    model: str = PAPER_MODEL

    @property
    def noisy(self) -> tuple[float, ...]:
        """The temperatures that change the data (Table 3's 'average' column pools them)."""
        return tuple(t for t in self.noises if t > 0)

    def cells(self) -> list[dict]:
        """The spec fields of each cell, N and batch size outermost, T innermost."""
        return [dict(task=task, n=n, noise=noise, batch_size=bs) for n, bs, task, noise
                in itertools.product(self.ns, self.batch_sizes, self.tasks, self.noises)]


# Table 2: few-shot, N examples sampled from the training set, 10 samples per cell.
FEWSHOT = Design(("sst2", "qnli", "mnli"), (20, 100, 1000), samples=PAPER_SEEDS)
# Table 3: back-translated training data; its "Original" column is Table 2's N = 100 rows.
NOISE = Design(FEWSHOT.tasks, (100,), noises=(0.0, 0.3, 0.5, 0.7, 0.9), samples=PAPER_SEEDS)
# v1 Table 2: full-data GLUE, validation sets.
GLUE = Design(("sst2", "cola", "mrpc", "rte", "qnli", "mnli"), (None,))
# v1 Table 3: batch size, CE+SCL only, full data, RoBERTa-base.
BATCH = Design(("sst2", "cola", "qnli"), (None,), batch_sizes=(16, 64, 256), model="roberta-base")
# v1 Table 7: a model fine-tuned on the full SST-2 training set, fine-tuned again on a related
# task with 20 labelled examples per class (N = 40). The paper prints Amazon-2 and Yelp-2.
TRANSFER_SOURCE = "sst2"
TRANSFER_PER_CLASS = 20
TRANSFER = Design(("amazon_polarity_sample", "yelp_polarity", "mr", "cr", "mpqa", "subj"),
                  (2 * TRANSFER_PER_CLASS,))

# ---- Table 2: few-shot, (task, N, loss) -> (mean, std); p per (task, N), test not stated -----
TABLE2 = {
    ("sst2", 20, "ce"): (85.9, 2.1), ("qnli", 20, "ce"): (65.0, 2.0), ("mnli", 20, "ce"): (39.3, 2.5),
    ("sst2", 20, "ce+scl"): (88.1, 3.3), ("qnli", 20, "ce+scl"): (75.7, 4.8), ("mnli", 20, "ce+scl"): (42.7, 4.6),
    ("sst2", 100, "ce"): (91.1, 1.3), ("qnli", 100, "ce"): (81.9, 0.4), ("mnli", 100, "ce"): (59.2, 2.1),
    ("sst2", 100, "ce+scl"): (92.8, 1.3), ("qnli", 100, "ce+scl"): (82.5, 0.4), ("mnli", 100, "ce+scl"): (61.1, 3.0),
    ("sst2", 1000, "ce"): (94.0, 0.6), ("qnli", 1000, "ce"): (89.2, 0.6), ("mnli", 1000, "ce"): (81.4, 0.2),
    ("sst2", 1000, "ce+scl"): (94.1, 0.5), ("qnli", 1000, "ce+scl"): (89.8, 0.4), ("mnli", 1000, "ce+scl"): (81.5, 0.2),
}
TABLE2_P = {
    ("sst2", 20): 5e-10, ("qnli", 20): 1e-46, ("mnli", 20): 1e-8,
    ("sst2", 100): 3e-17, ("qnli", 100): 1e-20, ("mnli", 100): 2e-4,
    ("sst2", 1000): 0.6, ("qnli", 1000): 1e-12, ("mnli", 1000): 0.5,
}

# ---- Table 3: noise at N = 100, (task, T, loss) -> (mean, std); T = 0 is "original" ----------
_T3 = {  # task: [(CE, CE+SCL) for T = 0, 0.3, 0.5, 0.7, 0.9, average over the four noisy T]
    "sst2": [((91.1, 1.3), (92.8, 1.3)), ((92.0, 1.3), (92.6, 0.9)), ((91.4, 1.0), (91.5, 1.0)),
             ((91.7, 1.3), (91.2, 0.6)), ((90.0, 0.5), (91.5, 1.0)), ((91.3, 1.2), (91.7, 1.0))],
    "qnli": [((81.9, 0.4), (82.5, 0.4)), ((81.1, 2.3), (82.7, 1.9)), ((80.0, 2.9), (81.9, 2.5)),
             ((78.9, 3.7), (81.3, 0.6)), ((75.9, 4.0), (80.1, 2.5)), ((79.0, 3.5), (81.5, 2.0))],
    "mnli": [((59.2, 2.1), (61.1, 3.0)), ((54.0, 1.1), (61.2, 2.3)), ((55.3, 2.4), (62.1, 0.9)),
             ((54.6, 2.2), (62.3, 1.1)), ((47.0, 1.8), (53.0, 2.1)), ((52.7, 3.9), (59.7, 4.3))],
}
TABLE3 = {(task, t, loss): cells[i][j]
          for task, cells in _T3.items()
          for i, t in enumerate(NOISE.noises + ("average",))
          for j, loss in enumerate(("ce", "ce+scl"))}

# ---- Table 4: full-data GLUE, validation sets, (task, loss) -> value (accuracy, it seems) -----
_T4 = {"ce": (94.7, 86.4, 87.3, 85.0, 94.5, 90.0, 89.7), "ce+scl": (95.9, 87.3, 87.8, 85.6, 95.4, 89.9, 90.3)}
TABLE4 = {(task, loss): (vals[i], None)
          for loss, vals in _T4.items() for i, task in enumerate(GLUE.tasks + ("average",))}

# ---- Table 5: batch size, CE+SCL, RoBERTa-base, full data, (task, batch size) -> value -------
TABLE5 = {("sst2", 16): (93.9, None), ("cola", 16): (83.4, None), ("qnli", 16): (92.1, None),
          ("sst2", 64): (94.2, None), ("cola", 64): (84.8, None), ("qnli", 64): (92.7, None),
          ("sst2", 256): (94.3, None), ("cola", 256): (84.9, None), ("qnli", 256): (92.9, None)}

# ---- Table 7: transfer from full SST-2 to related tasks, 20 examples per class ---------------
TABLE7 = {("amazon_polarity_sample", "ce"): (87.4, 6.4), ("yelp_polarity", "ce"): (90.8, 2.2),
          ("amazon_polarity_sample", "ce+scl"): (90.3, 0.6), ("yelp_polarity", "ce+scl"): (91.2, 0.4)}

# ---- the paper's claims, checked one by one in the report -------------------------------------
CLAIMS = {
    "fewshot": "CE+SCL beats CE in the few-shot setting (N = 20 and 100) on SST-2, QNLI and MNLI (Table 2).",
    "fewshot_shrinks": "The gain of CE+SCL shrinks as N grows; at N = 1000 it is small (Table 2).",
    "noise": "CE+SCL is more robust than CE to noisy (back-translated) training data, "
             "most of all at high temperature T (Table 3).",
    "glue": "On full-data GLUE CE+SCL improves slightly over CE (v1 Table 2).",
    "batch": "CE+SCL gains from larger batch sizes (v1 Table 3, RoBERTa-base).",
    "transfer": "A model fine-tuned on SST-2 with CE+SCL transfers to related tasks with higher accuracy "
                "and much lower variance across samples (v1 Table 7).",
    "tsne": "CE+SCL's [CLS] embeddings form well-separated class clusters (Figure 2).",
}
