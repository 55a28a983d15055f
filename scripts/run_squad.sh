#!/usr/bin/env bash
# Fine-tune and/or evaluate ELECTRA on SQuAD with run_tf_squad.py, with the positional arguments
# of NVIDIA's recipe (same order and meaning), a few added at the end, then any extra
# run_tf_squad.py flags.
#
# Usage: bash scripts/run_squad.sh [electra_model epochs batch_size infer_batch_size learning_rate
#          precision num_gpu seed squad_version squad_dir results_dir init_checkpoint mode env
#          cache_dir max_steps vocab_file xla] [run_tf_squad.py flags...]
#
# Example, NVIDIA's 8-GPU A100 preset on Google's released ELECTRA-base (downloaded into the
# Hugging Face cache on first use; presets: scripts/configs/squad_config.sh):
#   bash scripts/run_squad.sh $(source scripts/configs/squad_config.sh && dgxa100_8gpu_amp) train_eval
#
# electra_model is a released google/electra-* name (fetched with huggingface_hub: HF_HOME,
# HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN apply), a model folder, or a size for random
# weights; init_checkpoint "None" starts from it. eval and prediction need a fine-tuned QA folder
# (RESULTS_DIR/model of a training run) as init_checkpoint and run one process.
# Writes into results_dir: predictions.json, eval_results.json, model/, checkpoints/, logs/ and
# logfile.txt. Sets up the environment with scripts/setup_env.sh.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"

electra_arg electra_model google/electra-base-discriminator "released name, model folder, or size (small, base, large)"
electra_arg epochs 2 "training epochs"
electra_arg batch_size 16 "training sequences per process"
electra_arg infer_batch_size '$batch_size' "prediction sequences per batch"
electra_arg learning_rate 4e-4 "peak learning rate"
electra_arg precision amp "amp (float16 + loss scaling), bf16, tf32 or fp32"
electra_arg num_gpu 8 "processes that fine-tune together, one per GPU (batch_size is per process)"
electra_arg seed 1 "random seed"
electra_arg squad_version 1.1 "1.1 or 2.0"
electra_arg squad_dir '$repo_dir/data/download/squad/v$squad_version' "folder with train-vX.json and dev-vX.json"
electra_arg results_dir results/ "output folder"
electra_arg init_checkpoint None "None, or a model folder (or released name) to start from"
electra_arg mode train_eval "train, eval, train_eval or prediction"
electra_arg env interactive "interactive: start num_gpu processes here; cluster: srun/mpirun started one copy per process"
electra_arg cache_dir '$squad_dir' "where featurized SQuAD is cached"
electra_arg max_steps -1 "stop after this many optimizer steps (-1: the epochs decide)"
electra_arg vocab_file '$repo_dir/vocab/vocab.txt' "WordPiece vocab.txt"
electra_arg xla "" "XLA compilation, a boolean (default: true with amp, as in the recipe, else false)"
electra_env EXTRA_SQUAD_ARGS "" "more run_tf_squad.py flags, after the arguments' ones (also from finetune_ckpts_on_squad.sh)"
ELECTRA_ALLOW_EXTRA=1
electra_parse_args "$@"
read -r -a extra_flags <<< "$EXTRA_SQUAD_ARGS"
extra_flags+=("${ELECTRA_EXTRA_ARGS[@]}")
source "$repo_dir/scripts/lib/finetune.sh"
finetune_check_precision
finetune_processes

flags=(--electra_model "$electra_model" --data_dir "$squad_dir" --output_dir "$results_dir"
       --cache_dir "$cache_dir" --vocab_file "$vocab_file" --do_lower_case
       --num_train_epochs "$epochs" --max_steps "$max_steps" --train_batch_size "$batch_size"
       --predict_batch_size "$infer_batch_size" --learning_rate "$learning_rate" --seed "$seed"
       --warmup_proportion 0.05 --weight_decay_rate 0.01 --layerwise_lr_decay 0.8
       --max_seq_length 384 --doc_stride 128 --max_query_length 64
       --joint_head --beam_size 5 --null_score_diff_threshold -5.6)
if [ "$init_checkpoint" != "None" ]; then flags+=(--init_checkpoint "$init_checkpoint"); fi
electra_set_precision_flags "$precision" "$xla"
flags+=("${ELECTRA_PRECISION_FLAGS[@]}")
case "$squad_version" in
  1.1) flags+=(--no-version_2_with_negative) ;;
  2.0) flags+=(--version_2_with_negative) ;;
  *) electra_die "squad_version must be 1.1 or 2.0, not '$squad_version'" ;;
esac
case "$mode" in
  train) flags+=(--do_train) ;;
  eval) flags+=(--do_predict --do_eval) ;;
  prediction) flags+=(--do_predict) ;;
  train_eval) flags+=(--do_train --do_predict --do_eval) ;;
  *) electra_die "mode must be train, eval, train_eval or prediction, not '$mode'" ;;
esac

launch_finetuning "$repo_dir/run_tf_squad.py" "${flags[@]}" "${extra_flags[@]}"
