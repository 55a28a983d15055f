"""Export a fine-tuned ELECTRA QA model folder as a SavedModel that answers questions from raw text.

The SavedModel holds the tokenizer (the same WordPiece and lower-casing as tokenization.py),
the doc-stride windows, the model (joint beam-search head or plain head) and squad_utils'
decoding, so TF Serving or any Python with TensorFlow and tensorflow-text answers with it, no
copy of this repository needed: `serving_default` takes `question` and `context` strings and
returns `answer`, `start`, `end`, `score` (and `no_answer`, `null_odds` for SQuAD 2.0 models);
`answer_token_ids` takes WordPiece ids. Settings left unset are the folder's (head) or
run_inference.py's defaults. See docs/serving.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import run_utils  # noqa: E402
import serving  # noqa: E402
import squad_utils  # noqa: E402
from model_folder import ModelFolderError, load_model_folder, read_config, read_qa_head_settings  # noqa: E402
from modeling import ElectraForQuestionAnswering  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("export_saved_model")
VOCAB_FILE = "vocab.txt"
# The decoding and featurization settings that are flags (the head's come from the folder).
SETTING_HELP = {
    "null_score_diff_threshold": "no answer when the null odds exceed this (SQuAD 2.0 models)",
    "n_best_size": "plain head: the top starts and the top ends paired into candidates",
    "max_answer_length": "longest answer in tokens",
    "max_seq_length": "WordPiece tokens per window (at most the model's max_position_embeddings)",
    "doc_stride": "tokens between the starts of consecutive windows",
    "max_query_length": "questions are cut to this many tokens",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--init_checkpoint", required=True,
                        help="fine-tuned QA model folder (run_tf_squad.py's OUTPUT_DIR/model)")
    parser.add_argument("--output_dir", required=True,
                        help="the SavedModel folder to write (for TF Serving: MODEL_BASE_PATH/<version>)")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                        help="replace a SavedModel already in --output_dir (only once the new one is written)")
    parser.add_argument("--vocab_file", default=None, help="WordPiece vocab.txt (default: the model folder's)")
    parser.add_argument("--do_lower_case", action=argparse.BooleanOptionalAction, default=True,
                        help="lower-case and strip accents (uncased models)")
    parser.add_argument("--beam_size", type=int, default=None, help="joint head beam (default: the folder's)")
    for config in (squad_utils.DecodeConfig, squad_utils.FeatureConfig):  # their defaults, run_inference.py's
        for field in dataclasses.fields(config):
            if field.name in SETTING_HELP:
                parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default,
                                    help=SETTING_HELP[field.name])
    run_utils.add_precision_flags(parser, xla_help="XLA-compile the encoder and head (TF Serving on CPU then "
                                                   "needs --xla_cpu_compilation_enabled=true)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_utils.parse_checked(build_parser(), validate_args, argv)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    names = ["n_best_size", "max_answer_length", "max_seq_length", "doc_stride"]
    run_utils.require_at_least_one(parser, args, names + (["beam_size"] if args.beam_size is not None else []))
    try:
        squad_utils.FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length).check()
    except ValueError as error:
        parser.error(str(error))


def serving_config(args: argparse.Namespace, head: dict, max_position_embeddings: int) -> serving.ServingConfig:
    if args.max_seq_length > max_position_embeddings:
        raise ValueError(f"--max_seq_length {args.max_seq_length} exceeds the model's max_position_embeddings "
                         f"{max_position_embeddings}")
    return serving.ServingConfig(
        features=squad_utils.FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length),
        decode=squad_utils.DecodeConfig(n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
                                        version_2_with_negative=head.get("version_2_with_negative", False),
                                        null_score_diff_threshold=args.null_score_diff_threshold),
        joint_head=head["joint_head"], beam_size=args.beam_size or head.get("beam_size", 5),
        jit_compile=args.xla, compute_dtype=run_utils.compute_policy(args))


def export(args: argparse.Namespace) -> None:
    serving.check_output_dir(args.output_dir, args.overwrite)  # before the minute the export takes
    folder = args.init_checkpoint
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"model folder not found: {folder} (expected run_tf_squad.py's OUTPUT_DIR/model)")
    head = read_qa_head_settings(folder)
    if head is None:
        raise ValueError(f"{folder}/config.json names no QA head (joint_head): export a folder fine-tuned by "
                         "run_tf_squad.py (OUTPUT_DIR/model)")
    config = serving_config(args, head, read_config(folder).max_position_embeddings)
    vocab_file = args.vocab_file or os.path.join(folder, VOCAB_FILE)
    tokenizer = WordPieceTokenizer(vocab_file, do_lower_case=args.do_lower_case)
    model_class = functools.partial(ElectraForQuestionAnswering, joint_head=config.joint_head,
                                    version_2=config.decode.version_2_with_negative, beam_size=config.beam_size)
    model, report = load_model_folder(folder, model_class, dtype=config.compute_dtype)
    if report.newly_initialised:
        raise ValueError(f"{folder} has no trained QA head (missing {', '.join(report.newly_initialised[:3])})")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{vocab_file} has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: wrong --vocab_file for this model")
    serving.export(model, tokenizer, config, args.output_dir, overwrite=args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=run_utils.LOG_FORMAT)
    args = parse_args(argv)
    try:
        export(args)
    except (FileNotFoundError, ValueError, ModelFolderError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
