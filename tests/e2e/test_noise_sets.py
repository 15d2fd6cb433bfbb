"""Noisy training sets: made once per cell with the offline translator, cached, shared by the CE
and CE+SCL jobs, and recorded in the database."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from analysis.noise import noise_summary, render_noise_summary, render_token_summary, token_summary
from harness.store import db, queue
from harness.noise import sets, tokens
from harness.protocol.spec import JobSpec
from harness.worker import Worker, WorkerOptions

TEXTS = [("it 's a charming and often affecting journey . ",),
         ("unflinchingly bleak and desperate ",),
         ("allows us to hope that nolan is poised to embark a major career as a commercial yet "
          "inventive filmmaker . ",),
         ("the acting , costumes , music , cinematography and sound are all astounding given the "
          "production 's austere locales . ",)]


def test_a_set_is_made_once_and_reproducible(tmp_path):
    made = []
    noisy, rec = sets.noisy_texts(TEXTS, temperature=0.9, backend="firefox-pt", seed=3,
                                  cache_dir=tmp_path, progress=lambda d, t: made.append((d, t)))
    assert len(noisy) == len(TEXTS) and all(len(t) == 1 for t in noisy)
    assert made and made[-1] == (4, 4)
    assert not rec.cached and 0 <= rec.changed_share <= 1 and rec.mean_edit_distance > 0
    again, rec2 = sets.noisy_texts(TEXTS, temperature=0.9, backend="firefox-pt", seed=3, cache_dir=tmp_path)
    assert again == noisy and rec2.cached and rec2.key == rec.key
    # made afresh in another cache: the same texts from the same seed
    fresh, _ = sets.noisy_texts(TEXTS, temperature=0.9, backend="firefox-pt", seed=3,
                                cache_dir=tmp_path / "other")
    assert fresh == noisy


def test_two_jobs_of_one_cell_make_the_set_once(tmp_path):
    records = []
    threads = [threading.Thread(target=lambda: records.append(sets.noisy_texts(
        TEXTS[:2], temperature=0.5, backend="firefox-pt", seed=1, cache_dir=tmp_path)[1]))
        for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(r.cached for r in records) == [False, True]


def test_noise_job_end_to_end_records_its_set(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = db.open_db(url, create=True)
    common = dict(task="sst2", n=8, noise=0.7, seed=0, model="sentence-transformers/paraphrase-MiniLM-L3-v2",
                  epochs=1, max_length=32, lr=1e-4, lam=0.9, tau=0.3)
    specs = [JobSpec.make(loss="ce", **common), JobSpec.make(loss="ce+scl", **common)]
    queue.enqueue(engine, "noise", specs)
    w = Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True))
    assert w.run() == 2
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select task, n, temperature, examples, changed_share from noise_sets")).all()
        n_train = conn.execute(sa.text("select n_train from results")).scalars().all()
        used = conn.execute(sa.text("select examples from train_examples")).scalars().all()
    assert len(rows) == 1 and rows[0][:4] == ("sst2", 8, 0.7, 8)  # one set for both losses
    assert n_train == [16, 16]  # augment: the 8 originals plus their 8 noisy copies
    assert used[0] == used[1]
    assert Path(tmp_path / "runs" / ".cache" / "noise").is_dir()
    summary = noise_summary(engine)
    assert summary[["task", "temperature", "sets", "examples"]].values.tolist() == [["sst2", 0.7, 1, 8]]
    backend, share, edits = summary.loc[0, ["backend", "changed_share", "mean_edit_distance"]]
    assert share == rows[0][4]
    lines = render_noise_summary(summary).splitlines()  # title, header, rule, one row per (task, T)
    assert lines[1].split()[:5] == ["task", "T", "backend", "sets", "examples"] and len(lines) == 4
    assert lines[3].split() == ["sst2", "0.7", backend, "1", "8", f"{100 * share:.1f}%", f"{edits:.1f}"]
    assert f"| sst2 | 0.7 | {backend} | 1 | 8 | {100 * share:.1f}% |" in render_noise_summary(summary, "markdown")
    _check_token_measures(engine, specs[0], tmp_path / "runs" / ".cache")


def _levenshtein(a: list, b: list) -> int:
    """Edit distance by the textbook recursion (independent of harness.noise.sets.edit_distance)."""
    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def _check_token_measures(engine, spec: JobSpec, cache: Path) -> None:
    """Each noisy job stores how much the noise changed its token ids: the same for CE and CE+SCL
    (one set), equal to the ids the model's tokenizer gives the originals and the noisy copies."""
    from harness.training.inputs import prepare_data
    from harness.training.models import load_pretrained

    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select m.job_id, m.name, m.value from metrics m join results r on r.attempt_id = m.attempt_id "
            "where m.name in (:u, :e)"), {"u": tokens.NOISE_UNCHANGED, "e": tokens.NOISE_EDIT_RATE}).all()
    per_job = {}
    for job, name, value in rows:
        per_job.setdefault(job, {})[name] = value
    assert len(per_job) == 2 and len({tuple(sorted(v.items())) for v in per_job.values()}) == 1
    stored = next(iter(per_job.values()))

    train = prepare_data(spec).train
    noisy, _ = sets.noisy_texts([tuple(t) for t in train.texts], temperature=spec.noise,
                                backend="firefox-pt", seed=spec.seed, cache_dir=cache)
    tok = load_pretrained(spec.model).tokenizer
    ids = lambda texts: tok([t[0] for t in texts], truncation=True, max_length=spec.max_length)["input_ids"]  # noqa: E731
    clean, copies = ids(train.texts), ids(noisy)
    same = [a == b for a, b in zip(clean, copies)]
    rates = [_levenshtein(tuple(a), tuple(b)) / len(a) for a, b in zip(clean, copies)]
    assert stored[tokens.NOISE_UNCHANGED] == pytest.approx(sum(same) / len(same))
    assert stored[tokens.NOISE_EDIT_RATE] == pytest.approx(sum(rates) / len(rates))
    assert 0 < stored[tokens.NOISE_EDIT_RATE]  # T = 0.7 changes some tokens of 8 sentences

    summary = token_summary(engine)
    assert summary[["task", "temperature", "noise_mode", "runs"]].values.tolist() == [["sst2", 0.7, "augment", 2]]
    assert summary.loc[0, "unchanged_tokens_share"] == pytest.approx(stored[tokens.NOISE_UNCHANGED])
    table = render_token_summary(summary)
    assert (f"| {spec.model} | augment | sst2 | 0.7 | 2 | {100 * stored[tokens.NOISE_UNCHANGED]:.1f}% | "
            f"{stored[tokens.NOISE_EDIT_RATE]:.3f} |") in table


def test_a_gpu_job_translates_on_the_cpu(tmp_path, monkeypatch):
    """A noisy set's key ignores the device, so the set must not depend on it: translation runs on
    the CPU whatever device the job trains on (a GPU would sample from a CUDA generator)."""
    import numpy as np

    from harness.protocol.data import Examples
    from harness.training.finetune import _noisy_train
    from harness.noise import backtranslate
    from harness.training.runner import RunContext

    devices = []

    class Echo:
        def noise(self, texts, temperature, seed):
            return [t.upper() for t in texts]

    def fake_backtranslator(backend, device="cpu", **kwargs):
        devices.append(device)
        return Echo()

    monkeypatch.setattr(backtranslate, "make_backtranslator", fake_backtranslator)
    sets._translator.cache_clear()
    try:
        train = Examples("train", np.arange(2), np.arange(2), np.array([0, 1]), (("a b",), ("c d",)))
        spec = JobSpec.make(task="sst2", n=2, noise=0.5, seed=1, loss="ce", model="m")
        noisy, record = _noisy_train(spec, train, RunContext(run_dir=tmp_path, device="cuda:0",
                                                             cache_dir=tmp_path / "cache"))
    finally:
        sets._translator.cache_clear()
    assert devices == ["cpu"] and noisy.texts[-1] == ("C D",)
