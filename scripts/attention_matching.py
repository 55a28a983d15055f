"""How strongly each attention head of a model links a passage word to the same word in the question.

A reader of SQuAD-style questions, and of the quick start's cloze questions above all, finds the
answer by locating the question's words in the passage. In a transformer that starts with heads
in which a passage token attends to the question tokens that are the same word. For every
question of a SQuAD file (its first window), every passage token whose word is also in the
question, and every layer and head, this measures the mean attention to those same-word question
tokens over the mean attention to any question token, and prints the ratio of the two sums:
about 1 when a head does not single out the same word (a random model), well above 1 in a head
that matches words. Works on any model folder: a pretrained discriminator or generator, a
fine-tuned QA model (only the encoder is read).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's library modules
import squad_utils  # noqa: E402
import run_utils  # noqa: E402
from finetuning import add_tokenizer_flags, tokenizer_for  # noqa: E402
from model_folder import ENCODER_PREFIX, assign_tensors, read_config, read_tensors, resolve_model_folder  # noqa: E402
from modeling import ElectraModel  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("attention_matching")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder (config.json and weights) or a released model's name")
    parser.add_argument("--squad_file", required=True, help="SQuAD v1.1 or v2.0 JSON file whose questions are read")
    parser.add_argument("--num_questions", type=int, default=150, help="questions read (the file's first ones)")
    parser.add_argument("--max_seq_length", type=int, default=128, help="tokens per window (question + passage)")
    parser.add_argument("--max_query_length", type=int, default=64, help="question tokens kept")
    parser.add_argument("--batch_size", type=int, default=32, help="windows per forward pass")
    parser.add_argument("--output_json", default=None, help="also write {layer: [ratio per head]} to this file")
    add_tokenizer_flags(parser)
    return parser


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("num_questions", "max_seq_length", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be 1 or more, got {getattr(args, flag)}")


def load_encoder(name_or_path: str) -> tuple[ElectraModel, str]:
    """The encoder of any model folder (its heads are left out) and the folder it came from."""
    folder = resolve_model_folder(name_or_path)
    encoder = ElectraModel(read_config(folder))
    tensors = {name: value for name, value in read_tensors(folder).items() if name.startswith(ENCODER_PREFIX)}
    assign_tensors(encoder, tensors, source=folder)
    return encoder, folder


def first_windows(squad_file: str, tokenizer: WordPieceTokenizer, num_questions: int,
                  config: squad_utils.FeatureConfig) -> dict[str, np.ndarray]:
    """`input_ids`, `input_mask`, `segment_ids` [windows, seq] of the file's first `num_questions`
    questions, one window each (the first, which holds the start of the passage)."""
    examples = squad_utils.read_squad_file(squad_file).examples[:num_questions]
    features, _ = squad_utils.featurize_examples(examples, tokenizer, config, is_training=False)
    _, first = np.unique(features.example_index, return_index=True)
    return {name: getattr(features, name)[first] for name in ("input_ids", "input_mask", "segment_ids")}


def same_word_masks(input_ids: np.ndarray, segment_ids: np.ndarray, input_mask: np.ndarray,
                    special_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per window: `question` [batch, seq] (the question's word tokens) and `same` [batch, seq, seq]
    (passage token i and question token j are the same word)."""
    words = (input_mask == 1) & ~np.isin(input_ids, special_ids)
    question = words & (segment_ids == 0)
    passage = words & (segment_ids == 1)
    same = (input_ids[:, :, None] == input_ids[:, None, :]) & passage[:, :, None] & question[:, None, :]
    return question, same


def matching_sums(attention: np.ndarray, question: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums over passage tokens with a same-word question token of (mean attention to the same
    words, mean attention to any question word), per head: two [heads] arrays."""
    matched = same.any(axis=-1)  # [batch, seq]
    same_count = np.maximum(same.sum(axis=-1), 1)[:, None, :]
    question_count = np.maximum(question.sum(axis=-1), 1)[:, None, None]
    to_same = (attention * same[:, None]).sum(axis=-1) / same_count  # [batch, heads, seq]
    to_question = (attention * question[:, None, None, :]).sum(axis=-1) / question_count
    weight = matched[:, None, :]
    return (to_same * weight).sum(axis=(0, 2)), (to_question * weight).sum(axis=(0, 2))


def matching_ratios(encoder: ElectraModel, windows: dict[str, np.ndarray], special_ids: Sequence[int],
                    batch_size: int) -> np.ndarray:
    """[layers, heads]: attention to the same word over attention to any question word."""
    num_layers, num_heads = encoder.config.num_hidden_layers, encoder.config.num_attention_heads
    to_same, to_question = np.zeros((num_layers, num_heads)), np.zeros((num_layers, num_heads))
    for start in range(0, len(windows["input_ids"]), batch_size):
        input_ids, mask, segments = (windows[name][start:start + batch_size]
                                     for name in ("input_ids", "input_mask", "segment_ids"))
        question, same = same_word_masks(input_ids, segments, mask, special_ids)
        hidden_states = encoder(input_ids, mask, segments, output_hidden_states=True)["hidden_states"]
        for index, layer in enumerate(encoder.encoder_layers):
            attention = layer.attention_weights(hidden_states[index], mask).numpy()
            same_sum, question_sum = matching_sums(attention, question, same)
            to_same[index] += same_sum
            to_question[index] += question_sum
    if not to_question.any():
        raise ValueError("no passage word of these questions is also a question word: nothing to measure")
    return to_same / to_question


def report(ratios: np.ndarray, folder: str, num_windows: int) -> str:
    """A table: one row a layer, one column a head, and each layer's largest ratio."""
    lines = [f"{folder}: attention to the same word / attention to any question word "
             f"({num_windows} questions; 1 = no preference)",
             "layer  " + " ".join(f"head {h:<3d}" for h in range(ratios.shape[1])) + "  max"]
    for layer, row in enumerate(ratios):
        lines.append(f"{layer:<5d}  " + " ".join(f"{value:8.2f}" for value in row) + f"  {row.max():.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = run_utils.parse_checked(build_parser(), validate_args, argv)
    try:
        encoder, folder = load_encoder(args.model)
        tokenizer = tokenizer_for(args, folder, encoder.config)
        feature_config = squad_utils.FeatureConfig(min(args.max_seq_length, encoder.config.max_position_embeddings),
                                                   args.max_seq_length, args.max_query_length)
        windows = first_windows(args.squad_file, tokenizer, args.num_questions, feature_config)
        ratios = matching_ratios(encoder, windows, (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id),
                                 args.batch_size)
        if args.output_json:
            run_utils.write_json(args.output_json, {str(layer): [round(float(v), 4) for v in row]
                                                    for layer, row in enumerate(ratios)})
    except (OSError, ValueError) as error:  # a missing or unreadable input, an unwritable --output_json
        logger.error("%s", error)
        return 1
    print(report(ratios, folder, len(windows["input_ids"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
