"""A SQuAD-format question set cut from plain-text books, for fine-tuning without a download.

Each question is a cloze: a sentence of a passage with a name blanked ("had passed since _
died ."), its answer that name, a span of the passage. Passages are taken only when they name
at least two people, so answering with the first name is not always right. For SQuAD 2.0 each
question is also asked about a passage that names no one, where it has no answer.

The quick start (scripts/quickstart.sh) and the tests fine-tune on such a set from five Austen
novels and evaluate on one held out (Persuasion). Writes <output-dir>/train-v<version>.json and
dev-v<version>.json, the names run_tf_squad.py's --data_dir expects.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

logger = logging.getLogger("cloze_squad")
SAMPLE_CORPUS_DIR = Path(__file__).resolve().parent / "sample_corpus" / "austen"

NAME_SPAN = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+(?: [A-Z][a-z]+)*")  # capitalised words inside a sentence
SENTENCE = re.compile(r"[^.!?]+[.!?]+")
PASSAGE_CHARS = 320
WORDS_AROUND_BLANK = 5


def passages(book: Path) -> Iterator[str]:
    """Whole sentences of one paragraph at a time, up to PASSAGE_CHARS characters, spaces collapsed."""
    for block in re.split(r"\n\s*\n", book.read_text(encoding="utf-8")):
        passage = ""
        for sentence in SENTENCE.findall(" ".join(block.split())):
            sentence = sentence.strip()
            if passage and len(passage) + 1 + len(sentence) > PASSAGE_CHARS:
                yield passage
                passage = ""
            passage = f"{passage} {sentence}".strip()
        if passage:
            yield passage


def cloze_questions(passage: str) -> list[tuple[str, str, int]]:
    """(question, answer, answer_start) for each name in the passage: the question is the words
    around the name with the name blanked, the answer the name."""
    questions = []
    for sentence in SENTENCE.finditer(passage):
        for name in NAME_SPAN.finditer(sentence.group(0)):
            start = sentence.start() + name.start()
            before = passage[sentence.start():start].split()[-WORDS_AROUND_BLANK:]
            after = passage[start + len(name.group(0)):sentence.end()].split()[:WORDS_AROUND_BLANK]
            if before and after:
                questions.append((" ".join([*before, "_", *after]), name.group(0), start))
    return questions


def candidate_passages(books: Sequence[Path]) -> tuple[list[tuple[str, list]], list[str]]:
    """Passages naming two or more people (with their questions), and long passages naming no one."""
    named, nameless = [], []
    for book in books:
        for passage in passages(book):
            if len(passage) > PASSAGE_CHARS:
                continue
            questions = cloze_questions(passage)
            if questions and len(set(NAME_SPAN.findall(passage))) >= 2:
                named.append((passage, questions))
            elif not NAME_SPAN.search(passage) and len(passage) > PASSAGE_CHARS // 2:
                nameless.append(passage)
    return named, nameless


def squad_document(books: Sequence[Path], seed: int, version_2: bool, num_questions: int) -> dict:
    """One cloze question on each of `num_questions` passages (fewer if the books have fewer), as
    a SQuAD JSON document; with `version_2`, each also asked about a nameless passage."""
    rng = np.random.default_rng(seed)
    named, nameless = candidate_passages(books)
    if not named or (version_2 and not nameless):
        raise ValueError(f"no passage of {', '.join(map(str, books))} gives a cloze question")
    paragraphs = []
    for i, index in enumerate(rng.permutation(len(named))[:num_questions]):
        passage, questions = named[index]
        question, answer, start = questions[rng.integers(len(questions))]
        paragraphs.append({"context": passage, "qas": [
            {"id": f"q{i}", "question": question, "answers": [{"text": answer, "answer_start": int(start)}]}]})
        if version_2:
            paragraphs.append({"context": nameless[rng.integers(len(nameless))], "qas": [
                {"id": f"q{i}-none", "question": question, "answers": [], "is_impossible": True}]})
    return {"version": "2.0" if version_2 else "1.1", "data": [{"title": "cloze", "paragraphs": paragraphs}]}


def book_paths(corpus_dir: Path, names: str) -> list[Path]:
    """The .txt books of `corpus_dir` named in the comma-separated `names` (file stems)."""
    paths = [corpus_dir / f"{name.strip()}.txt" for name in names.split(",") if name.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"books not found: {', '.join(missing) or names!r} (give file stems of "
                                f"the .txt files in {corpus_dir})")
    return paths


def write_question_sets(args: argparse.Namespace) -> dict[str, int]:
    """Write train and dev files; returns the number of questions in each."""
    corpus_dir = Path(args.corpus_dir)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, books, count, seed in (("train", args.train_books, args.num_train_questions, args.seed),
                                      ("dev", args.dev_books, args.num_dev_questions, args.seed + 1)):
        document = squad_document(book_paths(corpus_dir, books), seed, args.version == "2.0", count)
        path = output_dir / f"{split}-v{args.version}.json"
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        counts[split] = sum(len(p["qas"]) for p in document["data"][0]["paragraphs"])
        logger.info("Wrote %s: %d questions", path, counts[split])
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus-dir", default=None,
                        help="folder of UTF-8 .txt books (when not given: this repository's data/sample_corpus/austen)")
    parser.add_argument("--train-books", default="emma,mansfieldpark,northangerabbey,prideprejudice,sensesensibility",
                        help="comma-separated file stems of the books to cut training questions from")
    parser.add_argument("--dev-books", default="persuasion",
                        help="comma-separated file stems of the held-out books for the dev set")
    parser.add_argument("--output-dir", required=True, help="where train-vX.json and dev-vX.json are written")
    parser.add_argument("--version", choices=("1.1", "2.0"), default="1.1",
                        help="SQuAD version: 2.0 adds an unanswerable twin of every question")
    parser.add_argument("--num-train-questions", type=int, default=2500, help="answerable training questions")
    parser.add_argument("--num-dev-questions", type=int, default=400, help="answerable dev questions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passage and question choice")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.corpus_dir = args.corpus_dir or str(SAMPLE_CORPUS_DIR)
    try:
        write_question_sets(args)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
