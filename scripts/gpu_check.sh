#!/usr/bin/env bash
# GPU check: the smoke grid on a GPU with bf16 autocast, two workers on one GPU, the CE+SCL loss and
# gradient on GPU against CPU (within 1e-3), the packed training forward pass against the full one
# on the GPU (harness/training/packed.py), training steps/s (packed and full) and jobs/hour. Ends inside 8 minutes.
#
# 1. Here (a machine with the repository's .venv, the data and models in ../shared, and PyPI):
#        scripts/gpu_check.sh pack
#    builds build/gpu_pack/ (ignored by git, at most 64 MiB): paraphrase-MiniLM-L3-v2 in float16,
#    the SST-2/QNLI/MNLI files (xz) and wheels of the small packages a GPU image may lack
#    (transformers, tokenizers, datasets, sqlalchemy, alembic, typer, rich, ...; see scripts/gpu_check.py).
# 2. There (a GPU machine with python3 and a CUDA build of torch, no internet), in a copy of the
#    working tree with build/gpu_pack carried along:
#        scripts/gpu_check.sh run
#    It makes a virtual environment on top of the system packages (so the system's CUDA torch is
#    used), installs what is missing from the packed wheels offline (pip --no-index --find-links),
#    and runs the checks. Results and logs go to $OUT (or build/gpu_check_out).
# 3. Without a GPU: `scripts/gpu_check.sh run --dry` does everything but the GPU steps (the jobs run
#    on the CPU, fewer of them, and the GPU side of the loss check is skipped), with .venv's python
#    if there is one; the GPU run is then still owed.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
PACK=${GPU_PACK:-$REPO/build/gpu_pack}
BUDGET_S=470  # the whole run stays inside 8 minutes
START=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
say() { echo "[gpu_check $(date +%H:%M:%S) +$(($(date +%s) - START))s] $*"; }

if [[ "${1:-}" == "pack" ]]; then
    PY=${PYTHON:-$REPO/.venv/bin/python}
    export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-$REPO/../shared/data}
    export HARNESS_MODEL_DIR=${HARNESS_MODEL_DIR:-$REPO/../shared/models}
    "$PY" scripts/gpu_check.py pack "$PACK"
    exit 0
fi
if [[ "${1:-}" != "run" ]]; then
    echo "usage: scripts/gpu_check.sh pack | run [--dry]" >&2
    exit 2
fi
DRY=0
[[ "${2:-}" == "--dry" ]] && DRY=1
[[ -f "$PACK/MANIFEST.json" ]] || { echo "error: no pack at $PACK: run 'scripts/gpu_check.sh pack' first" >&2; exit 2; }
OUTDIR=${OUT:-$REPO/build/gpu_check_out}
mkdir -p "$OUTDIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---- Python with everything the harness needs, offline -------------------------------------------
if [[ $DRY == 1 && -x $REPO/.venv/bin/python ]]; then
    PY=$REPO/.venv/bin/python
else
    SYSPY=${PYTHON:-python3}
    VENV=$REPO/build/gpu_venv
    [[ -x $VENV/bin/python ]] || "$SYSPY" -m venv --system-site-packages "$VENV"
    PY=$VENV/bin/python
fi
"$PY" scripts/gpu_check.py install "$PACK"
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HARNESS_MODEL_DIR=$PACK/models HARNESS_DATA_DIR=$WORK/data
export HF_DATASETS_CACHE=$WORK/hf_datasets
"$PY" scripts/gpu_check.py unpack "$PACK" "$HARNESS_DATA_DIR"
H() { "$PY" -m harness.cli "$@"; }
"$PY" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")'
if [[ $DRY == 0 ]]; then
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "error: no CUDA device; use --dry")'
    GPU=(--gpu 0)
    SMOKE=(--grid smoke)
    PAIR=(--grid fewshot --tasks sst2,qnli --n 20 --seeds 2 --losses ce,ce+scl
          --model sentence-transformers/paraphrase-MiniLM-L3-v2 --epochs 3)
else
    say "DRY MODE: no GPU steps; jobs run on the CPU, fewer of them"
    GPU=()
    SMOKE=(--grid smoke --seeds 1 --epochs 2)
    PAIR=(--grid fewshot --tasks sst2 --n 20 --seeds 1 --losses ce,ce+scl
          --model sentence-transformers/paraphrase-MiniLM-L3-v2 --epochs 1)
fi

# ---- 1. the smoke grid, one worker, bf16 autocast on the GPU ---------------------------------------
DB1="sqlite:///$OUTDIR/smoke.db"
rm -f "$OUTDIR/smoke.db"
H enqueue "${SMOKE[@]}" --db "$DB1"
t0=$(date +%s)
timeout "$(( $(left) / 2 ))" "$PY" -m harness.cli work "${GPU[@]}" --until-empty --quiet --db "$DB1" \
    --runs-dir "$WORK/runs1" 2> "$OUTDIR/smoke.log" || { tail -20 "$OUTDIR/smoke.log"; say "smoke: FAILED or timed out"; exit 1; }
say "smoke grid: $("$PY" scripts/gpu_check.py rate "$DB1" $(( $(date +%s) - t0 )))"
"$PY" - "$OUTDIR/smoke.db" <<'EOF'
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for task, n, seed, loss, test, cfg in c.execute(
        "select r.task, r.n, r.seed, r.loss, r.test_score, u.config from results r "
        "join attempts u on u.job_id = r.job_id and u.outcome = 'done' order by r.seed, r.loss"):
    conf = json.loads(cfg) if cfg else {}
    print(f"  {task} n={n} seed={seed} {loss:7s} test {test:.4f}  device {conf.get('device')} dtype {conf.get('dtype')}")
EOF

# ---- 2. two workers on one GPU ------------------------------------------------------------------
DB2="sqlite:///$OUTDIR/pair.db"
rm -f "$OUTDIR/pair.db"
H enqueue "${PAIR[@]}" --db "$DB2"
t0=$(date +%s)
timeout "$(( $(left) - 90 ))" "$PY" -m harness.cli work "${GPU[@]}" --workers 2 --until-empty --quiet \
    --db "$DB2" --runs-dir "$WORK/runs2" 2> "$OUTDIR/pair.log" || { tail -20 "$OUTDIR/pair.log"; say "two workers: FAILED or timed out"; exit 1; }
say "two workers on one device: $("$PY" scripts/gpu_check.py rate "$DB2" $(( $(date +%s) - t0 )))"

# ---- 3. CE+SCL loss and gradient, GPU against CPU; steps/s -----------------------------------------
timeout "$(( $(left) > 10 ? $(left) : 10 ))" "$PY" scripts/gpu_check.py loss $([[ $DRY == 1 ]] && echo --dry)
say "done in $(( $(date +%s) - START ))s (limit 480s)$([[ $DRY == 1 ]] && echo '; DRY MODE: the GPU run is still owed')"
