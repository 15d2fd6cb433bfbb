"""Fine-tuned models kept for other jobs: written once under `runs/<job_id>/model/`, checked by
sha256 before use, and loaded into a fresh model without touching the pretrained cache.

A model folder holds `model.safetensors` (the selected epoch's full state dict: encoder and
classification head) and `artifact.json` (what it is). Its hash covers every file's name and
bytes, in name order, so a truncated, replaced or partly deleted folder fails the check. The
folder is written beside its final place and renamed into it, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MODEL = "model"  # the one kind of artifact (artifacts.kind): a fine-tuned model's folder
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "artifact.json"
HASH_CHUNK_BYTES = 1 << 20
HEAD_KEPT = "stage-1 head (same number of labels)"
HEAD_REINITIALISED = "re-initialised with the job's seed (number of labels differs)"


@dataclass(frozen=True)
class Artifact:
    """One stored model, as the `artifacts` table records it."""

    kind: str  # MODEL
    path: str  # absolute folder
    sha256: str
    bytes: int

    def record(self) -> dict:
        return asdict(self)


def folder_sha256(folder: Path) -> tuple[str, int]:
    """sha256 over (relative name, bytes) of every file under `folder`, in name order; total size."""
    h, total = hashlib.sha256(), 0
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                h.update(chunk)
                total += len(chunk)
    return h.hexdigest(), total


def save_model(model, folder: Path, manifest: dict) -> Artifact:
    """Write `model`'s state dict (CPU, as trained) and a manifest to `folder`, replacing what was
    there, and return its record."""
    from safetensors.torch import save_file

    folder = Path(folder).resolve()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # safetensors refuses tensors that share memory (tied embeddings); contiguous copies are safe.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_FILE))
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    sha, size = folder_sha256(folder)
    return Artifact(MODEL, str(folder), sha, size)


def problem(path: str | None, sha256: str | None) -> str | None:
    """Why the stored model cannot be used (missing, incomplete, changed), or None if it can."""
    if not path or not sha256:
        return "no model was stored for it"
    folder = Path(path)
    if not (folder / WEIGHTS_FILE).is_file():
        return f"its model files are gone ({folder})"
    actual, _ = folder_sha256(folder)
    if actual != sha256:
        return f"its model files changed (sha256 {actual[:12]}…, recorded {sha256[:12]}…)"
    return None


def manifest(folder: Path) -> dict:
    """What a stored model is (job, base model, task, labels); {} if the manifest is missing."""
    path = Path(folder) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_into(model, folder: Path) -> str:
    """Copy a stored model's weights into `model` (built fresh from the pretrained cache with the
    job's seed). The encoder always comes from the store; the classification head too when its
    shape matches, else the model keeps its own seeded head. Returns how the head was set."""
    from safetensors.torch import load_file

    stored = load_file(str(Path(folder) / WEIGHTS_FILE))
    own = model.state_dict()
    mismatched = {k for k, v in stored.items() if k in own and own[k].shape != v.shape}
    unknown = set(stored) - set(own)
    if unknown:
        raise ValueError(f"stored model {folder} has weights this model lacks: {sorted(unknown)[:3]}")
    keep = {k: v for k, v in stored.items() if k not in mismatched}
    model.load_state_dict(keep, strict=False)
    return HEAD_REINITIALISED if mismatched else HEAD_KEPT
