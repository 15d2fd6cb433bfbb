"""The command line as a user meets it: bad input gets one clear line, a non-zero exit, and
leaves the database exactly as it was."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.protocol.data import resolve_data_dir
from harness.training.models import resolve_model

from paths import DATA_DIR, MODEL_DIR, REPO

runner = CliRunner()
NO_SUCH_GPU = torch.cuda.device_count()  # one past the last device index, on any machine


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def dump(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


@pytest.fixture
def populated(tmp_path):
    """A database holding the smoke grid, to check that bad commands leave it unchanged."""
    path = tmp_path / "results.db"
    r = invoke("enqueue", "--grid", "smoke", "--db", f"sqlite:///{path}")
    assert r.exit_code == 0, r.output
    return path


def test_grids_lists_every_design_with_job_counts():
    r = invoke("grids")
    assert r.exit_code == 0
    for name, count in [("fewshot", 180), ("noise", 300), ("smoke", 8)]:
        line = next(line for line in r.stdout.splitlines() if line.startswith(name))
        assert f" {count} jobs" in line
    lines = r.stdout.splitlines()
    assert "noise-replace v2" in r.stdout  # the longest name sets the column
    assert len({line.index(" v1 ") if " v1 " in line else line.index(" v2 ") for line in lines}) == 1


def test_fewshot_dry_run_reports_180_and_writes_nothing(tmp_path):
    path = tmp_path / "results.db"
    r = invoke("enqueue", "--grid", "fewshot", "--no-check", "--dry-run", "--db", f"sqlite:///{path}")
    assert r.exit_code == 0, r.output
    assert "has 180 jobs" in r.stdout
    assert not path.exists()


def test_enqueueing_fewshot_twice_leaves_180(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    assert "added 180 jobs, 0 already existed" in invoke("enqueue", "--grid", "fewshot", "--no-check", "--db", url).stdout
    assert "added 0 jobs, 180 already existed" in invoke("enqueue", "--grid", "fewshot", "--no-check", "--db", url).stdout
    s = json.loads(invoke("status", "--json", "--db", url).stdout)
    assert s["counts"]["fewshot"]["queued"] == 180


def test_overrides_narrow_a_grid(tmp_path):
    r = invoke("enqueue", "--grid", "fewshot", "--no-check", "--tasks", "sst2", "--n", "20,100", "--seeds", "3",
               "--losses", "ce+scl", "--dry-run")
    assert "has 6 jobs" in r.stdout, r.output
    r = invoke("enqueue", "--grid", "fewshot", "--no-check", "--seeds", "2-4", "--dry-run")
    assert "has 54 jobs" in r.stdout


BAD = {
    "unknown grid": (["enqueue", "--grid", "nope"], "unknown grid"),
    "unknown task": (["enqueue", "--grid", "smoke", "--tasks", "sst3"], "unknown task"),
    "unknown loss": (["enqueue", "--grid", "smoke", "--losses", "scl"], "unknown loss"),
    "N zero": (["enqueue", "--grid", "smoke", "--n", "0"], "positive"),
    "N negative": (["enqueue", "--grid", "smoke", "--n", "-5"], "positive"),
    "N not a number": (["enqueue", "--grid", "smoke", "--n", "many"], "not a whole number"),
    "N above the training set": (["enqueue", "--grid", "smoke", "--tasks", "rte", "--n", "5000"], "larger than"),
    "lambda above 1": (["enqueue", "--grid", "smoke", "--lam", "1.5"], "[0, 1]"),
    "lambda below 0": (["enqueue", "--grid", "smoke", "--lam", "-0.1"], "[0, 1]"),
    "lambda NaN": (["enqueue", "--grid", "smoke", "--lam", "nan"], "finite"),
    "tau zero": (["enqueue", "--grid", "smoke", "--tau", "0"], "τ"),
    "tau too small for float32": (["enqueue", "--grid", "smoke", "--tau", "1e-30"], "τ (--tau) must be ≥ 0.01"),
    "negative noise": (["enqueue", "--grid", "smoke", "--noise", "-0.3"], "0 < T ≤ 2.0"),
    "noise above the allowed range": (["enqueue", "--grid", "noise", "--noise", "0.5,2.5"],
                                      "must be 0 (clean) or 0 < T ≤ 2.0"),
    "batch size zero": (["enqueue", "--grid", "smoke", "--batch-size", "0"], "positive integer"),
    "negative lr": (["enqueue", "--grid", "smoke", "--lr", "-1e-5"], "> 0"),
    "bad seeds": (["enqueue", "--grid", "smoke", "--seeds", "a,b"], "--seeds"),
    "bad SCL reduction": (["enqueue", "--grid", "smoke", "--scl-reduction", "max"], "reduction"),
    "missing model folder": (["enqueue", "--grid", "smoke", "--model", "./no/such/model"], "no such folder"),
    "unknown grid for work": (["work", "--grid", "nope", "--until-empty"], "unknown grid"),
    "GPU that does not exist": (["work", "--gpu", str(NO_SUCH_GPU), "--until-empty"], f"--gpu {NO_SUCH_GPU}"),
    # checked at enqueue: each distinct model (configuration and files) and task once
    "empty model": (["enqueue", "--grid", "smoke", "--model", ""], "--model is empty"),
    "blank model": (["enqueue", "--grid", "smoke", "--model", "  "], "--model is empty"),
    "folder that is not a model": (["enqueue", "--grid", "smoke", "--model", str(REPO / "tests")],
                                   "not a model folder"),
    "unavailable model": (["enqueue", "--grid", "smoke", "--model", "no-such-org/no-such-model"],
                          "Hub cannot provide it"),
    "max length above the model's positions": (["enqueue", "--grid", "smoke", "--max-length", "1024"],
                                               "exceeds the 512 positions"),
    "seed too large for the database": (["enqueue", "--grid", "smoke", "--seeds", "0,99999999999999999999"],
                                        "too large"),
    "seed count too large": (["enqueue", "--grid", "smoke", "--seeds", "99999999999"], "more than"),
    "seed range too large": (["enqueue", "--grid", "smoke", "--seeds", "0-99999999999"], "more than"),
    "N too large for the database": (["enqueue", "--grid", "smoke", "--n", "99999999999"], "too large"),
    "epochs too large for the database": (["enqueue", "--grid", "smoke", "--epochs", "99999999999"], "too large"),
    "absurd max attempts": (["enqueue", "--grid", "smoke", "--max-attempts", "99999999999"], "at most"),
    # the regression task's CE job comes first in the expansion: its CE+SCL job must still be refused
    "CE+SCL on a regression task": (["enqueue", "--grid", "smoke", "--tasks", "stsb"], "use --losses ce"),
    "CE+SCL on a regression task, second": (["enqueue", "--grid", "smoke", "--tasks", "sst2,stsb"],
                                            "CE+SCL is undefined"),
    "retry an unknown grid": (["retry", "--grid", "nope"], "unknown grid"),
    "cancel a grid with no jobs here": (["cancel", "--grid", "fewshot"], "no jobs of grid 'fewshot'"),
    "retry an unknown job": (["retry", "--job", "zzzz"], "no job 'zzzz'"),
    "status of an unknown job": (["status", "--job", "zzzz"], "no job 'zzzz'"),
    "plot with nothing to plot": (["plot", "tsne"], "the tsne plot needs a CE and a CE+SCL run"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_nonzero_database_unchanged(case, populated):
    args, expected = BAD[case]
    before = dump(populated)
    r = invoke(*args, "--db", f"sqlite:///{populated}")
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expected in lines[0]
    assert "Traceback" not in r.output
    assert dump(populated) == before


@pytest.mark.parametrize("case,url,expected", [
    ("malformed URL", "not a url", "malformed database URL"),
    ("unsupported database", "mysql://u@h/db", "unsupported database"),
    ("unreachable PostgreSQL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "cannot connect"),
    ("missing folder", "sqlite:////no/such/folder/results.db", "does not exist"),
    ("in-memory SQLite", "sqlite://", "in-memory"),
    ("in-memory SQLite, spelled out", "sqlite:///:memory:", "in-memory"),
])
def test_bad_database_urls(case, url, expected):
    for args in (["enqueue", "--grid", "smoke"], ["status"], ["work", "--until-empty"]):
        r = invoke(*args, "--db", url)
        assert r.exit_code != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], r.stderr


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = path.read_bytes()
    for args in (["enqueue", "--grid", "smoke"], ["status"], ["work", "--until-empty"]):
        r = invoke(*args, "--db", f"sqlite:///{path}")
        assert r.exit_code != 0
        assert "not a usable database" in r.stderr or "not a database" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_status_on_an_empty_database_says_what_to_run(tmp_path):
    r = invoke("status", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert r.exit_code != 0 and "harness enqueue" in r.stderr
    assert not (tmp_path / "empty.db").exists()


def test_env_var_names_the_database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("HARNESS_DB", url)
    assert invoke("enqueue", "--grid", "smoke").exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_a_missing_split_is_refused_at_enqueue(tmp_path, monkeypatch, populated):
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "train.jsonl").write_text((DATA_DIR / "sst2" / "train.jsonl").read_text())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    before = dump(populated)
    r = invoke("enqueue", "--grid", "smoke", "--db", f"sqlite:///{populated}")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1 and "has no validation split" in lines[0], r.stderr
    assert dump(populated) == before


def test_loss_names_are_case_insensitive_and_keep_their_job_ids():
    upper = invoke("enqueue", "--grid", "smoke", "--losses", "CE,CE+SCL", "--dry-run")
    lower = invoke("enqueue", "--grid", "smoke", "--losses", "ce,ce+scl", "--dry-run")
    assert upper.exit_code == 0, upper.output
    assert upper.stdout == lower.stdout


def test_no_check_lets_a_model_the_workers_hold_through():
    r = invoke("enqueue", "--grid", "smoke", "--model", "org/only-on-the-cluster", "--no-check", "--dry-run")
    assert r.exit_code == 0 and "has 8 jobs" in r.stdout, r.output


def test_messages_name_only_options_that_exist():
    """Every `--option` written anywhere in the harness's messages and help is a real option."""
    import re

    import typer.main

    real = set()

    def walk(command):
        for p in command.params:
            real.update(o for o in p.opts if o.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    named = {m.group() for f in (REPO / "harness").rglob("*.py")
             for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", f.read_text())}
    assert named - real == set()


def test_mirrors_beside_the_clone_are_found_without_environment(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.delenv("HARNESS_MODEL_DIR", raising=False)
    assert resolve_data_dir() == DATA_DIR.resolve()
    assert resolve_model("sentence-transformers/paraphrase-MiniLM-L3-v2") == str((MODEL_DIR / "paraphrase-MiniLM-L3-v2").resolve())
    monkeypatch.setenv("HARNESS_DATA_DIR", "hub")
    assert resolve_data_dir() is None
