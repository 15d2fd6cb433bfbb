"""Which data a job trained on: a fingerprint of the content of every split its task's protocol
reads, so that a result can be told apart from one trained on an edited mirror.

The job id is a hash of the spec only (pinned: ids of stored jobs never change), so the same spec
over edited files is the same job. Each finished job therefore records `data_fingerprint` (and
`data_files`, each split's digest) in its attempt's config: for a mirror, the sha256 of each file
as read (the values of the mirror's COUNTS.tsv); for the Hub, the `datasets` fingerprint of each
split. `mirror_fingerprint` computes the same value from the files as they are now, without
parsing them, so `enqueue`, `report` and `retry --data-changed` can say which finished jobs were
trained on other data.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from harness.protocol.data import resolve_data_dir, source_splits
from harness.protocol.tasks import TaskSpec, get_task

FINGERPRINT_CHARS = 16  # hex characters of sha256 kept, as for job ids
HUB_PREFIX = "hub:"  # a Hub copy's digest: comparable only with another Hub copy's
READ_BYTES = 1 << 20


def combine(files: dict[str, str]) -> str:
    """One fingerprint for a task's data from each split's digest (split -> digest). A Hub copy's
    starts with HUB_PREFIX: its digests are not file hashes, so never equal a mirror's."""
    text = json.dumps(sorted(files.items()), separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]
    hub = any(d.startswith(HUB_PREFIX) for d in files.values())
    return (HUB_PREFIX if hub else "") + digest


def comparable(fingerprint: str | None) -> bool:
    """Whether a stored fingerprint can be compared with a mirror's (recorded, not from the Hub)."""
    return bool(fingerprint) and not fingerprint.startswith(HUB_PREFIX)


def mirror_fingerprint(task: str | TaskSpec, data_dir: str | Path | None = None) -> str | None:
    """The fingerprint of the task's data in the local mirror as it is now (None: the data comes
    from the Hub, or the mirror lacks one of the task's files). Each file is hashed once per
    (size, modification time, inode): cheap to ask for every task of a report."""
    task = task if isinstance(task, TaskSpec) else get_task(task)
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return None
    files = {}
    for split in source_splits(task):
        path = os.path.join(folder, task.name, f"{split}.jsonl")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        files[split] = file_digest(path, st.st_size, st.st_mtime_ns, st.st_ino)
    return combine(files)


@lru_cache(maxsize=256)
def file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of a file's bytes (the size, time and inode only key the cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            h.update(chunk)
    return h.hexdigest()
