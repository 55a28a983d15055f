#!/usr/bin/env bash
# Fine-tune and/or evaluate ELECTRA on a GLUE task (or your own task in the same layout) with
# run_tf_glue.py; positional arguments in the style of scripts/run_squad.sh, then any extra
# run_tf_glue.py flags.
#
# Usage: bash scripts/run_glue.sh [task_name electra_model epochs batch_size infer_batch_size
#          learning_rate precision num_gpu seed glue_dir results_dir init_checkpoint mode env
#          max_steps vocab_file xla] [run_tf_glue.py flags...]
#
# Example, MRPC on Google's released ELECTRA-base with NVIDIA-style presets
# (scripts/configs/glue_config.sh), after `python data/dataPrep.py --dataset glue`:
#   bash scripts/run_glue.sh $(source scripts/configs/glue_config.sh && dgxa100_1gpu_amp mrpc)
#
# task_name is one of cola sst-2 mrpc sts-b qqp mnli qnli rte wnli, or any other name for your
# own task (then glue_dir is needed: a folder of train.tsv/dev.tsv/test.tsv, see docs/glue.md).
# mode is train, eval, train_eval, prediction (test-set predictions in GLUE's submission format)
# or train_eval_predict. eval and prediction need a fine-tuned classifier folder
# (RESULTS_DIR/model of a training run) as init_checkpoint and run one process.
# Writes into results_dir: eval_results.json, the submission files, model/, checkpoints/, logs/
# and logfile.txt. Sets up the environment with scripts/setup_env.sh.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"

electra_arg task_name mrpc "cola sst-2 mrpc sts-b qqp mnli qnli rte wnli, or your own task's name"
electra_arg electra_model google/electra-base-discriminator "released name, model folder, or size (small, base, large)"
electra_arg epochs 3 "training epochs"
electra_arg batch_size 32 "training sequences per process"
electra_arg infer_batch_size 128 "prediction sequences per batch"
electra_arg learning_rate 1e-4 "peak learning rate"
electra_arg precision amp "amp (float16 + loss scaling), bf16, tf32 or fp32"
electra_arg num_gpu 1 "processes that fine-tune together, one per GPU (batch_size is per process)"
electra_arg seed 1 "random seed"
electra_arg glue_dir default "the task's folder (default for GLUE tasks: data/download/glue/<Task>)"
electra_arg results_dir 'results/glue_$task_name' "output folder"
electra_arg init_checkpoint None "None, or a model folder (or released name) to start from"
electra_arg mode train_eval "train, eval, train_eval, prediction or train_eval_predict"
electra_arg env interactive "interactive: start num_gpu processes here; cluster: srun/mpirun started one copy per process"
electra_arg max_steps -1 "stop after this many optimizer steps (-1: the epochs decide)"
electra_arg vocab_file '$repo_dir/vocab/vocab.txt' "WordPiece vocab.txt"
electra_arg xla "" "XLA compilation, a boolean (default: true with amp, as in the recipe, else false)"
ELECTRA_ALLOW_EXTRA=1
electra_parse_args "$@"
extra_flags=("${ELECTRA_EXTRA_ARGS[@]}")
source "$repo_dir/scripts/lib/finetune.sh"
finetune_check_precision
finetune_processes

if [ "$glue_dir" = "default" ]; then
  case "${task_name,,}" in
    cola) folder=CoLA ;; sst-2|sst2) folder=SST-2 ;; mrpc) folder=MRPC ;; sts-b|stsb) folder=STS-B ;;
    qqp) folder=QQP ;; mnli) folder=MNLI ;; qnli) folder=QNLI ;; rte) folder=RTE ;; wnli) folder=WNLI ;;
    *) electra_die "glue_dir is needed for the custom task '$task_name' (a folder of train.tsv/dev.tsv/test.tsv)" ;;
  esac
  glue_dir="$repo_dir/data/download/glue/$folder"
fi

flags=(--task_name "$task_name" --electra_model "$electra_model" --data_dir "$glue_dir"
       --output_dir "$results_dir" --vocab_file "$vocab_file" --do_lower_case
       --num_train_epochs "$epochs" --max_steps "$max_steps" --train_batch_size "$batch_size"
       --predict_batch_size "$infer_batch_size" --learning_rate "$learning_rate" --seed "$seed"
       --max_seq_length 128)
if [ "$init_checkpoint" != "None" ]; then flags+=(--init_checkpoint "$init_checkpoint"); fi
electra_set_precision_flags "$precision" "$xla"
flags+=("${ELECTRA_PRECISION_FLAGS[@]}")
case "$mode" in
  train) flags+=(--do_train) ;;
  eval) flags+=(--do_eval) ;;
  prediction) flags+=(--do_predict) ;;
  train_eval) flags+=(--do_train --do_eval) ;;
  train_eval_predict) flags+=(--do_train --do_eval --do_predict) ;;
  *) electra_die "mode must be train, eval, train_eval, prediction or train_eval_predict, not '$mode'" ;;
esac

launch_finetuning "$repo_dir/run_tf_glue.py" "${flags[@]}" "${extra_flags[@]}"
