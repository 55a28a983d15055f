#!/usr/bin/env bash
# Build the ELECTRA pretraining data from scratch: download -> text formatting -> sentence
# segmentation and sharding -> TFRecords for phase 1 (seq 128) and phase 2 (seq 512).
#
# Usage: bash data/create_datasets_from_start.sh [wiki_only | wiki_books | PATH]
#   wiki_only   English Wikipedia (the default), plus SQuAD v1.1/v2.0 for fine-tuning.
#   wiki_books  Wikipedia and BookCorpus. BookCorpus has no official source and its mirrors are
#               often down: set BOOKSCORPUS_DIR to a folder of .txt books you have to skip its
#               download.
#   PATH        your own corpus, a folder of .txt files (or one file): documents separated by
#               blank lines, or books with chapter headings (then one document per chapter), for
#               example data/sample_corpus/austen. Nothing is downloaded. The dataset is named
#               "custom".
#
# Example, your own corpus (the shipped sample takes about a minute):
#   bash data/create_datasets_from_start.sh data/sample_corpus/austen
#
# Output: $DATA_DIR/tfrecord_lower_case_1_seq_len_{128,512}_random_seed_12345/<dataset>/
# {train,test}/, with <dataset> wikicorpus_en, books_wiki_en_corpus or custom. Wikipedia needs
# 170 GB+ of disk and its download takes hours (NVIDIA: 15+ hours). Sets up the environment
# with scripts/setup_env.sh.
set -euo pipefail

data_prep_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$data_prep_dir")"
source "$repo_dir/scripts/lib/args.sh"
electra_arg corpus wiki_only "wiki_only, wiki_books, or the path of your corpus"
electra_env DATA_DIR "" "output root (empty: this data/ folder)"
electra_env N_TRAINING_SHARDS "" "training shards and TFRecord files (empty: 2048; 16 for your own corpus)"
electra_env N_TEST_SHARDS "" "test shards and TFRecord files (empty: 2048; 4 for your own corpus)"
electra_env N_PROCESSES "" "worker processes (empty: the number of CPUs)"
electra_env SEQ_LENGTHS "128 512" "TFRecord sequence lengths to build (\"128\" for phase 1 only)"
electra_env DOCUMENT_BOUNDARY auto "own corpus: auto, blank_line, chapter or file"
electra_env BOOKSCORPUS_URL "" "BookCorpus .tar.gz to download for wiki_books (empty: data/dataPrep.py's)"
electra_env BOOKSCORPUS_DIR "" "folder of BookCorpus .txt files to use instead of downloading"
electra_parse_args "$@"

case "$corpus" in
  wiki_only) dataset=wikicorpus_en; default_train_shards=2048; default_test_shards=2048 ;;
  wiki_books) dataset=books_wiki_en_corpus; default_train_shards=2048; default_test_shards=2048 ;;
  -*) electra_die "unknown option '$corpus' (see --help)" ;;
  *)
    if [[ ! -e "$corpus" ]]; then
      echo "error: '$corpus' is neither wiki_only, wiki_books nor an existing file or folder" >&2
      exit 1
    fi
    dataset=custom; default_train_shards=16; default_test_shards=4 ;;
esac
source "$repo_dir/scripts/setup_env.sh"

common=(--n_training_shards "${N_TRAINING_SHARDS:-$default_train_shards}"
        --n_test_shards "${N_TEST_SHARDS:-$default_test_shards}")
if [[ -n "$DATA_DIR" ]]; then common+=(--data-dir "$DATA_DIR"); fi
if [[ -n "$N_PROCESSES" ]]; then common+=(--n_processes "$N_PROCESSES"); fi

data_prep() {
  python "$data_prep_dir/dataPrep.py" "$@" "${common[@]}"
}

# Download and format the raw text (one article per line).
if [[ "$dataset" == custom ]]; then
  data_prep --action text_formatting --dataset custom --input_files "$corpus" \
    --document_boundary "$DOCUMENT_BOUNDARY"
else
  data_prep --action download --dataset squad
  data_prep --action download --dataset wikicorpus_en
  data_prep --action text_formatting --dataset wikicorpus_en
  if [[ "$dataset" == books_wiki_en_corpus ]]; then
    if [[ -n "$BOOKSCORPUS_DIR" ]]; then
      data_prep --action text_formatting --dataset bookscorpus --input_files "$BOOKSCORPUS_DIR"
    else
      books_url=()
      if [[ -n "$BOOKSCORPUS_URL" ]]; then books_url=(--bookscorpus_url "$BOOKSCORPUS_URL"); fi
      data_prep --action download --dataset bookscorpus "${books_url[@]}"
      data_prep --action text_formatting --dataset bookscorpus
    fi
  fi
fi

# One sentence per line, whole articles, N training and M test shards.
data_prep --action sharding --dataset "$dataset"

# TFRecords for phase 1 and phase 2.
for seq_len in $SEQ_LENGTHS; do
  data_prep --action create_tfrecord_files --dataset "$dataset" --max_seq_length "$seq_len" \
    --do_lower_case 1
done
