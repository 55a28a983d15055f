#!/usr/bin/env bash
# Install (once) and start a real single-node Slurm on this machine, for tests.
#
# Usage: bash scripts/slurm/start_local_slurm.sh [--no-warmup]
#        eval "$(bash scripts/slurm/start_local_slurm.sh)"     # exports into this shell
#   Progress goes to standard error; standard output is only the `export ...` lines, which
#   are also written to $SLURM_LOCAL_DIR/env.sh (source it in later shells).
#   --no-warmup   skip the warm-up job (~3 s; without it the first `sbatch --wait` after a
#                 start takes ~10 s instead of ~2 s).
# Example: eval "$(bash scripts/slurm/start_local_slurm.sh)" && sinfo
# Stop with: bash scripts/slurm/stop_local_slurm.sh
# Environment:
#   SLURM_LOCAL_DIR   folder for slurm.conf, state, spool, logs, pid files
#                     (default /tmp/electra-slurm; the stop script reads the same variable)
#   SLURM_LOCAL_CPUS  CPUs to declare, may exceed the cores (default: the `slurmd -C` topology)
# Needs root and Debian/Ubuntu (apt-get). Works without standard input (CI) and without
# systemd: munged runs as user munge, slurmctld and slurmd run as root.
# Installs only `slurmctld slurmd slurm-client munge` (--no-install-recommends, ~15 small
# packages); daemons use proctrack/linuxproc and task/none, so no cgroups are needed.
# Idempotent: when its daemons are already up and answering, it only prints the exports.
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/args.sh"
electra_help_if_asked "$@"
start=$SECONDS
log() { printf '[start_local_slurm %3ds] %s\n' "$((SECONDS - start))" "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

warmup=1
for arg in "$@"; do
  case "$arg" in
    --no-warmup) warmup=0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts slurmd as root)"

dir="${SLURM_LOCAL_DIR:-/tmp/electra-slurm}"
conf="$dir/slurm.conf"
env_file="$dir/env.sh"
host="$(hostname -s)"
[[ -n "$host" ]] || die "hostname -s printed nothing"

print_env() {
  local line="export SLURM_CONF=$conf"
  printf '%s\n' "# local Slurm ($host); written by ${BASH_SOURCE[0]##*/}" "$line" > "$env_file"
  printf '%s\n' "$line"
  log "exports written to $env_file (source it, or: export SLURM_CONF=$conf)"
}

# pid_alive FILE: the PID in FILE runs the daemon the file is named after (slurmd.pid ->
# slurmd), so a stale file whose PID was reused by another program is not trusted.
pid_alive() {
  local name pid
  name="$(basename "$1" .pid)"
  [[ -s "$1" ]] && pid="$(cat "$1")" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

munge_works() { command -v munge >/dev/null 2>&1 && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

node_state() { SLURM_CONF="$conf" sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n1; }

# --- fast path: already running --------------------------------------------------------
settings="cpus=${SLURM_LOCAL_CPUS:-auto}"   # what the running daemons must have been started with
if [[ -e "$conf" && "$(cat "$dir/settings" 2>/dev/null)" == "$settings" ]] && pid_alive "$dir/run/slurmctld.pid" && pid_alive "$dir/run/slurmd.pid" && munge_works &&
   SLURM_CONF="$conf" scontrol ping >/dev/null 2>&1; then
  log "already running (slurmctld pid $(cat "$dir/run/slurmctld.pid"), slurmd pid $(cat "$dir/run/slurmd.pid"), node ${host}: $(node_state))"
  print_env
  exit 0
fi

# --- packages --------------------------------------------------------------------------
packages=(slurmctld slurmd slurm-client munge)
need_install=0
for cmd in slurmctld slurmd srun sbatch scontrol sinfo munged munge unmunge; do
  command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [[ $need_install == 1 ]]; then
  command -v apt-get >/dev/null 2>&1 || die "slurm is not installed and apt-get is missing; install ${packages[*]}"
  t0=$SECONDS
  # Keep package scripts from starting daemons (no systemd here; we start them ourselves).
  added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; added_policy=1
  fi
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${packages[@]}" </dev/null >"$dir.apt.log" 2>&1
  }
  mkdir -p "$(dirname "$dir")"
  log "installing ${packages[*]} (apt-get, --no-install-recommends)"
  if ! apt_install; then
    log "apt-get install failed; running apt-get update and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >>"$dir.apt.log" 2>&1 ||
      { tail -n 20 "$dir.apt.log" >&2; die "apt-get update failed (log: $dir.apt.log)"; }
    apt_install || { tail -n 20 "$dir.apt.log" >&2; die "apt-get install ${packages[*]} failed (log: $dir.apt.log)"; }
  fi
  [[ $added_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
  rm -f "$dir.apt.log"
  log "installed in $((SECONDS - t0)) s: $(slurmctld -V 2>/dev/null), $(munged --version 2>&1 | head -n1)"
fi

# --- munge -----------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (the munge package creates it)"
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null 2>&1; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if munge_works; then
  log "munged already running"
else
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- munged --origin=127.0.0.1 --force </dev/null ||
    die "munged did not start; see /var/log/munge/munged.log"
  for _ in $(seq 50); do munge_works && break; sleep 0.1; done
  munge_works || die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
  mkdir -p "$dir/run"
  # Recorded so that stop_local_slurm.sh stops only a munged that this script started.
  cp /run/munge/munged.pid "$dir/run/munged.pid" 2>/dev/null || true
  log "munged started (pid $(cat /run/munge/munged.pid 2>/dev/null || echo '?'))"
fi

# --- stop leftovers of an earlier run of ours ------------------------------------------
for d in slurmd slurmctld; do
  if pid_alive "$dir/run/$d.pid"; then
    pid="$(cat "$dir/run/$d.pid")"
    log "stopping earlier $d (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
done

# --- slurm.conf ---------------------------------------------------------------------------
mkdir -p "$dir"/{state,spool,run,log}
chmod 0755 "$dir"
topology="$(slurmd -C 2>/dev/null | head -n1)"
[[ "$topology" == NodeName=* ]] || die "'slurmd -C' printed no NodeName line: $topology"
# Keep CPUs and the socket/core/thread layout; drop the host name (pinned below).
topology="${topology#NodeName=* }"
overrides=""
if [[ -n "${SLURM_LOCAL_CPUS:-}" ]]; then
  [[ "$SLURM_LOCAL_CPUS" =~ ^[1-9][0-9]*$ ]] || die "SLURM_LOCAL_CPUS must be a positive integer, not '$SLURM_LOCAL_CPUS'"
  # Declared CPUs win over the detected ones (lets tests run more tasks than cores).
  topology="CPUs=$SLURM_LOCAL_CPUS"
  overrides="SlurmdParameters=config_overrides"
fi
cat > "$conf" <<EOF
# Single-node Slurm for tests; written by scripts/slurm/start_local_slurm.sh.
ClusterName=electra-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$overrides
NodeName=$host NodeAddr=127.0.0.1 $topology State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
echo "$settings" > "$dir/settings"
log "wrote $conf (node: $host $topology)"

# --- daemons -------------------------------------------------------------------------------
export SLURM_CONF="$conf"
rm -f "$dir/run/slurmctld.pid" "$dir/run/slurmd.pid"
slurmctld -c -f "$conf" </dev/null || die "slurmctld did not start; see $dir/log/slurmctld.log"
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
scontrol ping >/dev/null 2>&1 || { tail -n 20 "$dir/log/slurmctld.log" >&2; die "slurmctld does not answer"; }
slurmd -f "$conf" </dev/null || die "slurmd did not start; see $dir/log/slurmd.log"
state=""
for _ in $(seq 150); do
  state="$(node_state)"
  [[ "$state" == idle* ]] && break
  sleep 0.2
done
if [[ "$state" != idle* ]]; then
  tail -n 20 "$dir/log/slurmd.log" >&2
  die "node $host is '${state:-unknown}', not idle, after 30 s; see $dir/log/"
fi
log "slurmctld pid $(cat "$dir/run/slurmctld.pid"), slurmd pid $(cat "$dir/run/slurmd.pid"), node $host idle"

# --- warm-up job: after a fresh `slurmctld -c` the first batch job takes ~3 s and a first
# `sbatch --wait` would poll at 2, 10, 42 s; after one job it returns in ~2 s. Poll ourselves.
if [[ $warmup == 1 ]]; then
  t0=$SECONDS
  job="$(sbatch --parsable -o /dev/null -e /dev/null -t 1 -J warmup --wrap true </dev/null)" ||
    die "warm-up job was not accepted; see $dir/log/slurmctld.log"
  job_state=""
  for _ in $(seq 600); do
    job_state="$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
    case "$job_state" in
      COMPLETED) break ;;
      FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
        die "warm-up job $job ended $job_state; see $dir/log/" ;;
    esac
    sleep 0.1
  done
  [[ "$job_state" == COMPLETED ]] || die "warm-up job $job is still '${job_state:-unknown}' after 60 s; see $dir/log/"
  log "warm-up job $job completed in $((SECONDS - t0)) s"
fi
log "ready in $((SECONDS - start)) s"
print_env
