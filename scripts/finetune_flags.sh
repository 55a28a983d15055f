#!/usr/bin/env bash
# What the fine-tuning launchers (scripts/run_squad.sh, scripts/run_glue.sh) share; sourced.
#   finetune_processes NUM_GPU ENV MODE   sets `processes`: NUM_GPU, or 1 under a cluster launcher
#                                        (ENV=cluster) and in the modes that only predict (eval, prediction)
#   add_precision_flags PRECISION XLA     appends --amp/--no-amp and --xla/--no-xla to the array `flags`
#   default_xla PRECISION                 prints XLA's default: true with amp, false otherwise
#   launch_finetuning PROGRAM RESULTS_DIR EXTRA...  runs `python PROGRAM "${flags[@]}" EXTRA...` as
#                                        `processes` processes (scripts/launch_processes.sh), the
#                                        output also in RESULTS_DIR/logfile.txt
# Each returns 2 with a message on a value it does not know.
finetune_processes() {
  local num_gpu=$1 env=$2 mode=$3
  case "$env" in
    interactive|cluster) ;;
    *) echo "env must be interactive or cluster, got '$env'" >&2; return 2 ;;
  esac
  processes=$num_gpu
  if [ "$env" = "cluster" ]; then processes=1; fi
  if [ "$mode" = "eval" ] || [ "$mode" = "prediction" ]; then
    if [ "$num_gpu" != "1" ]; then echo "num_gpu=$num_gpu: $mode mode only predicts, which runs in one process."; fi
    processes=1
  fi
}

default_xla() {
  if [ "$1" = "amp" ]; then echo true; else echo false; fi
}

add_precision_flags() {
  local precision=$1 xla=$2
  case "$precision" in
    amp) flags+=(--amp) ;;
    tf32|fp32) flags+=(--no-amp) ;;
    *) echo "precision must be amp, tf32 or fp32, got '$precision'" >&2; return 2 ;;
  esac
  case "$xla" in
    true) flags+=(--xla) ;;
    false) flags+=(--no-xla) ;;
    *) echo "xla must be true or false, got '$xla'" >&2; return 2 ;;
  esac
}

launch_finetuning() {
  local program=$1 results_dir=$2
  shift 2
  source "$(dirname "${BASH_SOURCE[0]}")/launch_processes.sh"
  mkdir -p "$results_dir"
  local command=(python "$program" "${flags[@]}" "$@")
  echo "$processes process(es): ${command[*]}"
  launch_processes "$processes" "${command[@]}" 2>&1 | tee "$results_dir/logfile.txt"
}
