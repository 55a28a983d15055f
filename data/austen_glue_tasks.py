"""Three GLUE-shaped tasks cut from the Austen novels, to fine-tune run_tf_glue.py without GLUE.

  austen-novel    single sentence, six classes: which novel the sentence comes from
  austen-next     sentence pair, two classes: 1 if B is the sentence that follows A in the
                  novel, 0 if B is a sentence drawn from anywhere else (half of the pairs each)
  austen-overlap  sentence pair, a score: the share of distinct words A and B have in common
                  (intersection over union of their lower-cased word sets, 0 to 1); B is the
                  next sentence, another of the same chapter, any other, or any other with a
                  run of half or more of its words replaced by as many consecutive words of A,
                  a quarter of the pairs each

Chapters, not sentences, are divided between train (70%), dev and test (15% each), so dev
and test sentences come from chapters the model never saw. Each task is a folder in the custom
task layout run_tf_glue.py reads (a header line naming `text_a`, `text_b`, `label` or `score`);
the test files carry an `index` column and no answers, as GLUE's do. Chance on dev: 1/6 for
austen-novel, 1/2 for austen-next, a correlation of 0 for austen-overlap.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sentence_segmentation import default_segmentation_method, load_segmenter, split_paragraph
from text_formatting import text_documents

logger = logging.getLogger("austen_glue_tasks")

SPLITS = ("train", "dev", "test")
DEV_FRACTION = TEST_FRACTION = 0.15
WORD = re.compile(r"[a-z']+")
CARRIER_WORD = re.compile(r"[A-Za-z']+")  # a word of a sentence, its punctuation left around it


@dataclass
class Chapter:
    novel: str
    sentences: list[str]


def read_chapters(corpus_dir: Path) -> list[Chapter]:
    """Every chapter of every .txt novel, as its sentences in order."""
    segmenter = load_segmenter(default_segmentation_method())
    novels = sorted(corpus_dir.glob("*.txt"))
    if not novels:
        raise FileNotFoundError(f"no .txt novels in {corpus_dir}")
    chapters = []
    for novel in novels:
        for paragraphs in text_documents(novel.read_text(encoding="utf-8"), "chapter"):
            sentences = [s for paragraph in paragraphs for s in split_paragraph(segmenter, paragraph)]
            chapters.append(Chapter(novel.stem, sentences))
    return chapters


def split_chapters(chapters: list[Chapter], rng: np.random.Generator) -> dict[str, list[Chapter]]:
    """Each novel's chapters shuffled and divided 70/15/15, so every split has every novel."""
    splits: dict[str, list[Chapter]] = {split: [] for split in SPLITS}
    for novel in sorted({c.novel for c in chapters}):
        own = [c for c in chapters if c.novel == novel]
        order = rng.permutation(len(own))
        dev_count, test_count = (max(1, round(f * len(own))) for f in (DEV_FRACTION, TEST_FRACTION))
        if len(own) < dev_count + test_count + 1:
            raise ValueError(f"{novel} has {len(own)} chapters; every split needs at least one")
        for rank, index in enumerate(order):
            split = "dev" if rank < dev_count else "test" if rank < dev_count + test_count else "train"
            splits[split].append(own[index])
    return splits


def word_overlap(a: str, b: str) -> float:
    """|words(a) & words(b)| / |words(a) | words(b)| of the lower-cased word sets."""
    first, second = set(WORD.findall(a.lower())), set(WORD.findall(b.lower()))
    union = first | second
    return len(first & second) / len(union) if union else 0.0


class TaskBuilder:
    """Draws one split's examples of the three tasks from its chapters."""

    def __init__(self, chapters: list[Chapter], rng: np.random.Generator, min_words: int, max_words: int):
        self.rng = rng
        self.fits = lambda s: min_words <= len(s.split()) <= max_words
        self.chapters = chapters
        self.sentences = [s for c in chapters for s in c.sentences if self.fits(s)]
        # words seen in lower case: a sentence's first word is written so elsewhere unless a name or "I"
        self.lower_words = {w for s in self.sentences for w in CARRIER_WORD.findall(s) if w.islower()}
        # (chapter, position) of every sentence that fits and is followed by one that fits
        self.followed = [(c, i) for c in chapters for i in range(len(c.sentences) - 1)
                         if self.fits(c.sentences[i]) and self.fits(c.sentences[i + 1])]

    def any_sentence(self) -> str:
        return self.sentences[self.rng.integers(len(self.sentences))]

    def novel_rows(self, count: int) -> list[tuple[str, ...]]:
        novels = sorted({c.novel for c in self.chapters})
        rows = []
        for novel in novels:
            pool = [s for c in self.chapters if c.novel == novel for s in c.sentences if self.fits(s)]
            picks = self.rng.choice(len(pool), size=min(len(pool), count // len(novels)), replace=False)
            rows.extend((pool[i], novel) for i in picks)
        return rows

    def next_rows(self, count: int) -> list[tuple[str, ...]]:
        rows = []
        for k in range(count):
            chapter, i = self.followed[self.rng.integers(len(self.followed))]
            follows = k % 2 == 0
            second = chapter.sentences[i + 1] if follows else self.any_sentence()
            if not follows and second == chapter.sentences[i + 1]:
                second = self.any_sentence()
            rows.append((chapter.sentences[i], second, "1" if follows else "0"))
        return rows

    def overlap_rows(self, count: int) -> list[tuple[str, ...]]:
        rows = []
        for k in range(count):
            chapter, i = self.followed[self.rng.integers(len(self.followed))]
            first, kind = chapter.sentences[i], k % 4
            if kind == 0:
                second = chapter.sentences[i + 1]
            elif kind == 1:
                second = chapter.sentences[self.rng.integers(len(chapter.sentences))]
            elif kind == 2:
                second = self.any_sentence()
            else:
                second = self.mixed_sentence(first, self.any_sentence())
            rows.append((first, second, f"{word_overlap(first, second):.4f}"))
        return rows

    def mixed_sentence(self, first: str, carrier: str) -> str:
        """`carrier` with a run of a random share (50-100%) of its words replaced by as many
        consecutive words of `first`, with the punctuation between them.

        B keeps the carrier's length, first capital and final punctuation, those of any sentence, so
        only comparing B's words with A's tells a high overlap from a low one (B as A with words left
        out lacked A's final full stop whenever its last word went, and told the target alone). One
        run, not scattered words: scattered words left odd tokens such as "the," at every seam, from
        which a bag of B's words alone predicted the target (Pearson 0.20 on dev). Runs of at least
        half the carrier: with 10-90% the small model's dev correlation was 0.02-0.20."""
        slots = list(CARRIER_WORD.finditer(carrier))
        donors = list(CARRIER_WORD.finditer(first))
        count = min(len(donors), round(self.rng.uniform(0.5, 1.0) * len(slots)))
        if count == 0:
            return carrier
        at, source = self.rng.integers(len(slots) - count + 1), self.rng.integers(len(donors) - count + 1)
        run = first[donors[source].start():donors[source + count - 1].end()]
        if source == 0 and CARRIER_WORD.match(run).group().lower() in self.lower_words:
            run = run[:1].lower() + run[1:]
        if at == 0:
            run = same_case(run, slots[0].group())
        return carrier[:slots[at].start()] + run + carrier[slots[at + count - 1].end():]


def same_case(word: str, model: str) -> str:
    """`word` with its first letter in the case of `model`'s: B's first word is capitalised as the
    carrier's is."""
    return (word[:1].upper() if model[:1].isupper() else word[:1].lower()) + word[1:]


TASKS = {"austen-novel": (("text_a", "label"), TaskBuilder.novel_rows),
         "austen-next": (("text_a", "text_b", "label"), TaskBuilder.next_rows),
         "austen-overlap": (("text_a", "text_b", "score"), TaskBuilder.overlap_rows)}


def write_tsv(path: Path, columns: Sequence[str], rows: list[tuple[str, ...]], labelled: bool) -> None:
    """Header then rows; an unlabelled (test) file gets an index column instead of the answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if labelled:
            f.write("\t".join(columns) + "\n")
            f.writelines("\t".join(row) + "\n" for row in rows)
        else:
            f.write("\t".join(["index", *columns[:-1]]) + "\n")
            f.writelines("\t".join([str(i), *row[:-1]]) + "\n" for i, row in enumerate(rows))


def build_tasks(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Write every task's three files; returns the example counts."""
    rng = np.random.default_rng(args.seed)
    splits = split_chapters(read_chapters(Path(args.corpus_dir)), rng)
    counts: dict[str, dict[str, int]] = {task: {} for task in TASKS}
    for split in SPLITS:
        builder = TaskBuilder(splits[split], rng, args.min_words, args.max_words)
        size = args.train_examples if split == "train" else args.eval_examples
        for task, (columns, rows_of) in TASKS.items():
            rows = rows_of(builder, size)
            order = rng.permutation(len(rows))
            write_tsv(Path(args.output_dir) / task / f"{split}.tsv", columns, [rows[i] for i in order],
                      labelled=split != "test")
            counts[task][split] = len(rows)
    for task, sizes in counts.items():
        logger.info("%s: %s", Path(args.output_dir) / task, ", ".join(f"{n} {s}" for s, n in sizes.items()))
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", default=str(Path(__file__).resolve().parent / "sample_corpus" / "austen"),
                        help="folder of UTF-8 .txt novels with chapter headings (default: the shipped Austen novels)")
    parser.add_argument("--output-dir", required=True, help="where the austen-* task folders are written")
    parser.add_argument("--train-examples", type=int, default=3000, help="training examples per task")
    parser.add_argument("--eval-examples", type=int, default=600, help="dev and test examples per task")
    parser.add_argument("--min-words", type=int, default=5, help="shortest sentence used, in words")
    parser.add_argument("--max-words", type=int, default=40, help="longest sentence used, in words")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chapter split and of every draw")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if min(args.train_examples, args.eval_examples, args.min_words) < 1 or args.max_words < args.min_words:
        logger.error("--train-examples, --eval-examples and --min-words must be at least 1, --max-words at least "
                     "--min-words")
        return 1
    try:
        build_tasks(args)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
