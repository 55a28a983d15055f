#!/usr/bin/env bash
# Stop the single-node Slurm started by scripts/slurm/start_local_slurm.sh.
#
# Usage: bash scripts/slurm/stop_local_slurm.sh [--keep-munge] [--purge]
#   --keep-munge  leave munged running (by default it is stopped if start_local_slurm.sh
#                 started it)
#   --purge       also delete $SLURM_LOCAL_DIR (config, state, logs), only if it is the folder
#                 start_local_slurm.sh made (it holds its settings file)
# Environment: SLURM_LOCAL_DIR (default /tmp/electra-slurm), as for the start script.
# Example: bash scripts/slurm/stop_local_slurm.sh --purge
#
# Order: cancel the jobs, then SIGTERM slurmd and slurmctld by the PIDs in their pid files,
# wait up to 5 s, then SIGKILL. A hung slurmstepd ignores SIGTERM, so step daemons of this
# Slurm (recognised by an open file under $SLURM_LOCAL_DIR) and their tasks are SIGKILLed.
# Packages stay installed. Safe to run when nothing is running.
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/args.sh"
electra_help_if_asked "$@"
keep_munge=0 purge=0
for arg in "$@"; do
  case "$arg" in
    --keep-munge) keep_munge=1 ;;
    --purge) purge=1 ;;
    *) echo "error: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/remove_within.sh"
start=$SECONDS
log() { printf '[stop_local_slurm %3ds] %s\n' "$((SECONDS - start))" "$*"; }

dir="${SLURM_LOCAL_DIR:-/tmp/electra-slurm}"
conf="$dir/slurm.conf"
if [[ ! -d "$dir" ]]; then
  log "nothing to stop ($dir does not exist)"
  exit 0
fi

# stop_pid NAME PID: SIGTERM, wait up to 5 s, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed $name (pid $pid) with SIGKILL after 5 s"
}

# PIDs of slurmstepd processes that have a file of this Slurm ($dir/...) open.
our_stepds() {
  local p
  for p in /proc/[0-9]*; do
    [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
    if find "$p/fd" -mindepth 1 -maxdepth 1 -lname "$dir/*" 2>/dev/null | grep -q .; then
      echo "${p#/proc/}"
    fi
  done
}

# 1. Cancel jobs while the daemons still run, so the step daemons end their tasks.
if [[ -e "$conf" ]] && SLURM_CONF="$conf" scontrol ping >/dev/null 2>&1; then
  jobs="$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
  if [[ -n "${jobs// /}" ]]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    SLURM_CONF="$conf" scancel $jobs 2>/dev/null || true
    for _ in $(seq 30); do
      [[ -z "$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null)" ]] && break
      sleep 0.1
    done
  fi
fi

# 2. The daemons, by PID.
for d in slurmd slurmctld; do
  pid_file="$dir/run/$d.pid"
  if [[ -s "$pid_file" ]]; then
    pid="$(cat "$pid_file")"
    # Only if that PID still runs this daemon (not a reused PID after a reboot).
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$d" ]]; then
      stop_pid "$d" "$pid"
    fi
    rm -f "$pid_file"
  fi
done

# 3. Leftover step daemons of this Slurm, and their tasks' process groups.
for pid in $(our_stepds); do
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    pgid="$(ps -o pgid= -p "$child" 2>/dev/null | tr -d ' ')"
    [[ -n "$pgid" && "$pgid" != 0 ]] && kill -KILL -- "-$pgid" 2>/dev/null || true
    kill -KILL "$child" 2>/dev/null || true
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed leftover slurmstepd (pid $pid) and its tasks"
done

# 4. munged, only if start_local_slurm.sh started it.
if [[ $keep_munge == 0 && -s "$dir/run/munged.pid" ]]; then
  pid="$(cat "$dir/run/munged.pid")"
  if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == munged ]]; then
    stop_pid munged "$pid"
  fi
  rm -f "$dir/run/munged.pid"
fi

if [[ $purge == 1 ]]; then
  if [[ ! -f "$dir/settings" ]]; then
    echo "error: not purging $dir: it has no settings file, so start_local_slurm.sh did not make it" >&2
    exit 1
  fi
  remove_within "$(dirname -- "$dir")" "$dir"
  log "removed $dir"
fi
log "done in $((SECONDS - start)) s"
