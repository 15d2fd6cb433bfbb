"""The disk under a SQLite database: whether it is full, and reading a database that lies on a
full disk.

SQLite says only "disk I/O error" or "database or disk is full" when its file system has no room
(for the -shm index that even a reader of a WAL database creates, or for a writer's -wal frames):
`full` says so with the free space, so that the one error line names the cause. Readers (`status`,
`report`) must still work there: `readonly_connection` opens the file with immutable=1, which
needs no -shm and writes nothing; if the -wal file holds transactions not yet folded back into the
database, immutable would not see them, so the two files are read from a private copy instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote

# Less free space than this on the database's file system counts as full: a writer's transaction
# (one result: tens of 4 KiB pages in the -wal file) and the 32 KiB -shm index would not fit.
FULL_BELOW_BYTES = 256 * 1024


def free_bytes(folder: Path) -> int | None:
    """Bytes this process may still write in `folder`'s file system (None: cannot tell). Root may
    use the blocks a file system reserves for it, others may not."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_files and not st.f_favail:
        return 0  # no free inodes: no -wal or -shm file can be made either
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def full(path: Path) -> str | None:
    """Why SQLite cannot write `path` for want of space (in words, one clause), or None."""
    free = free_bytes(path.parent)
    if free is None or free >= FULL_BELOW_BYTES:
        return None
    return (f"the disk is full: {_size(free)} free on the file system of {path.parent}; free space "
            "there, or point --db at another disk")


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.0f} KiB"


def readonly_connection(path: Path, args: dict) -> sqlite3.Connection:
    """A connection that reads `path` without writing anything beside it (see the module
    docstring): immutable=1, or a private copy of the file and its non-empty -wal file."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        folder = Path(tempfile.mkdtemp(prefix="harness-readonly-"))
        atexit.register(shutil.rmtree, folder, True)
        try:
            shutil.copyfile(path, folder / path.name)
            shutil.copyfile(wal, folder / wal.name)
            # opened read-write: SQLite rebuilds the -wal index from the -wal file, in the copy
            return sqlite3.connect(folder / path.name, check_same_thread=False, **args)
        except OSError:  # no room for a copy either: the database as last folded back
            shutil.rmtree(folder, ignore_errors=True)
    return sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True,
                           check_same_thread=False, **args)
