"""Reading a data set's rows and checking them: a mirror's JSON-lines file read line by line, and
the checks every row of every source (mirror or Hub) passes before a job sees it.

Every error is a DataError that names the file and the physical line (1-based, blank lines
counted, as an editor shows it) or the Hub row, and what is wrong. A row must have each text
column as a non-empty string, a label the task can take, and an id no other row of its split has.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from harness.errors import DataError
from harness.protocol.tasks import TaskSpec

MISSING = object()  # a column a row lacks


def read_jsonl(path: Path, names: tuple[str, ...]) -> tuple[dict[str, list], list[int], str]:
    """The named columns of a JSON-lines file (MISSING where a row lacks one), each row's line
    number, and the sha256 of the bytes read (harness.protocol.fingerprint hashes files alike).

    Blank lines are skipped but counted. The file is read as bytes and each line decoded on its
    own, so a byte that is not UTF-8 is reported on its own line: a text-mode reader decodes
    8 KB ahead, and fails before the lines in front of the bad byte were counted."""
    data = path.read_bytes()
    columns: dict[str, list] = {n: [] for n in names}
    lines: list[int] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                            f"byte {exc.start + 1} of the line: {exc.reason})") from None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for n in names:
            columns[n].append(row.get(n, MISSING))
        lines.append(number)
    return columns, lines, hashlib.sha256(data).hexdigest()


def check_rows(task: TaskSpec, columns: dict[str, list], where) -> None:
    """Every row has its text columns as non-empty strings and a label the task can take (a class
    number 0..num_labels-1, or a finite score for regression). Raises DataError naming where(i).

    An empty (or all-whitespace) text is refused like a missing one: the model would see only its
    special tokens and learn the label from nothing, and no data set the harness knows has one."""
    for name in task.text_columns:
        for i, v in enumerate(columns[name]):
            if not isinstance(v, str):
                what = ("has no" if v is MISSING else "has a null" if v is None
                        else f"has a non-text ({type(v).__name__} {v!r})")
                raise DataError(f"{where(i)}: the row {what} {name!r} column")
            if not v.strip():
                raise DataError(f"{where(i)}: the row's {name!r} text is empty")
    for i, v in enumerate(columns["label"]):
        problem = _label_problem(task, v)
        if problem:
            raise DataError(f"{where(i)}: {problem}")


def check_ids(ids: list, where, place) -> None:
    """No two rows of a split share an idx: test predictions, training samples and embeddings are
    stored by it, so a repeated id would make two examples one. Raises DataError naming where(i)
    of the second row and place(j) of the first ("line 7", "row 6")."""
    first: dict = {}
    for i, v in enumerate(ids):
        seen = first.setdefault(v, i)
        if seen != i:
            raise DataError(f"{where(i)}: idx {v} is already the idx of {place(seen)}")


def _label_problem(task: TaskSpec, v) -> str | None:
    if v is MISSING:
        return "the row has no label"
    if v is None:
        return "the label is null"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"label {v!r} is a {type(v).__name__}, not a number"
    if not math.isfinite(v):
        return f"label {v!r} is not a finite number"
    if task.is_regression:
        return None
    classes = f"the classes 0–{task.num_labels - 1} of {task.name}"
    if v != int(v):
        return f"label {v!r} is not a whole class number ({classes})"
    if not 0 <= v < task.num_labels:
        return f"label {v!r} is outside {classes}"
    return None
