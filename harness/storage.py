"""What a finished job keeps in the database, and how, so that a campaign of many seeds stays small
enough to commit (issue 12: at most 64 MB after VACUUM).

- Test predictions: every job, packed into one row (`test_predictions`): the example ids as zlib'd
  int32 deltas and the labels and predictions as zlib'd int8 (float32 for regression). One row per
  example (the `predictions` table, kept for older runs) cost ~60 bytes per example: a whole job
  takes 8 KB instead of 296 KB for MNLI, 139 KB instead of 11 MB for an Amazon transfer job with
  its 200,000 test examples (benchmarks/bench_storage.py).
- Test-set [CLS] embeddings (float16, 768 bytes per example at 384 dimensions): only where the
  t-SNE figures and the embedding claim read them: clean SST-2 runs that start from the
  pre-trained model, seeds below EMBEDDING_SEEDS. Every run records whether it kept them.
"""

from __future__ import annotations

import zlib

import numpy as np

from harness.spec import JobSpec

EMBEDDING_TASKS = ("sst2",)  # the task of the t-SNE figures and the silhouette claim
EMBEDDING_SEEDS = 3  # seeds 0, 1, 2 of each cell: three CE/CE+SCL pairs per (model, N)
ZLIB_LEVEL = 9  # a job's arrays are small; the best ratio costs milliseconds
INT8 = "int8"
FLOAT32 = "float32"


def keeps_embeddings(spec: JobSpec) -> bool:
    """Whether a job's test-set embeddings are stored (see the module docstring)."""
    return (spec.task in EMBEDDING_TASKS and spec.noise == 0 and spec.init_from is None
            and spec.per_class is None and spec.seed < EMBEDDING_SEEDS)


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
