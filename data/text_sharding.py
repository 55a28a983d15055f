"""Split formatted articles into sentences and distribute them over train/test shards.

Input: files with one article per line (see text_formatting). Output: N training and M test
shards, `<name>_training_{i}.txt` / `<name>_test_{i}.txt`, one sentence per line and a blank
line after each article, which is what build_pretraining_dataset.py reads.

- Articles stay whole: an ELECTRA example never spans two articles, and an article never
  appears in both train and test.
- The test set is a seeded random choice of articles holding `fraction_test_set` of the
  sentences (it overshoots by less than one article).
- Shards are balanced by sentence count: largest article first, each to the currently lightest
  shard, so the heaviest and lightest shard of a split differ by at most the largest article.
- Deterministic for a seed, whatever the number of processes.
- Memory stays flat on a full Wikipedia dump: sentences are streamed to a temporary file and
  only three integers per article are kept.
"""
from __future__ import annotations

import heapq
import logging
import multiprocessing
import os
import random
import tempfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from sentence_segmentation import Segmenter, load_segmenter, split_paragraph
from text_formatting import article_paragraphs

logger = logging.getLogger(__name__)


@dataclass
class SegmentedCorpus:
    """Where each segmented article sits in `path`: its byte offset and size, and how many
    sentences (lines) it has."""

    path: Path
    offsets: array = field(default_factory=lambda: array("q"))
    n_bytes: array = field(default_factory=lambda: array("q"))
    n_sentences: array = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class ShardingResult:
    """The shard files written and the sentence count of each."""

    training_files: list[Path]
    test_files: list[Path]
    training_sentences: list[int]
    test_sentences: list[int]


def read_articles(input_files: Sequence[str | Path]) -> Iterator[str]:
    """The non-empty lines of the formatted files, in order."""
    for path in input_files:
        with open(path, encoding="utf-8") as f:
            yield from (line for line in f if line.strip())


def segment_article(segmenter: Segmenter, article_line: str) -> list[str]:
    """The sentences of one formatted article, paragraph by paragraph."""
    return [sentence for paragraph in article_paragraphs(article_line)
            for sentence in split_paragraph(segmenter, paragraph)]


worker_segmenter: Segmenter | None = None


def init_worker(method: str) -> None:
    """Pool initializer: load the segmentation model once per worker process."""
    global worker_segmenter
    worker_segmenter = load_segmenter(method)


def segment_in_worker(article_line: str) -> list[str]:
    return segment_article(worker_segmenter, article_line)


def segment_articles(article_lines: Iterable[str], method: str,
                     n_processes: int) -> Iterator[list[str]]:
    """Sentences of each article, in input order, using `n_processes` worker processes."""
    segmenter = load_segmenter(method)  # also fails fast, here, if the method cannot run
    if n_processes <= 1:
        yield from (segment_article(segmenter, line) for line in article_lines)
        return
    with multiprocessing.Pool(n_processes, initializer=init_worker, initargs=(method,)) as pool:
        yield from pool.imap(segment_in_worker, article_lines, chunksize=64)


def write_segmented(articles: Iterable[list[str]], path: Path,
                    show_progress: bool = False) -> SegmentedCorpus:
    """Write each article as one sentence per line (articles without sentences are dropped)
    and record where each one is."""
    corpus = SegmentedCorpus(path)
    offset = 0
    with open(path, "wb") as out:
        for sentences in tqdm(articles, unit=" articles", desc="segmenting",
                              disable=not show_progress):
            if not sentences:
                continue
            block = ("\n".join(sentences) + "\n").encode("utf-8")
            out.write(block)
            corpus.offsets.append(offset)
            corpus.n_bytes.append(len(block))
            corpus.n_sentences.append(len(sentences))
            offset += len(block)
    return corpus


def split_train_test(n_sentences: Sequence[int], fraction_test_set: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Article indices of the (train, test) split: test takes seeded-random articles until it
    holds `fraction_test_set` of all sentences."""
    if not 0.0 <= fraction_test_set < 1.0:
        raise ValueError(f"fraction_test_set must be in [0, 1), got {fraction_test_set}")
    order = list(range(len(n_sentences)))
    random.Random(seed).shuffle(order)
    target = fraction_test_set * sum(n_sentences)
    n_test, test_sentences = 0, 0
    while test_sentences < target:
        test_sentences += n_sentences[order[n_test]]
        n_test += 1
    return order[n_test:], order[:n_test]


def balance_into_shards(indices: Sequence[int], n_sentences: Sequence[int],
                        n_shards: int, split: str) -> list[list[int]]:
    """Greedy balancing: largest article first, each to the shard with the fewest sentences
    so far (ties to the lowest shard number). Every shard gets at least one article."""
    if len(indices) < n_shards:
        raise ValueError(f"the {split} split has {len(indices)} articles, fewer than the "
                         f"{n_shards} {split} shards asked for; lower the number of shards")
    lightest_first = [(0, shard) for shard in range(n_shards)]
    shards: list[list[int]] = [[] for _ in range(n_shards)]
    for index in sorted(indices, key=lambda i: (-n_sentences[i], i)):
        load, shard = heapq.heappop(lightest_first)
        shards[shard].append(index)
        heapq.heappush(lightest_first, (load + n_sentences[index], shard))
    return shards


def write_shard(corpus: SegmentedCorpus, article_indices: Iterable[int], path: Path) -> int:
    """Copy the given articles (in corpus order), each followed by a blank line; returns the
    number of sentences written."""
    n_sentences = 0
    with open(corpus.path, "rb") as source, open(path, "wb") as out:
        for index in sorted(article_indices):
            source.seek(corpus.offsets[index])
            out.write(source.read(corpus.n_bytes[index]))
            out.write(b"\n")
            n_sentences += corpus.n_sentences[index]
    return n_sentences


def write_split(corpus: SegmentedCorpus, shards: list[list[int]], folder: Path,
                stem: str) -> tuple[list[Path], list[int]]:
    """Write `<folder>/<stem>_{i}.txt` for each shard; returns the paths and sentence counts."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}_{i}.txt" for i in range(len(shards))]
    counts = [write_shard(corpus, shard, path) for shard, path in zip(shards, paths)]
    return paths, counts


def shard_corpus(input_files: Sequence[str | Path], output_dir: str | Path, name: str,
                 n_training_shards: int, n_test_shards: int, fraction_test_set: float,
                 seed: int, segmentation_method: str, n_processes: int,
                 show_progress: bool = False) -> ShardingResult:
    """Segment the formatted articles of `input_files` and write the shards under
    `<output_dir>/train/` and `<output_dir>/test/`."""
    if n_training_shards < 1 or n_test_shards < 0:
        raise ValueError("need at least one training shard and a non-negative number of "
                         f"test shards, got {n_training_shards} and {n_test_shards}")
    if (n_test_shards == 0) != (fraction_test_set == 0):
        raise ValueError("a test split needs both n_test_shards > 0 and fraction_test_set > 0 "
                         f"(got {n_test_shards} and {fraction_test_set})")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{name}_sentences_", dir=output_dir)
    os.close(handle)
    try:
        articles = segment_articles(read_articles(input_files), segmentation_method, n_processes)
        corpus = write_segmented(articles, Path(temp_name), show_progress)
        logger.info("%d articles, %d sentences", len(corpus), sum(corpus.n_sentences))
        train, test = split_train_test(corpus.n_sentences, fraction_test_set, seed)
        training_files, training_sentences = write_split(
            corpus, balance_into_shards(train, corpus.n_sentences, n_training_shards, "training"),
            output_dir / "train", f"{name}_training")
        test_shards = balance_into_shards(test, corpus.n_sentences, n_test_shards, "test")
        test_files, test_sentences = write_split(corpus, test_shards, output_dir / "test",
                                                 f"{name}_test")
    finally:
        os.unlink(temp_name)
    return ShardingResult(training_files, test_files, training_sentences, test_sentences)
