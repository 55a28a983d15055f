"""A SQuAD-format question set cut from plain-text books, for fine-tuning without a download.

Each question is a cloze: a sentence of a passage with a name blanked ("had passed since _
died ."), its answer that name, a span of the passage. Passages are taken only when they name
at least two people, so answering with the first name is not always right (for training,
--train-passages short takes any passage of one or two sentences instead). For SQuAD 2.0 each
question is also asked about a passage that names no one, where it has no answer.

The quick start (scripts/quickstart.sh) and the tests fine-tune on such a set from five Austen
novels and evaluate on one held out (Persuasion). Writes <output-dir>/train-v<version>.json and
dev-v<version>.json, the names run_tf_squad.py's --data_dir expects, and baselines-v<version>.json:
the dev scores of answers that need no reading model (the passage's first name, its first name
that is not in the question, the training set's most frequent answer whatever the question), the
floor a fine-tuned model has to clear.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository's library modules (squad_utils, cloze)
import squad_utils  # noqa: E402
from cloze import BLANKS, NAME_SPAN, possible_answers_not_in_question  # noqa: E402

logger = logging.getLogger("cloze_squad")
SAMPLE_CORPUS_DIR = Path(__file__).resolve().parent / "sample_corpus" / "austen"

SENTENCE = re.compile(r"[^.!?]+[.!?]+")
PASSAGE_CHARS = 320
# Which passages training questions are cut from (the dev set always takes "named"): passages of
# up to N characters, and whether they must name two people or more. "short" passages of one or
# two sentences make the answer most often the only candidate the question does not show, which
# teaches a reader to tell the question's words apart (docs/quickstart.md, What neither start learns).
TRAIN_PASSAGES = {"named": (PASSAGE_CHARS, True), "short": (160, False)}
WORDS_AROUND_BLANK = 5


def passages(book: Path, max_chars: int = PASSAGE_CHARS) -> Iterator[str]:
    """Whole sentences of one paragraph at a time, up to `max_chars` characters, spaces collapsed."""
    for block in re.split(r"\n\s*\n", book.read_text(encoding="utf-8")):
        passage = ""
        for sentence in SENTENCE.findall(" ".join(block.split())):
            sentence = sentence.strip()
            if passage and len(passage) + 1 + len(sentence) > max_chars:
                yield passage
                passage = ""
            passage = f"{passage} {sentence}".strip()
        if passage:
            yield passage


def cloze_questions(passage: str, blank: re.Pattern = NAME_SPAN) -> list[tuple[str, str, int]]:
    """(question, answer, answer_start) for each name (each match of `blank`) in the passage: the
    question is the words around the name with the name blanked, the answer the name."""
    questions = []
    for sentence in SENTENCE.finditer(passage):
        for name in blank.finditer(sentence.group(0)):
            start = sentence.start() + name.start()
            before = passage[sentence.start():start].split()[-WORDS_AROUND_BLANK:]
            after = passage[start + len(name.group(0)):sentence.end()].split()[:WORDS_AROUND_BLANK]
            if before and after:
                questions.append((" ".join([*before, "_", *after]), name.group(0), start))
    return questions


def candidate_passages(books: Sequence[Path], blank: re.Pattern = NAME_SPAN,
                       kind: str = "named") -> tuple[list[tuple[str, list]], list[str]]:
    """Passages of the TRAIN_PASSAGES `kind` with questions on `blank` (with those questions),
    and long passages naming no one."""
    max_chars, two_names = TRAIN_PASSAGES[kind]
    answerable, nameless = [], []
    for book in books:
        for passage in passages(book, max_chars):
            if len(passage) > max_chars:
                continue
            questions = cloze_questions(passage, blank)
            if questions and (not two_names or len(set(NAME_SPAN.findall(passage))) >= 2):
                answerable.append((passage, questions))
            elif not NAME_SPAN.search(passage) and len(passage) > max_chars // 2:
                nameless.append(passage)
    return answerable, nameless


def pick_questions(questions: list, count: int, rng: np.random.Generator) -> list:
    """`count` of a passage's questions, in passage order (one is drawn as the first versions of
    this module drew it, so one-a-passage sets stay the same)."""
    if count == 1:
        return [questions[rng.integers(len(questions))]]
    return [questions[i] for i in sorted(rng.permutation(len(questions))[:count])]


def squad_document(books: Sequence[Path], seed: int, version_2: bool, num_questions: int,
                   blank: re.Pattern = NAME_SPAN, questions_per_passage: int = 1, passages_kind: str = "named") -> dict:
    """Up to `num_questions` cloze questions, at most `questions_per_passage` on each passage
    (fewer if the books have fewer), as a SQuAD JSON document; with `version_2`, each also asked
    about a nameless passage. Several questions on one passage give more reading practice from
    the same books: each blanks another word."""
    rng = np.random.default_rng(seed)
    answerable, nameless = candidate_passages(books, blank, passages_kind)
    if not answerable or (version_2 and not nameless):
        raise ValueError(f"no passage of {', '.join(map(str, books))} gives a cloze question")
    paragraphs, asked = [], 0
    for index in rng.permutation(len(answerable)):
        if asked == num_questions:
            break
        passage, questions = answerable[index]
        qas, unanswerable = [], []
        for question, answer, start in pick_questions(questions, min(questions_per_passage, num_questions - asked), rng):
            qas.append({"id": f"q{asked}", "question": question,
                        "answers": [{"text": answer, "answer_start": int(start)}]})
            if version_2:
                unanswerable.append({"context": nameless[rng.integers(len(nameless))], "qas": [
                    {"id": f"q{asked}-none", "question": question, "answers": [], "is_impossible": True}]})
            asked += 1
        paragraphs += [{"context": passage, "qas": qas}, *unanswerable]
    return {"version": "2.0" if version_2 else "1.1", "data": [{"title": "cloze", "paragraphs": paragraphs}]}


def questions_of(document: dict) -> Iterator[tuple[str, str, str, list[str]]]:
    """(id, context, question, gold answer texts) of every question of a SQuAD document."""
    for paragraph in document["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            yield qa["id"], paragraph["context"], qa["question"], [a["text"] for a in qa["answers"]]


def first_name(context: str, question: str, blank: re.Pattern = NAME_SPAN) -> str:
    """The passage's first name (match of `blank`) inside a sentence ("" if it names no one)."""
    match = blank.search(context)
    return match.group(0) if match else ""


def first_name_not_in_question(context: str, question: str, blank: re.Pattern = NAME_SPAN) -> str:
    """The passage's first name (match of `blank`) that the question does not contain (else its
    first name)."""
    names = blank.findall(context)
    return next(iter(possible_answers_not_in_question(context, question, blank)), names[0] if names else "")


def baseline_scores(train: dict, dev: dict, version_2: bool, blank: str = "names") -> dict[str, dict[str, float]]:
    """{baseline: {"exact_match", "f1"}} on `dev` for answers that need no reading model: two
    that pick a possible answer (a name, or a long word with `blank` "words") of the passage
    without reading the question's words around the blank, and one that reads nothing (the most
    frequent training answer), which shows how far the question alone gives the answer away."""
    prior = Counter(answers[0] for _, _, _, answers in questions_of(train) if answers).most_common(1)[0][0]
    pattern, noun = BLANKS[blank], {"names": "name", "words": "long word"}[blank]
    rules: dict[str, Callable[[str, str], str]] = {
        f"first {noun} in the passage": lambda context, question: first_name(context, question, pattern),
        f"first {noun} in the passage not in the question":
            lambda context, question: first_name_not_in_question(context, question, pattern),
        "most frequent training answer": lambda context, question: prior,
    }
    gold = {qid: answers for qid, _, _, answers in questions_of(dev)}
    scores = {}
    for name, rule in rules.items():
        predictions = {qid: rule(context, question) for qid, context, question, _ in questions_of(dev)}
        if version_2:
            result = squad_utils.evaluate_v2(gold, predictions)
            scores[name] = {"exact_match": result["exact"], "f1": result["f1"]}
        else:
            scores[name] = squad_utils.evaluate_v1(gold, predictions)
    return scores


def book_paths(corpus_dir: Path, names: str) -> list[Path]:
    """The .txt books of `corpus_dir` named in the comma-separated `names` (file stems)."""
    paths = [corpus_dir / f"{name.strip()}.txt" for name in names.split(",") if name.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"books not found: {', '.join(missing) or names!r} (give file stems of "
                                f"the .txt files in {corpus_dir})")
    return paths


def write_question_sets(args: argparse.Namespace) -> dict[str, int]:
    """Write train and dev files and the dev baselines; returns the number of questions in each."""
    corpus_dir = Path(args.corpus_dir)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    counts, documents = {}, {}
    for split, books, count, seed in (("train", args.train_books, args.num_train_questions, args.seed),
                                      ("dev", args.dev_books, args.num_dev_questions, args.seed + 1)):
        per_passage, kind = (args.questions_per_passage, args.train_passages) if split == "train" else (1, "named")
        document = squad_document(book_paths(corpus_dir, books), seed, args.version == "2.0", count,
                                  BLANKS[args.blank], per_passage, kind)
        path = output_dir / f"{split}-v{args.version}.json"
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        counts[split] = sum(len(p["qas"]) for p in document["data"][0]["paragraphs"])
        documents[split] = document
        logger.info("Wrote %s: %d questions", path, counts[split])
    baselines = baseline_scores(documents["train"], documents["dev"], args.version == "2.0", args.blank)
    path = output_dir / f"baselines-v{args.version}.json"
    path.write_text(json.dumps(baselines, indent=1), encoding="utf-8")
    for name, score in baselines.items():
        logger.info("Dev baseline, %s: EM %.1f, F1 %.1f", name, score["exact_match"], score["f1"])
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
    parser.add_argument("--questions-per-passage", type=int, default=1,
                        help="most training questions asked on one passage, each blanking another word (the dev "
                             "set keeps one a passage)")
    parser.add_argument("--train-passages", choices=sorted(TRAIN_PASSAGES), default="named",
                        help="passages the training questions are cut from: 'named', up to %d characters naming two "
                             "people or more (as the dev set); 'short', any passage of up to %d characters (one or two "
                             "sentences)" % (TRAIN_PASSAGES["named"][0], TRAIN_PASSAGES["short"][0]))
    parser.add_argument("--seed", type=int, default=0, help="seed of the passage and question choice")
    parser.add_argument("--blank", choices=sorted(BLANKS), default="names",
                        help="what a question blanks: a name, or a lower-case word of 7 letters or more")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.questions_per_passage < 1:
        parser.error(f"--questions-per-passage must be 1 or more, got {args.questions_per_passage}")
    args.corpus_dir = args.corpus_dir or str(SAMPLE_CORPUS_DIR)
    try:
        write_question_sets(args)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
