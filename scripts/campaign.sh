#!/usr/bin/env bash
# The reproduction campaign at CPU scale (issue 12), in the order of its priorities.
#
#   scripts/campaign.sh p1       # tune (L3: CE, then CE+SCL at CE's lr) -> select -> Table 2 (L3, 10 seeds, --tuned)
#   scripts/campaign.sh p2       # Table 3 (N=100, T=0.3-0.9, 5 seeds) and Table 7 (--tuned)
#   scripts/campaign.sh p3       # tune (L6) -> select -> Table 2 at N=20,100 (L6); then Tables 4, 5 (1 seed)
#   scripts/campaign.sh all      # p1, p2, p3 in turn, then drain
#   scripts/campaign.sh study    # protocol v2's convergence study (then record its budgets: harness convergence)
#   scripts/campaign.sh v2       # issue 22 P1: tune-v2 (each model: CE, then CE+SCL at CE's lr) -> select -> fewshot-v2
#   scripts/campaign.sh v2-p2    # issue 22 P2: Table 3 v2, our noise extension (Table 8), Table 7 v2; 3-layer model
#   scripts/campaign.sh v2-p3    # issue 22 P3: Tables 4 and 5 (1 seed, reduced budget), then Table 3 v2 with the 6-layer model
#   scripts/campaign.sh workers  # top the background workers up (e.g. after a reboot)
#   scripts/campaign.sh drain    # wait until nothing is queued or running, then stop the workers
#   scripts/campaign.sh stop     # stop the workers now (each hands its job back to the queue)
#   scripts/campaign.sh status | report
#
# Idempotent: a job's id is the hash of its spec, so enqueueing again adds nothing; workers are
# topped up to $WORKERS, never duplicated; `tune select` refuses until its tuning jobs are done, and
# choosing again from the same results chooses the same. A stage that waits for its tuning runs
# (p1, p3) can be stopped and started again at any time; run it in the background:
#
#   nohup scripts/campaign.sh all > runs/campaign/all.log 2>&1 &
#
# Workers run niced in the background and claim jobs in enqueue order, so the stages run in order
# of priority. They poll while the queue is empty rather than exit (`--until-empty` would race a
# stage that enqueues just as they leave, and strand jobs that wait on a transfer stage 1); `drain`
# or `stop` ends them. Stopped workers lose only their leases.
# Settings (environment): HARNESS_DB (default sqlite:///results.db), WORKERS (default: one per
# core), OMP_NUM_THREADS (default: cores / WORKERS), WORK_ARGS (e.g. "--gpu 0"), STAGE1_EPOCHS,
# FULL_EPOCHS, FULL_LR, TUNE_STEPS, POLL_SECONDS, V2_MODELS.
set -euo pipefail

cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-.venv/bin/harness}
export HARNESS_DB=${HARNESS_DB:-sqlite:///results.db}
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-../shared/data}
export HARNESS_MODEL_DIR=${HARNESS_MODEL_DIR:-../shared/models}
CORES=$(nproc)
WORKERS=${WORKERS:-$CORES}
THREADS=$(( CORES / (WORKERS > 0 ? WORKERS : 1) ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}
LOGS=${LOGS:-runs/campaign}
WORK_ARGS=${WORK_ARGS:-}
POLL_SECONDS=${POLL_SECONDS:-120}
L3=sentence-transformers/paraphrase-MiniLM-L3-v2
L6=sentence-transformers/all-MiniLM-L6-v2
V2_MODELS=${V2_MODELS:-"$L3 $L6"}  # the models of stage v2, in order
STAGE1_EPOCHS=${STAGE1_EPOCHS:-2}  # full SST-2 (67k examples) per epoch: what fits on a CPU in hours
FULL_EPOCHS=${FULL_EPOCHS:-2}      # Tables 4 and 5 (full training sets): the reduced budget, recorded
FULL_LR=${FULL_LR:-1e-4}           # not tuned (the tune grid is few-shot); thousands of steps, so below the few-shot choice
# Tuning in 2 steps (CE over 3 learning rates, then CE+SCL's 6 (λ, τ) at CE's: 54 jobs per model)
# or 1 (CE+SCL at all 3 learning rates too: 126). The choice is the same either way (λ, τ are
# chosen at CE's learning rate, harness/tuning.py); 1 only adds CE+SCL's scores at the other two
# rates to the tuning table. An N = 100 SST-2 job took ~330 s on this 2-core machine under load,
# so 2 saves ~3 hours per model with 2 workers.
TUNE_STEPS=${TUNE_STEPS:-2}
mkdir -p "$LOGS/workers"

say() { echo "[$(date -u +%FT%TZ)] $*"; }

enqueue() {  # enqueue ARGS...: add the jobs that are not there yet
    say "enqueue $*"
    "$HARNESS" enqueue "$@"
}

live_workers() {  # the pids of our running workers; forgets the pid files of ended ones
    local pidfile
    for pidfile in "$LOGS"/workers/*.pid; do
        [ -e "$pidfile" ] || continue
        if kill -0 "$(cat "$pidfile")" 2>/dev/null; then cat "$pidfile"; else rm -f "$pidfile"; fi
    done
}

workers() {  # top the niced background workers up to $WORKERS
    local live i=0
    live=$(live_workers | wc -l)
    while [ "$live" -lt "$WORKERS" ]; do
        while [ -e "$LOGS/workers/$i.pid" ]; do i=$((i + 1)); done
        # shellcheck disable=SC2086
        nohup nice -n 10 "$HARNESS" work --quiet $WORK_ARGS >>"$LOGS/workers/$i.log" 2>&1 &
        echo $! >"$LOGS/workers/$i.pid"
        live=$((live + 1))
    done
    say "$live workers (OMP_NUM_THREADS=$OMP_NUM_THREADS), logs in $LOGS/workers/"
}

stop() {  # SIGTERM each of our workers: it hands its job back and exits
    local pid
    for pid in $(live_workers); do kill -TERM "$pid"; done
    while [ -n "$(live_workers)" ]; do sleep 1; done
    say "workers stopped"
}

pending() {  # jobs queued or running, over all grids
    "$HARNESS" status --json | python3 -c 'import json, sys
print(sum(c.get("queued", 0) + c.get("running", 0) for c in json.load(sys.stdin)["counts"].values()))'
}

drain() {
    local left
    while left=$(pending) && [ "$left" -gt 0 ]; do
        say "$left jobs queued or running"; workers; sleep "$POLL_SECONDS"
    done
    stop
}
when_tuned() {  # when_tuned harness ARGS...: retry while the tuning runs it needs are unfinished
    local err
    while ! err=$("$@" 2>&1 >"$LOGS/tune.out"); do
        case "$err" in
            *"is incomplete"*"harness retry"*) say "cannot go on: $err"; return 1 ;;
            *"is incomplete"*) say "waiting: ${err#error: }"; workers; sleep "$POLL_SECONDS" ;;
            *) say "$*: $err"; return 1 ;;
        esac
    done
    cat "$LOGS/tune.out"
}

tune() {  # tune MODEL [GRID]: the tuning grid (default: v1's tune), then `tune select` once it is done
    local model=$1 grid=${2:-tune}
    if [ "$TUNE_STEPS" = 2 ]; then  # CE first, then CE+SCL at CE's learning rate only
        enqueue --grid "$grid" --model "$model" --losses ce
        workers
        when_tuned "$HARNESS" tune scl --grid "$grid" --model "$model"
    else
        enqueue --grid "$grid" --model "$model"
    fi
    workers
    when_tuned "$HARNESS" tune select --grid "$grid" --model "$model"
}

p1() {
    tune "$L3"
    enqueue --grid fewshot --tuned --model "$L3"
    workers
}

p2() {
    enqueue --grid noise --tuned --model "$L3" --noise 0.3,0.5,0.7,0.9 --seeds 5
    # Amazon-2 and Yelp-2 first (the paper's two), then the others if time allows
    enqueue --grid transfer --tuned --model "$L3" --stage1-epochs "$STAGE1_EPOCHS" \
        --tasks amazon_polarity_sample,yelp_polarity
    enqueue --grid transfer --tuned --model "$L3" --stage1-epochs "$STAGE1_EPOCHS" --tasks mr,cr,mpqa,subj
    workers
}

p3() {
    # In the issue's order: model size first (L6 tuning, then Table 2 at N = 20, 100), then the
    # full-data Tables 4 and 5, whose hour-long SST-2 jobs would otherwise hold both workers.
    tune "$L6"
    # seeds 0-4 of every cell first, then 5-9: a stretch cut short leaves every cell with 5 seeds
    enqueue --grid fewshot --tuned --model "$L6" --n 20,100 --seeds 5
    enqueue --grid fewshot --tuned --model "$L6" --n 20,100
    enqueue --grid glue --model "$L3" --seeds 1 --epochs "$FULL_EPOCHS" --lr "$FULL_LR" --warmup-ratio 0.1
    enqueue --grid batch --model "$L3" --seeds 1 --epochs "$FULL_EPOCHS" --lr "$FULL_LR" --warmup-ratio 0.1
    workers
}

study() {
    # Protocol v2's convergence study (issue 21): its curves choose each N's step budget. Once it
    # is done, `harness convergence` prints the budgets; they are recorded in
    # harness/protocol/grids.py (V2_BUDGETS) by hand, a protocol decision under review, before v2.
    enqueue --grid convergence
    workers
}

in_rounds() {  # in_rounds FIRST LAST ARGS...: enqueue ARGS one seed at a time, FIRST..LAST
    # Workers claim in enqueue order, so every cell gets seed s before any cell gets s + 1: a
    # stretch cut short leaves each started cell with as many seeds as its neighbours (±1).
    local first=$1 last=$2 seed
    shift 2
    for seed in $(seq "$first" "$last"); do enqueue "$@" --seeds "$seed-$seed"; done
}

v2() {
    # Protocol v2, issue 22 P1: needs the study's budgets in V2_BUDGETS (enqueue says so if not).
    # The 3-layer model's Table 2 is queued as soon as its tuning is chosen, in rounds of seeds,
    # then the 6-layer model's tuning and Table 2.
    local model
    for model in $V2_MODELS; do
        tune "$model" tune-v2
        in_rounds 0 9 --grid fewshot-v2 --tuned --model "$model"
    done
    workers
}

v2_p2() {
    # Issue 22 P2 (3-layer model): Table 3 under v2 (the paper's design, 5 seeds) beside our
    # extension, Table 8 (the back-translations replace the originals, T up to 2.0), seed by seed;
    # then Table 7 under v2 (stage 1 on full SST-2 in epochs, the targets at a step budget),
    # Amazon-2 and Yelp-2 (the paper's two) first.
    local seed
    for seed in 0 1 2 3 4; do
        enqueue --grid noise-v2 --tuned --model "$L3" --seeds "$seed-$seed"
        enqueue --grid noise-replace --tuned --model "$L3" --seeds "$seed-$seed"
    done
    in_rounds 0 9 --grid transfer-v2 --tuned --model "$L3" --stage1-epochs "$STAGE1_EPOCHS" \
        --tasks amazon_polarity_sample,yelp_polarity
    in_rounds 0 9 --grid transfer-v2 --tuned --model "$L3" --stage1-epochs "$STAGE1_EPOCHS" --tasks mr,cr,mpqa,subj
    workers
}

v2_p3() {
    # Issue 22 P3: Tables 4 and 5 at the budget this machine allows (1 seed, FULL_EPOCHS), then
    # Table 3 under v2 with the 6-layer model.
    enqueue --grid glue --model "$L3" --seeds 1 --epochs "$FULL_EPOCHS" --lr "$FULL_LR" --warmup-ratio 0.1
    enqueue --grid batch --model "$L3" --seeds 1 --epochs "$FULL_EPOCHS" --lr "$FULL_LR" --warmup-ratio 0.1
    in_rounds 0 4 --grid noise-v2 --tuned --model "$L6"
    workers
}

case "${1:-}" in
    p1) p1 ;;
    p2) p2 ;;
    p3) p3 ;;
    all) p1; p2; p3; drain ;;
    study) study ;;
    v2) v2 ;;
    v2-p2) v2_p2 ;;
    v2-p3) v2_p3 ;;
    workers) workers ;;
    drain) drain ;;
    stop) stop ;;
    status) "$HARNESS" status ;;
    report) "$HARNESS" report --all --out report ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
