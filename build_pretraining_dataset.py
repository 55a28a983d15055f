"""Build ELECTRA pretraining TFRecords from a corpus with one sentence per line (docs/recipe.md,
Pretraining data).

Examples are built with Google ELECTRA's ExampleBuilder algorithm: sentences are appended until
the running length reaches a target length, a document end flushes, 10% of examples have a
single segment, 5% of the time the next target length is drawn uniformly from [5, L]. Each
example holds int64 `input_ids`, `input_mask` and `segment_ids` of fixed length L laid out as
`[CLS] A [SEP] (B [SEP])`; masking happens at train time, so none is stored.

Every input file is one unit of work with its own random generator seeded from (seed, file
index), so the examples do not depend on which process handles a file: a run is reproducible
for a given seed and process count, and 1 or 2 processes give the same multiset of examples.
Process w owns the output files whose index i satisfies i % processes == w and writes its
examples to them in turn, as Google's ExampleWriter does.

Outputs are written under `OUTPUT_DIR/.incomplete/` with a `.partial` suffix and take their
final names `pretrain_data.tfrecord-{i}-of-{N}` only once every process has succeeded; only then
do they replace the outputs of an earlier run in OUTPUT_DIR (a failed rebuild leaves the previous
dataset as it was). The run summary `build_summary.json` comes last, so its presence marks a
complete run.

Input files that are not UTF-8 text (invalid UTF-8 or NUL bytes) are skipped whole, with a
warning naming them, and listed in the summary; they are checked before any of their examples
is written, so a bad file never contributes half of its examples. A vocabulary that does not
fit the corpus shows as [UNK] tokens: a warning above WARN_UNKNOWN_FRACTION of the tokens, an
error (and no output) above MAX_UNKNOWN_FRACTION.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import queue
import random
import re
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import tokenization
from safe_io import STAGING_NAME, UserError, staged_outputs, writable_output_dir
from tfrecord_format import masked_crc

logger = logging.getLogger("build_pretraining_dataset")

DEFAULT_VOCAB = str(Path(__file__).resolve().parent / "vocab" / "vocab.txt")
OUTPUT_NAME = "pretrain_data.tfrecord-{index}-of-{total}"
OUTPUT_NAME_RE = re.compile(r"^pretrain_data\.tfrecord-\d+-of-\d+$")
SUMMARY_NAME = "build_summary.json"
TEMP_DIR_NAME = STAGING_NAME
TEMP_SUFFIX = ".partial"
FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids")

SINGLE_SEGMENT_PROB = 0.1
SHORT_TARGET_PROB = 0.05
MIN_TARGET_LENGTH = 5
LINES_PER_BATCH = 1024
# English text with BERT's uncased vocab has well under 0.1% [UNK] tokens.
WARN_UNKNOWN_FRACTION = 0.05
MAX_UNKNOWN_FRACTION = 0.5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

ProgressCallback = Callable[[int], None]


class DatasetBuildError(UserError):
    """An input problem the user can fix (missing or empty corpus, bad vocab, no examples)."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything a run depends on; picklable, so it travels to worker processes."""

    corpus_dir: str
    output_dir: str
    vocab_file: str = DEFAULT_VOCAB
    max_seq_length: int = 128
    num_processes: int = 1
    num_out_files: int = 1000
    seed: int = 12345
    blanks_separate_docs: bool = True
    do_lower_case: bool = True
    tokenizer_backend: str = "rust"


class CorpusFile(NamedTuple):
    """One input file: its index in the sorted corpus (which seeds its randomness) and size."""

    index: int
    path: Path
    size: int


class PretrainingExample(NamedTuple):
    """One example's features, each a list of max_seq_length ints."""

    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]


@dataclass
class BuildStats:
    """Counters of a build; workers fill their own and the parent adds them up."""

    files: int = 0
    documents: int = 0
    sentences: int = 0
    examples: int = 0
    corpus_tokens: int = 0
    unknown_tokens: int = 0
    example_tokens: int = 0
    padding_tokens: int = 0
    truncated_tokens: int = 0
    single_segment_examples: int = 0
    single_segment_draws: int = 0
    short_target_draws: int = 0
    skipped_lines: dict[str, int] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)

    def skip_line(self, reason: str) -> None:
        self.skipped_lines[reason] = self.skipped_lines.get(reason, 0) + 1

    def add(self, other: BuildStats) -> None:
        """Add another worker's counters to these."""
        for name, value in asdict(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        for reason, count in other.skipped_lines.items():
            self.skipped_lines[reason] = self.skipped_lines.get(reason, 0) + count
        self.skipped_files.extend(other.skipped_files)


class ExampleBuilder:
    """Google ELECTRA's ExampleBuilder: turns a stream of tokenized sentences into examples.

    Random draws happen in the reference's order, so a given `rng` state yields the reference's
    examples. Empty sentences are counted and dropped: in the reference they never change an
    example nor consume a random draw.
    """

    def __init__(self, max_length: int, cls_id: int, sep_id: int, rng: random.Random,
                 stats: BuildStats | None = None):
        if max_length < MIN_TARGET_LENGTH:
            raise ValueError(f"max_length must be at least {MIN_TARGET_LENGTH}, got {max_length}")
        self.max_length = max_length
        self.stats = stats if stats is not None else BuildStats()
        self._cls_id = cls_id
        self._sep_id = sep_id
        self._rng = rng
        self._sentences: list[Sequence[int]] = []
        self._length = 0
        self._target_length = max_length
        self._document_has_sentences = False

    def add_sentence(self, token_ids: Sequence[int]) -> PretrainingExample | None:
        """Add one sentence's WordPiece ids; returns an example once the target length is met."""
        self.stats.sentences += 1
        self.stats.corpus_tokens += len(token_ids)
        if not token_ids:
            self.stats.skip_line("no WordPiece tokens")
            return None
        self._document_has_sentences = True
        self._sentences.append(token_ids)
        self._length += len(token_ids)
        if self._length >= self._target_length:
            return self._create_example()
        return None

    def end_document(self) -> PretrainingExample | None:
        """End the current document; returns the example of its pending sentences, if any."""
        if self._document_has_sentences:
            self.stats.documents += 1
            self._document_has_sentences = False
        return self._create_example() if self._length else None

    def _create_example(self) -> PretrainingExample:
        first_segment, second_segment = self._split_segments()
        kept_first = first_segment[:self.max_length - 2]
        kept_second = second_segment[:max(0, self.max_length - len(kept_first) - 3)]
        self.stats.truncated_tokens += (len(first_segment) + len(second_segment)
                                        - len(kept_first) - len(kept_second))
        self._sentences = []
        self._length = 0
        self._draw_next_target_length()
        return self._pack(kept_first, kept_second)

    def _split_segments(self) -> tuple[list[int], list[int]]:
        """Share the pending sentences between segment A and B (the reference's rules)."""
        rng = self._rng
        if rng.random() < SINGLE_SEGMENT_PROB:
            self.stats.single_segment_draws += 1
            first_target = sys.maxsize
        else:
            first_target = (self._target_length - 3) // 2  # room for [CLS] and two [SEP]
        first: list[int] = []
        second: list[int] = []
        for sentence in self._sentences:
            if (not first or len(first) + len(sentence) < first_target
                    or (not second and len(first) < first_target and rng.random() < 0.5)):
                first += sentence
            else:
                second += sentence
        return first, second

    def _draw_next_target_length(self) -> None:
        if self._rng.random() < SHORT_TARGET_PROB:
            self.stats.short_target_draws += 1
            self._target_length = self._rng.randint(MIN_TARGET_LENGTH, self.max_length)
        else:
            self._target_length = self.max_length

    def _pack(self, first: list[int], second: list[int]) -> PretrainingExample:
        """Lay out `[CLS] A [SEP] (B [SEP])`, zero-padded to max_length, and count it."""
        input_ids = [self._cls_id, *first, self._sep_id]
        segment_ids = [0] * len(input_ids)
        if second:
            input_ids += [*second, self._sep_id]
            segment_ids += [1] * (len(second) + 1)
        num_real = len(input_ids)
        padding = [0] * (self.max_length - num_real)
        stats = self.stats
        stats.examples += 1
        stats.example_tokens += num_real
        stats.padding_tokens += len(padding)
        stats.single_segment_examples += not second
        return PretrainingExample(input_ids + padding, [1] * num_real + padding,
                                  segment_ids + padding)


@dataclass(frozen=True)
class SentenceEncoder:
    """A batch WordPiece encoder (texts -> ids without special tokens) and its special ids."""

    encode_batch: Callable[[Sequence[str]], list[list[int]]]
    cls_id: int
    sep_id: int
    unk_id: int


def load_encoder(vocab_file: str, do_lower_case: bool, backend: str = "rust") -> SentenceEncoder:
    """The encoder of `backend`: "rust" (tokenization.WordPieceTokenizer, the one to use) or
    "python" (transformers' pure-Python BERT tokenizer, the recipe's original, for benchmarks)."""
    if backend == "rust":
        tokenizer = tokenization.WordPieceTokenizer(vocab_file, do_lower_case=do_lower_case)
        return SentenceEncoder(tokenizer.encode_batch_ids, tokenizer.cls_id, tokenizer.sep_id,
                               tokenizer.unk_id)
    if backend == "python":
        vocab = tokenization.load_vocab(vocab_file)
        return SentenceEncoder(_python_wordpiece(vocab_file, do_lower_case), vocab["[CLS]"],
                               vocab["[SEP]"], vocab["[UNK]"])
    raise ValueError(f"unknown tokenizer backend {backend!r}; expected 'rust' or 'python'")


def _python_wordpiece(vocab_file: str, do_lower_case: bool
                      ) -> Callable[[Sequence[str]], list[list[int]]]:
    # transformers is a test/benchmark dependency only, hence the late import.
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy(vocab_file, do_lower_case=do_lower_case)
    return lambda texts: [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in texts]


def file_rng(seed: int, file_index: int) -> random.Random:
    """The random generator of one input file: depends on (seed, file index) only, never on
    the process that reads the file."""
    return random.Random(f"electra-pretraining-data/{seed}/{file_index}")


class RoundRobinTFRecordWriter:
    """Writes examples as `tf.train.Example` records to several TFRecord files in turn.

    Records are encoded here, byte for byte as TensorFlow's TFRecordWriter and deterministic
    protobuf serialization make them, because importing TensorFlow costs each process seconds.
    """

    def __init__(self, paths: Sequence[Path]):
        self._files = [open(p, "wb") for p in paths]
        self._count = 0

    def write(self, example: PretrainingExample | None) -> None:
        """Write `example` to the next file; None (no example yet) writes nothing."""
        if example is None:
            return
        self._files[self._count % len(self._files)].write(tfrecord(serialize_example(example)))
        self._count += 1

    def close(self) -> None:
        for file in self._files:
            file.close()

    def __enter__(self) -> RoundRobinTFRecordWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Varints(dict):
    """Non-negative int -> its protobuf varint bytes, computed once per value (token ids repeat)."""

    def __missing__(self, value: int) -> bytes:
        encoded, rest = bytearray(), value
        while rest > 0x7F:
            encoded.append(rest & 0x7F | 0x80)
            rest >>= 7
        encoded.append(rest)
        self[value] = bytes(encoded)
        return self[value]


_VARINTS = _Varints()


def _field_header(tag: int, length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field (wire type 2) numbered `tag`."""
    return _VARINTS[tag << 3 | 2] + _VARINTS[length]


@functools.lru_cache(maxsize=None)
def _feature_entry_header(name: str, values_length: int) -> bytes:
    """All of a `Features.feature` map entry that precedes its packed values: it depends only
    on the feature name and the values' length in bytes, so it is built once per pair.
    Features.feature = 1 (entry: key = 1, value = 2); Feature.int64_list = 3;
    Int64List.value = 1 (packed)."""
    int64_list = _field_header(1, values_length)
    feature = _field_header(3, len(int64_list) + values_length) + int64_list
    key = _field_header(1, len(name.encode())) + name.encode()
    entry = key + _field_header(2, len(feature) + values_length) + feature
    return _field_header(1, len(entry) + values_length) + entry


def _packed_varints(values: Sequence[int]) -> bytes:
    """The packed varints of non-negative ints. Below 128 a value is its own one-byte varint,
    so `bytes` packs input_mask and segment_ids in C, about 10x faster than joining varints;
    `bytes` fails fast on token ids (above 255), and `isascii` tells a value in 128-255."""
    with contextlib.suppress(ValueError):  # a value above 255
        if (packed := bytes(values)).isascii():
            return packed
    return b"".join(map(_VARINTS.__getitem__, values))


def serialize_example(example: PretrainingExample) -> bytes:
    """`tf.train.Example` bytes of the example's int64 features, as protobuf serializes them
    deterministically: map entries sorted by key (FEATURE_NAMES is sorted), values packed."""
    features = []
    for name, values in zip(FEATURE_NAMES, example, strict=True):
        packed = _packed_varints(values)
        features += (_feature_entry_header(name, len(packed)), packed)
    body = b"".join(features)
    return _field_header(1, len(body)) + body  # Example.features = 1


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: little-endian uint64 length, masked CRC-32C of the length, data, masked
    CRC-32C of the data."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, masked_crc(length), data, masked_crc(data)))


def unreadable_reason(path: Path) -> str | None:
    """Why `path` is not UTF-8 text, or None if it is. Read in 1 MiB chunks (memory stays flat);
    a NUL byte marks a binary file even though it is valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                nul = chunk.find(b"\0")
                if nul >= 0:
                    return f"binary (NUL byte at offset {offset + nul})"
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        return f"not UTF-8 ({error.reason} near byte {offset + error.start})"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return None


def read_line_batches(path: Path, lines_per_batch: int = LINES_PER_BATCH
                      ) -> Iterator[tuple[list[str], int]]:
    """Stripped lines of a UTF-8 file in batches, each with the number of bytes it covers.
    Whitespace-only lines come out empty, i.e. blank."""
    batch: list[str] = []
    num_bytes = 0
    with open(path, "rb") as f:
        for raw_line in f:
            batch.append(raw_line.decode("utf-8").strip())
            num_bytes += len(raw_line)
            if len(batch) == lines_per_batch:
                yield batch, num_bytes
                batch, num_bytes = [], 0
    if batch:
        yield batch, num_bytes


def write_file_examples(corpus_file: CorpusFile, encoder: SentenceEncoder,
                        writer: RoundRobinTFRecordWriter, config: BuildConfig, stats: BuildStats,
                        progress: ProgressCallback) -> None:
    """Build the examples of one input file with its own seeded builder and write them."""
    builder = ExampleBuilder(config.max_seq_length, encoder.cls_id, encoder.sep_id,
                             file_rng(config.seed, corpus_file.index), stats)
    for lines, num_bytes in read_line_batches(corpus_file.path):
        batch_ids = encoder.encode_batch([line for line in lines if line])
        stats.unknown_tokens += sum(ids.count(encoder.unk_id) for ids in batch_ids)
        token_ids = iter(batch_ids)
        for line in lines:
            if line:
                writer.write(builder.add_sentence(next(token_ids)))
            elif config.blanks_separate_docs:
                writer.write(builder.end_document())
        progress(num_bytes)
    writer.write(builder.end_document())
    stats.files += 1


def write_tfrecords(input_files: Sequence[CorpusFile], output_paths: Sequence[Path],
                    config: BuildConfig, progress: ProgressCallback = lambda num_bytes: None
                    ) -> BuildStats:
    """Build the examples of `input_files` and write them in turn to `output_paths`.

    Streams: lines are read and tokenized in batches and examples written as they are made.
    Files that are not UTF-8 text are skipped and listed in the returned stats.
    `progress` receives the number of input bytes consumed, as they are.
    """
    encoder = load_encoder(config.vocab_file, config.do_lower_case, config.tokenizer_backend)
    stats = BuildStats()
    with RoundRobinTFRecordWriter(output_paths) as writer:
        for corpus_file in input_files:
            reason = unreadable_reason(corpus_file.path)
            if reason is None:
                write_file_examples(corpus_file, encoder, writer, config, stats, progress)
                continue
            stats.skipped_files.append({"file": str(corpus_file.path), "reason": reason})
            progress(corpus_file.size)
    return stats


@dataclass(frozen=True)
class WorkerPlan:
    """The input files one process reads and the output file indices it owns."""

    index: int
    input_files: tuple[CorpusFile, ...]
    output_indices: tuple[int, ...]


def plan_workers(corpus_files: Sequence[CorpusFile], num_workers: int,
                 num_out_files: int) -> list[WorkerPlan]:
    """Give output file i to worker i % num_workers, and input files to workers by size
    (largest first to the least loaded, ties to the lowest index) so they finish together.
    Depends only on the inputs, so a run is reproducible for a given process count."""
    loads = [0] * num_workers
    assigned: list[list[CorpusFile]] = [[] for _ in range(num_workers)]
    for corpus_file in sorted(corpus_files, key=lambda f: (-f.size, f.index)):
        worker = min(range(num_workers), key=lambda w: (loads[w], w))
        assigned[worker].append(corpus_file)
        loads[worker] += corpus_file.size
    return [WorkerPlan(w, tuple(sorted(assigned[w])), tuple(range(w, num_out_files, num_workers)))
            for w in range(num_workers)]


def output_name(index: int, total: int) -> str:
    return OUTPUT_NAME.format(index=index, total=total)


def temp_output_path(temp_dir: Path, index: int, total: int) -> Path:
    return temp_dir / (output_name(index, total) + TEMP_SUFFIX)


def find_corpus_files(corpus_dir: str) -> list[CorpusFile]:
    """Every *.txt file under `corpus_dir` (recursively), sorted by relative path."""
    root = Path(corpus_dir)
    if not root.is_dir():
        raise DatasetBuildError(f"corpus directory not found: {corpus_dir} (expected a "
                                "directory of *.txt files with one sentence per line)")
    paths = sorted((p for p in root.rglob("*.txt") if p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    files = [CorpusFile(i, p, p.stat().st_size) for i, p in enumerate(paths)]
    if not files:
        raise DatasetBuildError(f"empty corpus: no *.txt files under {corpus_dir}")
    if not any(f.size for f in files):
        raise DatasetBuildError(f"empty corpus: all {len(files)} *.txt files under "
                                f"{corpus_dir} are empty")
    return files


def check_vocab(vocab_file: str) -> None:
    try:
        tokenization.load_vocab(vocab_file)
    except (OSError, ValueError) as error:
        raise DatasetBuildError(str(error)) from error


def is_output_name(name: str) -> bool:
    """The names this program writes in OUTPUT_DIR, and so replaces on a rebuild."""
    return bool(OUTPUT_NAME_RE.match(name)) or name == SUMMARY_NAME


def check_unknown_tokens(stats: BuildStats, config: BuildConfig) -> None:
    """Warn when many tokens are [UNK], fail when most are: the vocab does not fit the corpus
    (e.g. it holds only the special tokens, or its case differs from --do-lower-case's)."""
    fraction = stats.unknown_tokens / max(stats.corpus_tokens, 1)
    advice = (f"{config.vocab_file} does not fit the corpus in {config.corpus_dir}: check it is "
              "the WordPiece vocab.txt meant for this text (with --no-lower-case for a cased one)")
    if fraction > MAX_UNKNOWN_FRACTION:
        raise DatasetBuildError(f"{fraction:.0%} of the {stats.corpus_tokens} tokens are [UNK]; "
                                f"{advice}")
    if fraction > WARN_UNKNOWN_FRACTION:
        logger.warning("%.1f%% of the %d tokens are [UNK]; %s", 100 * fraction,
                       stats.corpus_tokens, advice)


def _worker_main(plan: WorkerPlan, config: BuildConfig, temp_dir: Path,
                 messages: multiprocessing.Queue, parent_pid: int, tokenizer_threads: int) -> None:
    """Entry point of a worker process: report progress, then its stats or its traceback."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # The Rust tokenizer's thread pool: share the cores between processes unless the user chose.
    os.environ.setdefault("RAYON_NUM_THREADS", str(tokenizer_threads))

    def report_progress(num_bytes: int) -> None:
        if os.getppid() != parent_pid:
            sys.exit("the parent process is gone; stopping")
        messages.put(("progress", plan.index, num_bytes))

    output_paths = [temp_output_path(temp_dir, i, config.num_out_files)
                    for i in plan.output_indices]
    try:
        stats = write_tfrecords(plan.input_files, output_paths, config, report_progress)
    except Exception:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        messages.put(("error", plan.index, traceback.format_exc()))
    else:
        messages.put(("done", plan.index, stats))


def run_workers(plans: Sequence[WorkerPlan], config: BuildConfig, temp_dir: Path,
                progress: ProgressCallback) -> list[BuildStats]:
    """Run one spawned process per plan; on any failure stop them all and raise.

    Spawn, not fork: forking a process that may hold TensorFlow or tokenizer threads can hang.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // len(plans))
    processes = [context.Process(target=_worker_main, daemon=True,
                                 args=(plan, config, temp_dir, messages, os.getpid(), threads))
                 for plan in plans]
    results: dict[int, BuildStats] = {}
    try:
        for process in processes:
            process.start()
        while len(results) < len(processes):
            try:
                kind, index, payload = messages.get(timeout=0.5)
            except queue.Empty:
                _raise_if_any_died(processes, results)
                continue
            if kind == "progress":
                progress(payload)
            elif kind == "done":
                results[index] = payload
            else:
                raise RuntimeError(f"worker {index} failed:\n{payload}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
    return [results[i] for i in range(len(processes))]


def _raise_if_any_died(processes: Sequence[multiprocessing.Process],
                       results: dict[int, BuildStats]) -> None:
    """A worker killed from outside (OOM killer, signal) sends no message: notice it here."""
    for index, process in enumerate(processes):
        if index not in results and process.exitcode not in (None, 0):
            raise RuntimeError(f"worker {index} died with exit code {process.exitcode}")


def build_stats(plans: Sequence[WorkerPlan], config: BuildConfig, temp_dir: Path,
                progress: ProgressCallback) -> BuildStats:
    """Run the plans (in this process when there is one) and add up their stats."""
    if len(plans) == 1:
        paths = [temp_output_path(temp_dir, i, config.num_out_files)
                 for i in plans[0].output_indices]
        return write_tfrecords(plans[0].input_files, paths, config, progress)
    total = BuildStats()
    for stats in run_workers(plans, config, temp_dir, progress):
        total.add(stats)
    return total


def summarize(stats: BuildStats, config: BuildConfig, num_input_files: int, num_workers: int,
              elapsed_seconds: float) -> dict:
    """The run summary: counts, fractions the algorithm controls, throughput, skips."""
    positions = stats.examples * config.max_seq_length
    return {
        "config": asdict(config),
        "processes_used": num_workers,
        "input_files": num_input_files,
        "processed_files": stats.files,
        "skipped_files": stats.skipped_files,
        "skipped_lines": stats.skipped_lines,
        "documents": stats.documents,
        "sentences": stats.sentences,
        "examples": stats.examples,
        "tokens": stats.corpus_tokens,
        "unknown_tokens": stats.unknown_tokens,
        "example_tokens": stats.example_tokens,
        "truncated_tokens": stats.truncated_tokens,
        "single_segment_fraction": stats.single_segment_examples / stats.examples,
        "single_segment_draw_fraction": stats.single_segment_draws / stats.examples,
        "short_target_draw_fraction": stats.short_target_draws / stats.examples,
        "padding_fraction": stats.padding_tokens / positions,
        "elapsed_seconds": elapsed_seconds,
        "tokens_per_second": stats.corpus_tokens / elapsed_seconds,
        "sentences_per_second": stats.sentences / elapsed_seconds,
    }


def finish_outputs(temp_dir: Path, num_out_files: int, summary: dict) -> None:
    """Give the finished files their final names and write the summary, in the staging folder."""
    for index in range(num_out_files):
        os.replace(temp_output_path(temp_dir, index, num_out_files),
                   temp_dir / output_name(index, num_out_files))
    (temp_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def build_dataset(config: BuildConfig) -> dict:
    """Build the TFRecords of `config` and return the run summary.

    Raises DatasetBuildError for inputs the user must fix; on any failure the temporaries are
    removed and OUTPUT_DIR holds what it held before (a previous dataset stays whole).
    """
    corpus_files = find_corpus_files(config.corpus_dir)
    check_vocab(config.vocab_file)
    output_dir = writable_output_dir(config.output_dir, "--output-dir")
    num_workers = min(config.num_processes, config.num_out_files, len(corpus_files))
    if num_workers < config.num_processes:
        logger.info("using %d processes: there are only %d input files and %d output files",
                    num_workers, len(corpus_files), config.num_out_files)
    plans = plan_workers(corpus_files, num_workers, config.num_out_files)
    # Imported here, not at the top: spawned workers import this module and need no bar.
    from tqdm import tqdm

    start = time.perf_counter()
    with staged_outputs(output_dir, is_output_name, SUMMARY_NAME) as temp_dir:
        with tqdm(total=sum(f.size for f in corpus_files), unit="B", unit_scale=True,
                  desc="building examples") as bar:
            stats = build_stats(plans, config, temp_dir, bar.update)
        if stats.examples == 0:
            skipped = "".join(f"; skipped {s['file']}: {s['reason']}" for s in stats.skipped_files)
            raise DatasetBuildError(f"empty corpus: no example could be built from "
                                    f"{config.corpus_dir} ({stats.sentences} sentences"
                                    f"{skipped})")
        check_unknown_tokens(stats, config)
        summary = summarize(stats, config, len(corpus_files), num_workers,
                            time.perf_counter() - start)
        finish_outputs(temp_dir, config.num_out_files, summary)
    return summary


def log_summary(summary: dict) -> None:
    logger.info("wrote %d examples to %d files in %s (%.1f s, %.0f tokens/s, %.0f sentences/s)",
                summary["examples"], summary["config"]["num_out_files"],
                summary["config"]["output_dir"], summary["elapsed_seconds"],
                summary["tokens_per_second"], summary["sentences_per_second"])
    logger.info("%d files, %d documents, %d sentences, %d tokens (%d truncated); "
                "single-segment fraction %.3f, padding fraction %.3f",
                summary["processed_files"], summary["documents"], summary["sentences"],
                summary["tokens"], summary["truncated_tokens"],
                summary["single_segment_fraction"], summary["padding_fraction"])
    for skipped in summary["skipped_files"]:
        logger.warning("skipped file %s: %s", skipped["file"], skipped["reason"])
    for reason, count in summary["skipped_lines"].items():
        logger.warning("skipped %d lines: %s", count, reason)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build ELECTRA pretraining TFRecords (input_ids, input_mask, segment_ids) "
                    "from text files with one sentence per line.")
    parser.add_argument("--corpus-dir", required=True,
                        help="directory whose *.txt files (recursively, sorted by path) hold "
                             "one sentence per line")
    parser.add_argument("--vocab-file", default=DEFAULT_VOCAB,
                        help="BERT WordPiece vocab.txt (default: this repository's "
                             "vocab/vocab.txt)")
    parser.add_argument("--output-dir", required=True,
                        help="where pretrain_data.tfrecord-{i}-of-{N} and build_summary.json "
                             "go; they replace an earlier run's only once this one succeeds")
    parser.add_argument("--max-seq-length", type=_at_least(MIN_TARGET_LENGTH), default=128,
                        help="example length L (128 for phase 1, 512 for phase 2; "
                             "default: %(default)s)")
    parser.add_argument("--num-processes", type=_at_least(1), default=1,
                        help="worker processes; input files are the units of work; with "
                             "several, each tokenizes with cores/processes Rust threads unless "
                             "RAYON_NUM_THREADS is set (default: %(default)s)")
    parser.add_argument("--num-out-files", type=_at_least(1), default=1000,
                        help="number of output TFRecord files N (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=12345,
                        help="seed of all random choices, drawn per input file "
                             "(default: %(default)s)")
    parser.add_argument("--blanks-separate-docs", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="a blank (or whitespace-only) line ends a document; with "
                             "--no-blanks-separate-docs blank lines are ignored and each file "
                             "is one document (default: on)")
    parser.add_argument("--do-lower-case", dest="do_lower_case", action="store_true",
                        default=True,
                        help="lower-case and strip accents before WordPiece (default; for "
                             "uncased vocabularies)")
    parser.add_argument("--no-lower-case", dest="do_lower_case", action="store_false",
                        help="keep case and accents (for cased vocabularies)")
    parser.add_argument("--tokenizer-backend", choices=("rust", "python"), default="rust",
                        help="WordPiece implementation: 'rust' (tokenization.py, default) or "
                             "'python' (transformers' pure-Python BERT tokenizer, the "
                             "recipe's original; same ids, slower, for benchmarks)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = BuildConfig(**vars(args))
    try:
        summary = build_dataset(config)
    except UserError as error:
        logger.error("%s", error)
        return 1
    log_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
