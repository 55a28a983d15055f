#!/usr/bin/env bash
# Fine-tune and/or evaluate ELECTRA on a GLUE task (or your own task in the same layout) with
# run_tf_glue.py; positional arguments in the style of scripts/run_squad.sh, then any extra flags:
#
#   bash scripts/run_glue.sh task_name electra_model epochs batch_size infer_batch_size \
#        learning_rate precision num_gpu seed glue_dir results_dir init_checkpoint mode env \
#        max_steps vocab_file xla [extra run_tf_glue.py flags...]
#
#   task_name  cola sst-2 mrpc sts-b qqp mnli qnli rte wnli, or any other name for your own task
#   glue_dir   the task's folder of train.tsv/dev.tsv/test.tsv (default for GLUE tasks:
#              data/download/glue/<Task>, where data/dataPrep.py --dataset glue puts them)
#   precision  amp (mixed float16; XLA on unless xla says otherwise) | tf32 | fp32
#   num_gpu    processes that fine-tune together, one per GPU (batch_size is per process); eval and
#              prediction modes run in one process
#   mode       train | eval | train_eval | prediction (test-set predictions in GLUE's submission
#              format) | train_eval_predict
#   env        interactive: start num_gpu processes here (scripts/launch_processes.sh: horovodrun, or
#              tf.distribute workers with ENGINE=tf_distribute) | cluster: srun/mpirun already started
#              one copy of this script per process, so run one (the engine follows the launcher)
#   xla        true | false (default: true with amp, false otherwise)
#
# Presets: bash scripts/run_glue.sh $(source scripts/configs/glue_config.sh && dgxa100_1gpu_amp mnli)
# init_checkpoint "None" starts from electra_model (a released google/electra-* name in the local
# Hugging Face cache, a model folder, or a size for random weights); eval and prediction modes
# need a fine-tuned classifier folder (RESULTS_DIR/model of a training run).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

task_name=${1:-"mrpc"}
electra_model=${2:-"google/electra-base-discriminator"}
epochs=${3:-"3"}
batch_size=${4:-"32"}
infer_batch_size=${5:-"128"}
learning_rate=${6:-"1e-4"}
precision=${7:-"amp"}
num_gpu=${8:-"1"}
seed=${9:-"1"}
glue_dir=${10:-"default"}
results_dir=${11:-"results/glue_$task_name"}
init_checkpoint=${12:-"None"}
mode=${13:-"train_eval"}
env=${14:-"interactive"}
max_steps=${15:-"-1"}
vocab_file=${16:-"$repo_dir/vocab/vocab.txt"}
source "$repo_dir/scripts/finetune_flags.sh"
xla=${17:-"$(default_xla "$precision")"}
extra_flags=("${@:18}")

if [ "$glue_dir" = "default" ]; then
  case "${task_name,,}" in
    cola) folder=CoLA ;; sst-2|sst2) folder=SST-2 ;; mrpc) folder=MRPC ;; sts-b|stsb) folder=STS-B ;;
    qqp) folder=QQP ;; mnli) folder=MNLI ;; qnli) folder=QNLI ;; rte) folder=RTE ;; wnli) folder=WNLI ;;
    *) echo "glue_dir is needed for the custom task '$task_name' (a folder of train.tsv/dev.tsv/test.tsv)" >&2
       exit 2 ;;
  esac
  glue_dir="$repo_dir/data/download/glue/$folder"
fi
finetune_processes "$num_gpu" "$env" "$mode" || exit 2

flags=(--task_name "$task_name" --electra_model "$electra_model" --data_dir "$glue_dir"
       --output_dir "$results_dir" --vocab_file "$vocab_file" --do_lower_case
       --num_train_epochs "$epochs" --max_steps "$max_steps" --train_batch_size "$batch_size"
       --predict_batch_size "$infer_batch_size" --learning_rate "$learning_rate" --seed "$seed"
       --max_seq_length 128)
if [ "$init_checkpoint" != "None" ]; then flags+=(--init_checkpoint "$init_checkpoint"); fi
add_precision_flags "$precision" "$xla" || exit 2
case "$mode" in
  train) flags+=(--do_train) ;;
  eval) flags+=(--do_eval) ;;
  prediction) flags+=(--do_predict) ;;
  train_eval) flags+=(--do_train --do_eval) ;;
  train_eval_predict) flags+=(--do_train --do_eval --do_predict) ;;
  *) echo "mode must be train, eval, train_eval, prediction or train_eval_predict, got '$mode'" >&2; exit 2 ;;
esac

launch_finetuning "$repo_dir/run_tf_glue.py" "$results_dir" "${extra_flags[@]}"
