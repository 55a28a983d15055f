#!/usr/bin/env bash
# launch_processes NUM COMMAND...: run COMMAND as NUM processes on this machine, one per GPU,
# with the engine in $ENGINE: horovod (horovodrun over Gloo; the default when Horovod imports)
# or tf_distribute (NUM processes with a TF_CONFIG each, workers on 127.0.0.1 from port
# $ELECTRA_BASE_PORT, default 23456). Sourced by the launchers. One process runs the command
# directly. Every process gets LOCAL_RANK; if one fails, the others are stopped.
#
# Usage: source scripts/launch_processes.sh; launch_processes NUM COMMAND...
# Example: source scripts/launch_processes.sh && ENGINE=tf_distribute launch_processes 2 python run_pretraining.py ...
# Run as a program (bash scripts/launch_processes.sh) it only prints this text.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/args.sh"
  electra_usage "${BASH_SOURCE[0]}"
  electra_help_requested "$@"; exit $?  # 0 for --help, 1 otherwise: it does nothing when run
fi

launch_processes() {
  local num_processes=$1
  shift
  if (( num_processes <= 1 )); then
    "$@"
    return
  fi
  local engine=${ENGINE:-}
  if [[ -z "$engine" ]]; then
    if python -c 'import horovod.tensorflow' >/dev/null 2>&1; then engine=horovod; else engine=tf_distribute; fi
  fi
  case "$engine" in
    horovod) horovodrun --gloo -np "$num_processes" -H "localhost:$num_processes" "$@" ;;
    tf_distribute) _launch_tf_distribute "$num_processes" "$@" ;;
    *) echo "error: unknown ENGINE '$engine' (horovod or tf_distribute)" >&2; return 2 ;;
  esac
}

_launch_tf_distribute() {
  local num_processes=$1
  shift
  local port=${ELECTRA_BASE_PORT:-23456} workers="" pids=() status=0 i
  for ((i = 0; i < num_processes; i++)); do
    workers+="${workers:+,}\"127.0.0.1:$((port + i))\""
  done
  for ((i = 0; i < num_processes; i++)); do
    TF_CONFIG="{\"cluster\": {\"worker\": [$workers]}, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
      LOCAL_RANK=$i "$@" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      status=1
      echo "error: process $i failed; stopping the others" >&2
      kill "${pids[@]}" 2>/dev/null || true
    fi
  done
  trap - INT TERM
  return $status
}
