"""Back-translation noise: English -> pivot language -> English, with sampling.

Higher temperature gives paraphrases that drift further from the source; 0 is
greedy round-trip translation.
"""
from __future__ import annotations

from .translate import FirefoxTranslator, MarianTranslator, Translator

_SEED_MIX = 0x9E3779B97F4A7C15  # odd constant: the two legs get unrelated seeds


class BackTranslator:
    """Round-trip ``forward`` (English -> pivot) then ``backward`` (pivot -> English)."""

    def __init__(self, forward: Translator, backward: Translator):
        self.forward = forward
        self.backward = backward

    def noise(self, texts: list[str], temperature: float = 0.7, seed: int = 0) -> list[str]:
        """Paraphrase each text; the same (texts, temperature, seed) gives the same output.

        Both legs sample at ``temperature``; the backward leg uses a seed
        derived from ``seed`` so its random stream differs from the forward one.
        """
        pivot = self.forward.translate(texts, temperature=temperature, seed=seed)
        back_seed = (seed * _SEED_MIX + 1) % (1 << 63)
        return self.backward.translate(pivot, temperature=temperature, seed=back_seed)


def make_backtranslator(backend: str = "firefox-pt", device: str = "cpu", *,
                        num_threads: int | None = None) -> BackTranslator:
    """Build a back-translator from a backend name.

    ``"firefox-pt"`` (default): offline Firefox Translations en<->pt models.
    ``"marian:<pivot>"``, e.g. ``"marian:de"``: Helsinki-NLP/opus-mt-en-<pivot>
    and opus-mt-<pivot>-en through transformers (needs the Hub or its cache).
    ``num_threads`` caps torch's threads while the Firefox models run.
    """
    if backend == "firefox-pt":
        return BackTranslator(FirefoxTranslator("en-pt", device, num_threads=num_threads),
                              FirefoxTranslator("pt-en", device, num_threads=num_threads))
    if backend.startswith("marian:") and backend[len("marian:"):]:
        pivot = backend[len("marian:"):]
        return BackTranslator(MarianTranslator(f"Helsinki-NLP/opus-mt-en-{pivot}", device),
                              MarianTranslator(f"Helsinki-NLP/opus-mt-{pivot}-en", device))
    raise ValueError(f"unknown back-translation backend {backend!r}; use 'firefox-pt' or 'marian:<pivot>'")
