"""Classify one text, or one text pair, with a fine-tuned ELECTRA classifier folder
(run_tf_glue.py's OUTPUT_DIR/model, or any transformers ElectraForSequenceClassification folder).

Prints the most likely class with its probability and every class's probability, or the score
of a regression model (STS-B). The classes come from the folder's config.json (id2label).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import finetuning  # noqa: E402
import glue_finetuning  # noqa: E402
from model_folder import read_classifier_labels, read_config, resolve_model_folder  # noqa: E402

logger = logging.getLogger("run_glue_inference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--init_checkpoint", required=True,
                        help="fine-tuned classifier folder (run_tf_glue.py's OUTPUT_DIR/model)")
    parser.add_argument("--text_a", required=True, help="the text (the first of a pair)")
    parser.add_argument("--text_b", default=None, help="the second text of a pair (for pair tasks: MRPC, MNLI, ...)")
    glue_finetuning.add_sequence_flags(parser)
    finetuning.add_tokenizer_flags(parser)
    return parser


def classify(args: argparse.Namespace) -> dict[str, Any]:
    """{"label", "probability", "probabilities": {label: p}} for a classifier, {"score"} for regression."""
    if not args.text_a.strip():
        raise ValueError("--text_a is empty: there is nothing to classify")
    folder = resolve_model_folder(args.init_checkpoint)
    config = read_config(folder)
    holds_classifier, labels = read_classifier_labels(folder)
    if not holds_classifier:
        raise ValueError(f"{folder} holds no sequence classifier (its config.json names no "
                         "ElectraForSequenceClassification); pass run_tf_glue.py's OUTPUT_DIR/model")
    model, report = glue_finetuning.load_classifier(config, folder, labels, "this folder")
    glue_finetuning.check_head_is_trained(folder, report)
    tokenizer = finetuning.tokenizer_for(args, folder, config)
    batch = tokenizer.encode_batch([args.text_a], None if args.text_b is None else [args.text_b],
                                   max_length=min(args.max_seq_length, config.max_position_embeddings))
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["logits"].numpy()[0]
    if labels is None:
        return {"score": float(logits[0])}
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    best = int(np.argmax(probabilities))
    return {"label": labels[best], "probability": float(probabilities[best]),
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities)}}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        result = classify(args)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    if "score" in result:
        print(f"score: {result['score']:.4f}")
    else:
        print(f"label: {result['label']} (probability {result['probability']:.4f})")
        print("probabilities: " + ", ".join(f"{label} {p:.4f}" for label, p in result["probabilities"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
