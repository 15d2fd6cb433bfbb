"""analysis.plots: files are produced, non-empty, in PNG and PDF."""

import pandas as pd
import pytest

from analysis import load_results, plot_noise, plot_tsne, plot_variance, write_report
from analysis.synthetic import grid, make_db, synthetic_results


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    df = pd.concat([synthetic_results(grid(2), seeds=range(5), effect=0.04, rng=1),
                    synthetic_results([g for g in grid(3) if g["noise"]], seeds=range(5), effect=0.04, rng=2)],
                   ignore_index=True)
    emb = df[(df.task == "sst2") & (df.n == 20) & (df.seed == 0)]["job_id"].tolist()
    return make_db(tmp_path_factory.mktemp("plots") / "r.db", df, embeddings=emb, emb_rows=60, emb_dim=8)


def _check(paths):
    assert paths
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert {p.suffix for p in paths} == {".png", ".pdf"}


def test_variance_plot(db, tmp_path):
    paths = plot_variance(db, tmp_path)
    _check(paths)
    assert len(paths) == 2 and paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert plot_variance(load_results(db), tmp_path / "df", model="another model") == []


def test_noise_plot(db, tmp_path):
    _check(plot_noise(db, tmp_path))


def test_tsne_plot(db, tmp_path):
    paths = plot_tsne(db, tmp_path, "sst2", 20)
    _check(paths)
    assert "seed0" in paths[0].name
    assert plot_tsne(db, tmp_path, "sst2", 100) == []  # no embeddings stored there


def test_report_embeds_the_figures(db, tmp_path):
    md = write_report(db, tmp_path, n_resamples=500).read_text()
    assert md.count("](figures/") == 3  # variance, noise, one t-SNE
    assert "Silhouette score" in md
    for name in ("report.md", "report.html"):
        assert (tmp_path / name).stat().st_size > 1000


def test_figures_never_pool_protocols_or_noise_designs(tmp_path, monkeypatch):
    """v1's and v2's runs of one model get a figure each (v1 keeps the plain name); runs whose
    noise replaced the originals get the extension's figure, never the paper's."""
    from analysis.synthetic import noise_frame, noise_scores
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    v1 = synthetic_results([dict(task="sst2", n=20)], seeds=range(3), rng=3)
    v2 = synthetic_results([dict(task="sst2", n=20, steps=75)], seeds=range(3), rng=4, grid="fewshot-v2")
    paths = plot_variance(pd.concat([v1, v2], ignore_index=True), tmp_path)
    _check(paths)
    assert sorted(p.name for p in paths if p.suffix == ".png") == ["variance_sentence-transformers_paraphrase-MiniLM-L3-v2.png",
                                                                   "variance_sentence-transformers_paraphrase-MiniLM-L3-v2_v2.png"]
    temps = (0.0,) + grids.HARSH_NOISES
    ce, scl = noise_scores(temps=temps, seeds=3, rng=5)
    replaced = noise_frame(ce, scl, temps=temps, mode="replace")
    assert plot_noise(replaced, tmp_path / "paper") == []  # only its clean runs are the paper's design
    ext = plot_noise(replaced, tmp_path / "ext", mode="replace")
    _check(ext)
    assert [p.name for p in ext if p.suffix == ".png"] == ["noise_sentence-transformers_paraphrase-MiniLM-L3-v2_n100_replace.png"]
