"""How a job's test predictions are packed into one `test_predictions` row, and unpacked: the
codec that harness.store.results writes with and analysis reads with (see results' docstring for
why they are packed)."""

from __future__ import annotations

import zlib

import numpy as np

ZLIB_LEVEL = 9  # a job's arrays are small; the best ratio costs milliseconds
INT8 = "int8"
FLOAT32 = "float32"


def pack_predictions(predictions: list[tuple[int, float, float]]) -> dict:
    """(example idx, label, prediction) triples -> the columns of one `test_predictions` row."""
    ex = np.asarray([p[0] for p in predictions], dtype=np.int64)
    values = np.asarray([(p[1], p[2]) for p in predictions], dtype=np.float64).reshape(-1, 2)
    small = np.all(values == np.round(values)) and np.all(np.abs(values) <= 127)
    dtype = INT8 if small else FLOAT32
    deltas = np.diff(ex, prepend=0).astype(np.int32)  # test ids ascend: deltas are small
    return dict(rows=len(ex), encoding=f"zlib:int32-delta/{dtype}",
                examples=_z(deltas), labels=_z(values[:, 0].astype(dtype)),
                predictions=_z(values[:, 1].astype(dtype)))


def unpack_predictions(row) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A `test_predictions` row (mapping) -> (example idx int64, labels float64, predictions float64)."""
    codec, _, layout = row["encoding"].partition(":")
    index_kind, _, dtype = layout.partition("/")
    if codec != "zlib" or index_kind != "int32-delta" or dtype not in (INT8, FLOAT32):
        raise ValueError(f"unknown predictions encoding {row['encoding']!r}: upgrade the harness")
    ex = np.cumsum(np.frombuffer(zlib.decompress(row["examples"]), dtype=np.int32), dtype=np.int64)
    labels, preds = (np.frombuffer(zlib.decompress(row[k]), dtype=dtype).astype(np.float64)
                     for k in ("labels", "predictions"))
    if not len(ex) == len(labels) == len(preds) == row["rows"]:
        raise ValueError(f"predictions of job {row['job_id']} are damaged: lengths differ")
    return ex, labels, preds


def _z(a: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(a).tobytes(), ZLIB_LEVEL)
