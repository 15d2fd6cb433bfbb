"""Pretrained encoders: where a `--model` name is found, and one cached copy per worker process.

`--model` is a local folder or a Hub id. With HARNESS_MODEL_DIR set, a Hub id whose last path
component names a folder there loads from that folder
(`sentence-transformers/paraphrase-MiniLM-L3-v2` → `$HARNESS_MODEL_DIR/paraphrase-MiniLM-L3-v2`).

The pretrained weights and the tokenizer are loaded once per process and kept (CPU, float32).
Every job builds a fresh model from them: the whole model is first initialised under the job's seed
(so the classification head — and any weight the checkpoint lacks, e.g. a missing pooler — is the
job's own, reproducible draw), then the cached pretrained weights are copied in.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import HarnessError

MODEL_DIR_ENV = "HARNESS_MODEL_DIR"


@dataclass
class Pretrained:
    path: str  # what was loaded: a local folder or a Hub id
    config: object  # transformers PretrainedConfig
    tokenizer: object
    state_dict: dict[str, torch.Tensor]  # only the weights present in the checkpoint
    head_keys: tuple[str, ...]  # weights the checkpoint lacks: initialised per job


_CACHE: dict[str, Pretrained] = {}
_LOCK = threading.Lock()


def resolve_model(name: str) -> str:
    """A local folder for `name` if there is one, else `name` itself (a Hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    mirror = os.environ.get(MODEL_DIR_ENV)
    if mirror:
        candidate = Path(mirror).expanduser() / name.rstrip("/").split("/")[-1]
        if candidate.is_dir():
            return str(candidate.resolve())
    return name


def load_pretrained(name: str) -> Pretrained:
    """The cached pretrained model `name` (loaded on first use)."""
    path = resolve_model(name)
    with _LOCK:
        if path not in _CACHE:
            _CACHE[path] = _load(name, path)
        return _CACHE[path]


def _load(name: str, path: str) -> Pretrained:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=2, dtype=torch.float32, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as exc:
        where = f" or ${MODEL_DIR_ENV}/{name.split('/')[-1]}" if os.environ.get(MODEL_DIR_ENV) else ""
        raise HarnessError(f"model {name!r} not found: not a local folder{where}, and the Hub "
                           f"could not provide it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                           ) from exc
    missing = set(info.get("missing_keys", ()))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in missing}
    return Pretrained(path, config, tokenizer, state, tuple(sorted(missing)))


def build_model(name: str, num_labels: int, seed: int, device: str | torch.device = "cpu"):
    """A fresh AutoModelForSequenceClassification: pretrained encoder, head drawn with `seed`."""
    from transformers import AutoModelForSequenceClassification

    pre = load_pretrained(name)
    config = copy.deepcopy(pre.config)
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(pre.state_dict, strict=False)
    if result.unexpected_keys:
        raise HarnessError(f"model {name!r}: unexpected weights {result.unexpected_keys[:3]}")
    return model.to(device)


def get_tokenizer(name: str):
    return load_pretrained(name).tokenizer


def cls_vector(outputs) -> torch.Tensor:
    """Φ(x): the final layer's first-token ([CLS] / <s>) vector, [B, D], from the SAME forward
    that produced the logits (needs output_hidden_states=True). No pooler is assumed."""
    return outputs.hidden_states[-1][:, 0]
