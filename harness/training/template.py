"""A job's model from a per-process template, with the head drawn exactly as a full build draws it.

The full build (`models.build_model_from_scratch`) seeds torch, builds the whole model from its
config on the CPU — drawing every weight, 355M normals for RoBERTa-large — copies the pretrained
weights over it and moves it to the device: about 8 s and a 1.4 GB copy from unpinned host memory
per job for RoBERTa-large. Here the pretrained weights stay on the device, once per process, and a
job's model is an empty skeleton (built on the meta device) filled from them.

The head (the weights the checkpoint lacks) must stay the draw it always was, and that draw
depends on every random number the full build consumed before it. So the full build is recorded
once per (model, label count): which random ops ran, on what shapes, and every write to a head
weight. A job replays the record under its seed on a scratch buffer, applying only the head's ops
for real: same random stream, same head, and the torch generator ends where the full build leaves
it (dropout is unchanged). Each record is checked once against a real full build with another
seed; a build that cannot be replayed exactly (an op this module does not understand, a change of
Python's or NumPy's random state) falls back to the full build. Replays are cached by seed: a grid
has many jobs per seed.
"""

from __future__ import annotations

import copy
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

RECORD_SEED = 0
VERIFY_SEED = 1  # a different seed: checks that the replay follows the seed, not just one draw
DRAW_CACHE_SIZE = 64  # seeds whose head draw is kept (a head is small: ~4 MB for RoBERTa-large)


class Unsupported(Exception):
    """The full build does something the replay cannot reproduce exactly."""


@dataclass
class Recipe:
    """The random ops of one full build, in order, and how to replay each."""
    head_start: dict[str, torch.Tensor]  # head weights as the recorded build left them (CPU)
    steps: list = field(default_factory=list)
    scratch: dict = field(default_factory=dict)  # dtype → CPU buffer the non-head draws go to

    def draw(self, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The head a full build with `seed` draws, and the CPU generator state it leaves."""
        torch.manual_seed(seed)
        head = {k: v.clone() for k, v in self.head_start.items()}
        for kind, func, target, args, kwargs in self.steps:
            if kind == "head":
                name, size, stride, offset = target
                func(head[name].as_strided(size, stride, offset), *args, **kwargs)
            elif kind == "scratch":
                size, dtype, numel = target
                buf = self.scratch.get(dtype)
                if buf is None or buf.numel() < numel:
                    buf = self.scratch[dtype] = torch.empty(numel, dtype=dtype)
                func(buf[:numel].view(size), *args, **kwargs)
            else:  # a random op that makes a new tensor: only its draws matter
                func(*args, **kwargs)
        return head, torch.get_rng_state()


class _Recorder(TorchDispatchMode):
    """Every op that draws random numbers or writes to a tensor, with its arguments."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema = func._schema.arguments
        writes = bool(schema) and schema[0].alias_info is not None and schema[0].alias_info.is_write
        if writes or torch.Tag.nondeterministic_seeded in func.tags:
            self.ops.append((func, args, kwargs, writes))
        return func(*args, **kwargs)


def _has_tensor(values) -> bool:
    return any(isinstance(v, (torch.Tensor, torch.Generator)) for v in values)


def record(build, head_keys: tuple[str, ...]) -> tuple[Recipe, torch.nn.Module]:
    """Run `build(seed)` (a full build) with RECORD_SEED under the recorder → (recipe, model)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch.manual_seed(RECORD_SEED)
    with _Recorder() as rec:
        model = build(RECORD_SEED)
    if random.getstate() != py_state or not _same_np_state(np_state, np.random.get_state()):
        raise Unsupported("the build draws from Python's or NumPy's random state")
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    head = {k: tensors[k] for k in head_keys if k in tensors}
    storages = {t.untyped_storage().data_ptr(): (k, t) for k, t in head.items() if t.numel()}
    recipe = Recipe(head_start={k: t.detach().clone() for k, t in head.items()})
    for func, args, kwargs, writes in rec.ops:
        target = args[0] if writes and isinstance(args[0], torch.Tensor) else None
        rest = args[1:] if target is not None else args
        random_op = torch.Tag.nondeterministic_seeded in func.tags
        owner = storages.get(target.untyped_storage().data_ptr()) if target is not None and target.numel() else None
        if owner is not None:
            name, param = owner
            if _has_tensor(rest) or _has_tensor(kwargs.values()):
                raise Unsupported(f"{func} writes head weight {name} from another tensor")
            view = (tuple(target.shape), target.stride(), target.storage_offset() - param.storage_offset())
            recipe.steps.append(("head", func, (name, *view), rest, kwargs))
        elif not random_op:
            continue  # writes to the encoder: overwritten by the pretrained weights
        elif _has_tensor(rest) or _has_tensor(kwargs.values()):
            raise Unsupported(f"{func} draws with a tensor or generator argument")
        elif target is None:
            recipe.steps.append(("call", func, None, args, kwargs))
        elif not target.is_contiguous():
            raise Unsupported(f"{func} draws into a non-contiguous tensor")
        else:
            recipe.steps.append(("scratch", func, (tuple(target.shape), target.dtype, target.numel()),
                                 rest, kwargs))
    return recipe, model


def _same_np_state(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


def verify(recipe: Recipe, build) -> None:
    """Replay under VERIFY_SEED against a real full build with it: head and generator must match."""
    torch.manual_seed(VERIFY_SEED)
    model = build(VERIFY_SEED)
    expected_state = torch.get_rng_state()
    head, state = recipe.draw(VERIFY_SEED)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if not torch.equal(state, expected_state):
        raise Unsupported("the replay leaves the generator elsewhere than the full build")
    for k, v in head.items():
        if not torch.equal(v, tensors[k].detach()):
            raise Unsupported(f"the replay draws {k} differently from the full build")


class Templates:
    """Per process: pretrained weights on each device, one recipe per (model, label count), and
    the last DRAW_CACHE_SIZE head draws."""

    def __init__(self):
        self.weights: dict[tuple, dict[str, torch.Tensor]] = {}
        self.recipes: dict[tuple, Recipe | str] = {}  # a str: why the full build is used instead
        self.draws: OrderedDict = OrderedDict()
        self.scratch: dict = {}
        self.lock = threading.RLock()

    def recipe(self, key, build, head_keys) -> tuple[Recipe | str, torch.nn.Module | None]:
        """The recipe of `key` (or why there is none) and, when just recorded, the recorded model."""
        with self.lock:
            if key in self.recipes:
                return self.recipes[key], None
            model = None
            try:
                recipe, model = record(build, head_keys)
                recipe.scratch = self.scratch  # one buffer for all recipes (206 MB for RoBERTa-large)
                verify(recipe, build)
            except Unsupported as exc:
                recipe = f"full build per job: {exc}"
            self.recipes[key] = recipe
            return recipe, model

    def draw(self, key, recipe: Recipe, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with self.lock:
            hit = self.draws.get((key, seed))
            if hit is None:
                hit = self.draws[(key, seed)] = recipe.draw(seed)
                while len(self.draws) > DRAW_CACHE_SIZE:
                    self.draws.popitem(last=False)
            self.draws.move_to_end((key, seed))
            return hit


def skeleton(config, device) -> torch.nn.Module:
    """The model of `config` with uninitialised weights on `device` (nothing drawn, nothing copied)."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(copy.deepcopy(config), dtype=torch.float32)
    return model.to_empty(device=device)
