"""Noisy training sets: back-translated copies of a job's training texts, made once and reused.

A noisy set depends only on (texts, T, backend and its models, seed), and is keyed by a hash of
exactly those, so the CE and the CE+SCL job of one cell
share it: the first job to need it makes it (under a file lock, so two workers on one machine
never make it twice), writes it atomically to the cache, and the other reads it. Each set comes
with its statistics (share of changed examples, mean edit distance), which the worker stores in
the `noise_sets` table.

Translation always runs on the CPU, whatever device the job trains on: a GPU would sample from
a CUDA generator, so the set would depend on which worker made it while its key does not; the
models are tiny, and greedy output stays equal to the reference engine's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Sequence

TRANSLATION_BATCH = 32  # sentences per translator call: one progress tick each
DEFAULT_CACHE = Path("runs/.cache")


@dataclass(frozen=True)
class NoiseSet:
    key: str  # sha256 prefix of (backend and its models' identity, T, seed, texts)
    backend: str
    temperature: float
    seed: int
    examples: int
    changed_share: float  # examples with any text column changed
    mean_edit_distance: float  # character edits per text, averaged over all texts
    seconds: float  # time it took to make (0 when read from the cache)
    cached: bool
    path: str

    def record(self) -> dict:
        return asdict(self)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences: characters of strings, or token ids of lists
    (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@cache
def translator_identity(backend: str) -> str:
    """What the translation models of `backend` are, as far as files tell: for the bundled
    Firefox models, each model folder's name (it carries the release) with its files' names and
    sizes; other backends are named by their Hub ids in `backend` itself."""
    if backend != "firefox-pt":
        return backend
    from harness.noise.firefox import MODEL_DIRS, bundled_model_dir

    parts = []
    for direction in sorted(MODEL_DIRS):
        try:
            folder = bundled_model_dir(direction)
        except FileNotFoundError:
            return backend  # the translator will say what is missing when it is built
        parts += [folder.name] + [f"{f.name}:{f.stat().st_size}" for f in sorted(folder.iterdir())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@cache
def _translator(backend: str):
    """One back-translator per process and backend: loading the models costs seconds."""
    from harness.noise.backtranslate import make_backtranslator

    # One thread: when several workers share a machine, two spinning threads per process
    # collapsed translation from ~60 to 1–5 sentences/s; one thread held 15–40.
    return make_backtranslator(backend, "cpu", num_threads=1)


def noisy_texts(texts: list[tuple[str, ...]], *, temperature: float, backend: str, seed: int,
                cache_dir: Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[tuple[str, ...]], NoiseSet]:
    """Back-translate every column of every example at `temperature`; reproducible from `seed`.

    Args:
        texts: one tuple of text columns per example (1 for single sentences, 2 for pairs).
        progress: called as progress(done, total) in sentences.
    Returns:
        The noisy texts (same shape as `texts`) and the set's record.
    """
    key = hashlib.sha256(json.dumps([backend, translator_identity(backend), float(temperature),
                                     seed, texts]).encode()).hexdigest()[:20]
    folder = Path(cache_dir or DEFAULT_CACHE) / "noise"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second job of the same cell waits, then reads
        if path.exists():
            data = json.loads(path.read_text())
            noisy = [tuple(t) for t in data["texts"]]
            return noisy, NoiseSet(**{**data["record"], "cached": True, "seconds": 0.0})
        started = time.perf_counter()
        flat = [t for example in texts for t in example]
        out: list[str] = []
        translator = _translator(backend)
        for i in range(0, len(flat), TRANSLATION_BATCH):
            # Each batch gets its own seed so a set is the same whatever the batch boundaries of
            # a later change; consecutive seeds are fine: the generator hashes them.
            out += translator.noise(flat[i:i + TRANSLATION_BATCH], temperature=temperature,
                                    seed=seed * 1_000_003 + i)
            if progress:
                progress(min(i + TRANSLATION_BATCH, len(flat)), len(flat))
        width = len(texts[0]) if texts else 1
        noisy = [tuple(out[i:i + width]) for i in range(0, len(out), width)]
        record = NoiseSet(
            key=key, backend=backend, temperature=float(temperature), seed=seed, examples=len(texts),
            changed_share=sum(n != o for n, o in zip(noisy, texts)) / max(1, len(texts)),
            mean_edit_distance=sum(edit_distance(a, b) for a, b in zip(out, flat)) / max(1, len(flat)),
            seconds=time.perf_counter() - started, cached=False, path=str(path))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"texts": noisy, "record": record.record()}))
        os.replace(tmp, path)  # atomic: a reader sees the whole set or none
        return noisy, record
