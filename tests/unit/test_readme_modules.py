"""The README's module table lists exactly the library's files, and every file says what it holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PACKAGES = ("harness", "analysis")


def _library_files() -> set[str]:
    return {str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
            if "versions" not in p.parts}


def _listed() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Modules", 1)[1].split("\n## ", 1)[0]
    return {m for line in section.splitlines() if line.startswith("| `")
            for m in re.findall(r"`((?:harness|analysis)/[\w/.]*)`", line.split("|")[1])}


def test_readme_lists_every_module_and_nothing_else():
    listed = _listed()
    assert listed, "the README has no module table under '### Modules'"
    missing = {p for p in listed if not (REPO / p).exists()}
    assert not missing, f"the README lists modules that do not exist: {sorted(missing)}"
    covered = lambda f: any(f == p or (p.endswith("/") and f.startswith(p)) for p in listed)  # noqa: E731
    unlisted = sorted(f for f in _library_files() if not f.endswith("__init__.py") and not covered(f))
    assert not unlisted, f"modules missing from the README's module table: {unlisted}"


def test_every_module_starts_with_what_it_holds():
    bare = sorted(f for f in _library_files()
                  if not (ast.get_docstring(ast.parse((REPO / f).read_text())) or "").strip()
                  and not (f.endswith("__init__.py") and not (REPO / f).read_text().strip()))
    assert not bare, f"modules without a first line saying what they hold: {bare}"
