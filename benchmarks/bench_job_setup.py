"""A fresh job's model setup in a warm worker: the full build against the per-process template.

    python benchmarks/bench_job_setup.py [--models sentence-transformers/paraphrase-MiniLM-L3-v2,sentence-transformers/all-MiniLM-L6-v2] [--repeats 5] [--gpu N]

In one process, after one warm-up job's worth of builds (the worker is warm: pretrained weights
loaded, template and recipe made), each round times, interleaved:

- full:      `build_model_from_scratch` — the path every job took before: the whole model
             initialised under the job's seed on the CPU, pretrained weights copied in, moved to
             the device;
- template:  `build_model` with a seed this process has not seen (the head draw is replayed);
- same seed: `build_model` with a seed seen before (the head draw comes from the cache; a grid
             has many jobs per seed).

As in a worker, one model is alive at a time (the previous job's is freed before the next is
built, so the heap's warm pages are reused). Every build's weights are checked equal to the full
build's (by digest). Medians of the rounds are reported
with their ratios and the load average (the machine is shared: ratios, not absolute times).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import time

import numpy as np
import torch

from harness.training import models

DEFAULT_MODELS = "sentence-transformers/paraphrase-MiniLM-L3-v2,sentence-transformers/all-MiniLM-L6-v2"
NUM_LABELS = 2


def _timed(fn, device: torch.device) -> tuple[float, str]:
    """Seconds to build, and a digest of the weights; the model is freed before returning."""
    gc.collect()
    started = time.perf_counter()
    model = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for k, v in model.state_dict().items():
        digest.update(k.encode() + v.detach().cpu().numpy().tobytes())
    return seconds, digest.hexdigest()


def bench(name: str, device: torch.device, repeats: int) -> dict:
    models.build_model(name, NUM_LABELS, 10_000, device)  # warm: template, recipe, first draws
    models.build_model_from_scratch(name, NUM_LABELS, 10_000, device)
    times = {"full": [], "template": [], "same seed": []}
    for r in range(repeats):
        seed = 20_000 + r  # never seen before in this process
        t_full, full = _timed(lambda: models.build_model_from_scratch(name, NUM_LABELS, seed, device), device)
        t_new, new = _timed(lambda: models.build_model(name, NUM_LABELS, seed, device), device)
        t_same, same = _timed(lambda: models.build_model(name, NUM_LABELS, seed, device), device)
        assert full == new == same, "the template's model differs from the full build"
        times["full"].append(t_full)
        times["template"].append(t_new)
        times["same seed"].append(t_same)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"model": name, "median_seconds": med, "all_seconds": times,
            "params": sum(p.numel() for p in models.build_model(name, NUM_LABELS, 0, device).parameters()),
            "build": models.model_build(name, NUM_LABELS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gpu", type=int, default=None)
    args = ap.parse_args()
    from harness.runtime.memory import keep_freed_memory
    from harness.worker import select_device

    keep_freed_memory()  # as in a worker
    device = torch.device(select_device(args.gpu))
    load = os.getloadavg()[0]
    results = [bench(m, device, args.repeats) for m in args.models.split(",")]
    print(f"job model setup on {device} ({torch.get_num_threads()} threads), median of {args.repeats} "
          f"interleaved rounds, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    for r in results:
        m = r["median_seconds"]
        print(f"  {r['model']} ({r['params'] / 1e6:.1f}M parameters; {r['build']})")
        print(f"    full build {m['full']:.3f}s   template, new seed {m['template']:.3f}s "
              f"({m['full'] / m['template']:.2f}x)   template, seen seed {m['same seed']:.3f}s "
              f"({m['full'] / m['same seed']:.2f}x)")


if __name__ == "__main__":
    main()
