#!/usr/bin/env bash
# Fine-tune every checkpoint of a pretraining run on SQuAD: each checkpoint ckpt-N is
# post-processed into RESULTS_DIR/postprocessed/ckpt-N/{discriminator,generator}, then its
# discriminator is fine-tuned and evaluated by scripts/run_squad.sh into RESULTS_DIR/squad/ckpt-N.
#
# Usage: bash scripts/finetune_ckpts_on_squad.sh RESULTS_DIR [PRESET] [mode env cache_dir max_steps
#          vocab_file xla [run_tf_squad.py flags...]]
#
# Example, the checkpoints of scripts/run_pretraining.sh's default run on one DGX A100:
#   bash scripts/finetune_ckpts_on_squad.sh results/electra_lamb_pretraining dgxa100_8gpu_amp
#
# RESULTS_DIR is scripts/run_pretraining.sh's results folder: the checkpoints are taken from
# RESULTS_DIR/phase2/checkpoints, or RESULTS_DIR/phase1/checkpoints when there is no phase 2 (a
# folder that holds checkpoints/ itself, such as one phase's results_dir, works too). PRESET is
# a function of scripts/configs/squad_config.sh; its model name, results folder and init
# checkpoint are replaced by the checkpoint's. The remaining arguments are run_squad.sh's
# arguments 13 onwards. Sets up the environment with scripts/setup_env.sh.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"

electra_arg results_dir "" "scripts/run_pretraining.sh's results folder (required)"
electra_arg preset dgx1_8gpu_amp "a preset function of scripts/configs/squad_config.sh"
electra_env VOCAB_FILE '$repo_dir/vocab/vocab.txt' "WordPiece vocab.txt of the pretraining run"
ELECTRA_ALLOW_EXTRA=1
electra_parse_args "$@"
squad_args_13_on=("${ELECTRA_EXTRA_ARGS[@]}")
[[ -n "$results_dir" ]] || electra_die "RESULTS_DIR is required (see --help)"

source "$repo_dir/scripts/configs/squad_config.sh"
presets=$(sed -n 's/^\([a-z0-9_]*\) *() *{ *squad_preset .*/\1/p' "$repo_dir/scripts/configs/squad_config.sh" | tr '\n' ' ')
[[ " $presets " == *" $preset "* ]] || electra_die "unknown preset '$preset' (one of: ${presets% })"

# The newest phase's checkpoints: phase 2 when it ran, else phase 1, else RESULTS_DIR itself.
checkpoint_dir=""
for candidate in "$results_dir/phase2/checkpoints" "$results_dir/phase1/checkpoints" "$results_dir/checkpoints"; do
  if compgen -G "$candidate/ckpt-*.index" >/dev/null; then checkpoint_dir=$candidate; break; fi
done
if [[ -z "$checkpoint_dir" ]]; then
  echo "error: no checkpoints (ckpt-*.index) in $results_dir/phase2/checkpoints, $results_dir/phase1/checkpoints or $results_dir/checkpoints" >&2
  exit 1
fi
mapfile -t checkpoints < <(find "$checkpoint_dir" -maxdepth 1 -name 'ckpt-*.index' | sed 's/\.index$//' | sort -V)
read -r -a preset_args <<< "$("$preset")"

source "$repo_dir/scripts/setup_env.sh"
echo "Fine-tuning ${#checkpoints[@]} checkpoint(s) of $checkpoint_dir with preset $preset"
for checkpoint in "${checkpoints[@]}"; do
  name=$(basename "$checkpoint")
  folder="$results_dir/postprocessed/$name"
  echo "==================================== START $checkpoint ===================================="
  python "$repo_dir/postprocess_pretrained_ckpt.py" --pretrained_checkpoint "$checkpoint" --output_dir "$folder" \
         --vocab_file "$VOCAB_FILE"
  squad_args=("${preset_args[@]}")
  squad_args[0]="$folder/discriminator"
  squad_args[10]="$results_dir/squad/$name"
  squad_args[11]=None
  bash "$repo_dir/scripts/run_squad.sh" "${squad_args[@]}" "${squad_args_13_on[@]}"
  echo "====================================  END $checkpoint  ===================================="
done
