"""The registry of tasks: where each data set lives and how to read it, as plain frozen data.

A task is declarative (in the manner of lm-evaluation-harness task files): its Hub id and config,
its folder in the local mirror, the split names, the text columns, the label count and its metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError


# Official row counts on the Hub, so that enqueue-time checks need no download. Only splits whose
# size is certain are listed; others are checked when the job loads its data.
HUB_ROWS: dict[tuple[str, str], int] = {
    ("sst2", "train"): 67_349, ("sst2", "validation"): 872,
    ("qnli", "train"): 104_743, ("qnli", "validation"): 5_463,
    ("mnli", "train"): 392_702, ("mnli", "validation_matched"): 9_815,
    ("mrpc", "train"): 3_668, ("mrpc", "validation"): 408,
    ("rte", "train"): 2_490, ("rte", "validation"): 277,
    ("cola", "train"): 8_551, ("cola", "validation"): 1_043,
    ("stsb", "train"): 5_749, ("stsb", "validation"): 1_500,
    ("mr", "train"): 8_530, ("trec", "train"): 5_452, ("trec", "test"): 500,
    ("yelp_polarity", "test"): 38_000, ("amazon_polarity_sample", "test"): 400_000,
}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    hub_path: str  # dataset id on the Hugging Face Hub
    hub_config: str | None  # configuration name on the Hub (GLUE tasks), else None
    text_columns: tuple[str, ...]  # one column: single sentence; two: a sentence pair
    num_labels: int  # 1 = regression (STS-B)
    metric: str  # the task's usual metric: accuracy | f1 | mcc | pearson
    train_split: str | None = "train"
    eval_split: str = "validation"  # GLUE: the validation set is split into test/validation halves
    # Sets with no official split (MR, CR, MPQA, SUBJ) and the test-only samples (Amazon, Yelp)
    # are split by the protocol itself; see harness.protocol.data.
    note: str = ""

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("sst2", "nyu-mll/glue", "sst2", ("sentence",), 2, "accuracy"),
        TaskSpec("qnli", "nyu-mll/glue", "qnli", ("question", "sentence"), 2, "accuracy",
                 note="local mirror: 9,999-row training subset"),
        TaskSpec("mnli", "nyu-mll/glue", "mnli", ("premise", "hypothesis"), 3, "accuracy",
                 eval_split="validation_matched", note="local mirror: 9,999-row training subset"),
        TaskSpec("mrpc", "nyu-mll/glue", "mrpc", ("sentence1", "sentence2"), 2, "f1"),
        TaskSpec("rte", "nyu-mll/glue", "rte", ("sentence1", "sentence2"), 2, "accuracy"),
        TaskSpec("cola", "nyu-mll/glue", "cola", ("sentence",), 2, "mcc"),
        TaskSpec("stsb", "nyu-mll/glue", "stsb", ("sentence1", "sentence2"), 1, "pearson"),
        TaskSpec("mr", "cornell-movie-review-data/rotten_tomatoes", None, ("text",), 2, "accuracy",
                 eval_split="train", note="whole set in one split; the protocol splits it"),
        TaskSpec("cr", "SetFit/CR", None, ("text",), 2, "accuracy", eval_split="train",
                 note="whole set in one split; the protocol splits it"),
        TaskSpec("mpqa", "SetFit/mpqa", None, ("text",), 2, "accuracy", eval_split="train",
                 note="whole set in one split; the protocol splits it"),
        TaskSpec("subj", "SetFit/subj", None, ("text",), 2, "accuracy", eval_split="train",
                 note="whole set in one split; the protocol splits it"),
        TaskSpec("trec", "CogComp/trec", None, ("text",), 6, "accuracy", eval_split="test"),
        TaskSpec("yelp_polarity", "fancyzhx/yelp_polarity", None, ("text",), 2, "accuracy",
                 train_split=None, eval_split="test",
                 note="local mirror: a 1,000-row sample of the official test split"),
        TaskSpec("amazon_polarity_sample", "fancyzhx/amazon_polarity", None, ("text",), 2,
                 "accuracy", train_split=None, eval_split="test",
                 note="local mirror: built from Amazon Review Full by the polarity rule, "
                      "not the official amazon_polarity rows"),
    ]
}

# Names people type for the same task.
ALIASES = {"sst-2": "sst2", "sst": "sst2", "sts-b": "stsb", "amazon": "amazon_polarity_sample",
           "amazon-2": "amazon_polarity_sample", "amazon_polarity": "amazon_polarity_sample",
           "yelp": "yelp_polarity", "yelp-2": "yelp_polarity"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise HarnessError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]
