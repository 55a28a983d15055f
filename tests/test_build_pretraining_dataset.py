"""Tests of build_pretraining_dataset.py: the example-building algorithm (against a hand-worked
case, a transcription of Google ELECTRA's reference and the probabilities it promises), the
TFRecord format, reproducibility across seeds and process counts, bad inputs and interrupted
runs."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import build_pretraining_dataset as bpd
import tokenization

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "vocab" / "vocab.txt"
AUSTEN = REPO / "data" / "sample_corpus" / "austen"
SEQ_LEN = 64
NUM_OUT_FILES = 3
CLS, SEP = 101, 102  # their ids in the uncased BERT vocab


# ---------------------------------------------------------------------------------------------
# Helpers


def read_examples(output_dir: Path) -> list[tuple[tuple[int, ...], ...]]:
    """All examples of the finished output files, each (input_ids, input_mask, segment_ids);
    TFRecordDataset also checks the records' CRCs."""
    import tensorflow as tf

    examples = []
    for path in sorted(output_dir.glob("pretrain_data.tfrecord-*-of-*")):
        for record in tf.data.TFRecordDataset(str(path)):
            example = tf.train.Example.FromString(record.numpy())
            assert sorted(example.features.feature) == sorted(bpd.FEATURE_NAMES)
            examples.append(tuple(tuple(example.features.feature[name].int64_list.value)
                                  for name in bpd.FEATURE_NAMES))
    return examples


def output_bytes(output_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in output_dir.glob("pretrain_data.tfrecord-*")}


def finished_looking_files(directory: Path) -> list[Path]:
    """Files anywhere under `directory` named like a finished output or summary."""
    return [p for p in directory.rglob("*")
            if bpd.OUTPUT_NAME_RE.match(p.name) or p.name == bpd.SUMMARY_NAME]


def assert_valid_example(input_ids, input_mask, segment_ids, seq_len: int, vocab: dict) -> None:
    """The stored layout: [CLS] A [SEP] (B [SEP]), segment 1 only for B and its [SEP], mask 1
    exactly over the real tokens, zeros after, no [MASK]."""
    assert len(input_ids) == len(input_mask) == len(segment_ids) == seq_len
    num_real = sum(input_mask)
    assert list(input_mask) == [1] * num_real + [0] * (seq_len - num_real)
    assert list(input_ids[num_real:]) == [0] * (seq_len - num_real)
    assert list(segment_ids[num_real:]) == [0] * (seq_len - num_real)
    real_ids = input_ids[:num_real]
    assert real_ids[0] == vocab["[CLS]"] and real_ids[-1] == vocab["[SEP]"]
    assert vocab["[MASK]"] not in input_ids and vocab["[PAD]"] not in real_ids
    assert vocab["[CLS]"] not in real_ids[1:]
    sep_positions = [i for i, t in enumerate(real_ids) if t == vocab["[SEP]"]]
    assert len(sep_positions) in (1, 2)
    first_sep = sep_positions[0]
    assert first_sep >= 2, "segment A must hold at least one token"
    segments = list(segment_ids[:num_real])
    assert segments == [0] * (first_sep + 1) + [1] * (num_real - first_sep - 1)
    if len(sep_positions) == 2:
        assert sep_positions[1] == num_real - 1 and sep_positions[1] - first_sep >= 2
    else:
        assert first_sep == num_real - 1


def run_cli(*args: str) -> subprocess.Popen:
    """Start the program as a subprocess in its own process group."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "build_pretraining_dataset.py"), *args], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Poll until `condition` holds; fail (never hang) if the process ends first."""
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the build ended (exit {process.returncode}) before {what}:\n"
                        f"{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def partial_files_with_data(output_dir: Path) -> bool:
    temp_dir = output_dir / bpd.TEMP_DIR_NAME
    return temp_dir.is_dir() and any(p.stat().st_size > 0 for p in temp_dir.glob("*.partial"))


def austen_sentences(book: str, num_chars: int) -> list[str]:
    """The start of a sample book as sentences, one per line: wrapped lines are joined per
    paragraph and split naively after . ! ?; a blank line after every 4 paragraphs."""
    text = (AUSTEN / book).read_text(encoding="utf-8")[:num_chars]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    lines: list[str] = []
    for number, paragraph in enumerate(paragraphs, 1):
        lines += re.split(r"(?<=[.!?])\s+", paragraph)
        if number % 4 == 0:
            lines.append("")
    return lines


def write_large_corpus(corpus_dir: Path, num_files: int, num_lines: int) -> None:
    """Files long enough that a build is still writing when a test interrupts it."""
    words = "the quick brown fox jumps over lazy dogs while seven wizards quietly hex".split()
    rng = random.Random(0)
    corpus_dir.mkdir(parents=True)
    for index in range(num_files):
        lines = [" ".join(rng.choices(words, k=12)) for _ in range(num_lines)]
        (corpus_dir / f"big{index}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
    return tokenization.load_vocab(str(VOCAB))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Sample-book text plus the awkward cases: whitespace-only lines, a sentence much longer
    than SEQ_LEN, a line without WordPiece tokens, a nested file, a binary and a Latin-1 file,
    and a file that is not *.txt."""
    root = tmp_path_factory.mktemp("corpus")
    books = ["emma.txt", "persuasion.txt", "prideprejudice.txt"]
    for book in books[:2]:
        (root / book).write_text("\n".join(austen_sentences(book, 30_000)) + "\n",
                                 encoding="utf-8")
    (root / "nested").mkdir()
    awkward = austen_sentences(books[2], 20_000)
    awkward[5:5] = ["   \t ", " ".join(["extraordinarily"] * 150), "\u200b\x07", "  "]
    (root / "nested" / "pride.txt").write_text("\n".join(awkward) + "\n", encoding="utf-8")
    (root / "blob.txt").write_bytes(b"GIF89a\x00\x01\x02" * 50)
    (root / "latin1.txt").write_bytes("Un caf\u00e9 au lait.\n".encode("latin-1"))
    (root / "notes.md").write_text("not part of the corpus\n", encoding="utf-8")
    return root


def build_flags(corpus_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--corpus-dir", str(corpus_dir), "--output-dir", str(output_dir),
            "--vocab-file", str(VOCAB), "--max-seq-length", str(SEQ_LEN),
            "--num-out-files", str(NUM_OUT_FILES), *extra]


def build(corpus_dir: Path, output_dir: Path, *extra: str) -> int:
    """Run the program in this process (TensorFlow is imported once for all such runs)."""
    return bpd.main(build_flags(corpus_dir, output_dir, *extra))


@pytest.fixture(scope="module")
def builds(corpus, tmp_path_factory) -> dict[str, Path]:
    """The same corpus built with seed 1, with seed 1 again in another process (so nothing
    process-specific such as the pid or hash seed can leak in), with seed 1 on 2 processes,
    and with seed 2."""
    runs = {"seed1": ("--seed", "1"), "seed1_2proc": ("--seed", "1", "--num-processes", "2"),
            "seed2": ("--seed", "2")}
    outputs = {name: tmp_path_factory.mktemp(name) for name in [*runs, "seed1_again"]}
    again = run_cli(*build_flags(corpus, outputs["seed1_again"], "--seed", "1"))
    for name, flags in runs.items():
        assert build(corpus, outputs[name], *flags) == 0
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    return outputs


# ---------------------------------------------------------------------------------------------
# The example builder


class ScriptedRandom(random.Random):
    """A generator that returns given values in order, to steer every draw of the builder."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    def randint(self, a: int, b: int) -> int:
        assert (a, b) == (5, 16), "the short target length must be drawn from [5, L]"
        return self.values.pop(0)


def test_builder_builds_the_hand_worked_examples():
    rng = ScriptedRandom([
        0.5, 0.7, 0.9,  # two segments, sentence 3 goes to B (coin >= 0.5), full next target
        0.05, 0.01, 7,  # single segment, next target drawn short: 7
        0.3, 0.6,       # two segments, full next target
        0.5, 0.9,       # the over-long sentence: two segments asked, full next target
    ])
    builder = bpd.ExampleBuilder(16, CLS, SEP, rng)
    pad = [0] * 16
    assert builder.add_sentence([11, 12, 13]) is None
    assert builder.add_sentence([21, 22]) is None
    assert builder.add_sentence([31, 32, 33, 34]) is None
    # 3+2+4+8 = 17 >= 16: A target (16-3)//2 = 6 holds s1, s2 (5 tokens); s3 would overflow
    # it and the coin says B; s4 joins B, which is cut to 16-5-3 = 8 tokens.
    example = builder.add_sentence([41, 42, 43, 44, 45, 46, 47, 48])
    assert example == (
        [CLS, 11, 12, 13, 21, 22, SEP, 31, 32, 33, 34, 41, 42, 43, 44, SEP],
        [1] * 16,
        [0] * 7 + [1] * 9)
    assert builder.add_sentence([51, 52]) is None
    assert builder.end_document() == ([CLS, 51, 52, SEP] + pad[:12], [1] * 4 + pad[:12],
                                      pad)
    assert builder.add_sentence([61, 62, 63, 64]) is None  # target is now 7
    assert builder.add_sentence([71, 72, 73]) == (  # A target (7-3)//2 = 2
        [CLS, 61, 62, 63, 64, SEP, 71, 72, 73, SEP] + pad[:6], [1] * 10 + pad[:6],
        [0] * 6 + [1] * 4 + pad[:6])
    long_sentence = list(range(1000, 1040))
    assert builder.add_sentence(long_sentence) == (
        [CLS, *long_sentence[:14], SEP], [1] * 16, [0] * 16)
    assert builder.end_document() is None
    assert rng.values == [], "every scripted draw must be used, in order"
    stats = builder.stats
    assert (stats.documents, stats.sentences, stats.examples) == (2, 8, 4)
    assert (stats.single_segment_draws, stats.short_target_draws) == (1, 1)
    assert stats.truncated_tokens == 4 + 26
    assert stats.single_segment_examples == 2


class ReferenceExampleBuilder:
    """Google ELECTRA's ExampleBuilder (build_pretraining_dataset.py), transcribed with token ids
    in place of text lines (None for a blank line). The oracle for draw-for-draw equality."""

    def __init__(self, max_length: int, rng: random.Random):
        self._rng = rng
        self._current_sentences: list[list[int]] = []
        self._current_length = 0
        self._max_length = max_length
        self._target_length = max_length

    def add_line(self, bert_tokids: list[int] | None):
        if bert_tokids is None:  # the reference's `not line`: a blank line
            if self._current_length != 0:
                return self._create_example()
            bert_tokids = []
        self._current_sentences.append(bert_tokids)
        self._current_length += len(bert_tokids)
        if self._current_length >= self._target_length:
            return self._create_example()
        return None

    def _create_example(self):
        if self._rng.random() < 0.1:
            first_segment_target_length = 100000
        else:
            first_segment_target_length = (self._target_length - 3) // 2
        first_segment: list[int] = []
        second_segment: list[int] = []
        for sentence in self._current_sentences:
            if (len(first_segment) == 0 or
                    len(first_segment) + len(sentence) < first_segment_target_length or
                    (len(second_segment) == 0 and
                     len(first_segment) < first_segment_target_length and
                     self._rng.random() < 0.5)):
                first_segment += sentence
            else:
                second_segment += sentence
        first_segment = first_segment[:self._max_length - 2]
        second_segment = second_segment[:max(0, self._max_length - len(first_segment) - 3)]
        self._current_sentences = []
        self._current_length = 0
        if self._rng.random() < 0.05:
            self._target_length = self._rng.randint(5, self._max_length)
        else:
            self._target_length = self._max_length
        input_ids = [CLS] + first_segment + [SEP]
        segment_ids = [0] * len(input_ids)
        if second_segment:
            input_ids += second_segment + [SEP]
            segment_ids += [1] * (len(second_segment) + 1)
        input_mask = [1] * len(input_ids)
        input_ids += [0] * (self._max_length - len(input_ids))
        input_mask += [0] * (self._max_length - len(input_mask))
        segment_ids += [0] * (self._max_length - len(segment_ids))
        return input_ids, input_mask, segment_ids


def random_documents(rng: random.Random, num_documents: int) -> list[list[list[int]]]:
    """Documents of random sentences: mostly short, some empty, some longer than 128."""
    def sentence() -> list[int]:
        kind = rng.random()
        length = rng.randint(0, 3) if kind < 0.1 else rng.randint(100, 300) if kind < 0.15 \
            else rng.randint(1, 40)
        return [rng.randint(1000, 29000) for _ in range(length)]
    return [[sentence() for _ in range(rng.randint(1, 30))] for _ in range(num_documents)]


@pytest.mark.parametrize("max_length", [5, 16, 128])
def test_builder_matches_google_reference_draw_for_draw(max_length):
    documents = random_documents(random.Random(max_length), 300)
    reference = ReferenceExampleBuilder(max_length, random.Random(7))
    expected = []
    for document in documents:
        for sentence in document:
            expected.append(reference.add_line(sentence))
        expected.append(reference.add_line(None))
    builder = bpd.ExampleBuilder(max_length, CLS, SEP, random.Random(7))
    actual = []
    for document in documents:
        for sentence in document:
            actual.append(builder.add_sentence(sentence))
        actual.append(builder.end_document())
    expected = [e for e in expected if e is not None]
    actual = [tuple(a) for a in actual if a is not None]
    assert len(expected) > 300
    assert actual == expected


def test_builder_segment_and_target_length_probabilities():
    """With 2-token sentences in one long document and L = 32, an example lacks segment B
    exactly when the 10% single-segment draw happened (the first sentence fills A's target,
    so any second sentence goes to B). A drawn target t in [5, 32] yields 2*ceil(t/2) tokens
    before truncation, which stays under L - 3 exactly when t <= 28; full-target examples
    always fill L. So P(real length < L) = 0.05 * 24/28 for every example but the first.
    Tolerance: 4 binomial standard deviations (a correct builder fails for ~1 seed in 16,000;
    the seed is fixed, so the test is deterministic); confusing 0.1 with 0.05 is > 20 sigma."""
    max_length, num_examples = 32, 40_000
    builder = bpd.ExampleBuilder(max_length, CLS, SEP, random.Random(2024))
    examples = []
    token = 1000
    while len(examples) < num_examples:
        example = builder.add_sentence([token, token + 1])
        token = 1000 + (token + 2) % 20000
        if example is not None:
            examples.append(example)

    def check_fraction(observed: int, n: int, p: float) -> None:
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(observed / n - p) <= 4 * sigma, (observed / n, p, sigma)

    single = sum(1 not in segment_ids for _, _, segment_ids in examples)
    check_fraction(single, num_examples, 0.1)
    assert builder.stats.single_segment_draws == builder.stats.single_segment_examples == single
    short = sum(sum(mask) < max_length for _, mask, _ in examples[1:])
    check_fraction(short, num_examples - 1, 0.05 * 24 / 28)
    check_fraction(builder.stats.short_target_draws, num_examples, 0.05)


# ---------------------------------------------------------------------------------------------
# End to end: format, summary, reproducibility


def test_every_example_has_the_stored_format(builds, vocab):
    for name in ("seed1", "seed1_2proc"):
        examples = read_examples(builds[name])
        assert len(examples) > 200
        for example in examples:
            assert_valid_example(*example, SEQ_LEN, vocab)
        assert any(1 in segment_ids for _, _, segment_ids in examples)
        assert any(sum(mask) == SEQ_LEN for _, mask, _ in examples)


def test_outputs_are_complete_and_the_summary_describes_them(builds):
    output_dir = builds["seed1"]
    names = sorted(p.name for p in output_dir.iterdir())
    assert names == sorted([bpd.SUMMARY_NAME] + [f"pretrain_data.tfrecord-{i}-of-3"
                                                 for i in range(3)])
    examples = read_examples(output_dir)
    summary = json.loads((output_dir / bpd.SUMMARY_NAME).read_text())
    assert summary["examples"] == len(examples)
    real = sum(sum(mask) for _, mask, _ in examples)
    assert summary["example_tokens"] == real
    assert summary["padding_fraction"] == pytest.approx(1 - real / (len(examples) * SEQ_LEN))
    single = sum(1 not in segment_ids for _, _, segment_ids in examples)
    assert summary["single_segment_fraction"] == pytest.approx(single / len(examples))
    assert summary["input_files"] == 5 and summary["processed_files"] == 3
    reasons = {Path(s["file"]).name: s["reason"] for s in summary["skipped_files"]}
    assert reasons.keys() == {"blob.txt", "latin1.txt"}
    assert reasons["blob.txt"].startswith("binary") and "UTF-8" in reasons["latin1.txt"]
    assert summary["skipped_lines"] == {"no WordPiece tokens": 1}
    assert summary["truncated_tokens"] >= 150 - (SEQ_LEN - 2)
    assert summary["documents"] > 10 and summary["sentences"] > summary["documents"]


def test_same_seed_gives_identical_files(builds):
    first, again = output_bytes(builds["seed1"]), output_bytes(builds["seed1_again"])
    assert len(first) == NUM_OUT_FILES and first == again


def test_one_and_two_processes_give_the_same_examples(builds):
    one = collections.Counter(read_examples(builds["seed1"]))
    two = collections.Counter(read_examples(builds["seed1_2proc"]))
    assert one == two
    assert output_bytes(builds["seed1"]) != output_bytes(builds["seed1_2proc"]), \
        "the split over files differs with the process count; only the multiset must not"


def test_another_seed_gives_other_examples(builds):
    seed1 = collections.Counter(read_examples(builds["seed1"]))
    seed2 = collections.Counter(read_examples(builds["seed2"]))
    assert seed1 != seed2


def test_blank_and_whitespace_lines_end_documents(tmp_path, vocab):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "doc.txt").write_text("a b c\n \t \nd e\n", encoding="utf-8")
    a, b, c, d, e = (vocab[t] for t in "abcde")
    pad = (0,) * (SEQ_LEN - 5)
    assert build(tmp_path / "corpus", tmp_path / "split", "--num-out-files", "1") == 0
    assert sorted(read_examples(tmp_path / "split")) == sorted([
        ((CLS, a, b, c, SEP) + pad, (1,) * 5 + pad, (0,) * SEQ_LEN),
        ((CLS, d, e, SEP, 0) + pad, (1,) * 4 + (0,) + pad, (0,) * SEQ_LEN)])
    assert build(tmp_path / "corpus", tmp_path / "joined", "--num-out-files", "1",
                 "--no-blanks-separate-docs") == 0
    [(input_ids, _, _)] = read_examples(tmp_path / "joined")
    assert [t for t in input_ids if t not in (CLS, SEP, 0)] == [a, b, c, d, e]


def typeset(line: str) -> str:
    """A line as modern typesetting has it (curly quotes, em dashes, an accented name): the
    tokenizer's fast path beyond ASCII."""
    line = line.replace("--", "\u2014").replace("'", "\u2019").replace("Emma", "\u00c9mma")
    return f"\u201c{line}\u201d"


def test_pure_python_tokenizer_gives_the_same_files(tmp_path):
    (tmp_path / "corpus").mkdir()
    sentences = austen_sentences("emma.txt", 6_000)
    lines = (sentences[::2] + [typeset(line) for line in sentences[1::2]]
             + ["Café naïve résumé, 東京 — “quoted” text."])
    assert sum(not line.isascii() for line in lines) > len(lines) / 3
    (tmp_path / "corpus" / "emma.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert build(tmp_path / "corpus", tmp_path / "rust") == 0
    assert build(tmp_path / "corpus", tmp_path / "python", "--tokenizer-backend", "python") == 0
    assert output_bytes(tmp_path / "rust") == output_bytes(tmp_path / "python")


def tensorflow_examples(examples: list[bpd.PretrainingExample]) -> list[bytes]:
    """The examples as TensorFlow serializes them (deterministic, as the program must)."""
    import tensorflow as tf

    serialized = []
    for example in examples:
        proto = tf.train.Example()
        for name, values in zip(bpd.FEATURE_NAMES, example):
            proto.features.feature[name].int64_list.value[:] = values
        serialized.append(proto.SerializeToString(deterministic=True))
    return serialized


def test_records_are_byte_identical_to_tensorflows_and_readable(tmp_path):
    import tensorflow as tf

    rng = random.Random(0)
    examples = [bpd.PretrainingExample([rng.randrange(200_000) for _ in range(n)],
                                       [rng.randrange(2) for _ in range(n)], [0] * n)
                for n in (5, 128, 512)]
    # Varint boundaries (1 to 6 bytes) and a record longer than 2**14 bytes.
    edges = [0, 1, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**35, 2**62]
    # Values of 128-255 fit a byte but take two as varints.
    examples += [bpd.PretrainingExample(edges, [1] * len(edges), edges[::-1]),
                 bpd.PretrainingExample([128, 255, 0, 127], [1] * 4, [0, 200, 1, 1]),
                 bpd.PretrainingExample([2**28] * 4096, [1] * 4096, [1] * 4096)]
    (tmp_path / "tf").mkdir()
    (tmp_path / "ours").mkdir()
    name = bpd.output_name(0, 1)
    with tf.io.TFRecordWriter(str(tmp_path / "tf" / name)) as writer:
        for record in tensorflow_examples(examples):
            writer.write(record)
    with bpd.RoundRobinTFRecordWriter([tmp_path / "ours" / name]) as writer:
        for example in examples:
            writer.write(example)
    assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "tf" / name).read_bytes()
    assert read_examples(tmp_path / "ours") == [tuple(map(tuple, e)) for e in examples]


def test_the_program_does_not_import_tensorflow(tmp_path):
    """Its import costs each process seconds, more than tokenizing the sample corpus."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("One sentence.\nAnother one.\n", encoding="utf-8")
    code = ("import sys, build_pretraining_dataset as bpd; "
            f"assert bpd.main({build_flags(tmp_path / 'corpus', tmp_path / 'out')!r}) == 0; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize("case, message", [
    ("missing_dir", "corpus directory not found"),
    ("no_txt_files", "no *.txt files"),
    ("empty_files", "are empty"),
    ("blank_lines_only", "no example could be built"),
    ("binary_only", "skipped"),
    ("missing_vocab", "vocab file not found"),
])
def test_bad_input_fails_clearly_without_outputs(tmp_path, caplog, case, message):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    vocab_file = VOCAB
    if case == "missing_dir":
        corpus_dir = tmp_path / "nowhere"
    elif case == "no_txt_files":
        (corpus_dir / "readme.md").write_text("text\n")
    elif case == "empty_files":
        (corpus_dir / "a.txt").write_text("")
    elif case == "blank_lines_only":
        (corpus_dir / "a.txt").write_text("\n  \n\t\n")
    elif case == "binary_only":
        (corpus_dir / "a.txt").write_bytes(bytes(range(256)))
    elif case == "missing_vocab":
        (corpus_dir / "a.txt").write_text("a sentence.\n")
        vocab_file = tmp_path / "no_vocab.txt"
    output_dir = tmp_path / "out"
    status = bpd.main(["--corpus-dir", str(corpus_dir), "--output-dir", str(output_dir),
                       "--vocab-file", str(vocab_file), "--num-out-files", "2"])
    assert status == 1
    assert message in caplog.text
    assert not output_dir.exists() or list(output_dir.iterdir()) == []


def test_too_short_max_seq_length_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        bpd.parse_args(["--corpus-dir", "c", "--output-dir", "o", "--max-seq-length", "4"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------------------------------
# Interrupted runs


def test_failure_in_a_worker_leaves_the_previous_outputs_as_they_were(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "pretrain_data.tfrecord-0-of-7").write_bytes(b"from an earlier run")
    (output_dir / bpd.SUMMARY_NAME).write_text("{}")
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    write = bpd.RoundRobinTFRecordWriter.write
    written = []

    def failing_write(self, example):
        if example is not None:
            written.append(example)
            if len(written) == 20:
                raise RuntimeError("simulated failure while writing")
        write(self, example)

    monkeypatch.setattr(bpd.RoundRobinTFRecordWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="simulated failure"):
        build(corpus, output_dir)
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before  # no staging left either


def test_killed_worker_fails_the_run_and_leaves_nothing_that_looks_finished(tmp_path):
    write_large_corpus(tmp_path / "corpus", num_files=2, num_lines=60_000)
    output_dir = tmp_path / "out"
    process = run_cli("--corpus-dir", str(tmp_path / "corpus"), "--output-dir", str(output_dir),
                      "--num-processes", "2", "--num-out-files", "4")
    try:
        wait_for(lambda: partial_files_with_data(output_dir), process, "examples were written")
        workers = [pid for pid in child_pids(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        kill_group(process)
    assert process.returncode != 0
    assert "died with exit code -9" in stderr
    assert finished_looking_files(output_dir) == []
    assert not (output_dir / bpd.TEMP_DIR_NAME).exists()


def test_killed_run_leaves_only_temporaries_that_a_rerun_removes(corpus, tmp_path, caplog):
    write_large_corpus(tmp_path / "corpus", num_files=1, num_lines=120_000)
    output_dir = tmp_path / "out"
    process = run_cli("--corpus-dir", str(tmp_path / "corpus"), "--output-dir", str(output_dir),
                      "--num-out-files", "2")
    try:
        wait_for(lambda: partial_files_with_data(output_dir), process, "examples were written")
    finally:
        kill_group(process)
    assert finished_looking_files(output_dir) == []
    assert list((output_dir / bpd.TEMP_DIR_NAME).glob("*.partial"))
    assert build(corpus, output_dir) == 0
    assert "removing stale temporaries" in caplog.text
    assert not (output_dir / bpd.TEMP_DIR_NAME).exists()
    assert len(output_bytes(output_dir)) == NUM_OUT_FILES


def child_pids(parent_pid: int) -> list[int]:
    """Processes whose parent is `parent_pid` (from /proc: field 4 of /proc/PID/stat)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent_pid:
            children.append(int(stat.parent.name))
    return children


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
