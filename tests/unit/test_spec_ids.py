"""Job identity: the ids of fixed specs are pinned, so no refactor can change them unnoticed (a
changed id orphans every stored result of that spec). A deliberate change of the protocol comes
with a new grid version and a note in the report, and then these pins change in the same commit."""

from __future__ import annotations

import hashlib
import re

import pytest

from harness.protocol import grids
from harness.protocol.spec import PAPER_LAM, PAPER_TAU, JobSpec

PINNED = {
    "265ce981864ade20": dict(task="sst2", n=20, seed=0, loss="ce", model="roberta-large", lr=1e-5,
                             epochs=10),
    "a73daf6cd7a73053": dict(task="qnli", n=100, seed=3, loss="ce+scl", lam=0.9, tau=0.3,
                             model="roberta-large", lr=1e-5, epochs=10),
    "4840c45d9af5adea": dict(task="mnli", n=100, seed=1, loss="ce+scl", noise=0.7,
                             model="roberta-large", lr=1e-5),
    "79b168acc0b501dd": dict(task="cola", n=None, seed=2, loss="ce", model="roberta-large", epochs=5),
    "2b7e83be74a56469": dict(task="mnli", n=20, seed=4, loss="ce", sampling="stratified",
                             batching="reshuffle",
                             model="sentence-transformers/paraphrase-MiniLM-L3-v2", lr=3e-4),
    "575861a5fdf646e3": dict(task="yelp_polarity", n=40, per_class=20, seed=5, loss="ce+scl",
                             init_from="0123456789abcdef", model="roberta-large"),
}
# (job count, sha256 of the sorted ids joined by commas, first 16 hex characters)
PINNED_GRIDS = {"smoke": (8, "c64666a7d94ac831"), "fewshot": (180, "20d5f3860623bd7c")}


@pytest.mark.parametrize("job_id", sorted(PINNED))
def test_pinned_spec_ids(job_id):
    assert JobSpec.make(**PINNED[job_id]).job_id == job_id


@pytest.mark.parametrize("grid", sorted(PINNED_GRIDS))
def test_pinned_grid_ids(grid):
    ids = sorted(s.job_id for s, _ in grids.expand(grids.get_grid(grid)))
    digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]
    assert (len(ids), digest) == PINNED_GRIDS[grid]


@pytest.mark.parametrize("name", ["SST-2", "sst-2", "Sst2", "sst2", "SST"])
def test_task_names_are_canonical(name):
    spec = JobSpec.make(task=name, n=20, seed=0)
    assert spec.task == "sst2"
    assert spec.job_id == JobSpec.make(task="sst2", n=20, seed=0).job_id


def test_train_seed_equal_to_seed_is_unset():
    assert JobSpec.make(task="sst2", n=20, seed=3, train_seed=3) == JobSpec.make(task="sst2", n=20, seed=3)
    assert JobSpec.make(task="sst2", n=20, seed=3, train_seed=4).train_seed == 4


def test_ce_scl_without_lambda_gets_the_papers_lambda_and_tau():
    spec = JobSpec.make(task="sst2", n=20, seed=0, loss="ce+scl")
    assert (spec.lam, spec.tau) == (PAPER_LAM, PAPER_TAU) == (0.9, 0.3)
    assert spec == JobSpec.make(task="sst2", n=20, seed=0, loss="ce+scl", lam=0.9, tau=0.3)
    assert JobSpec.make(task="sst2", n=20, seed=0, loss="ce+scl", lam=0.0).lam == 0.0  # explicit 0 stays
    assert JobSpec.make(task="sst2", n=20, seed=0, loss="ce", lam=0.5).lam == 0.0


def test_batching_and_sampling_are_part_of_identity_with_paper_defaults():
    base = JobSpec.make(task="sst2", n=20, seed=0)
    assert (base.batching, base.sampling) == ("fixed", "uniform")
    ids = {JobSpec.make(task="sst2", n=20, seed=0, batching=b, sampling=s).job_id
           for b in ("fixed", "reshuffle", "length") for s in ("uniform", "stratified")}
    assert len(ids) == 6
    assert JobSpec.make(task="yelp", n=40, per_class=20, seed=0).sampling == "stratified"
    for grid in grids.GRIDS.values():  # every paper grid forms batches as fairseq does
        budget = {"steps": 100} if grid.step_budgets is not None else {}  # v2 before the study
        spec, _ = grids.expand(grid, seeds=[0], **budget)[0]
        assert spec.batching == "fixed", grid.name


def test_grid_task_option_is_case_insensitive():
    a = {s.job_id for s, _ in grids.expand(grids.get_grid("smoke"), tasks=["SST-2"])}
    b = {s.job_id for s, _ in grids.expand(grids.get_grid("smoke"), tasks=["sst2"])}
    assert a == b and len(a) == 8


@pytest.mark.parametrize("fields,refused", [
    (dict(loss="ce+scl", tau=0.01), None),
    (dict(loss="ce+scl", tau=0.0099), "τ (--tau) must be ≥ 0.01"),
    (dict(loss="ce+scl", tau=1e-30), "τ (--tau) must be ≥ 0.01"),
    (dict(noise=2.0), None),
    (dict(noise=2.0001), "must be 0 (clean) or 0 < T ≤ 2"),
    (dict(noise=3.0), "must be 0 (clean) or 0 < T ≤ 2"),
    (dict(noise=-0.1), "must be 0 (clean) or 0 < T ≤ 2"),
])
def test_tau_and_noise_bounds_are_inclusive_and_say_what_is_allowed(fields, refused):
    from harness.errors import HarnessError

    if refused is None:
        JobSpec.make(task="sst2", n=20, seed=0, **fields)
        return
    with pytest.raises(HarnessError, match=re.escape(refused)):
        JobSpec.make(task="sst2", n=20, seed=0, **fields)
