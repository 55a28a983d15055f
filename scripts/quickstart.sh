#!/usr/bin/env bash
# The whole recipe on the shipped sample corpus (five Austen novels; Persuasion held out), in
# about 15 minutes on 2 CPU cores (docs/quickstart.md):
#
#   env          virtual environment with the requirements (scripts/setup_env.sh)
#   data         TFRecords at the pretraining sequence length (data/create_datasets_from_start.sh)
#   squad_data   cloze questions in SQuAD v1.1 format (data/cloze_squad.py), a long word blanked:
#                train on the five novels, dev on Persuasion; the dev scores of trivial baselines
#   pretrain     ELECTRA phase 1 (scripts/run_pretraining.sh): ELECTRA-small's width with 4 of
#                its 12 layers (scripts/configs/quickstart_model.json), a bounded number of steps
#   postprocess  discriminator/ and generator/ model folders (postprocess_pretrained_ckpt.py)
#   finetune     SQuAD fine-tuning from the pretrained discriminator and evaluation, EM/F1
#                (scripts/run_squad.sh)
#   inference    one dev question answered by run_inference.py
#   finetune_random  the same fine-tuning from random weights of the same shape: what the
#                pretraining brings is the difference
# With --compare-mlm, ELECTRA's headline comparison at this scale, three more stages:
#   pretrain_mlm     the masked-LM-only control (run_pretraining.py --objective masked_lm): the
#                generator alone at the discriminator's size, for as many steps as take the same
#                time as the pretrain stage's on a CPU (PRETRAIN_MLM_STEPS, docs/quickstart.md)
#   postprocess_mlm  its generator/ model folder
#   finetune_mlm     the same fine-tuning from it
#
# Usage: bash scripts/quickstart.sh [--results DIR] [--stage NAME]... [--reduced] [--compare-mlm]
#   --results DIR   the results folder (default: results/quickstart)
#   --stage NAME    run only this stage (repeatable), from scratch even if it finished; the
#                   stages before it must have finished, the later ones will be redone
#   --reduced       a few steps and questions only (what CI runs): checks the pipeline, not quality
#   --compare-mlm   also pretrain and fine-tune the masked-LM-only control (about 7 more minutes)
# A re-run skips every finished stage (RESULTS/.done-<stage>) and resumes an interrupted
# pretraining or fine-tuning from its last checkpoint. Uses the GPU when there is one (float16
# and XLA), else bfloat16 where the CPU has bfloat16 instructions, else float32.
# Environment: PRETRAIN_STEPS, PRETRAIN_MLM_STEPS, PRETRAIN_SEQ_LENGTH, PRETRAIN_LR,
# FINETUNE_EPOCHS, FINETUNE_LR, CLOZE_BLANK (words | names), NUM_TRAIN_QUESTIONS,
# QUESTIONS_PER_PASSAGE, NUM_DEV_QUESTIONS override the settings of either mode.
#
# Example: bash scripts/quickstart.sh --results results/my_first_run
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
source "$repo_dir/scripts/lib/remove_within.sh"
all_stages=(data squad_data pretrain postprocess finetune inference finetune_random)
mlm_stages=(pretrain_mlm postprocess_mlm finetune_mlm)
every_stage=("${all_stages[@]}" "${mlm_stages[@]}")  # in the order they run

electra_help_if_asked "$@"
results_dir="$repo_dir/results/quickstart"
stages=()
reduced=false
compare_mlm=false
while (( $# )); do
  case "$1" in
    --results|--stage) [[ -n "${2:-}" && "$2" != -* ]] || electra_die "$1 needs a value (see --help)" ;;&
    --results) results_dir=$2; shift 2 ;;
    --stage)
      if [[ " ${every_stage[*]} " != *" $2 "* ]]; then
        electra_die "unknown stage '$2' (one of: ${every_stage[*]})"
      fi
      stages+=("$2"); shift 2 ;;
    --reduced) reduced=true; shift ;;
    --compare-mlm) compare_mlm=true; shift ;;
    *) electra_die "unknown argument '$1' (see --help)" ;;
  esac
done
mkdir -p "$results_dir"
results_dir="$(cd "$results_dir" && pwd)"

if [[ "$reduced" == true ]]; then
  pretrain_steps=${PRETRAIN_STEPS:-12} log_freq=3 train_questions=${NUM_TRAIN_QUESTIONS:-320}
  dev_questions=${NUM_DEV_QUESTIONS:-40} finetune_epochs=${FINETUNE_EPOCHS:-1} batch_size=16
else
  pretrain_steps=${PRETRAIN_STEPS:-400} log_freq=25 train_questions=${NUM_TRAIN_QUESTIONS:-12000}
  dev_questions=${NUM_DEV_QUESTIONS:-400} finetune_epochs=${FINETUNE_EPOCHS:-1} batch_size=32
fi
# Chosen by measurement (docs/quickstart.md): short sequences make a pretraining step cheap, so
# the budget buys more of them; several questions on each passage (each blanking another word)
# give the fine-tuning more reading practice than more passes over fewer questions.
pretrain_seq_length=${PRETRAIN_SEQ_LENGTH:-64} pretrain_lr=${PRETRAIN_LR:-5e-3}
finetune_lr=${FINETUNE_LR:-1e-3} cloze_blank=${CLOZE_BLANK:-words}
questions_per_passage=${QUESTIONS_PER_PASSAGE:-6}
# A masked-LM-only step runs no discriminator: on 2 CPU cores it takes 5/6 of the time of a
# replaced-token-detection step (95 against 79 sequences a second, docs/quickstart.md), so the
# same time buys 6/5 as many steps.
pretrain_mlm_steps=${PRETRAIN_MLM_STEPS:-$(( pretrain_steps * 6 / 5 ))}
model_config="$repo_dir/scripts/configs/quickstart_model.json"
novels=(emma mansfieldpark northangerabbey prideprejudice sensesensibility)
tfrecords="$results_dir/data/tfrecord_lower_case_1_seq_len_${pretrain_seq_length}_random_seed_12345/custom"
pretraining_dir="$results_dir/pretraining"
model_dir="$results_dir/postprocessed"
squad_dir="$results_dir/squad"
random_squad_dir="$results_dir/squad_random"
mlm_pretraining_dir="$results_dir/pretraining_mlm"
mlm_model_dir="$results_dir/postprocessed_mlm"
mlm_squad_dir="$results_dir/squad_mlm"
squad_flags=(--max_seq_length 96 --doc_stride 64 --max_query_length 32)

log() { echo "[quickstart $(date +%H:%M:%S)] $*"; }

# ----------------------------------------------------------------------------- stages

stage_data() {
  mkdir -p "$results_dir/corpus"
  for novel in "${novels[@]}"; do cp "$repo_dir/data/sample_corpus/austen/$novel.txt" "$results_dir/corpus/"; done
  DATA_DIR="$results_dir/data" SEQ_LENGTHS=$pretrain_seq_length PYTHON=python \
    bash "$repo_dir/data/create_datasets_from_start.sh" "$results_dir/corpus"
}

stage_squad_data() {
  python "$repo_dir/data/cloze_squad.py" --output-dir "$results_dir/squad_data" --version 1.1 \
    --num-train-questions "$train_questions" --num-dev-questions "$dev_questions" --blank "$cloze_blank" \
    --questions-per-passage "$questions_per_passage"
}

pretrain_into() {  # results folder, steps, objective (electra | masked_lm)
  local resume=false steps=$2
  if compgen -G "$1/phase1/checkpoints/ckpt-*.index" >/dev/null; then resume=true; fi
  # run_pretraining.sh's positional arguments: phase 1 only (PHASES=1), no accumulation.
  local extra="--model_config $model_config --max_seq_length $pretrain_seq_length --log_freq $log_freq"
  PHASES=1 EXTRA_ARGS="$extra --keep_checkpoint_max 2 --objective $3" bash "$repo_dir/scripts/run_pretraining.sh" \
    "$batch_size" "$pretrain_lr" "$pretrain_precision" 1 "$xla" $(( steps / 10 + 1 )) "$steps" 50 \
    "$resume" lamb false 1 12345 quickstart 8 1e-3 10 10 1 small \
    "$tfrecords/train/pretrain_data*" "$tfrecords/train/pretrain_data*" "$1" None
}

postprocess_into() {  # pretraining results folder, model folder
  python "$repo_dir/postprocess_pretrained_ckpt.py" --pretrained_checkpoint "$1/phase1/checkpoints" \
    --output_dir "$2" --vocab_file "$repo_dir/vocab/vocab.txt"
}

stage_pretrain() { pretrain_into "$pretraining_dir" "$pretrain_steps" electra; }

stage_postprocess() { postprocess_into "$pretraining_dir" "$model_dir"; }

finetune_from() {  # starting point (a model folder, or a config.json: random weights), output folder
  # run_squad.sh's positional arguments; the starting point is electra_model (init "None").
  local xla_flag=false
  if [[ "$xla" == xla ]]; then xla_flag=true; fi
  bash "$repo_dir/scripts/run_squad.sh" "$1" "$finetune_epochs" "$batch_size" 64 "$finetune_lr" \
    "$finetune_precision" 1 1 1.1 "$results_dir/squad_data" "$2" None train_eval interactive \
    "$results_dir/squad_data" -1 "$repo_dir/vocab/vocab.txt" "$xla_flag" \
    "${squad_flags[@]}" --layerwise_lr_decay 0.9 --warmup_proportion 0.1 --log_freq "$log_freq"
}

stage_finetune() { finetune_from "$model_dir/discriminator" "$squad_dir"; }

stage_finetune_random() { finetune_from "$model_config" "$random_squad_dir"; }

stage_pretrain_mlm() { pretrain_into "$mlm_pretraining_dir" "$pretrain_mlm_steps" masked_lm; }

stage_postprocess_mlm() { postprocess_into "$mlm_pretraining_dir" "$mlm_model_dir"; }

stage_finetune_mlm() { finetune_from "$mlm_model_dir/generator" "$mlm_squad_dir"; }

first_dev_question() {  # field: question | context | answer, of the dev set's first question
  python - "$results_dir/squad_data/dev-v1.1.json" "$1" <<'EOF'
import json, sys
paragraph = json.load(open(sys.argv[1], encoding="utf-8"))["data"][0]["paragraphs"][0]
qa = paragraph["qas"][0]
print({"question": qa["question"], "context": paragraph["context"], "answer": qa["answers"][0]["text"]}[sys.argv[2]])
EOF
}

stage_inference() {
  python "$repo_dir/run_inference.py" --init_checkpoint "$squad_dir/model" --question "$(first_dev_question question)" \
    --context "$(first_dev_question context)" "${squad_flags[@]}" | tee "$results_dir/inference.txt"
}

# ----------------------------------------------------------------------------- driver

choose_precision() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pretrain_precision=amp finetune_precision=amp xla=xla
  elif grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then
    pretrain_precision=bf16 finetune_precision=fp32 xla=no_xla
  else
    pretrain_precision=fp32 finetune_precision=fp32 xla=no_xla
  fi
}

stage_outputs() {  # what a stage writes, one path a line, removed when it is redone from scratch
  case "$1" in
    data) printf '%s\n' "$results_dir/corpus" "$results_dir/data" ;;
    squad_data) printf '%s\n' "$results_dir/squad_data" ;;
    pretrain) printf '%s\n' "$pretraining_dir" ;;
    postprocess) printf '%s\n' "$model_dir" ;;
    finetune) printf '%s\n' "$squad_dir" ;;
    inference) printf '%s\n' "$results_dir/inference.txt" ;;
    finetune_random) printf '%s\n' "$random_squad_dir" ;;
    pretrain_mlm) printf '%s\n' "$mlm_pretraining_dir" ;;
    postprocess_mlm) printf '%s\n' "$mlm_model_dir" ;;
    finetune_mlm) printf '%s\n' "$mlm_squad_dir" ;;
  esac
}

redo_from_scratch() {  # this stage's outputs go, and every later stage is marked not done
  local stage=$1 later=false name
  local -a outputs
  for name in "${every_stage[@]}"; do
    if [[ "$name" == "$stage" ]]; then later=true; fi
    if [[ "$later" == true ]]; then remove_within "$results_dir" "$results_dir/.done-$name"; fi
  done
  mapfile -t outputs < <(stage_outputs "$stage")
  remove_within "$results_dir" "${outputs[@]}"
}

run_stage() {
  local stage=$1 began
  log "stage $stage: starting"
  began=$(date +%s)
  "stage_$stage" 2>&1 | tee -a "$results_dir/$stage.log"
  touch "$results_dir/.done-$stage"
  log "stage $stage: done in $(( $(date +%s) - began )) s (log: $results_dir/$stage.log)"
}

check_earlier_stages_done() {
  local stage=$1 earlier
  for earlier in "${every_stage[@]}"; do
    [[ "$earlier" == "$stage" ]] && return
    if [[ ! -e "$results_dir/.done-$earlier" && " ${stages[*]} " != *" $earlier "* ]]; then
      echo "error: stage '$stage' needs stage '$earlier' first (run: bash scripts/quickstart.sh --results $results_dir)" >&2
      exit 1
    fi
  done
}

print_results() {
  python - "$results_dir" <<'EOF'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
def logged_steps(path):
    return [m for m in map(json.loads, path.read_text().splitlines()) if "generator_loss" in m]
pretraining = logged_steps(results / "pretraining/phase1/logs/metrics.jsonl")
print(f"Pretraining, step {pretraining[0]['step']} -> {pretraining[-1]['step']}: generator loss "
      f"{pretraining[0]['generator_loss']:.2f} -> {pretraining[-1]['generator_loss']:.2f}, discriminator loss "
      f"{pretraining[0]['discriminator_loss']:.3f} -> {pretraining[-1]['discriminator_loss']:.3f}")
mlm_log = results / "pretraining_mlm/phase1/logs/metrics.jsonl"
if mlm_log.exists():
    mlm = logged_steps(mlm_log)
    print(f"Masked-LM-only pretraining, step {mlm[0]['step']} -> {mlm[-1]['step']}: masked-LM loss "
          f"{mlm[0]['generator_loss']:.2f} -> {mlm[-1]['generator_loss']:.2f}")
pretrained_row, random_row, mlm_row = ("fine-tuned from the pretrained discriminator",
                                       "fine-tuned from random weights, same shape and settings",
                                       "fine-tuned from the masked-LM-only model, same time")
rows = {pretrained_row: results / "squad/eval_results.json", random_row: results / "squad_random/eval_results.json",
        mlm_row: results / "squad_mlm/eval_results.json"}
scores = {name: json.loads(path.read_text()) for name, path in rows.items() if path.exists()}
scores.update(json.loads((results / "squad_data/baselines-v1.1.json").read_text()))
print("SQuAD-format cloze dev set (Persuasion):")
for name, score in scores.items():
    print(f"  {name:<56} EM {score['exact_match']:5.1f}  F1 {score['f1']:5.1f}")
if pretrained_row in scores and random_row in scores:
    print(f"Pretraining brings {scores[pretrained_row]['f1'] - scores[random_row]['f1']:+.1f} F1 over the random start.")
if pretrained_row in scores and mlm_row in scores:
    print(f"Replaced-token detection brings {scores[pretrained_row]['f1'] - scores[mlm_row]['f1']:+.1f} F1 over "
          "masked-LM-only pretraining.")
print("One question:", (results / "inference.txt").read_text().strip().replace("\n", " | "))
EOF
  echo "  question: $(first_dev_question question)"
  echo "  context:  $(first_dev_question context)"
  echo "  expected: $(first_dev_question answer)"
}

log "results folder: $results_dir"
source "$repo_dir/scripts/setup_env.sh"
choose_precision
log "precision: pretraining $pretrain_precision, fine-tuning $finetune_precision, $xla"
if (( ${#stages[@]} )); then
  for stage in "${stages[@]}"; do
    check_earlier_stages_done "$stage"
    redo_from_scratch "$stage"
    run_stage "$stage"
  done
else
  run_order=("${all_stages[@]}")
  if [[ "$compare_mlm" == true ]]; then run_order+=("${mlm_stages[@]}"); fi
  for stage in "${run_order[@]}"; do
    if [[ -e "$results_dir/.done-$stage" ]]; then log "stage $stage: already done, skipped"; else run_stage "$stage"; fi
  done
fi
if [[ -e "$results_dir/.done-inference" ]]; then print_results; fi
log "everything is in $results_dir"
