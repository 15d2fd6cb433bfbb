"""Where the database lies: a folder given as the database, and a full disk. Every command says
what is wrong in one line and leaves the folder as it was; status and report still read a database
on a full disk, including transactions still in its -wal file.

The full disk is a real one: a 1 MiB tmpfs, mounted in a private mount namespace (`unshare`), so
that it vanishes with the process whatever happens to the test. A machine where that cannot be
done fails the test, with the reason, rather than skipping it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

from paths import REPO

runner = CliRunner()
COMMANDS = (["enqueue", "--grid", "smoke", "--no-check"], ["status"], ["status", "--json"],
            ["report", "--table", "2"], ["work", "--until-empty"], ["retry", "--grid", "smoke"],
            ["db", "upgrade"])
FULL = "the disk is full: 0 bytes free on the file system of"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_a_folder_given_as_the_database_is_named_as_such(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for args in COMMANDS:
        r = invoke(*args, "--db", f"sqlite:///{folder}")
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, (args, r.output)
        assert lines[0] == (f"error: the database '{folder}' is a folder, not a file: give a file, "
                            f"e.g. sqlite:///{folder / 'results.db'}"), (args, lines)
    assert list(folder.iterdir()) == []


# Runs in the private mount namespace: mounts the tmpfs, fills it, runs the commands, prints JSON.
ON_A_FULL_DISK = r'''
import json, os, sqlite3, subprocess, sys
from pathlib import Path
from typer.testing import CliRunner
from harness.cli import app

mount = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
url = f"sqlite:///{mount / 'r.db'}"
cli = CliRunner()

def run(*args):
    r = cli.invoke(app, [*args, "--db", url], catch_exceptions=False)
    return dict(args=list(args), code=r.exit_code, stdout=r.stdout, stderr=r.stderr)

def fill():
    fd = os.open(mount / "fill", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)

def listing():
    return sorted((p.name, p.stat().st_size) for p in mount.iterdir())

out = {"enqueue": run("enqueue", "--grid", "smoke", "--no-check")}
fill()
before = listing()
out["closed"] = [run(*a) for a in json.loads(sys.argv[2])]
out["unchanged"] = listing() == before

# a writer still holds transactions in the -wal file (not folded back) when the disk fills
os.remove(mount / "fill")
held = sqlite3.connect(mount / "r.db")
held.execute("PRAGMA wal_autocheckpoint=0")
held.execute("UPDATE jobs SET status = 'cancelled' WHERE seed = 3")
held.commit()
fill()
out["wal_bytes"] = (mount / "r.db-wal").stat().st_size
out["open"] = run("status", "--json")
print(json.dumps(out))
'''


def unshare() -> list[str]:
    """A private mount namespace: as root directly, otherwise as root of a user namespace."""
    return ["unshare", "--mount", "--propagation", "private"] + (
        [] if os.geteuid() == 0 else ["--user", "--map-root-user"])


def test_on_a_full_disk_readers_read_and_writers_say_the_disk_is_full(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run([*unshare(), sys.executable, "-c", ON_A_FULL_DISK, str(mount),
                           json.dumps(COMMANDS)], capture_output=True, text=True, cwd=REPO,
                          env=os.environ | {"PYTHONPATH": str(REPO / "tests")}, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"the commands on a 1 MiB tmpfs in a private mount namespace (`unshare`, "
                    f"`mount`) failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["enqueue"]["code"] == 0, out["enqueue"]
    for r in out["closed"]:
        lines = r["stderr"].strip().splitlines()
        if r["args"][0] in ("status", "report"):
            assert r["code"] == 0 and not lines, r
        else:
            assert r["code"] == 2 and len(lines) == 1 and FULL in lines[0], r
            assert lines[0].endswith("; free space there, or point --db at another disk"), r
    counts = json.loads(next(r for r in out["closed"] if r["args"] == ["status", "--json"])["stdout"])
    assert counts["counts"]["smoke"]["queued"] == 8
    assert out["unchanged"]  # not even an empty -wal or -shm file left beside it
    assert out["wal_bytes"] > 0 and out["open"]["code"] == 0, out["open"]
    smoke = json.loads(out["open"]["stdout"])["counts"]["smoke"]
    assert (smoke["queued"], smoke["cancelled"]) == (6, 2)  # the -wal file's transaction is seen
