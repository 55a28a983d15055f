#!/usr/bin/env bash
# launch_processes NUM COMMAND...: run COMMAND in NUM processes on this machine (one per GPU).
# Sourced by the launchers. One process runs the command directly.
launch_processes() {
  local num_processes=$1
  shift
  if (( num_processes <= 1 )); then
    "$@"
    return
  fi
  echo "error: $num_processes processes need the multi-process engine, which is not available yet" >&2
  return 2
}
