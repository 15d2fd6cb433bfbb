"""Pretrained encoders: where a `--model` name is found, and one cached copy per worker process.

`--model` is a local folder or a Hub id. With HARNESS_MODEL_DIR set, a Hub id whose last path
component names a folder there loads from that folder
(`sentence-transformers/paraphrase-MiniLM-L3-v2` → `$HARNESS_MODEL_DIR/paraphrase-MiniLM-L3-v2`).

The pretrained weights and the tokenizer are loaded once per process and kept (CPU, float32).
Every job gets a fresh model: its head — and any weight the checkpoint lacks, e.g. a missing pooler
— is the job's own, reproducible draw, as if the whole model were first initialised under the
job's seed and the pretrained weights then copied in (`build_model_from_scratch`, which does just
that). `build_model` gets the same model from a per-process template on the device without
rebuilding it (harness.training.template).

The task head computes in float32 even inside an autocast region: regression outputs (STS-B) and
the logits the metrics see are not rounded to bfloat16.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.training import template
from harness.errors import HarnessError, ModelError
from harness.protocol.mirrors import mirror

MODEL_DIR_ENV = "HARNESS_MODEL_DIR"
HEAD_MODULES = ("classifier", "score")  # the task head of Hugging Face *ForSequenceClassification


@dataclass
class Pretrained:
    path: str  # what was loaded: a local folder or a Hub id
    config: object  # transformers PretrainedConfig
    tokenizer: object
    state_dict: dict[str, torch.Tensor]  # only the weights present in the checkpoint
    head_keys: tuple[str, ...]  # weights the checkpoint lacks: initialised per job
    tokenizer_id: str = ""  # hash of what the tokenizer does (tokenizer_identity): cache keys
    stamp: tuple = ()  # the folder's file names, sizes and mtimes when loaded (_stamp)


_CACHE: dict[tuple, Pretrained] = {}
_LOCK = threading.Lock()
_TEMPLATES = template.Templates()


def resolve_model(name: str) -> str:
    """A local folder for `name` if there is one, else `name` itself (a Hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    folder = mirror(MODEL_DIR_ENV)
    if folder and name.strip():
        candidate = Path(folder).expanduser() / name.rstrip("/").split("/")[-1]
        if candidate.is_dir():
            return str(candidate.resolve())
    return name


def load_pretrained(name: str) -> Pretrained:
    """The cached pretrained model `name` (loaded on first use)."""
    path = resolve_model(name)
    key = (path, _stamp(path))  # a folder whose files changed is loaded again
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = dataclasses.replace(_load(name, path), stamp=key[1])
        return _CACHE[key]


def _stamp(path: str) -> tuple:
    folder = Path(path)
    if not folder.is_dir():
        return ()
    return tuple(sorted((f.name, st.st_size, st.st_mtime_ns) for f in folder.iterdir()
                        if f.is_file() for st in [f.stat()]))


def _load(name: str, path: str) -> Pretrained:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per job in the worker's output
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=2, dtype=torch.float32, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    except (OSError, ValueError) as exc:
        where = f" or {mirror(MODEL_DIR_ENV)}/{name.split('/')[-1]}" if mirror(MODEL_DIR_ENV) else ""
        raise ModelError(f"model {name!r} not found: not a local folder{where}, and the Hub "
                           f"could not provide it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                           ) from exc
    missing = set(info.get("missing_keys", ()))
    _check_encoder_loaded(name, model, missing, info.get("unexpected_keys", ()))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in missing}
    return Pretrained(path, config, tokenizer, state, tuple(sorted(missing)),
                      tokenizer_identity(tokenizer))


def _check_encoder_loaded(name: str, model, missing: set[str], unexpected) -> None:
    """Refuse a checkpoint that does not hold the encoder its configuration describes (e.g. a
    GPT-2 config.json beside BERT weights): transformers would start those weights from random
    values, and the job would train and report a randomly initialised encoder. Only the head
    (and a pooler, which [CLS]-based training never needs) may be missing."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    lacking = sorted(k for k in missing if k.startswith(prefix) and ".pooler." not in k)
    if lacking:
        total = sum(1 for k in model.state_dict() if k.startswith(prefix))
        hint = f"; it holds other weights, e.g. {sorted(unexpected)[0]!r}" if unexpected else ""
        raise ModelError(f"model {name!r}: the checkpoint lacks {len(lacking)} of the {total} encoder "
                         f"weights its configuration ({type(model.config).__name__}) needs, e.g. "
                         f"{lacking[0]!r}{hint}: do config.json and the weights belong together?")


def tokenizer_identity(tokenizer) -> str:
    """A hash of everything that decides the tokenizer's output: its class, its full serialised
    form (vocabulary, normaliser, pre-tokeniser, post-processor) for fast tokenizers, else the
    vocabulary and its settings. Two tokenizers with one identity give the same ids."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps({k: v for k, v in tokenizer.init_kwargs.items()
                         if isinstance(v, (str, int, float, bool, type(None)))},
                        sort_keys=True, default=str).encode())
    h.update(json.dumps(list(tokenizer.model_input_names)).encode())
    return h.hexdigest()[:24]


# Model types whose position table starts after padding_idx + 1 (fairseq's RoBERTa layout).
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def check_model(name: str, max_lengths=()) -> None:
    """Enqueue-time check of a `--model`: that it resolves to a model folder (or the Hub has it),
    that its configuration loads, and that every max length fits its position table. Reads the
    configuration and lists files; never loads weights. Raises HarnessError (one line)."""
    if not name or not name.strip():
        raise HarnessError("--model is empty: give a Hub id or a model folder")
    path = resolve_model(name)
    local = Path(path).is_dir()
    if not local and name.startswith((".", "/", "~")):
        raise HarnessError(f"--model {name}: no such folder")
    if local:
        files = {p.name for p in Path(path).iterdir()}
        if "config.json" not in files:
            raise HarnessError(f"--model {name}: {path} is not a model folder (no config.json)")
        if not files & set(WEIGHT_FILES):
            raise HarnessError(f"--model {name}: {path} holds no weights ({' or '.join(WEIGHT_FILES[::2])})")
        if not files & set(TOKENIZER_FILES):
            raise HarnessError(f"--model {name}: {path} holds no tokenizer files")
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retry warnings: the one line below says it all
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not usable as given"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if local:
            raise HarnessError(f"--model {name}: cannot read {path}/config.json ({first})") from None
        where = (f", nor a folder in the model mirror {mirror(MODEL_DIR_ENV)}"
                 if mirror(MODEL_DIR_ENV) else f" (set ${MODEL_DIR_ENV} to a folder of models)")
        raise HarnessError(f"--model {name}: not a local folder{where}, and the Hub cannot provide it "
                           f"({type(exc).__name__}: {first}); --no-check skips this check") from None
    finally:
        hub_logging.set_verbosity(verbosity)
    positions = max_positions(config)
    for length in sorted(set(max_lengths)):
        if positions is not None and length > positions:
            raise HarnessError(f"--max-length {length} exceeds the {positions} positions of "
                               f"{name} ({config.model_type})")


def max_positions(config) -> int | None:
    """Tokens the model can take at once, from its configuration (None: not stated)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int):
        return None
    if getattr(config, "model_type", "") in POSITION_OFFSET_TYPES:
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return n


def _job_config(pre: Pretrained, num_labels: int):
    config = copy.deepcopy(pre.config)
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    return config


def build_model_from_scratch(name: str, num_labels: int, seed: int, device: str | torch.device = "cpu"):
    """The reference build: the whole model initialised under `seed` on the CPU, the pretrained
    weights copied in, then moved to `device`. `build_model` returns the same model, faster."""
    from transformers import AutoModelForSequenceClassification

    pre = load_pretrained(name)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_job_config(pre, num_labels), dtype=torch.float32)
    result = model.load_state_dict(pre.state_dict, strict=False)
    if result.unexpected_keys:
        raise ModelError(f"model {name!r}: unexpected weights {result.unexpected_keys[:3]}")
    return model.to(device)


def build_model(name: str, num_labels: int, seed: int, device: str | torch.device = "cpu"):
    """A fresh AutoModelForSequenceClassification: pretrained encoder, head drawn with `seed`,
    equal to build_model_from_scratch(name, num_labels, seed, device) — weights and the torch
    generator state it leaves — but copied from the process's template on `device`."""
    pre = load_pretrained(name)
    device = torch.device(device)
    key = (pre.path, pre.stamp, num_labels)  # a model folder whose files changed: a new template
    recipe, recorded = _TEMPLATES.recipe(
        key, lambda s: build_model_from_scratch(name, num_labels, s), pre.head_keys)
    if isinstance(recipe, str):  # the build cannot be replayed exactly: build it whole
        return float32_head(build_model_from_scratch(name, num_labels, seed, device))
    with _TEMPLATES.lock:
        weights = _TEMPLATES.weights.get((pre.path, pre.stamp, device))
        if weights is None:  # the pretrained weights on the device, and the buffers a build makes
            source = recorded or build_model_from_scratch(name, num_labels, template.RECORD_SEED)
            weights = {k: v.detach().to(device, copy=True)
                       for k, v in [*source.named_parameters(), *source.named_buffers()]
                       if k not in pre.head_keys}
            _TEMPLATES.weights[(pre.path, pre.stamp, device)] = weights
    head, rng_state = _TEMPLATES.draw(key, recipe, seed)
    torch.manual_seed(seed)  # the CUDA generators, as the full build seeds them
    torch.set_rng_state(rng_state)
    model = template.skeleton(_job_config(pre, num_labels), device)
    with torch.no_grad():
        for k, t in [*model.named_parameters(), *model.named_buffers()]:
            t.copy_(head[k] if k in head else weights[k])
    return float32_head(model)


def model_build(name: str, num_labels: int) -> str:
    """How build_model makes this model: from the template, or why in full (resolved config)."""
    pre = load_pretrained(name)
    recipe = _TEMPLATES.recipes.get((pre.path, pre.stamp, num_labels))
    return recipe if isinstance(recipe, str) else "per-process template, head replayed under the job's seed"


def float32_head(model):
    """Run the task head (`classifier` or `score`) with autocast off, on float32 input: bfloat16
    would round regression outputs to ~3 significant digits. The weights and their names are
    unchanged; only this model instance's head forward is wrapped."""
    head = next((getattr(model, a) for a in HEAD_MODULES if isinstance(getattr(model, a, None),
                                                                     torch.nn.Module)), None)
    if head is None:
        return model
    inner = head.forward

    def forward(hidden, *args, **kwargs):
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return inner(hidden.float() if hidden.is_floating_point() else hidden, *args, **kwargs)

    head.forward = forward
    return model


def get_tokenizer(name: str):
    return load_pretrained(name).tokenizer


def forward(model, batch: dict[str, torch.Tensor], with_cls: bool = True):
    """One forward pass → (logits [B, C], Φ(x) [B, D] or None).

    Φ(x) is the final layer's first-token ([CLS] / <s>) vector from the SAME forward that produced
    the logits; no pooler is assumed. It is taken from the encoder's output (its last hidden
    state) rather than by asking for every layer's hidden states, which would keep all L + 1 of
    them alive at once (3.4 GB at batch 256, length 128 for RoBERTa-large in evaluation)."""
    if not with_cls:
        return model(**batch).logits, None
    last = []
    handle = model.base_model.register_forward_hook(lambda _m, _args, out: last.append(out[0]))
    try:
        logits = model(**batch).logits
    finally:
        handle.remove()
    return logits, last[-1][:, 0]
