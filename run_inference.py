"""Answer one question about one context with a fine-tuned ELECTRA QA model folder.

The model is loaded once and run once, eagerly, on every doc-stride window of the context;
the answer is cut out of the context as written and printed with its score. With SQuAD 2.0
models the answer is empty when the null odds exceed --null_score_diff_threshold (the
comparison NVIDIA's run_inference.py makes the wrong way round). Head settings left unset are
read from the folder's config.json.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import run_utils  # noqa: E402
import squad_utils  # noqa: E402
from finetuning import add_tokenizer_flags, model_source, tokenizer_for  # noqa: E402
from model_folder import read_qa_head_settings  # noqa: E402
from squad_finetuning import (add_decode_flags, add_feature_flags, check_head_is_trained, decode_config,  # noqa: E402
                              load_qa_model)
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("run_inference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--init_checkpoint", required=True,
                        help="fine-tuned QA model folder (run_tf_squad.py's OUTPUT_DIR/model)")
    parser.add_argument("--electra_model", default="base",
                        help="architecture (a size or a model folder) when --init_checkpoint has no config.json")
    parser.add_argument("--question", required=True, help="the question")
    parser.add_argument("--context", required=True, help="the text that holds the answer")
    parser.add_argument("--joint_head", action=argparse.BooleanOptionalAction, default=None,
                        help="joint beam-search head or plain head (default: as the folder was trained)")
    parser.add_argument("--beam_size", type=int, default=None, help="joint head beam (default: the folder's)")
    parser.add_argument("--version_2_with_negative", action=argparse.BooleanOptionalAction, default=None,
                        help="allow 'no answer' (default: as the folder was trained)")
    add_decode_flags(parser)
    add_feature_flags(parser)
    add_tokenizer_flags(parser)
    return parser


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Counts and lengths below 1 would give no answer at all, silently."""
    run_utils.require_at_least_one(parser, args, ("n_best_size", "max_answer_length", "max_seq_length",
                                                  "doc_stride"))
    if args.beam_size is not None:
        run_utils.require_at_least_one(parser, args, ("beam_size",))


def resolve_head_settings(args: argparse.Namespace, folder: str) -> None:
    """Fill the head flags left unset from the folder's config.json (the recipe's defaults without one)."""
    saved = read_qa_head_settings(folder) or {}
    defaults = {"joint_head": True, "version_2_with_negative": False, "beam_size": 5}
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, saved.get(name, default))


def check_text_is_unicode(flag: str, text: str) -> None:
    """A command-line argument with a byte that is not UTF-8 reaches Python as a lone surrogate."""
    position = squad_utils.lone_surrogate(text)
    if position is None:
        return
    code = ord(text[position])
    what = (f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8," if 0xDC80 <= code <= 0xDCFF
            else f"the lone surrogate \\u{code:04x}, which is not valid Unicode,")
    raise ValueError(f"{flag} holds {what} at character {position}: pass UTF-8 text")


def check_not_empty(tokenizer: WordPieceTokenizer, flag: str, text: str) -> None:
    """Empty as squad_utils defines it: a question of zero-width spaces is as empty as ""."""
    if squad_utils.is_empty_after_normalisation(tokenizer, text):
        raise ValueError(f"the {flag.lstrip('-')} is empty ({flag}): nothing is left of it once whitespace, "
                         "control and zero-width characters are removed")


def answer(args: argparse.Namespace) -> dict[str, Any]:
    """The best answer: {"text", "score", "probability"} and, for SQuAD 2.0, "null_odds"."""
    for flag, text in (("--question", args.question), ("--context", args.context)):
        check_text_is_unicode(flag, text)
    config, folder = model_source(args)
    if folder is None:
        raise ValueError(f"{args.init_checkpoint} is not a model folder")
    resolve_head_settings(args, folder)
    feature_config = squad_utils.FeatureConfig(min(args.max_seq_length, config.max_position_embeddings),
                                               args.doc_stride, args.max_query_length)
    feature_config.check()
    if args.joint_head:
        squad_utils.check_beam_fits(args.beam_size, feature_config.max_seq_length)
    tokenizer = tokenizer_for(args, folder, config)
    for flag, text in (("--question", args.question), ("--context", args.context)):
        check_not_empty(tokenizer, flag, text)
    model, report = load_qa_model(config, folder, args.joint_head, args.version_2_with_negative, args.beam_size)
    check_head_is_trained(folder, report, args.joint_head)
    example = squad_utils.SquadExample(qas_id="question", question=args.question, context=args.context, answers=())
    features, _ = squad_utils.featurize_examples([example], tokenizer, feature_config, is_training=False)
    outputs = model(features.input_ids, features.input_mask, features.segment_ids, p_mask=features.p_mask)
    predictions = squad_utils.decode_head_outputs([example], features, {k: v.numpy() for k, v in outputs.items()},
                                                  decode_config(args))
    best = predictions.nbest["question"][0] if predictions.nbest["question"] else {"score": float("-inf"),
                                                                                   "probability": 0.0}
    result = {"text": predictions.answers["question"], "score": best["score"], "probability": best["probability"]}
    if args.version_2_with_negative:
        result["null_odds"] = predictions.null_odds["question"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = run_utils.parse_checked(build_parser(), validate_args, argv)
    try:
        result = answer(args)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    print(f"answer: {result['text'] if result['text'] else '(no answer)'}")
    print(f"score: {result['score']:.4f} (probability {result['probability']:.4f})")
    if "null_odds" in result:
        print(f"null odds: {result['null_odds']:.4f} (threshold {args.null_score_diff_threshold})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
