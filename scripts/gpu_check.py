"""Helpers of scripts/gpu_check.sh: `pack` (here) and `install`, `unpack`, `loss`, `rate` (there).

    python scripts/gpu_check.py pack OUT          # model in float16, data, wheels; ≤ 64 MiB
    python scripts/gpu_check.py install PACK      # the packed wheels of missing imports, offline
    python scripts/gpu_check.py loss [--dry]      # CE+SCL loss and gradient, GPU against CPU; packed
                                                  # forward against full on the GPU; steps/s
    python scripts/gpu_check.py rate DB SECONDS   # jobs/hour of a finished run
"""

from __future__ import annotations

import argparse
import contextlib
import lzma
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/paraphrase-MiniLM-L3-v2"
PACK_LIMIT = 64 * 2**20
DATA_FILES = {"sst2": ("train", "validation"), "qnli": ("train", "validation"),
              "mnli": ("train", "validation_matched")}
# Distribution -> import name, in the order they are packed while the size budget lasts: what a
# GPU image with torch, numpy, pandas, pyarrow and scipy may still lack. Larger binary packages
# (pyarrow, pandas, scipy, scikit-learn) are not packed: `install` names them if absent.
# Installed with --no-deps (only what is missing), so optional dependencies such as hf-xet (used by
# the Hub client for downloads, never here) are left out.
WHEELS = {"transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
          "huggingface_hub": "huggingface_hub", "sqlalchemy": "sqlalchemy", "alembic": "alembic",
          "mako": "mako", "markupsafe": "markupsafe", "regex": "regex",
          "typer": "typer", "click": "click", "rich": "rich", "shellingham": "shellingham",
          "markdown-it-py": "markdown_it", "mdurl": "mdurl", "datasets": "datasets",
          "dill": "dill", "multiprocess": "multiprocess", "xxhash": "xxhash", "fsspec": "fsspec",
          "filelock": "filelock", "pyyaml": "yaml", "tqdm": "tqdm", "httpx2": "httpx2",
          "packaging": "packaging", "typing_extensions": "typing_extensions", "joblib": "joblib",
          "threadpoolctl": "threadpoolctl", "annotated-doc": "annotated_doc", "pygments": "pygments"}
NEEDED = ("torch", "numpy", "pandas", "pyarrow", "scipy", "sklearn", *WHEELS.values())
# What the check imports: an import error here names a dependency neither installed nor packed.
HARNESS_MODULES = ("harness.cli", "harness.worker", "harness.training.finetune", "harness.training.evaluate",
                   "datasets", "scipy.stats", "sklearn.metrics")


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def pack(out: Path) -> None:
    """The model in float16, the data files (xz), and as many wheels as fit in the limit."""
    import torch
    from safetensors.torch import load_file, save_file

    from harness.training.models import resolve_model

    if out.exists():
        shutil.rmtree(out)
    model_src = Path(resolve_model(MODEL))
    model_out = out / "models" / model_src.name
    model_out.mkdir(parents=True)
    for f in model_src.iterdir():
        if f.name == "model.safetensors":
            weights = {k: (v.half() if v.is_floating_point() else v).contiguous()
                       for k, v in load_file(f).items()}
            save_file(weights, model_out / f.name, metadata={"format": "pt"})
        elif f.is_file() and f.suffix != ".bin":
            shutil.copy2(f, model_out / f.name)
    data_src = Path(os.environ["HARNESS_DATA_DIR"])
    for task, splits in DATA_FILES.items():
        (out / "data" / task).mkdir(parents=True)
        for split in splits:
            with open(data_src / task / f"{split}.jsonl", "rb") as src, \
                    lzma.open(out / "data" / task / f"{split}.jsonl.xz", "wb", preset=9) as dst:
                shutil.copyfileobj(src, dst)
    wheels, left_out = out / "wheels", []
    wheels.mkdir()
    import importlib.metadata as md

    for dist in WHEELS:
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "-d", tmp, f"{dist}=={version}"], check=True)
            got = list(Path(tmp).iterdir())
            if _size(out) + sum(f.stat().st_size for f in got) > PACK_LIMIT - 2**20:
                left_out.append(f"{dist}=={version}")  # keeps a MiB of headroom
            else:
                for f in got:
                    shutil.move(str(f), wheels / f.name)
    manifest = {"model": MODEL, "model_dtype": "float16", "data": DATA_FILES,
                "wheels": sorted(f.name for f in wheels.iterdir()), "left_out": left_out,
                "bytes": _size(out)}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    total = _size(out)
    print(f"packed {out}: {total / 2**20:.1f} MiB (limit 64 MiB): model {_size(model_out) / 2**20:.1f}, "
          f"data {_size(out / 'data') / 2**20:.1f}, {len(manifest['wheels'])} wheels "
          f"{_size(wheels) / 2**20:.1f}" + (f"; left out for size: {', '.join(left_out)}" if left_out else ""))
    if total > PACK_LIMIT:
        sys.exit(f"error: the pack is {total / 2**20:.1f} MiB, over the 64 MiB limit")


def unpack(pack_dir: Path, dest: Path) -> None:
    """Data files back to <task>/<split>.jsonl, the layout HARNESS_DATA_DIR expects."""
    for packed in (pack_dir / "data").rglob("*.jsonl.xz"):
        target = dest / packed.parent.name / packed.name[:-3]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            with lzma.open(packed, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _missing() -> list[str]:
    import importlib.util

    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install(pack_dir: Path) -> int:
    """Install, offline and without dependencies, the packed wheels of every missing import;
    then import what the check runs. 0 if everything imports."""
    import importlib

    absent = _missing()
    dists = [d for d, name in WHEELS.items() if name in absent]
    wheels = sorted(pack_dir.glob("wheels/*.whl"))
    files = [str(w) for w in wheels
             if w.name.split("-")[0].lower().replace("_", "-") in {d.lower().replace("_", "-") for d in dists}]
    if absent:
        print(f"missing imports: {' '.join(absent)}; installing {len(files)} packed wheels offline")
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--find-links", str(pack_dir / "wheels"), *files], check=True)
    sys.path.insert(0, str(REPO))
    importlib.invalidate_caches()
    failed = []
    for module in HARNESS_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            failed.append(f"{module}: {exc}")
    for line in failed:
        print(f"error: cannot import {line}", file=sys.stderr)
    return 1 if failed else 0


def loss_check(dry: bool, steps: int = 40) -> int:
    """CE+SCL loss and gradient on one fixed SST-2 batch, CPU (fp32) against GPU (fp32, no TF32):
    equal within 1e-3. The packed training forward pass against the full one on the GPU, under its
    autocast with dropout on (harness.training.packed): logits within 5e-2, the same random numbers drawn.
    Then training steps/s on the GPU under bf16 autocast, packed and full."""
    import numpy as np
    import torch

    from harness.training.batching import collate, encode
    from harness.training.inputs import prepare_data
    from harness.training.finetune import autocast_for, compute_loss, make_optimizer, train_step
    from harness.training.models import build_model, load_pretrained
    from harness.protocol.spec import JobSpec
    from harness.protocol.tasks import get_task

    spec = JobSpec.make(task="sst2", n=64, seed=0, model=MODEL, loss="ce+scl")  # the paper's λ and τ
    task = get_task("sst2")
    pre = load_pretrained(MODEL)
    data = prepare_data(spec)
    enc = encode(pre.tokenizer, pre.tokenizer_id, task.name, data.train, spec.max_length)
    positions = np.arange(16)
    labels = torch.as_tensor(data.train.labels[positions])

    def loss_and_grad(device: str):
        model = build_model(MODEL, task.num_labels, 0, device)
        model.eval()  # no dropout: both devices must compute the same function
        loss, ce, scl = compute_loss(model, collate(enc, positions, device), labels.to(device), spec, task)
        loss.backward()
        grad = torch.cat([p.grad.flatten().float().cpu() for p in model.parameters() if p.grad is not None])
        return loss.item(), ce.item(), scl.item(), grad

    cpu = loss_and_grad("cpu")
    print(f"CPU: loss {cpu[0]:.6f} (CE {cpu[1]:.6f}, SCL {cpu[2]:.6f}), |grad| {cpu[3].norm():.6f}")
    if dry:
        packed_ok = packed_against_full(torch.device("cpu"))
        print("GPU: skipped (dry mode): loss/gradient comparison and steps/s are owed to a GPU run")
        return 0 if packed_ok else 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = loss_and_grad("cuda:0")
    d_loss = max(abs(a - b) for a, b in zip(cpu[:3], gpu[:3]))
    d_grad = float((cpu[3] - gpu[3]).abs().max())
    ok = d_loss <= 1e-3 and d_grad <= 1e-3
    print(f"GPU: loss {gpu[0]:.6f} (CE {gpu[1]:.6f}, SCL {gpu[2]:.6f}), |grad| {gpu[3].norm():.6f}; "
          f"max |Δ| loss parts {d_loss:.2e}, gradient {d_grad:.2e} -> {'OK' if ok else 'MISMATCH'} (≤ 1e-3)")
    device = torch.device("cuda:0")
    ok = packed_against_full(device) and ok
    autocast, dtype = autocast_for(device)
    batch = collate(enc, positions, device)
    y = labels.to(device)
    for packed in (True, False):
        model = build_model(MODEL, task.num_labels, 0, device)
        model.train()
        optimizer, _ = make_optimizer(model, spec)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        for i in range(steps + 5):
            if i == 5:
                torch.cuda.synchronize()
                started = time.perf_counter()
            train_step(model, optimizer, scheduler, batch, y, spec, task, autocast, packed=packed)
        torch.cuda.synchronize()
        print(f"GPU training: {steps / (time.perf_counter() - started):.1f} steps/s "
              f"(batch 16, CE+SCL, {dtype} autocast, {'packed' if packed else 'full'} forward)")
    return 0 if ok else 1


def packed_against_full(device) -> bool:
    """One training-mode forward pass of a padded SST-2 batch, packed and full, from one seed."""
    import numpy as np
    import torch

    from harness.training.batching import collate, encode
    from harness.training.inputs import prepare_data
    from harness.training.finetune import autocast_for
    from harness.training.models import build_model, forward, load_pretrained
    from harness.training.packed import packed_encoder, supported
    from harness.protocol.spec import JobSpec

    spec = JobSpec.make(task="sst2", n=64, seed=0, model=MODEL)
    pre = load_pretrained(MODEL)
    enc = encode(pre.tokenizer, pre.tokenizer_id, "sst2", prepare_data(spec).train, spec.max_length)
    batch = collate(enc, np.arange(16), device)
    model = build_model(MODEL, 2, 0, device)
    model.train()
    autocast, dtype = autocast_for(device)
    rng = torch.cuda.get_rng_state if device.type == "cuda" else torch.get_rng_state

    def run(packed: bool):
        torch.manual_seed(7)
        with torch.no_grad(), autocast():
            with packed_encoder(model, batch["attention_mask"]) if packed else contextlib.nullcontext():
                logits, _ = forward(model, batch)
        return logits.float().cpu(), rng()

    (full, rng_full), (pk, rng_pk) = run(False), run(True)
    d = float((full - pk).abs().max())
    ok = supported(model) and d <= 5e-2 and torch.equal(rng_full, rng_pk)
    print(f"{device.type.upper()}: packed forward against full ({dtype or 'float32'}, dropout on): max |Δ logits| "
          f"{d:.2e}, same random numbers drawn: {torch.equal(rng_full, rng_pk)} -> {'OK' if ok else 'MISMATCH'}")
    return ok


def rate(db_url: str, seconds: float) -> None:
    import sqlalchemy as sa

    with sa.create_engine(db_url).connect() as c:
        done = c.execute(sa.text("select count(*) from results")).scalar()
        failed = c.execute(sa.text("select count(*) from jobs where status = 'failed'")).scalar()
    print(f"{done} jobs done, {failed} failed in {seconds:.0f}s: {3600 * done / max(seconds, 1e-9):.0f} jobs/hour")
    if failed:
        sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("out", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("pack_dir", type=Path)
    u.add_argument("dest", type=Path)
    sub.add_parser("install").add_argument("pack_dir", type=Path)
    sub.add_parser("loss").add_argument("--dry", action="store_true")
    r = sub.add_parser("rate")
    r.add_argument("db")
    r.add_argument("seconds", type=float)
    a = p.parse_args()
    if a.cmd == "pack":
        pack(a.out)
    elif a.cmd == "unpack":
        unpack(a.pack_dir, a.dest)
    elif a.cmd == "install":
        sys.exit(install(a.pack_dir))
    elif a.cmd == "loss":
        sys.exit(loss_check(a.dry))
    else:
        rate(a.db, a.seconds)


if __name__ == "__main__":
    main()
