#!/usr/bin/env bash
# What the fine-tuning launchers (scripts/run_squad.sh, scripts/run_glue.sh) share; source it
# after scripts/lib/args.sh, once the arguments are parsed:
#   finetune_check_precision           checks `precision`; an empty `xla` becomes true with amp (as
#                                      in the recipe), else false; checks `xla`
#   finetune_processes                 sets `processes` from `num_gpu`, `env` and `mode`: num_gpu, or
#                                      1 under a cluster launcher and in the modes that only predict
#   launch_finetuning PROGRAM ARGS...  sets up the environment, then runs `python PROGRAM ARGS...` as
#                                      `processes` processes (scripts/launch_processes.sh), the output
#                                      also in $results_dir/logfile.txt

finetune_check_precision() {
  electra_precision precision
  if [[ -z "$xla" ]]; then
    if [[ "$precision" == amp ]]; then xla=true; else xla=false; fi
  fi
  electra_bool xla
}

finetune_processes() {
  case "$env" in
    interactive|cluster) ;;
    *) electra_die "env must be interactive or cluster, not '$env'" ;;
  esac
  processes=$num_gpu
  if [ "$env" = "cluster" ]; then processes=1; fi
  if [ "$mode" = "eval" ] || [ "$mode" = "prediction" ]; then
    if [ "$num_gpu" != "1" ]; then echo "num_gpu=$num_gpu: $mode mode only predicts, which runs in one process."; fi
    processes=1
  fi
}

launch_finetuning() {
  local lib_dir
  lib_dir="$(dirname "${BASH_SOURCE[0]}")"
  source "$lib_dir/../setup_env.sh"
  source "$lib_dir/../launch_processes.sh"
  mkdir -p "$results_dir"
  local command=(python "$@")
  echo "$processes process(es): ${command[*]}"
  launch_processes "$processes" "${command[@]}" 2>&1 | tee "$results_dir/logfile.txt"
}
