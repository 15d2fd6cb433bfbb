"""scripts/mutation.py's bookkeeping: a --survivors run keeps the verdicts it did not test again
(mutmut forgets those whose tests changed), and a survivor's entry key is its changed code."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation.py"
spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
mutation = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutation  # its dataclasses look their module up there
spec.loader.exec_module(mutation)


def test_a_survivors_run_keeps_the_verdicts_it_did_not_test_again(tmp_path, monkeypatch):
    monkeypatch.setattr(mutation, "REPO", tmp_path)
    meta = tmp_path / "mutants" / "analysis" / "tables.py.meta"
    meta.parent.mkdir(parents=True)
    before = {"m.killed": 1, "m.survivor": 0, "m.unreached": None}
    # what mutmut leaves after re-testing the survivor (now killed) with a changed test selection
    meta.write_text(json.dumps({"exit_code_by_key": {"m.killed": None, "m.survivor": 1, "m.unreached": None},
                                "other": "kept"}))
    mutation._restore({mutation.SCOPES["tables"]: before}, {"m.survivor"})
    data = json.loads(meta.read_text())
    assert data["exit_code_by_key"] == {"m.killed": 1, "m.survivor": 1, "m.unreached": None}
    assert data["other"] == "kept"
    # a re-tested mutant keeps its new verdict even where the old one differs
    meta.write_text(json.dumps({"exit_code_by_key": {"m.killed": None, "m.survivor": 0, "m.unreached": None}}))
    mutation._restore({mutation.SCOPES["tables"]: before}, {"m.survivor"})
    assert json.loads(meta.read_text())["exit_code_by_key"]["m.survivor"] == 0


def test_an_entry_key_is_the_changed_code_without_comments():
    diff = ("--- a\n+++ b\n@@ -1,2 +1,2 @@\n-    x = a + b  # why\n+    x = a  -  b  # why\n")
    assert mutation.mutated_code(diff) == "x = a - b"
    assert mutation.mutated_code("--- a\n+++ b\n-    return 1\n") == "removed: return 1"
