#!/usr/bin/env bash
# Two-phase ELECTRA pretraining (phase 1 at sequence length 128, then phase 2 at 512 from the
# phase-1 checkpoint with the optimizer step reset), with the recipe's positional arguments:
#
#   bash scripts/run_pretraining.sh [batch_p1 lr_p1 precision num_gpus xla warmup_p1 steps_p1
#        save_steps resume optimizer accumulate accum_p1 seed job_name batch_p2 lr_p2 warmup_p2
#        steps_p2 accum_p2 model_size data_p1 data_p2 results_dir init_checkpoint]
#
#   precision: amp (float16 + loss scaling), bf16 (bfloat16), fp32 or tf32
#   xla: xla | no_xla        resume: true | false (continue phase 1 from its latest checkpoint)
#   accumulate: true | false (use accum_p1 / accum_p2 gradient accumulation steps)
#   data_p1/data_p2: TFRecord globs for sequence length 128 / 512 (data/create_datasets_from_start.sh)
#   results_dir: phase1/ and phase2/ folders (checkpoints, logs, run_config.json) are made here
#   init_checkpoint: None, or a folder with discriminator/ and generator/ model folders
# Presets: scripts/configs/pretrain_config.sh. Environment: PHASES=1 or PHASES=2 runs one phase
# only; EXTRA_ARGS adds run_pretraining.py flags to both phases (e.g. "--model_config my.json").
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

train_batch_size_p1=${1:-176}
learning_rate_p1=${2:-6e-3}
precision=${3:-amp}
num_gpus=${4:-8}
xla=${5:-xla}
warmup_steps_p1=${6:-2000}
train_steps_p1=${7:-10000}
save_checkpoint_steps=${8:-500}
resume_training=${9:-false}
optimizer=${10:-lamb}
accumulate_gradients=${11:-true}
gradient_accumulation_steps_p1=${12:-48}
seed=${13:-12439}
job_name=${14:-electra_lamb_pretraining}
train_batch_size_p2=${15:-24}
learning_rate_p2=${16:-4e-3}
warmup_steps_p2=${17:-200}
train_steps_p2=${18:-930}
gradient_accumulation_steps_p2=${19:-144}
electra_model=${20:-base}
data_dir="$repo_dir/data"
data_p1=${21:-"$data_dir/tfrecord_lower_case_1_seq_len_128_random_seed_12345/wikicorpus_en/train/pretrain_data*"}
data_p2=${22:-"$data_dir/tfrecord_lower_case_1_seq_len_512_random_seed_12345/wikicorpus_en/train/pretrain_data*"}
results_dir=${23:-"$repo_dir/results/$job_name"}
init_checkpoint=${24:-None}
phases=${PHASES:-"1 2"}
read -r -a extra_args <<< "${EXTRA_ARGS:-}"

case "$precision" in
  amp) precision_flags=(--amp --amp_dtype float16) ;;
  bf16) precision_flags=(--amp --amp_dtype bfloat16) ;;
  fp32|tf32) precision_flags=(--no-amp) ;;
  *) echo "error: unknown precision '$precision' (amp, bf16, fp32 or tf32)" >&2; exit 2 ;;
esac
case "$xla" in
  xla) precision_flags+=(--xla) ;;
  no_xla) precision_flags+=(--no-xla) ;;
  *) echo "error: unknown xla setting '$xla' (xla or no_xla)" >&2; exit 2 ;;
esac
[[ "$accumulate_gradients" == "true" ]] || { gradient_accumulation_steps_p1=1; gradient_accumulation_steps_p2=1; }

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

if [[ " $phases " == *" 1 "* ]]; then
  phase1_flags=()
  if [[ "$resume_training" == "true" ]]; then phase1_flags+=(--restore_checkpoint latest); fi
  if [[ "$init_checkpoint" != "None" ]]; then phase1_flags+=(--init_checkpoint "$init_checkpoint"); fi
  run_phase 1 "$train_batch_size_p1" "$learning_rate_p1" "$warmup_steps_p1" "$train_steps_p1" \
    "$gradient_accumulation_steps_p1" 128 "$data_p1" "${phase1_flags[@]}"
  echo "Finished pretraining phase 1"
fi
if [[ " $phases " == *" 2 "* ]]; then
  run_phase 2 "$train_batch_size_p2" "$learning_rate_p2" "$warmup_steps_p2" "$train_steps_p2" \
    "$gradient_accumulation_steps_p2" 512 "$data_p2" --phase2 --restore_checkpoint "$results_dir/phase1/checkpoints"
  echo "Finished pretraining phase 2"
fi
