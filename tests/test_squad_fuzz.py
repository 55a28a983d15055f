"""Fuzzing of the SQuAD reader and featurizer: mutated files (keys, types, nesting, Unicode edge
cases, raw bytes, truncation) must either read and featurize or raise `SquadFormatError`,
never another exception and never hang. Fixed seed, so a failure reproduces; each failing case
is named by its number and the mutations that made it.
"""
from __future__ import annotations

import collections
import copy
import json
import random
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

import squad_utils as su
from tokenization import WordPieceTokenizer

SEED = 20240612
NUM_CASES = 3000
SECONDS_PER_CASE = 20  # a case takes milliseconds; this only catches a hang
FEATURE_CONFIG = su.FeatureConfig(max_seq_length=48, doc_stride=12, max_query_length=12)
DEEP_MARKER = re.compile(r'"@@deep (\d+) ([\[{])@@"')  # stands for nesting json.dumps cannot write

UNICODE_EDGE_CASES = (
    "\ud800", "\udfff", "\udcff", "\ud83d",            # lone surrogates (the last, half an emoji)
    "\ud83d\ude00", "\U0001F600", "\U0010FFFF",          # a pair, an astral character, the last one
    "\x00", "\x07", "\x7f", "\x1c", "\x0b",             # control characters
    "\u200b", "\u200c\u200d", "\ufeff", "\u2060",       # zero-width characters
    "\u0301", "e\u0301", "\u0308\u0308\u0308",          # combining marks, alone and after a letter
    "\ufffd", "\uffff", "\ufdd0", "\ue000",             # replacement, noncharacters, private use
    "\u202e", "\u2028", "\u2029", "\u3000", "\u00a0",   # bidi override, separators, wide spaces
    "İ", "ß", "ﬁ", "\u212b", "ǅ", "Σ",                   # case mappings that change the length
    "中文字", "ﾊﾝｶｸ", "العربية", "ภาษาไทย", "𝔘𝔫𝔦",      # scripts and mathematical letters
    "a" * 300, "x\u0301" * 120,                         # words longer than WordPiece's 100 characters
    "\t\n\r", "  ", "",
)
ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 30, 1.5, -0.0, 1e308,
    float("nan"), float("inf"), float("-inf"), "", "0", "x", [], {}, [{}], [[]], {"text": "a"},
    [None], {"": None}, "\ud800",
)
KEYS = ("version", "data", "title", "paragraphs", "context", "qas", "id", "question", "answers",
        "text", "answer_start", "is_impossible", "plausible_answers")
DEPTHS = (20, 200, 2000, 100_000)
ALLOWED_OUTCOMES = ("features", "no questions", "SquadFormatError")


def base_documents(corpus_dir: Path) -> list[dict]:
    """Valid SQuAD v1.1 and v2.0 documents: short and multi-window contexts, accents, an
    unanswerable question with plausible answers."""
    emma = (corpus_dir / "emma.txt").read_text(encoding="utf-8")
    long_context = " ".join(emma[5000:7000].split())
    accented = "Émilie's café in Zürich served crème brûlée; Zoë said «Ça va?» to José."
    short = "Anne walked to Uppercross with Mary."

    def qa(qas_id: str, question: str, context: str, answer: str) -> dict:
        return {"id": qas_id, "question": question,
                "answers": [{"text": answer, "answer_start": context.index(answer)}]}

    long_answer = long_context.split()[150]
    v1 = {"version": "1.1", "data": [
        {"title": "Emma", "paragraphs": [
            {"context": long_context, "qas": [qa("l0", "Which word?", long_context, long_answer),
                                              qa("l1", "And the first?", long_context, long_context.split()[0])]},
            {"context": short, "qas": [qa("s0", "Who walked?", short, "Anne")]}]},
        {"title": "Cafés", "paragraphs": [
            {"context": accented, "qas": [qa("a0", "Where?", accented, "Zürich"),
                                          qa("a1", "What did Zoë say?", accented, "«Ça va?»")]}]}]}
    v2 = copy.deepcopy(v1)
    v2["version"] = "v2.0"
    v2["data"][0]["paragraphs"][1]["qas"].append(
        {"id": "n0", "question": "Who flew?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Mary", "answer_start": short.index("Mary")}]})
    return [v1, v2]


# ----------------------------------------------------------------------------- mutations

def _nodes(document: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value below the top, iteratively (a mutated document
    may be deep)."""
    found, stack = [], [document]
    while stack:
        container = stack.pop()
        slots = container.items() if isinstance(container, dict) else enumerate(container)
        for slot, value in list(slots):
            found.append((container, slot))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return found


def _pick(rng: random.Random, document: Any, kind: type | tuple[type, ...] = object) -> tuple[Any, Any] | None:
    slots = [(c, s) for c, s in _nodes(document) if isinstance(c[s], kind)]
    return rng.choice(slots) if slots else None


def _odd_value(rng: random.Random) -> Any:
    if rng.random() < 0.3:
        return rng.choice(UNICODE_EDGE_CASES)
    return copy.deepcopy(rng.choice(ODD_VALUES))


def delete_key(rng: random.Random, document: Any) -> None:
    slot = _pick(rng, document, dict)
    if slot and slot[0][slot[1]]:
        container = slot[0][slot[1]]
        del container[rng.choice(list(container))]


def rename_key(rng: random.Random, document: Any) -> None:
    slot = _pick(rng, document, dict)
    if slot and slot[0][slot[1]]:
        container = slot[0][slot[1]]
        key = rng.choice(list(container))
        new = rng.choice([key.upper(), key + " ", "\ufeff" + key, rng.choice(KEYS), key + "\ud800"])
        container[new] = container.pop(key)


def replace_value(rng: random.Random, document: Any) -> None:
    container, slot = rng.choice(_nodes(document))
    container[slot] = _odd_value(rng)


def wrap_value(rng: random.Random, document: Any) -> None:
    container, slot = rng.choice(_nodes(document))
    container[slot] = rng.choice([[container[slot]], {"value": container[slot]}, [container[slot]] * 2])


def nest_deeply(rng: random.Random, document: Any) -> None:
    container, slot = rng.choice(_nodes(document))
    container[slot] = f"@@deep {rng.choice(DEPTHS)} {rng.choice('[{')}@@"


def duplicate_item(rng: random.Random, document: Any) -> None:
    slot = _pick(rng, document, list)
    if slot and slot[0][slot[1]]:
        items = slot[0][slot[1]]
        items.insert(rng.randrange(len(items) + 1), copy.deepcopy(rng.choice(items)))


def empty_container(rng: random.Random, document: Any) -> None:
    slot = _pick(rng, document, (list, dict))
    if slot:
        slot[0][slot[1]] = type(slot[0][slot[1]])()


def edit_string(rng: random.Random, document: Any) -> None:
    slot = _pick(rng, document, str)
    if slot:
        text, edge = slot[0][slot[1]], rng.choice(UNICODE_EDGE_CASES)
        where = rng.randrange(len(text) + 1)
        slot[0][slot[1]] = rng.choice([text[:where] + edge + text[where:], edge, edge * 50, text * 20])


def move_answer_start(rng: random.Random, document: Any) -> None:
    starts = [(c, s) for c, s in _nodes(document) if s == "answer_start"]
    if starts:
        container, slot = rng.choice(starts)
        value = container[slot] if isinstance(container[slot], int) else 0
        container[slot] = rng.choice([value + rng.randint(-3, 3), -1, -(10 ** 20), 10 ** 20, 2 ** 31 - 1])


def swap_subtrees(rng: random.Random, document: Any) -> None:
    nodes = _nodes(document)
    (a, i), (b, j) = rng.choice(nodes), rng.choice(nodes)
    if a is not b or i != j:
        a[i], b[j] = copy.deepcopy(b[j]), copy.deepcopy(a[i])


TREE_MUTATIONS: tuple[Callable[[random.Random, Any], None], ...] = (
    delete_key, rename_key, replace_value, wrap_value, nest_deeply, duplicate_item, empty_container,
    edit_string, edit_string, move_answer_start, swap_subtrees)


def _nested(depth: int, opener: str) -> str:
    """`depth` nested lists or objects around the number 1."""
    opener, closer = ("[", "]") if opener == "[" else ('{"k":', "}")
    return opener * depth + "1" + closer * depth


def serialize(rng: random.Random, document: Any) -> bytes:
    """JSON with escaped or raw non-ASCII text (raw lone surrogates become invalid UTF-8), NaN
    literals allowed, and the deep-nesting markers expanded into brackets."""
    text = json.dumps(document, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    text = DEEP_MARKER.sub(lambda m: _nested(int(m.group(1)), m.group(2)), text)
    return text.encode("utf-8", errors="surrogatepass")


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[:rng.randrange(len(raw) + 1)]


def flip_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def insert_bytes(rng: random.Random, raw: bytes) -> bytes:
    where = rng.randrange(len(raw) + 1)
    junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\\", b'"', b"\\u12",
                       b"\\ud800", b"]", b"{", b",", bytes(rng.randrange(256) for _ in range(8))])
    return raw[:where] + junk + raw[where:]


def cut_or_repeat_slice(rng: random.Random, raw: bytes) -> bytes:
    a, b = sorted(rng.randrange(len(raw) + 1) for _ in range(2))
    return raw[:a] + raw[b:] if rng.random() < 0.5 else raw[:b] + raw[a:b] + raw[b:]


def reencode(rng: random.Random, raw: bytes) -> bytes:
    text = raw.decode("utf-8", errors="surrogatepass")
    return rng.choice([b"\xef\xbb\xbf" + raw, text.encode("utf-16", errors="surrogatepass"),
                       text.encode("latin-1", errors="replace"), b"", b"  \n", b"null", b"[]", b"{}"])


BYTE_MUTATIONS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    truncate, flip_bytes, insert_bytes, cut_or_repeat_slice, reencode)


def fuzz_cases(bases: list[dict], seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """`count` mutated files: (the mutations applied, the file's bytes)."""
    rng = random.Random(seed)
    for _ in range(count):
        document = copy.deepcopy(rng.choice(bases))
        applied = []
        for mutation in rng.choices(TREE_MUTATIONS, k=rng.choice([0, 1, 1, 2, 3])):
            mutation(rng, document)
            applied.append(mutation.__name__)
        raw = serialize(rng, document)
        if rng.random() < 0.35:
            mutation = rng.choice(BYTE_MUTATIONS)
            raw = mutation(rng, raw)
            applied.append(mutation.__name__)
        yield "+".join(applied) or "none", raw


# ----------------------------------------------------------------------------- running a case

class CaseTimeout(Exception):
    """A case ran longer than SECONDS_PER_CASE."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(raw: bytes, source: str, tokenizer: WordPieceTokenizer) -> str:
    """"features", "no questions" or "SquadFormatError" (the allowed outcomes), else the name
    of the exception that escaped, "hang", or an error that does not start with the file's name."""
    try:
        with time_limit(SECONDS_PER_CASE):
            data = su.parse_squad_json(raw, source)
            if not data.examples:
                return "no questions"
            for is_training in (True, False):
                su.featurize_examples(data.examples, tokenizer, FEATURE_CONFIG, is_training)
            return "features"
    except su.SquadFormatError as error:
        return "SquadFormatError" if str(error).startswith(f"{source}: ") else "SquadFormatError without the file"
    except CaseTimeout:
        return "hang"
    except Exception as error:  # noqa: BLE001 -- what escaped is the finding
        return type(error).__name__


def fuzz_outcomes(corpus_dir: Path, tokenizer: WordPieceTokenizer, seed: int = SEED, count: int = NUM_CASES,
                  ) -> tuple[collections.Counter, list[str]]:
    """Counts of the outcomes, and a line for each case whose outcome is not allowed."""
    outcomes: collections.Counter = collections.Counter()
    failures = []
    for index, (mutations, raw) in enumerate(fuzz_cases(base_documents(corpus_dir), seed, count)):
        outcome = run_case(raw, f"fuzz-{index}.json", tokenizer)
        outcomes[outcome] += 1
        if outcome not in ALLOWED_OUTCOMES:
            failures.append(f"case {index} ({mutations}): {outcome}")
    return outcomes, failures



def test_mutated_squad_files_read_and_featurize_or_raise_squad_format_error(
        sample_corpus_dir: Path, vocab_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = WordPieceTokenizer(str(vocab_file))
    with caplog.at_level("ERROR", logger="squad_utils"):  # the many warnings of bad files
        outcomes, failures = fuzz_outcomes(sample_corpus_dir, tokenizer)
    print(f"{NUM_CASES} mutated SQuAD files, seed {SEED}: {dict(outcomes)}")
    assert not failures, "\n".join(failures[:30])
    # The fuzzer reaches both sides: files that still featurize and files that are refused.
    assert outcomes["features"] > NUM_CASES // 10 and outcomes["SquadFormatError"] > NUM_CASES // 10
