"""SQuAD v1.1 / v2.0 for ELECTRA fine-tuning (docs/recipe.md, SQuAD fine-tuning), in NumPy only.

Four steps, each usable alone:
- reading: `read_squad_file` checks the JSON (nesting bounded before parsing, see `json_input`),
  the schema and that every string is valid Unicode (one clear error naming the file and the
  entry) and returns `SquadExample`s; answers whose `answer_start` does not point at their text
  and empty contexts are counted and reported, not fatal.
- featurization: `featurize_examples` lays out `[CLS] question [SEP] context-window [SEP]`
  with doc-stride windows and maps gold answers to tokens through the tokenizer's character
  offsets; `load_or_build_features` caches the result as `.npz` + `.json` (no pickle).
- decoding: `decode_joint_head` (XLNet-style beam of starts x ends, Google ELECTRA / NVIDIA) and
  `decode_plain_head` (BERT) merge the candidates of all windows of a question and cut the
  answer out of the ORIGINAL context by character offsets (never WordPieces joined by spaces).
- evaluation: `evaluate_v1` / `evaluate_v2` reproduce the official SQuAD scripts.

Conventions:
- p_mask is 1 where a position cannot hold an answer (question tokens, both [SEP]s, padding)
  and 0 for context tokens and for [CLS] (cls_index = 0), in v1.1 as in v2.0, as NVIDIA's and
  Google's code do: a training window that does not contain the answer targets [CLS] in both
  versions, so [CLS] must stay in the softmax; it also lets [CLS] soak up the probability of
  windows without the answer, which keeps the log-probabilities of different windows
  comparable. Decoding never returns [CLS] as a span, since it is not a context token.
- Null score (v2): the joint head's `cls_logits` come from the answer classifier trained with
  label 1 = unanswerable, so a larger value means "no answer". For each question the null score
  is the minimum over its windows (as Google ELECTRA and NVIDIA do: one window that sees the
  answer is enough), `null_odds = score_null` for the joint head and `score_null - best span
  score` for the plain head (BERT), and the prediction is "" when null_odds > threshold
  (default -5.6). NVIDIA's run_inference.py compares the other way round; that is a defect.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import string
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

import numpy as np

from json_input import JsonInputError, parse_json_bytes
from safe_io import UserError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
MAX_REPORTED_LOCATIONS = 5
SPECIAL_TOKENS_IN_FEATURE = 3  # [CLS] question [SEP] context [SEP]


class TokenizerLike(Protocol):
    """What featurization needs from `tokenization.WordPieceTokenizer`."""

    vocab_file: str
    do_lower_case: bool
    cls_id: int
    sep_id: int
    pad_id: int

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> Any: ...

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]: ...


# ============================================================================= reading

class SquadFormatError(UserError):
    """A SQuAD file that is not valid JSON or does not follow the SQuAD schema."""


@dataclass(frozen=True)
class Answer:
    """A gold answer: its text and the character offset of its start in the context."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """One past the last character of the answer in the context."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class SquadExample:
    """One question on one context. `answers` keeps every gold answer as written in the file
    (official EM/F1 use their texts), even those whose `answer_start` is wrong."""

    qas_id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False
    title: str = ""


@dataclass
class ReadStats:
    """What reading found; `misaligned_locations` names the first few misaligned answers."""

    num_examples: int = 0
    num_impossible: int = 0
    num_answers: int = 0
    num_misaligned_answers: int = 0
    num_empty_contexts: int = 0
    num_questions_in_empty_contexts: int = 0
    misaligned_locations: list[str] = field(default_factory=list)


@dataclass
class SquadData:
    """A read SQuAD file."""

    source: str
    version: str
    examples: list[SquadExample]
    stats: ReadStats


def answer_matches_context(context: str, answer: Answer) -> bool:
    """Whether `answer_start` points at the answer's text in the context."""
    return 0 <= answer.start and context[answer.start:answer.end] == answer.text


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate in `text`, or None. No tokenizer or UTF-8 file
    takes one; a JSON escape like "\\ud800" without its pair gives one, and so does a byte that
    is not UTF-8 in a command-line argument (Python's surrogateescape: byte 0xff is U+DCFF)."""
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_empty_after_normalisation(tokenizer: TokenizerLike, text: str) -> bool:
    """Whether nothing of `text` is left once the tokenizer has normalised it (whitespace,
    control and zero-width characters go, and accents when uncased): the one definition of an
    empty question or context. Featurization skips contexts that are empty in this sense."""
    return not tokenizer.encode_batch_ids([text])[0]


def read_squad_file(path: str | os.PathLike) -> SquadData:
    """Read and check a SQuAD v1.1 / v2.0 JSON file."""
    return parse_squad_json(_read_bytes(path), str(path))


def _read_bytes(path: str | os.PathLike) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SQuAD file not found: {path} (expected a JSON file like "
                                "train-v1.1.json or dev-v2.0.json)")
    return Path(path).read_bytes()


def parse_squad_json(raw: bytes, source: str) -> SquadData:
    """Parse the bytes of a SQuAD JSON file; `source` names it in messages."""
    document = _decode_json(raw, source)
    if not isinstance(document, dict):
        raise SquadFormatError(f"{source}: expected a JSON object with \"data\" at the top level, "
                               f"got {_json_type(document)}")
    schema = _Schema(source)
    version = schema.optional(document, "version", str, "top level", "")
    stats = ReadStats()
    examples: list[SquadExample] = []
    seen_ids: dict[str, str] = {}
    for a, article in enumerate(schema.field(document, "data", list, "top level")):
        where = f"data[{a}]"
        schema.check_object(article, where)
        title = schema.optional(article, "title", str, where, "")
        for p, paragraph in enumerate(schema.field(article, "paragraphs", list, where)):
            _read_paragraph(schema, paragraph, f"{where}.paragraphs[{p}]", title, stats, seen_ids,
                            examples)
    _report_read_stats(source, stats)
    return SquadData(source=source, version=version, examples=examples, stats=stats)


def _decode_json(raw: bytes, source: str) -> Any:
    try:
        return parse_json_bytes(raw)
    except JsonInputError as error:
        raise SquadFormatError(f"{source}: {error}") from None


def _read_paragraph(schema: _Schema, paragraph: Any, where: str, title: str, stats: ReadStats,
                    seen_ids: dict[str, str], examples: list[SquadExample]) -> None:
    schema.check_object(paragraph, where)
    context = schema.field(paragraph, "context", str, where)
    questions = [_read_question(schema, qa, f"{where}.qas[{q}]", context, title, stats)
                 for q, qa in enumerate(schema.field(paragraph, "qas", list, where))]
    for q, example in enumerate(questions):
        if example.qas_id in seen_ids:
            raise SquadFormatError(f"{schema.source}: {where}.qas[{q}]: duplicate id "
                                   f"{example.qas_id!r} (first at {seen_ids[example.qas_id]})")
        seen_ids[example.qas_id] = f"{where}.qas[{q}]"
    if not context.strip():
        stats.num_empty_contexts += 1
        stats.num_questions_in_empty_contexts += len(questions)
        logger.warning("%s: %s: empty context, its %d questions are skipped", schema.source, where,
                       len(questions))
        return
    for example in questions:
        stats.num_examples += 1
        stats.num_impossible += example.is_impossible
    examples.extend(questions)


def _read_question(schema: _Schema, qa: Any, where: str, context: str, title: str,
                   stats: ReadStats) -> SquadExample:
    schema.check_object(qa, where)
    qas_id = schema.field(qa, "id", str, where)
    question = schema.field(qa, "question", str, where)
    is_impossible = schema.optional(qa, "is_impossible", bool, where, False)
    answers = []
    for i, entry in enumerate(schema.field(qa, "answers", list, where)):
        answer_where = f"{where}.answers[{i}]"
        schema.check_object(entry, answer_where)
        answer = Answer(text=schema.field(entry, "text", str, answer_where),
                        start=schema.field(entry, "answer_start", int, answer_where))
        stats.num_answers += 1
        if not answer_matches_context(context, answer):
            stats.num_misaligned_answers += 1
            if len(stats.misaligned_locations) < MAX_REPORTED_LOCATIONS:
                stats.misaligned_locations.append(answer_where)
            logger.debug("%s: %s: answer_start %d does not point at %r", schema.source,
                         answer_where, answer.start, answer.text)
        answers.append(answer)
    return SquadExample(qas_id=qas_id, question=question, context=context, answers=tuple(answers),
                        is_impossible=is_impossible, title=title)


def _report_read_stats(source: str, stats: ReadStats) -> None:
    logger.info("%s: %d questions (%d unanswerable)", source, stats.num_examples,
                stats.num_impossible)
    if stats.num_misaligned_answers:
        logger.warning("%s: %d of %d answers have an answer_start that does not point at their "
                       "text (first: %s); a question whose first answer is one of them is "
                       "skipped for training and kept for evaluation", source,
                       stats.num_misaligned_answers, stats.num_answers,
                       ", ".join(stats.misaligned_locations))
    if stats.num_empty_contexts:
        logger.warning("%s: %d empty contexts, %d questions skipped", source,
                       stats.num_empty_contexts, stats.num_questions_in_empty_contexts)


class _Schema:
    """Type checks that raise one `SquadFormatError` naming the file and the entry."""

    def __init__(self, source: str):
        self.source = source

    def check_object(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SquadFormatError(f"{self.source}: {where}: expected an object, got "
                                   f"{_json_type(value)}")

    def field(self, entry: dict, key: str, expected: type, where: str) -> Any:
        if key not in entry:
            raise SquadFormatError(f"{self.source}: {where}: missing \"{key}\"")
        return self._checked(entry[key], key, expected, where)

    def optional(self, entry: dict, key: str, expected: type, where: str, default: Any) -> Any:
        return self._checked(entry[key], key, expected, where) if key in entry else default

    def _checked(self, value: Any, key: str, expected: type, where: str) -> Any:
        # bool is a subclass of int in Python but not an integer in a SQuAD file.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SquadFormatError(f"{self.source}: {where}: \"{key}\" should be "
                                   f"{_JSON_TYPE_NAMES[expected]}, got {_json_type(value)}")
        position = lone_surrogate(value) if expected is str else None
        if position is not None:
            raise SquadFormatError(
                f"{self.source}: {where}: \"{key}\" holds the lone surrogate \\u{ord(value[position]):04x} at "
                f"character {position}: not valid Unicode (in JSON, an escape \\ud800-\\udbff must be followed "
                "by one of \\udc00-\\udfff)")
        return value


_JSON_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list",
                    dict: "an object"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


# ============================================================================= featurization

@dataclass(frozen=True)
class FeatureConfig:
    """Lengths in WordPiece tokens (the recipe's defaults, docs/recipe.md)."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64

    def check(self) -> None:
        if self.doc_stride < 1 or self.max_query_length < 0:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be >= 1 and max_query_length "
                             f"({self.max_query_length}) >= 0")
        if self.max_seq_length - self.max_query_length - SPECIAL_TOKENS_IN_FEATURE < 1:
            raise ValueError(f"max_seq_length={self.max_seq_length} leaves no room for context "
                             f"after a question of max_query_length={self.max_query_length} and "
                             f"{SPECIAL_TOKENS_IN_FEATURE} special tokens")


@dataclass
class FeaturizeStats:
    """Counts of featurization; `skipped` maps a reason to the number of examples skipped."""

    num_examples: int = 0
    num_features: int = 0
    num_truncated_questions: int = 0
    num_windows_without_answer: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class SquadFeatures:
    """All features of a data set, one row per window, as NumPy arrays.

    Fixed-size int32 arrays, [num_features, max_seq_length]: `input_ids`, `input_mask`,
    `segment_ids`, `p_mask` (1 = cannot be part of an answer, see the module docstring).
    Per feature, [num_features]: `cls_index` (always 0), `start_position`/`end_position` (the
    first answer's token span in this window, or cls_index when it is not inside the window or
    the question is unanswerable), `is_impossible` (1 when the target is cls_index),
    `example_index` (into the examples that were featurized), `context_offset` (position of
    the first context token).
    Ragged decoding metadata, flattened over the context tokens of all features with row splits
    `context_splits` [num_features + 1]: `context_char_spans` [total, 2] and
    `context_is_max` [total]; read them per feature with `token_to_orig_char_span(i)` and
    `token_is_max_context(i)`.
    """

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    p_mask: np.ndarray
    cls_index: np.ndarray
    start_position: np.ndarray
    end_position: np.ndarray
    is_impossible: np.ndarray
    example_index: np.ndarray
    context_offset: np.ndarray
    context_splits: np.ndarray
    context_char_spans: np.ndarray
    context_is_max: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def num_context_tokens(self, feature: int) -> int:
        return int(self.context_splits[feature + 1] - self.context_splits[feature])

    def token_to_orig_char_span(self, feature: int) -> np.ndarray:
        """[num_context_tokens, 2]: (start, end) character offsets in the context of each
        context token of the feature, in order (token at position context_offset + j is row j)."""
        return self.context_char_spans[self.context_splits[feature]:self.context_splits[feature + 1]]

    def token_is_max_context(self, feature: int) -> np.ndarray:
        """[num_context_tokens] bool: whether this window is where each token has the most context."""
        rows = slice(self.context_splits[feature], self.context_splits[feature + 1])
        return self.context_is_max[rows].astype(bool)


def featurize_examples(examples: Sequence[SquadExample], tokenizer: TokenizerLike,
                       config: FeatureConfig, is_training: bool) -> tuple[SquadFeatures, FeaturizeStats]:
    """Features of every example, one per doc-stride window.

    For training, answerable questions whose first answer cannot be located (wrong
    answer_start, no answer, or an answer without any token) are skipped and counted; for
    evaluation every question is kept (the labels then come from the first answer when it can
    be located). Questions longer than max_query_length are truncated and counted.
    """
    config.check()
    stats = FeaturizeStats(num_examples=len(examples))
    builder = _FeatureBuilder(config, tokenizer)
    contexts = _ContextTokens(tokenizer)
    questions = tokenizer.encode_batch_ids([e.question for e in examples])
    for example_index, (example, query) in enumerate(zip(examples, questions)):
        context_ids, offsets = contexts.get(example.context)
        if len(context_ids) == 0:  # as is_empty_after_normalisation
            _count_skip(stats, "empty context")
            continue
        answer_span = _first_answer_token_span(example, offsets)
        if is_training and isinstance(answer_span, str):
            _count_skip(stats, answer_span)
            continue
        if len(query) > config.max_query_length:
            query = query[:config.max_query_length]
            stats.num_truncated_questions += 1
        token_span = answer_span if isinstance(answer_span, tuple) else None
        room = config.max_seq_length - len(query) - SPECIAL_TOKENS_IN_FEATURE
        windows = doc_windows(len(context_ids), room, config.doc_stride)
        best_window = max_context_windows(windows, len(context_ids))
        for window_index, (start, length) in enumerate(windows):
            has_answer = builder.add(example_index, query, context_ids, offsets, start, length,
                                     best_window[start:start + length] == window_index, token_span)
            if not has_answer and not example.is_impossible:
                stats.num_windows_without_answer += 1
    features = builder.build()
    stats.num_features = len(features)
    _report_featurize_stats(stats, config, is_training)
    return features, stats


def doc_windows(num_tokens: int, max_tokens_per_window: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the sliding windows over a context of `num_tokens` tokens, as BERT:
    each window starts min(length, doc_stride) tokens after the previous one, the last one ends
    at the last token."""
    windows = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_per_window)
        windows.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return windows


def max_context_windows(windows: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """For each context token, the window where it has the most context: BERT's score
    min(tokens left, tokens right) + 0.01 x window length, the first window winning ties.

    Each window only scores its own tokens, so time and memory grow with the total length of
    the windows (the context length x max_seq_length / doc_stride), not windows x tokens."""
    best_window = np.zeros(num_tokens, dtype=np.int64)
    best_score = np.full(num_tokens, -np.inf)
    for index, (start, length) in enumerate(windows):
        inside = np.arange(start, start + length)
        score = np.minimum(inside - start, start + length - 1 - inside) + 0.01 * length
        better = score > best_score[start:start + length]  # strictly: an earlier window keeps a tie
        best_score[start:start + length][better] = score[better]
        best_window[start:start + length][better] = index
    return best_window


def char_span_to_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last token overlapping the characters [start_char, end_char), or None.

    The start token is the first one that overlaps the answer's first character (or, when that
    character belongs to no token, e.g. a space, the first token after it); the end token is
    the last one overlapping the answer's last character (or the last token before it).
    """
    overlapping = np.flatnonzero((offsets[:, 1] > start_char) & (offsets[:, 0] < end_char))
    if overlapping.size == 0:
        return None
    return int(overlapping[0]), int(overlapping[-1])


def check_beam_fits(beam_size: int, max_seq_length: int) -> None:
    """The joint head's beam takes `beam_size` of a window's positions, so it cannot be wider
    than the window."""
    if beam_size > max_seq_length:
        raise ValueError(f"beam_size {beam_size} exceeds max_seq_length {max_seq_length}: the joint head picks "
                         f"its beam among the positions of a window; use a beam of at most {max_seq_length}")


def _first_answer_token_span(example: SquadExample, offsets: np.ndarray) -> tuple[int, int] | str | None:
    """The token span of the first answer; None for an unanswerable question; otherwise the
    reason the answer cannot be located."""
    if example.is_impossible:
        return None
    if not example.answers:
        return "no answer"
    answer = example.answers[0]
    if not answer_matches_context(example.context, answer):
        return "answer_start does not match the answer text"
    return char_span_to_token_span(offsets, answer.start, answer.end) or "answer covers no token"


def _count_skip(stats: FeaturizeStats, reason: str) -> None:
    stats.skipped[reason] = stats.skipped.get(reason, 0) + 1


def _report_featurize_stats(stats: FeaturizeStats, config: FeatureConfig, is_training: bool) -> None:
    logger.info("%d %s features from %d examples (%d windows without the answer)",
                stats.num_features, "training" if is_training else "evaluation", stats.num_examples,
                stats.num_windows_without_answer)
    if stats.num_truncated_questions:
        logger.warning("%d questions longer than max_query_length=%d tokens were truncated",
                       stats.num_truncated_questions, config.max_query_length)
    for reason, count in stats.skipped.items():
        logger.warning("%d examples skipped: %s", count, reason)


class _ContextTokens:
    """Context ids and character offsets, tokenized once per paragraph (its questions come
    one after another and share it)."""

    def __init__(self, tokenizer: TokenizerLike):
        self._tokenizer = tokenizer
        self._last: tuple[str, tuple[np.ndarray, np.ndarray]] | None = None

    def get(self, context: str) -> tuple[np.ndarray, np.ndarray]:
        if self._last is None or self._last[0] != context:
            self._last = (context, context_tokens(self._tokenizer, context))
        return self._last[1]


def context_tokens(tokenizer: TokenizerLike, context: str) -> tuple[np.ndarray, np.ndarray]:
    """The WordPiece ids of a context and each token's (start, end) character span in it, the
    end stretched over the combining marks that follow (what answers are cut out by)."""
    encoding = tokenizer.encode(context, add_special_tokens=False)
    offsets = np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2)
    _extend_over_combining_marks(context, offsets)
    return np.asarray(encoding.input_ids, dtype=np.int32), offsets


def is_combining_mark(char: str) -> bool:
    """Unicode category Mn: an accent written as a character of its own."""
    return unicodedata.category(char) == "Mn"


def _extend_over_combining_marks(text: str, offsets: np.ndarray) -> None:
    """Stretch token ends over the combining marks (category Mn) that follow them, in place.

    Accent stripping drops an accent written as a separate mark (decomposed, NFD text), so no
    token offset covers a mark that ends a word ("cafe" + U+0301); it belongs to the letter
    before it and must stay in answers cut from the context.
    """
    if text.isascii():
        return
    for row in range(len(offsets)):
        end = int(offsets[row, 1])
        while end < len(text) and is_combining_mark(text[end]):
            end += 1
        offsets[row, 1] = end


class _FeatureBuilder:
    """Collects windows and lays them out as fixed-size arrays."""

    def __init__(self, config: FeatureConfig, tokenizer: TokenizerLike):
        self._length = config.max_seq_length
        self._cls_id, self._sep_id, self._pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        self._rows: list[np.ndarray] = []
        self._labels: list[tuple[int, int, int, int, int]] = []
        self._char_spans: list[np.ndarray] = []
        self._is_max: list[np.ndarray] = []

    def add(self, example_index: int, query: Sequence[int], context_ids: np.ndarray,
            offsets: np.ndarray, start: int, length: int, is_max: np.ndarray,
            answer_span: tuple[int, int] | None) -> bool:
        """Add one window; returns whether it contains the answer."""
        context_offset = len(query) + 2
        ids = np.full(self._length, self._pad_id, dtype=np.int32)
        ids[0] = self._cls_id
        ids[1:context_offset - 1] = query
        ids[context_offset - 1] = self._sep_id
        ids[context_offset:context_offset + length] = context_ids[start:start + length]
        ids[context_offset + length] = self._sep_id
        self._rows.append(ids)
        inside = answer_span is not None and start <= answer_span[0] and answer_span[1] < start + length
        first, last = ((answer_span[0] - start + context_offset, answer_span[1] - start + context_offset)
                       if inside else (0, 0))
        self._labels.append((first, last, int(not inside), example_index, context_offset))
        self._char_spans.append(offsets[start:start + length])
        self._is_max.append(is_max)
        return inside

    def build(self) -> SquadFeatures:
        num = len(self._rows)
        input_ids = np.stack(self._rows) if num else np.zeros((0, self._length), np.int32)
        labels = np.asarray(self._labels, dtype=np.int32).reshape(num, 5)
        lengths = np.asarray([len(spans) for spans in self._char_spans], dtype=np.int32)
        context_offset = labels[:, 4]
        positions = np.arange(self._length)
        context_start = context_offset[:, None]
        context_end = (context_offset + lengths)[:, None]
        is_context = (positions >= context_start) & (positions < context_end)
        input_mask = (positions <= context_end).astype(np.int32)  # through the final [SEP]
        segment_ids = (is_context | (positions == context_end)).astype(np.int32)
        p_mask = (~is_context).astype(np.int32)
        p_mask[:, 0] = 0  # [CLS], the null answer
        return SquadFeatures(
            input_ids=input_ids, input_mask=input_mask, segment_ids=segment_ids, p_mask=p_mask,
            cls_index=np.zeros(num, np.int32), start_position=labels[:, 0].copy(),
            end_position=labels[:, 1].copy(), is_impossible=labels[:, 2].copy(),
            example_index=labels[:, 3].copy(), context_offset=context_offset.copy(),
            context_splits=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32),
            context_char_spans=(np.concatenate(self._char_spans) if num
                                else np.zeros((0, 2), np.int32)).astype(np.int32),
            context_is_max=(np.concatenate(self._is_max) if num else np.zeros(0)).astype(np.int32))


# ============================================================================= feature cache

def load_or_build_features(input_file: str | os.PathLike, tokenizer: TokenizerLike,
                           config: FeatureConfig, is_training: bool, cache_dir: str | os.PathLike,
                           ) -> tuple[SquadData, SquadFeatures, FeaturizeStats]:
    """Read a SQuAD file and featurize it, reusing the features cached in `cache_dir` when
    they were built from the same file bytes, vocab bytes, lower-casing, lengths and mode.

    The cache is `<stem>.<train|eval>.features.npz` (int32 arrays, loaded without pickle) and
    a `.json` beside it holding the key, the npz's SHA-256 and the featurization counts. Both
    are written to temporary names and renamed; a missing, stale or corrupt cache is rebuilt.
    """
    raw = _read_bytes(input_file)
    data = parse_squad_json(raw, str(input_file))
    key = feature_cache_key(raw, tokenizer, config, is_training)
    npz_path, meta_path = _cache_paths(Path(cache_dir), Path(input_file), is_training)
    cached = _load_cached_features(npz_path, meta_path, key)
    if cached is not None:
        logger.info("loaded %d cached features from %s", len(cached[0]), npz_path)
        return data, *cached
    features, stats = featurize_examples(data.examples, tokenizer, config, is_training)
    _save_cached_features(npz_path, meta_path, key, features, stats)
    logger.info("cached %d features in %s", len(features), npz_path)
    return data, features, stats


def feature_cache_key(raw_input: bytes, tokenizer: TokenizerLike, config: FeatureConfig,
                      is_training: bool) -> str:
    """SHA-256 of everything the features depend on."""
    digest = hashlib.sha256()
    settings = {"format": CACHE_FORMAT_VERSION, "tokenizers": importlib.metadata.version("tokenizers"),
                "do_lower_case": bool(tokenizer.do_lower_case), "is_training": is_training,
                **dataclasses.asdict(config)}
    for part in (json.dumps(settings, sort_keys=True).encode(), raw_input,
                 Path(tokenizer.vocab_file).read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _cache_paths(cache_dir: Path, input_file: Path, is_training: bool) -> tuple[Path, Path]:
    base = cache_dir / f"{input_file.stem}.{'train' if is_training else 'eval'}.features"
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def _load_cached_features(npz_path: Path, meta_path: Path, key: str,
                          ) -> tuple[SquadFeatures, FeaturizeStats] | None:
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            logger.info("feature cache %s was built from other inputs or settings; rebuilding", npz_path)
            return None
        if _sha256_file(npz_path) != meta.get("npz_sha256"):
            raise ValueError("the arrays do not match their recorded SHA-256")
        with np.load(npz_path, allow_pickle=False) as arrays:
            features = SquadFeatures(**{f.name: arrays[f.name] for f in dataclasses.fields(SquadFeatures)})
        return features, FeaturizeStats(**meta["stats"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        logger.warning("feature cache %s is unreadable (%s); rebuilding", npz_path, error)
        return None


def _save_cached_features(npz_path: Path, meta_path: Path, key: str, features: SquadFeatures,
                          stats: FeaturizeStats) -> None:
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(npz_path, lambda f: np.savez_compressed(f, **dataclasses.asdict(features)))
    meta = {"key": key, "npz_sha256": _sha256_file(npz_path), "num_features": len(features),
            "stats": dataclasses.asdict(stats)}
    _write_atomically(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through `write(file)` to a temporary file beside `path`, then rename it."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ============================================================================= decoding

@dataclass(frozen=True)
class DecodeConfig:
    """Answer decoding settings (the recipe's defaults, docs/recipe.md)."""

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = -5.6


@dataclass(frozen=True)
class JointHeadOutputs:
    """Per feature outputs of the joint (XLNet-style) head, beam size k:
    `start_top_log_probs`/`start_top_index` [N, k], `end_top_log_probs`/`end_top_index`
    [N, k, k] (the top k ends for each of the k starts), and for v2 `cls_logits` [N], the
    answer classifier's logit of "unanswerable"."""

    start_top_log_probs: np.ndarray
    start_top_index: np.ndarray
    end_top_log_probs: np.ndarray
    end_top_index: np.ndarray
    cls_logits: np.ndarray | None = None


@dataclass(frozen=True)
class PlainHeadOutputs:
    """Per feature outputs of the plain head: `start_logits`, `end_logits` [N, max_seq_length]."""

    start_logits: np.ndarray
    end_logits: np.ndarray


@dataclass
class Predictions:
    """`answers` {qas_id: text} (predictions.json), `nbest` {qas_id: [entries]}
    (nbest_predictions.json), `null_odds` {qas_id: score} for v2 (null_odds.json)."""

    answers: dict[str, str]
    nbest: dict[str, list[dict[str, Any]]]
    null_odds: dict[str, float]


class _Spans(NamedTuple):
    """Candidate spans as parallel arrays, in generation order."""

    start: np.ndarray
    end: np.ndarray
    start_score: np.ndarray
    end_score: np.ndarray


class _Head(Protocol):
    score_names: tuple[str, str]
    null_odds_relative_to_best_span: bool

    def __len__(self) -> int: ...

    def spans(self, feature: int) -> _Spans:
        """The candidate spans of one feature."""

    def null_score(self, feature: int) -> float: ...


class _JointHead:
    score_names = ("start_log_prob", "end_log_prob")
    null_odds_relative_to_best_span = False

    def __init__(self, outputs: JointHeadOutputs):
        self._start_log_probs = np.asarray(outputs.start_top_log_probs, np.float64)
        self._start_index = np.asarray(outputs.start_top_index)
        self._end_log_probs = np.asarray(outputs.end_top_log_probs, np.float64)
        self._end_index = np.asarray(outputs.end_top_index)
        self._cls_logits = (None if outputs.cls_logits is None
                            else np.asarray(outputs.cls_logits, np.float64))
        beam = self._start_index.shape[1]
        expected = (len(self._start_index), beam, beam)
        if self._end_index.shape != expected or self._end_log_probs.shape != expected:
            raise ValueError(f"joint head outputs: start_top_index {self._start_index.shape} needs "
                             f"end_top_index and end_top_log_probs of shape {expected}, got "
                             f"{self._end_index.shape} and {self._end_log_probs.shape}")

    def __len__(self) -> int:
        return len(self._start_index)

    def spans(self, feature: int) -> _Spans:
        """Start i of the beam with each of its k ends, start by start."""
        beam = self._start_index.shape[1]
        return _Spans(np.repeat(self._start_index[feature], beam), self._end_index[feature].ravel(),
                      np.repeat(self._start_log_probs[feature], beam),
                      self._end_log_probs[feature].ravel())

    def null_score(self, feature: int) -> float:
        if self._cls_logits is None:
            raise ValueError("SQuAD v2 decoding with the joint head needs cls_logits")
        return float(self._cls_logits[feature])


class _PlainHead:
    score_names = ("start_logit", "end_logit")
    null_odds_relative_to_best_span = True

    def __init__(self, outputs: PlainHeadOutputs, n_best_size: int):
        self._start_logits = np.asarray(outputs.start_logits, np.float64)
        self._end_logits = np.asarray(outputs.end_logits, np.float64)
        self._n_best_size = n_best_size
        if self._start_logits.shape != self._end_logits.shape:
            raise ValueError(f"plain head outputs: start_logits {self._start_logits.shape} and "
                             f"end_logits {self._end_logits.shape} differ in shape")

    def __len__(self) -> int:
        return len(self._start_logits)

    def spans(self, feature: int) -> _Spans:
        """Each of the top n_best starts with each of the top n_best ends, start by start."""
        starts = _top_indices(self._start_logits[feature], self._n_best_size)
        ends = _top_indices(self._end_logits[feature], self._n_best_size)
        start, end = np.repeat(starts, len(ends)), np.tile(ends, len(starts))
        return _Spans(start, end, self._start_logits[feature, start], self._end_logits[feature, end])

    def null_score(self, feature: int) -> float:
        """BERT's null score: start + end logits at [CLS] (position 0)."""
        return float(self._start_logits[feature, 0] + self._end_logits[feature, 0])


def _top_indices(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest logits, largest first, lower index first on ties."""
    return np.argsort(-logits, kind="stable")[:n]


def decode_joint_head(examples: Sequence[SquadExample], features: SquadFeatures,
                      outputs: JointHeadOutputs, config: DecodeConfig) -> Predictions:
    """Answers from the joint head: score = start log-prob + end log-prob."""
    return _decode(examples, features, _JointHead(outputs), config)


def decode_plain_head(examples: Sequence[SquadExample], features: SquadFeatures,
                      outputs: PlainHeadOutputs, config: DecodeConfig) -> Predictions:
    """Answers from the plain head: the top n_best starts x top n_best ends, score = start
    logit + end logit."""
    return _decode(examples, features, _PlainHead(outputs, config.n_best_size), config)


def decode_head_outputs(examples: Sequence[SquadExample], features: SquadFeatures,
                        outputs: Mapping[str, np.ndarray], config: DecodeConfig) -> Predictions:
    """Answers from a model's output arrays, by their names: the `JointHeadOutputs` fields
    (`start_top_index`, ...) for the joint head, `start_logits`/`end_logits` for the plain one."""
    if "start_top_index" in outputs:
        fields = {f.name for f in dataclasses.fields(JointHeadOutputs)}
        return decode_joint_head(examples, features,
                                 JointHeadOutputs(**{k: v for k, v in outputs.items() if k in fields}), config)
    return decode_plain_head(examples, features, PlainHeadOutputs(outputs["start_logits"], outputs["end_logits"]),
                             config)


def _decode(examples: Sequence[SquadExample], features: SquadFeatures, head: _Head,
            config: DecodeConfig) -> Predictions:
    if len(head) != len(features):
        raise ValueError(f"got model outputs for {len(head)} features but {len(features)} features")
    predictions = Predictions(answers={}, nbest={}, null_odds={})
    features_of = _features_by_example(features, len(examples))
    for example_index, example in enumerate(examples):
        feature_ids = features_of[example_index]
        if not feature_ids:
            logger.warning("question %s has no features (empty context); no prediction", example.qas_id)
            continue
        nbest = _nbest_entries(example.context, features, head, feature_ids, config)
        predictions.nbest[example.qas_id] = nbest
        predictions.answers[example.qas_id] = nbest[0]["text"] if nbest else ""
        if config.version_2_with_negative:
            # Without any valid span the prediction is "" whatever the odds; they stay score_null.
            null_odds = min(head.null_score(f) for f in feature_ids)
            if nbest and head.null_odds_relative_to_best_span:
                null_odds -= nbest[0]["score"]
            predictions.null_odds[example.qas_id] = null_odds
            if null_odds > config.null_score_diff_threshold:
                predictions.answers[example.qas_id] = ""
    return predictions


def _features_by_example(features: SquadFeatures, num_examples: int) -> list[list[int]]:
    features_of: list[list[int]] = [[] for _ in range(num_examples)]
    for feature, example_index in enumerate(features.example_index.tolist()):
        if not 0 <= example_index < num_examples:
            raise ValueError(f"feature {feature} belongs to example {example_index}, but only "
                             f"{num_examples} examples were given (features and examples differ)")
        features_of[example_index].append(feature)
    return features_of


def _valid_spans(features: SquadFeatures, feature: int, spans: _Spans, max_answer_length: int) -> _Spans:
    """The spans with both ends in this window's context, end >= start, at most
    max_answer_length tokens, and the start in the window where it has the most context."""
    first = int(features.context_offset[feature])
    limit = first + features.num_context_tokens(feature)
    start, end = spans.start, spans.end
    valid = ((first <= start) & (start < limit) & (first <= end) & (end < limit)
             & (end >= start) & (end - start + 1 <= max_answer_length))
    valid[valid] = features.token_is_max_context(feature)[start[valid] - first]
    return _Spans(*(column[valid] for column in spans))


def _nbest_entries(context: str, features: SquadFeatures, head: _Head, feature_ids: list[int],
                   config: DecodeConfig) -> list[dict[str, Any]]:
    """The best distinct answer texts over all windows of a question, cut from the context by
    character offsets, with softmax probabilities over the kept entries."""
    windows = [_valid_spans(features, f, head.spans(f), config.max_answer_length) for f in feature_ids]
    feature = np.concatenate([np.full(len(w.start), f) for f, w in zip(feature_ids, windows)])
    spans = _Spans(*(np.concatenate(column) for column in zip(*windows)))
    scores = spans.start_score + spans.end_score
    entries: list[dict[str, Any]] = []
    seen = {""}
    for i in np.argsort(-scores, kind="stable"):  # ties keep window, then beam order
        if len(entries) == config.n_best_size:
            break
        first = int(features.context_offset[feature[i]])
        char_spans = features.token_to_orig_char_span(feature[i])
        start_char = int(char_spans[spans.start[i] - first, 0])
        text = context[start_char:int(char_spans[spans.end[i] - first, 1])]
        if text in seen:
            continue
        seen.add(text)
        entries.append({"text": text, "answer_start": start_char,
                        head.score_names[0]: float(spans.start_score[i]),
                        head.score_names[1]: float(spans.end_score[i]), "score": float(scores[i])})
    for entry, probability in zip(entries, _softmax([e["score"] for e in entries])):
        entry["probability"] = probability
    return entries


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    exps = np.exp(np.asarray(scores, np.float64) - max(scores))
    return (exps / exps.sum()).tolist()


# ============================================================================= evaluation

def normalize_answer(text: str) -> str:
    """The official normalization: lower-case, drop punctuation, drop the words a/an/the,
    collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def exact_match(gold: str, prediction: str) -> int:
    """1 when the normalized texts are equal (both official scripts)."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_v1(gold: str, prediction: str) -> float:
    """Token F1 of the official v1.1 script: 0 when no token is shared (empty vs empty too)."""
    return _token_f1(normalize_answer(gold).split(), normalize_answer(prediction).split())


def f1_v2(gold: str, prediction: str) -> float:
    """Token F1 of the official v2.0 script: when either side is empty, 1 if both are."""
    gold_tokens, prediction_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not prediction_tokens:
        return float(gold_tokens == prediction_tokens)
    return _token_f1(gold_tokens, prediction_tokens)


def _token_f1(gold_tokens: list[str], prediction_tokens: list[str]) -> float:
    common = collections.Counter(gold_tokens) & collections.Counter(prediction_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(examples: Iterable[SquadExample]) -> dict[str, list[str]]:
    """{qas_id: gold answer texts} as the official scripts read them (all answers, whatever
    their answer_start; an unanswerable v2 question has none)."""
    return {e.qas_id: [a.text for a in e.answers] for e in examples}


def evaluate_v1(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """The official SQuAD v1.1 evaluation: {"exact_match", "f1"} in percent, max over gold
    answers; a question without a prediction scores 0 and is logged."""
    if not gold:
        raise ValueError("no gold questions to evaluate")
    exact = f1 = 0.0
    missing = [qid for qid in gold if qid not in predictions]
    for qid, answers in gold.items():
        if not answers:
            raise ValueError(f"question {qid} has no gold answer; SQuAD v1.1 scoring needs one")
        if qid in predictions:
            exact += max(exact_match(a, predictions[qid]) for a in answers)
            f1 += max(f1_v1(a, predictions[qid]) for a in answers)
    _warn_missing(missing)
    return {"exact_match": 100.0 * exact / len(gold), "f1": 100.0 * f1 / len(gold)}


def evaluate_v2(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0,
                ) -> dict[str, float]:
    """The official SQuAD v2.0 evaluation.

    Gold answers that normalize to "" are dropped; an unanswerable question's only gold answer
    is "". A question is predicted unanswerable when its na_prob exceeds na_prob_thresh (with
    no na_probs, never). Returns "exact", "f1", "total", the HasAns_/NoAns_ subsets and, given
    na_probs (e.g. null_odds), the best thresholds "best_exact", "best_exact_thresh",
    "best_f1", "best_f1_thresh". Questions without a prediction are left out and logged (the
    official script skips them too, and then fails on the subsets).
    """
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    _warn_missing([qid for qid in gold if qid not in predictions])
    exact_raw, f1_raw = _raw_scores_v2(gold, predictions)
    if not exact_raw:
        raise ValueError("no prediction matches a gold question")
    probs = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}
    missing_probs = [qid for qid in exact_raw if qid not in probs]
    if missing_probs:
        raise ValueError(f"na_probs lacks {len(missing_probs)} predicted questions, "
                         f"e.g. {missing_probs[0]}")
    exact = _apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
    f1 = _apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)
    result = _eval_dict(exact, f1, list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [qid for qid in exact if has_answer[qid] == wanted]
        if subset:
            result.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, subset).items()})
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = find_best_threshold(
            predictions, exact_raw, na_probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = find_best_threshold(
            predictions, f1_raw, na_probs, has_answer)
    return result


def _raw_scores_v2(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                   ) -> tuple[dict[str, float], dict[str, float]]:
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        golds = [a for a in answers if normalize_answer(a)] or [""]
        exact[qid] = max(exact_match(a, predictions[qid]) for a in golds)
        f1[qid] = max(f1_v2(a, predictions[qid]) for a in golds)
    return exact, f1


def _apply_no_answer_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float],
                               has_answer: Mapping[str, bool], threshold: float) -> dict[str, float]:
    return {qid: float(not has_answer[qid]) if na_probs[qid] > threshold else score
            for qid, score in scores.items()}


def _eval_dict(exact: Mapping[str, float], f1: Mapping[str, float],
               qids: Sequence[str]) -> dict[str, float]:
    return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            "f1": 100.0 * sum(f1[q] for q in qids) / len(qids), "total": len(qids)}


def find_best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                        na_probs: Mapping[str, float], has_answer: Mapping[str, bool],
                        ) -> tuple[float, float]:
    """The official v2.0 search: start with every question predicted unanswerable, then admit
    questions in increasing na_prob order, keeping the best score; returns (best score in
    percent, the na_prob threshold that reaches it; "" is predicted when na_prob > threshold)."""
    current = best = sum(1 for qid in has_answer if not has_answer[qid])
    best_threshold = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def _warn_missing(missing: Sequence[str]) -> None:
    if missing:
        logger.warning("%d questions have no prediction (e.g. %s)", len(missing), missing[0])
