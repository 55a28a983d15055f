#!/usr/bin/env bash
# Two-phase ELECTRA pretraining (phase 1 at sequence length 128, then phase 2 at 512 from the
# phase-1 checkpoint with the optimizer step reset), with the recipe's positional arguments.
#
# Usage: bash scripts/run_pretraining.sh [batch_p1 lr_p1 precision num_gpus xla warmup_p1 steps_p1
#          save_steps resume optimizer accumulate accum_p1 seed job_name batch_p2 lr_p2 warmup_p2
#          steps_p2 accum_p2 model_size data_p1 data_p2 results_dir init_checkpoint]
#
# Example, NVIDIA's DGX A100 preset on one 8-GPU node (presets: scripts/configs/pretrain_config.sh):
#   bash scripts/run_pretraining.sh $(source scripts/configs/pretrain_config.sh && dgxa100_8gpu_amp)
#
# Writes RESULTS_DIR/phase1/ and RESULTS_DIR/phase2/ (checkpoints/, logs/, run_config.json and a
# log file per phase). Sets up the environment with scripts/setup_env.sh and starts num_gpus
# processes with scripts/launch_processes.sh (ENGINE=horovod or tf_distribute).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"

electra_arg train_batch_size_p1 176 "phase-1 sequences per process and micro-batch"
electra_arg learning_rate_p1 6e-3 "phase-1 peak learning rate"
electra_arg precision amp "amp (float16 + loss scaling), bf16, tf32 or fp32"
electra_arg num_gpus 8 "processes, one per GPU"
electra_arg xla xla "XLA compilation: xla / no_xla (or a boolean)"
electra_arg warmup_steps_p1 2000 "phase-1 warm-up steps"
electra_arg train_steps_p1 10000 "phase-1 optimizer steps"
electra_arg save_checkpoint_steps 500 "optimizer steps between checkpoints"
electra_arg resume_training false "continue phase 1 from its latest checkpoint (boolean)"
electra_arg optimizer lamb "lamb or adam"
electra_arg accumulate_gradients true "use accum_p1 / accum_p2 (boolean; false: 1 micro-batch per step)"
electra_arg gradient_accumulation_steps_p1 48 "phase-1 micro-batches per optimizer step"
electra_arg seed 12439 "random seed"
electra_arg job_name electra_lamb_pretraining "name of the run (logs, default results folder)"
electra_arg train_batch_size_p2 24 "phase-2 sequences per process and micro-batch"
electra_arg learning_rate_p2 4e-3 "phase-2 peak learning rate"
electra_arg warmup_steps_p2 200 "phase-2 warm-up steps"
electra_arg train_steps_p2 930 "phase-2 optimizer steps"
electra_arg gradient_accumulation_steps_p2 144 "phase-2 micro-batches per optimizer step"
electra_arg electra_model base "model size: small, base or large (EXTRA_ARGS=--model_config F for others)"
electra_arg data_p1 '$repo_dir/data/tfrecord_lower_case_1_seq_len_128_random_seed_12345/wikicorpus_en/train/pretrain_data*' \
  "phase-1 TFRecord glob, sequence length 128 (data/create_datasets_from_start.sh)"
electra_arg data_p2 '$repo_dir/data/tfrecord_lower_case_1_seq_len_512_random_seed_12345/wikicorpus_en/train/pretrain_data*' \
  "phase-2 TFRecord glob, sequence length 512"
electra_arg results_dir '$repo_dir/results/$job_name' "phase1/ and phase2/ are made here"
electra_arg init_checkpoint None "None, or a folder with discriminator/ and generator/ model folders to start from"
electra_env PHASES "1 2" "the phases to run: \"1 2\", 1 or 2"
electra_env EXTRA_ARGS "" "more run_pretraining.py flags for both phases, e.g. \"--model_config my.json\""
electra_parse_args "$@"
electra_precision precision
electra_bool xla xla no_xla
electra_bool resume_training
electra_bool accumulate_gradients
case " $PHASES " in
  " 1 2 "|" 1 "|" 2 ") ;;
  *) electra_die "PHASES must be \"1 2\", 1 or 2, not '$PHASES'" ;;
esac
read -r -a extra_args <<< "$EXTRA_ARGS"
electra_set_precision_flags "$precision" "$xla"
precision_flags=("${ELECTRA_PRECISION_FLAGS[@]}")
[[ "$accumulate_gradients" == true ]] || { gradient_accumulation_steps_p1=1; gradient_accumulation_steps_p2=1; }

source "$repo_dir/scripts/setup_env.sh"
source "$repo_dir/scripts/launch_processes.sh"

run_phase() {  # phase batch lr warmup steps accumulation seq_len data [extra flags...]
  local phase=$1 batch=$2 lr=$3 warmup=$4 steps=$5 accumulation=$6 seq_len=$7 data=$8
  shift 8
  local out="$results_dir/phase$phase"
  mkdir -p "$out"
  local log="$out/$job_name.phase$phase.$precision.$(date +%y%m%d%H%M%S).log"
  echo "Phase $phase: logs in $log"
  launch_processes "$num_gpus" python "$repo_dir/run_pretraining.py" \
    --model_name "$job_name" --model_size "$electra_model" --pretrain_tfrecords "$data" \
    --max_seq_length "$seq_len" --train_batch_size "$batch" --gradient_accumulation_steps "$accumulation" \
    --learning_rate "$lr" --num_warmup_steps "$warmup" --num_train_steps "$steps" \
    --save_checkpoints_steps "$save_checkpoint_steps" --optimizer "$optimizer" --skip_adaptive \
    --opt_beta_1 0.878 --opt_beta_2 0.974 --lr_decay_power 0.5 --disc_weight 50.0 \
    --seed "$seed" --results_dir "$out" "${precision_flags[@]}" "${extra_args[@]}" "$@" 2>&1 | tee "$log"
}

if [[ " $PHASES " == *" 1 "* ]]; then
  phase1_flags=()
  if [[ "$resume_training" == true ]]; then phase1_flags+=(--restore_checkpoint latest); fi
  if [[ "$init_checkpoint" != "None" ]]; then phase1_flags+=(--init_checkpoint "$init_checkpoint"); fi
  run_phase 1 "$train_batch_size_p1" "$learning_rate_p1" "$warmup_steps_p1" "$train_steps_p1" \
    "$gradient_accumulation_steps_p1" 128 "$data_p1" "${phase1_flags[@]}"
  echo "Finished pretraining phase 1"
fi
if [[ " $PHASES " == *" 2 "* ]]; then
  run_phase 2 "$train_batch_size_p2" "$learning_rate_p2" "$warmup_steps_p2" "$train_steps_p2" \
    "$gradient_accumulation_steps_p2" 512 "$data_p2" --phase2 --restore_checkpoint "$results_dir/phase1/checkpoints"
  echo "Finished pretraining phase 2"
fi
