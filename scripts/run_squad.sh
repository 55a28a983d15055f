#!/usr/bin/env bash
# Fine-tune and/or evaluate ELECTRA on SQuAD with run_tf_squad.py, with the positional arguments
# of NVIDIA's recipe (same order and meaning), two added at the end, then any extra flags:
#
#   bash scripts/run_squad.sh electra_model epochs batch_size infer_batch_size learning_rate \
#        precision num_gpu seed squad_version squad_dir results_dir init_checkpoint mode env \
#        cache_dir max_steps vocab_file xla [extra run_tf_squad.py flags...]
#
#   precision  amp (mixed float16; XLA on unless xla says otherwise, as in the recipe) | tf32 | fp32
#   num_gpu    processes that fine-tune together, one per GPU (batch_size is per process); eval and
#              prediction modes predict in one process
#   mode       train | eval | train_eval | prediction
#   env        interactive: start num_gpu processes here (scripts/launch_processes.sh: horovodrun, or
#              tf.distribute workers with ENGINE=tf_distribute) | cluster: srun/mpirun already started
#              one copy of this script per process, so run one (the engine follows the launcher)
#   xla        true | false (default: true with amp, false otherwise)
#
# Presets: bash scripts/run_squad.sh $(source scripts/configs/squad_config.sh && dgxa100_8gpu_amp)
# init_checkpoint "None" starts from electra_model (a released google/electra-* name in the local
# Hugging Face cache, a model folder, or a size for random weights); eval and prediction modes
# need a fine-tuned QA folder (RESULTS_DIR/model of a training run).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

electra_model=${1:-"google/electra-base-discriminator"}
epochs=${2:-"2"}
batch_size=${3:-"16"}
infer_batch_size=${4:-"$batch_size"}
learning_rate=${5:-"4e-4"}
precision=${6:-"amp"}
num_gpu=${7:-"8"}
seed=${8:-"1"}
squad_version=${9:-"1.1"}
squad_dir=${10:-"$repo_dir/data/download/squad/v$squad_version"}
results_dir=${11:-"results/"}
init_checkpoint=${12:-"None"}
mode=${13:-"train_eval"}
env=${14:-"interactive"}
cache_dir=${15:-"$squad_dir"}
max_steps=${16:-"-1"}
vocab_file=${17:-"$repo_dir/vocab/vocab.txt"}
source "$repo_dir/scripts/finetune_flags.sh"
xla=${18:-"$(default_xla "$precision")"}
extra_flags=("${@:19}")

finetune_processes "$num_gpu" "$env" "$mode" || exit 2

flags=(--electra_model "$electra_model" --data_dir "$squad_dir" --output_dir "$results_dir"
       --cache_dir "$cache_dir" --vocab_file "$vocab_file" --do_lower_case
       --num_train_epochs "$epochs" --max_steps "$max_steps" --train_batch_size "$batch_size"
       --predict_batch_size "$infer_batch_size" --learning_rate "$learning_rate" --seed "$seed"
       --warmup_proportion 0.05 --weight_decay_rate 0.01 --layerwise_lr_decay 0.8
       --max_seq_length 384 --doc_stride 128 --max_query_length 64
       --joint_head --beam_size 5 --null_score_diff_threshold -5.6)
if [ "$init_checkpoint" != "None" ]; then flags+=(--init_checkpoint "$init_checkpoint"); fi
add_precision_flags "$precision" "$xla" || exit 2
case "$squad_version" in
  1.1) flags+=(--no-version_2_with_negative) ;;
  2.0) flags+=(--version_2_with_negative) ;;
  *) echo "squad_version must be 1.1 or 2.0, got '$squad_version'" >&2; exit 2 ;;
esac
case "$mode" in
  train) flags+=(--do_train) ;;
  eval) flags+=(--do_predict --do_eval) ;;
  prediction) flags+=(--do_predict) ;;
  train_eval) flags+=(--do_train --do_predict --do_eval) ;;
  *) echo "mode must be train, eval, train_eval or prediction, got '$mode'" >&2; exit 2 ;;
esac

launch_finetuning "$repo_dir/run_tf_squad.py" "$results_dir" "${extra_flags[@]}"
