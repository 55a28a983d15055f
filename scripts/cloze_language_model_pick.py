"""Whether a pretrained masked language model knows which of a passage's words fills a cloze blank.

Pretraining could help a reader of the quick start's cloze questions in two ways: by heads that
find the question's words in the passage (scripts/attention_matching.py measures those), or by
knowing which word fits the blank's context. This measures the second. For every question of a
cloze SQuAD file (data/cloze_squad.py), the possible answers are the passage's words of the
blanked kind (`--blank`) that the question does not show, the words left once a reader can tell
the question's words apart. A generator (any model folder with a masked-LM head) reads the
question alone with the blank as [MASK] tokens, one per WordPiece of a candidate, and picks the
candidate with the highest log-probability (the sum over its pieces, each read at its own
[MASK]). Printed side by side, scored as SQuAD v1.1 (EM and F1): that pick, the expected score
of a uniform pick among the same words, and the first of them (data/cloze_squad.py's rule "first
... not in the question"). A model that knows nothing about the blank's context scores about the
uniform pick.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's library modules
import squad_utils  # noqa: E402
from cloze import BLANKS, possible_answers_not_in_question  # noqa: E402
import run_utils  # noqa: E402
from finetuning import add_tokenizer_flags, tokenizer_for  # noqa: E402
from model_folder import assign_tensors, read_config, read_tensors, resolve_model_folder  # noqa: E402
from modeling import ElectraGenerator  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("cloze_language_model_pick")
BLANK = "_"  # how data/cloze_squad.py writes the blank in a question
GENERATOR_HEAD_WEIGHT = "generator_predictions.dense.weight"


@dataclass(frozen=True)
class ClozeQuestion:
    """One question: the tokens around its blank, its possible answers and their WordPiece ids."""

    qas_id: str
    before: list[int]
    after: list[int]
    candidates: list[str]
    candidate_ids: list[list[int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="generator folder (config.json and weights with a masked-LM head), e.g. "
                             "results/quickstart/postprocessed/generator, or a released generator's name")
    parser.add_argument("--squad_file", required=True,
                        help="cloze SQuAD file written by data/cloze_squad.py (each question holds one '_')")
    parser.add_argument("--blank", required=True, choices=sorted(BLANKS),
                        help="what the file's questions blank (data/cloze_squad.py --blank): its possible answers")
    parser.add_argument("--num_questions", type=int, default=None, help="questions read (the file's first ones; all when not given)")
    parser.add_argument("--batch_size", type=int, default=64, help="questions with [MASK]s per forward pass")
    parser.add_argument("--output_json", default=None, help="also write the three scores to this file")
    add_tokenizer_flags(parser)
    return parser


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("num_questions", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be 1 or more, got {value}")


def load_generator(name_or_path: str) -> tuple[ElectraGenerator, str]:
    """The generator of a model folder; a folder without a masked-LM head is one error."""
    folder = resolve_model_folder(name_or_path)
    tensors = read_tensors(folder)
    if GENERATOR_HEAD_WEIGHT not in tensors:
        raise ValueError(f"{folder} holds no masked-LM head ({GENERATOR_HEAD_WEIGHT} is missing): give a "
                         "generator folder, e.g. results/quickstart/postprocessed/generator")
    generator = ElectraGenerator(read_config(folder))
    assign_tensors(generator, tensors, source=folder)
    return generator, folder


def piece_ids(tokenizer: WordPieceTokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).input_ids


def cloze_questions(squad_file: str, tokenizer: WordPieceTokenizer, blank: str,
                    num_questions: int | None) -> tuple[list[ClozeQuestion], dict[str, list[str]]]:
    """The file's answerable questions (the first `num_questions`) and their gold answers; a
    question without exactly one blank is an error naming it."""
    examples = [e for e in squad_utils.read_squad_file(squad_file).examples if e.answers][:num_questions]
    if not examples:
        raise ValueError(f"{squad_file}: no answerable question to read")
    questions = []
    for example in examples:
        words = example.question.split()
        if words.count(BLANK) != 1:
            raise ValueError(f"{squad_file}: question {example.qas_id} has {words.count(BLANK)} '{BLANK}' blanks, "
                             "not one: not a cloze question (data/cloze_squad.py writes them)")
        split = words.index(BLANK)
        candidates = possible_answers_not_in_question(example.context, example.question, BLANKS[blank])
        questions.append(ClozeQuestion(
            example.qas_id, piece_ids(tokenizer, " ".join(words[:split])), piece_ids(tokenizer, " ".join(words[split + 1:])),
            candidates, [piece_ids(tokenizer, word) for word in candidates]))
    return questions, squad_utils.gold_answers(examples)


def masked_inputs(question: ClozeQuestion, num_masks: int, tokenizer: WordPieceTokenizer) -> tuple[list[int], int]:
    """[CLS] before [MASK]*num_masks after [SEP], and the position of the first [MASK]."""
    ids = [tokenizer.cls_id, *question.before, *[tokenizer.mask_id] * num_masks, *question.after, tokenizer.sep_id]
    return ids, 1 + len(question.before)


def candidate_scores(generator: ElectraGenerator, questions: Sequence[ClozeQuestion],
                     tokenizer: WordPieceTokenizer, batch_size: int) -> list[list[float]]:
    """Per question, per candidate: the sum of its pieces' log-probabilities, each at its [MASK]
    in the question with as many [MASK]s as the candidate has pieces."""
    requests = sorted({(index, len(ids)) for index, q in enumerate(questions) for ids in q.candidate_ids})
    log_probs: dict[tuple[int, int], np.ndarray] = {}  # (question, masks) -> [masks, vocab]
    for start in range(0, len(requests), batch_size):
        batch = requests[start:start + batch_size]
        inputs = [masked_inputs(questions[index], masks, tokenizer) for index, masks in batch]
        length = max(len(ids) for ids, _ in inputs)
        input_ids = np.array([ids + [tokenizer.pad_id] * (length - len(ids)) for ids, _ in inputs], np.int32)
        mask = (np.arange(length)[None, :] < np.array([len(ids) for ids, _ in inputs])[:, None]).astype(np.int32)
        logits = generator(input_ids, mask, np.zeros_like(input_ids))["logits"].numpy().astype(np.float64)
        for row, ((index, masks), (_, first)) in enumerate(zip(batch, inputs)):
            at_masks = logits[row, first:first + masks]
            log_probs[(index, masks)] = at_masks - np.logaddexp.reduce(at_masks, axis=-1, keepdims=True)
    return [[float(sum(log_probs[(index, len(ids))][piece, token] for piece, token in enumerate(ids)))
             for ids in question.candidate_ids] for index, question in enumerate(questions)]


def pick_scores(questions: Sequence[ClozeQuestion], scores: Sequence[Sequence[float]],
                gold: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """SQuAD v1.1 EM and F1 of the language model's pick, of the first candidate, and the
    expected EM and F1 of a uniform pick among the candidates (each occurrence one choice)."""
    model_pick = {q.qas_id: q.candidates[int(np.argmax(s))] if q.candidates else "" for q, s in zip(questions, scores)}
    first = {q.qas_id: q.candidates[0] if q.candidates else "" for q in questions}
    uniform = {"exact_match": 0.0, "f1": 0.0}
    for question in questions:
        answers = gold[question.qas_id]
        for candidate in question.candidates:
            uniform["exact_match"] += max(squad_utils.exact_match(a, candidate) for a in answers) / len(question.candidates)
            uniform["f1"] += max(squad_utils.f1_v1(a, candidate) for a in answers) / len(question.candidates)
    return {"language model's pick": squad_utils.evaluate_v1(gold, model_pick),
            "uniform pick (expected)": {name: 100.0 * value / len(questions) for name, value in uniform.items()},
            "first of them": squad_utils.evaluate_v1(gold, first)}


def report(results: dict[str, dict[str, float]], folder: str, questions: Sequence[ClozeQuestion]) -> str:
    """The three scores, one line each, under a line saying what was read."""
    counts = [len(q.candidates) for q in questions]
    lines = [f"{folder}: {len(questions)} questions, {np.mean(counts):.1f} possible answers a question on average "
             f"({sum(c == 0 for c in counts)} with none); among them:"]
    lines += [f"  {name:<26s} EM {score['exact_match']:5.1f}  F1 {score['f1']:5.1f}" for name, score in results.items()]
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> str:
    """Load, read, score; returns the report and writes --output_json."""
    generator, folder = load_generator(args.model)
    tokenizer = tokenizer_for(args, folder, generator.config)
    questions, gold = cloze_questions(args.squad_file, tokenizer, args.blank, args.num_questions)
    results = pick_scores(questions, candidate_scores(generator, questions, tokenizer, args.batch_size), gold)
    if args.output_json:
        run_utils.write_json(args.output_json, results)
    return report(results, folder, questions)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = run_utils.parse_checked(build_parser(), validate_args, argv)
    try:
        print(measure(args))
    except (OSError, ValueError) as error:  # a missing or unreadable input, an unwritable --output_json
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
