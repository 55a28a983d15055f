#!/usr/bin/env bash
# Fine-tune every checkpoint of a pretraining run on SQuAD: each RESULTS_DIR/checkpoints/ckpt-N
# is post-processed into RESULTS_DIR/postprocessed/ckpt-N/{discriminator,generator}, then its
# discriminator is fine-tuned and evaluated by scripts/run_squad.sh into RESULTS_DIR/squad/ckpt-N.
#
#   bash scripts/finetune_ckpts_on_squad.sh RESULTS_DIR [PRESET] [mode env cache_dir max_steps vocab_file xla [flags...]]
#
# PRESET is a function of scripts/configs/squad_config.sh (default dgx1_8gpu_amp); its model
# name, results folder and init checkpoint are replaced by the checkpoint's. The remaining
# arguments are run_squad.sh's arguments 13 onwards (default mode train_eval).
# Run it in the project's environment (source scripts/setup_env.sh).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results_dir=${1:?"usage: $0 RESULTS_DIR [PRESET] [run_squad.sh arguments 13...]"}
preset=${2:-"dgx1_8gpu_amp"}
vocab_file=${VOCAB_FILE:-"$repo_dir/vocab/vocab.txt"}

source "$repo_dir/scripts/configs/squad_config.sh"
read -r -a preset_args <<< "$("$preset")"
mapfile -t checkpoints < <(find "$results_dir/checkpoints" -maxdepth 1 -name 'ckpt-*.index' | sed 's/\.index$//' | sort -V)
if [ "${#checkpoints[@]}" -eq 0 ]; then
  echo "no checkpoints (ckpt-*.index) in $results_dir/checkpoints" >&2
  exit 1
fi

for checkpoint in "${checkpoints[@]}"; do
  name=$(basename "$checkpoint")
  folder="$results_dir/postprocessed/$name"
  echo "==================================== START $checkpoint ===================================="
  python "$repo_dir/postprocess_pretrained_ckpt.py" --pretrained_checkpoint "$checkpoint" --output_dir "$folder" \
         --vocab_file "$vocab_file"
  squad_args=("${preset_args[@]}")
  squad_args[0]="$folder/discriminator"
  squad_args[10]="$results_dir/squad/$name"
  squad_args[11]=None
  bash "$repo_dir/scripts/run_squad.sh" "${squad_args[@]}" "${@:3}"
  echo "====================================  END $checkpoint  ===================================="
done
