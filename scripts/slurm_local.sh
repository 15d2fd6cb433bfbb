#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (munge, slurmctld, slurmd), to try
# scripts/slurm_array.sbatch and for its test (tests/integration/test_slurm.py):
#
#   scripts/slurm_local.sh install   # Debian's packages, where missing (apt-get; needs root)
#   scripts/slurm_local.sh start     # write the config if needed, start what is not running, wait until the node is idle
#   scripts/slurm_local.sh status    # versions, controller, node; exit status 1 if not usable
#   scripts/slurm_local.sh stop      # stop slurmd and slurmctld (munged stays: other programs may use it)
#
# Needs root and Debian's packages (`apt-get install -y slurmctld slurmd slurm-client munge`;
# .ci/run installs them where they are missing). Nothing here uses systemd or cgroups: the daemons
# are started by hand, processes are tracked by their parent ids (proctrack/linuxproc) and tasks
# are not bound (task/none), as in a container. The config is /etc/slurm/slurm.conf, where
# sbatch, squeue and scancel look by default; a slurm.conf this script did not write is never
# touched (start fails instead). Every failure ends with the reason and the daemons' log tails.
set -euo pipefail

PATH=$PATH:/usr/sbin:/sbin  # the daemons
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
MARK="# written by harness scripts/slurm_local.sh"
STATE=/var/lib/slurm
LOGS=/var/log/slurm

die() {
    echo "slurm_local: FATAL: $*" >&2
    for log in "$LOGS/slurmctld.log" "$LOGS/slurmd.log" /var/log/munge/munged.log; do
        [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

need() {
    local missing=()
    for cmd in munged munge unmunge slurmctld slurmd sbatch squeue scancel scontrol sinfo; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: apt-get install -y slurmctld slurmd slurm-client munge (as .ci/run does)"
    [ "$(id -u)" -eq 0 ] || die "run as root: slurmd and munged are started by hand"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node() { hostname -s; }
node_state() { sinfo -h -n "$(node)" -o %T 2>/dev/null | head -n1; }
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: this machine has a Slurm config of its own; leaving it alone"
    fi
    local hw host
    hw=$(slurmd -C | head -n1) || die "slurmd -C could not read this machine's hardware"
    host=$(node)
    [[ "$hw" == "NodeName=$host "* ]] || die "slurmd -C names the node '${hw%% *}', not '$host'"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF.new" <<EOF
$MARK: a one-node cluster for tests
ClusterName=harness
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$hw NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return; fi
    mv "$CONF.new" "$CONF"
    CHANGED=1  # the running daemons, if any, must start again to read it
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 4))"); do "$@" && return 0; sleep 0.25; done
    die "$what"
}

start_munge() {
    munge_ok && return
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    command install -d -o munge -g munge -m 0755 /run/munge  # the program, not this script's install()
    runuser -u munge -- munged || die "munged did not start"
    wait_for 10 "munge does not answer (munge -n | unmunge)" munge_ok
}

node_usable() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }

start() {
    need
    CHANGED=0
    write_conf
    mkdir -p "$STATE/slurmctld" "$STATE/slurmd" "$LOGS"
    start_munge
    [ "$CHANGED" -eq 0 ] || stop_daemons
    if ! pid_alive /run/slurmctld.pid; then
        slurmctld -f "$CONF" || die "slurmctld did not start"
    fi
    wait_for 30 "slurmctld does not answer (scontrol ping)" ctld_ok
    if ! pid_alive /run/slurmd.pid; then
        slurmd -f "$CONF" || die "slurmd did not start"
    fi
    for _ in $(seq 120); do
        node_usable && break
        case "$(node_state)" in  # a node left down or drained by an earlier run: take it back
            down*|drain*|fail*) scontrol update NodeName="$(node)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.25
    done
    node_usable || die "node $(node) is '$(node_state)', not idle: $(scontrol show node "$(node)" | grep -o 'Reason=.*' || true)"
    echo "slurm_local: cluster up: node $(node) $(node_state), $(sinfo -h -o '%c CPUs, %m MB') ($CONF)"
}

stop_daemons() {
    local pidfile pid
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        pid_alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        ! kill -0 "$pid" 2>/dev/null || die "$(basename "$pidfile" .pid) ($pid) did not stop"
    done
}

status() {
    need
    echo "$(sinfo -V), $(munged -V 2>&1 | awk '{print $1}')"
    munge_ok || { echo "munge: not answering"; return 1; }
    ctld_ok || { echo "slurmctld: not answering"; return 1; }
    sinfo -N -h -o 'node %N: %T, %c CPUs, %m MB'
    node_usable
}

PACKAGES=(slurmctld slurmd slurm-client munge)
install() {
    if dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "installing Slurm needs root: apt-get install -y ${PACKAGES[*]}"
    echo "slurm_local: Slurm is not installed; installing ${PACKAGES[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null; } \
        || die "could not install Slurm (apt-get install -y ${PACKAGES[*]})"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) need; stop_daemons; echo "slurm_local: slurmd and slurmctld stopped" ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
