"""A SavedModel that answers questions from raw text, for TF Serving or any TensorFlow with
tensorflow-text, without this repository (export_saved_model.py writes it).

Everything run_inference.py does in Python happens in the graph, with the same results:
- tokenization (tokenization.py's BERT normalisation and WordPiece): what the normaliser and
  pre-tokenizer do to each Unicode character is read off the Rust tokenizer itself at export
  time, for all 1.1 million code points, and stored as a table (runs of code points with
  their class: dropped, whitespace, a word of its own, part of a word; and the normalised
  text of those normalisation changes); the graph looks every character up, joins words
  and runs tensorflow-text's FastWordpieceTokenizer on them. Token spans map back to the
  characters of the original text and are stretched over the combining marks that follow,
  as squad_utils does;
- features: squad_utils' layout ([CLS] question [SEP] window [SEP]), doc-stride windows and
  the window where each token has the most context;
- the model: the joint head's beam search or the plain head, on every window of the batch;
- decoding: squad_utils' span constraints (both ends in one window's context, end >= start,
  at most max_answer_length tokens, the start in its max-context window), the best score over
  all windows of a question (float64 sums, ties to the earlier candidate), and for SQuAD 2.0
  the null odds against the threshold.

Signatures: `serving_default` takes `question` and `context` (string [batch]) and returns
`answer`, `start`/`end` (its character span in the context, -1 without an answer), `score`
and, for SQuAD 2.0 models, `no_answer` and `null_odds`. `answer_token_ids` takes WordPiece ids
instead (`question_ids`, `context_ids`, int32 [batch, length], [PAD]-padded) and returns the
answer as `start_token`/`end_token` indices into the context ids.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

import squad_utils
from modeling import ElectraForQuestionAnswering
from tokenization import MAX_INPUT_CHARS_PER_WORD, WordPieceTokenizer

logger = logging.getLogger(__name__)

# Character classes of BERT's normalisation + pre-tokenization.
DROP, SPACE, ISOLATED, WORD = range(4)
UNICODE_SIZE = 0x110000
SURROGATES = (0xD800, 0xE000)
TABLE_CHUNK = 1 << 16
# Each character is probed as "x" + c + "x" followed by a space: 4 characters per probe.
PROBE_WIDTH = 4
MAX_UTF8_BYTES_PER_CHAR = 4
EXPORT_CONFIG_FILE = "export_config.json"
NO_ANSWER_INDEX = -1
SIGNATURE_TOKEN_IDS = "answer_token_ids"


# ============================================================================= character table

@dataclass(frozen=True)
class CharacterTable:
    """What BERT's normalisation and pre-tokenization do to each Unicode character: code points
    [starts[i], starts[i + 1]) share `classes[i]` and `marks[i]` (combining mark, category Mn);
    `pieces` holds the normalised text of the characters normalisation changes."""

    starts: np.ndarray
    classes: np.ndarray
    marks: np.ndarray
    pieces: dict[int, str]


def character_table(tokenizer: WordPieceTokenizer) -> CharacterTable:
    """Probe the tokenizer's own normaliser and pre-tokenizer with every code point (about 4 s)."""
    classes = np.full(UNICODE_SIZE, DROP, np.int8)
    pieces: dict[int, str] = {}
    for base in range(0, UNICODE_SIZE, TABLE_CHUNK):
        code_points = [c for c in range(base, min(base + TABLE_CHUNK, UNICODE_SIZE))
                       if not SURROGATES[0] <= c < SURROGATES[1]]
        if code_points:
            _probe(tokenizer, code_points, classes, pieces)
    marks = np.zeros(UNICODE_SIZE, bool)
    for code in range(UNICODE_SIZE):
        marks[code] = not SURROGATES[0] <= code < SURROGATES[1] and squad_utils.is_combining_mark(chr(code))
    key = classes.astype(np.int32) * 2 + marks
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1]).astype(np.int32)
    return CharacterTable(starts=starts, classes=classes[starts].astype(np.int32), marks=marks[starts],
                          pieces=pieces)


def _probe(tokenizer: WordPieceTokenizer, code_points: list[int], classes: np.ndarray,
           pieces: dict[int, str]) -> None:
    """Classify code points from the words the tokenizer makes of "x" + c + "x": one word
    "x...x" (c is part of a word, or dropped when nothing is left of it), three words "x", c',
    "x" (c is a word of its own, punctuation or CJK) or two words "x", "x" (whitespace)."""
    text = "".join(f"x{chr(code)}x " for code in code_points)
    seen_words = np.zeros(len(code_points), np.int8)
    for word, (start, end) in tokenizer.pre_tokenize(text):
        index, position = divmod(start, PROBE_WIDTH)
        code = code_points[index]
        seen_words[index] += 1
        if position == 1:
            classes[code] = ISOLATED
            piece = word
        elif position == 0 and end - start == 3:
            piece = word[1:-1]
            classes[code] = WORD if piece else DROP
        else:
            continue
        if piece and piece != chr(code):
            pieces[code] = piece
    classes[np.asarray(code_points)[seen_words == 2]] = SPACE


# ============================================================================= graph helpers

def _safe_gather(values: tf.Tensor, indices: tf.Tensor, valid: tf.Tensor, default: Any) -> tf.Tensor:
    """values[indices] where valid, else default; indices may be out of range where not valid."""
    padded = tf.concat([values, tf.fill([1], tf.cast(default, values.dtype))], axis=0)
    return tf.gather(padded, tf.where(valid, indices, tf.cast(tf.size(values), indices.dtype)))


def _previous(values: tf.Tensor, first: Any) -> tf.Tensor:
    """values shifted right by one, `first` in front."""
    return tf.concat([tf.fill([1], tf.cast(first, values.dtype)), values], axis=0)[:tf.size(values)]


def _row_starts(ragged: tf.RaggedTensor) -> tf.Tensor:
    return ragged.row_splits[:-1]


@dataclass
class Tokens:
    """WordPiece ids of a batch of texts ([batch, tokens] ragged) and each token's character span
    in its text (`char_start`, `char_end`, ragged like `ids`)."""

    ids: tf.RaggedTensor
    char_start: tf.RaggedTensor
    char_end: tf.RaggedTensor


class GraphTokenizer(tf.Module):
    """tokenization.WordPieceTokenizer (with squad_utils' character spans) in graph ops."""

    def __init__(self, tokenizer: WordPieceTokenizer, table: CharacterTable):
        super().__init__(name="tokenizer")
        self.range_starts = tf.constant(table.starts, tf.int32)
        self.range_classes = tf.constant(table.classes, tf.int32)
        self.range_marks = tf.constant(table.marks, tf.bool)
        # A table may not be empty (cased tokenizers change no character): -1 is no code point.
        pieces = {-1: "", **table.pieces}
        self.pieces = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(pieces), tf.int64),
                                                tf.constant(list(pieces.values()), tf.string)),
            default_value="")
        self.unknown_token = tokenizer.inv_vocab[tokenizer.unk_id]
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocab_list(tokenizer), suffix_indicator="##", unknown_token=self.unknown_token,
            max_bytes_per_word=MAX_INPUT_CHARS_PER_WORD * MAX_UTF8_BYTES_PER_CHAR, token_out_type=tf.int32,
            no_pretokenization=True)

    def ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self.tokenize(texts).ids

    def tokenize(self, texts: tf.Tensor) -> Tokens:
        code_points = tf.strings.unicode_decode(texts, "UTF-8")
        classes, marks, pieces = self._look_up(code_points.flat_values)
        words = _words(classes, pieces, code_points.value_rowids())
        ids, token_word, token_start, token_end = self._wordpiece(words.text)
        # Byte offsets in a normalised word -> the original characters they came from.
        base = tf.gather(words.first_byte, token_word)
        first = tf.gather(words.chars, tf.searchsorted(words.piece_end, base + token_start, side="right"))
        last = tf.gather(words.chars, tf.searchsorted(words.piece_end, base + token_end - 1, side="right"))
        token_row = tf.gather(words.row, token_word)
        end = _past_marks(last + 1, marks, tf.gather(code_points.row_splits[1:], token_row))
        row_start = tf.gather(_row_starts(code_points), token_row)
        num_texts = tf.shape(texts, out_type=tf.int64)[0]

        def per_text(values: tf.Tensor) -> tf.RaggedTensor:
            return tf.RaggedTensor.from_value_rowids(values, token_row, nrows=num_texts)

        return Tokens(ids=per_text(ids), char_start=per_text(first - row_start), char_end=per_text(end - row_start))

    def _look_up(self, codes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Each character's class, whether it is a combining mark, and its normalised text."""
        ranges = tf.searchsorted(self.range_starts, codes, side="right") - 1
        mapped = self.pieces.lookup(tf.cast(codes, tf.int64))
        pieces = tf.where(mapped == "", tf.strings.unicode_encode(codes[:, tf.newaxis], "UTF-8"), mapped)
        return tf.gather(self.range_classes, ranges), tf.gather(self.range_marks, ranges), pieces

    def _wordpiece(self, words: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Flat token ids, their word and their byte span in it; a word of more than
        MAX_INPUT_CHARS_PER_WORD characters is one [UNK] over all of it."""
        too_long = tf.strings.length(words, unit="UTF8_CHAR") > MAX_INPUT_CHARS_PER_WORD
        ids, starts, ends = self.wordpiece.tokenize_with_offsets(tf.where(too_long, self.unknown_token, words))
        token_word = ids.value_rowids()
        word_bytes = tf.cast(tf.gather(tf.strings.length(words, unit="BYTE"), token_word), tf.int64)
        token_end = tf.where(tf.gather(too_long, token_word), word_bytes, tf.cast(ends.flat_values, tf.int64))
        return ids.flat_values, token_word, tf.cast(starts.flat_values, tf.int64), token_end


@dataclass
class Words:
    """The words of a batch of texts ([num_words]): normalised `text`, the text they belong to
    (`row`), and the byte offset of each in the concatenation of all words (`first_byte`); for
    their characters, word by word ([num_word_chars]): the flat index of each in the batch
    (`chars`) and the end of its normalised text in that concatenation (`piece_end`)."""

    text: tf.Tensor
    row: tf.Tensor
    first_byte: tf.Tensor
    chars: tf.Tensor
    piece_end: tf.Tensor


def _words(classes: tf.Tensor, pieces: tf.Tensor, char_row: tf.Tensor) -> Words:
    """BERT's pre-tokenization of classified characters: dropped characters vanish (a word goes
    on across them), whitespace ends a word, an isolated character is a word of its own."""
    kept = tf.where(classes != DROP)[:, 0]
    kept_class, kept_row = tf.gather(classes, kept), tf.gather(char_row, kept)
    follows_word_char = (_previous(kept_class, SPACE) == WORD) & (_previous(kept_row, -1) == kept_row)
    starts_word = (kept_class == ISOLATED) | ((kept_class == WORD) & ~follows_word_char)
    in_word = (kept_class == WORD) | (kept_class == ISOLATED)
    chars = tf.boolean_mask(kept, in_word)
    word_of_char = tf.cumsum(tf.cast(tf.boolean_mask(starts_word, in_word), tf.int64)) - 1
    num_words = tf.reduce_sum(tf.cast(starts_word, tf.int64))
    char_pieces = tf.gather(pieces, chars)
    piece_bytes = tf.cast(tf.strings.length(char_pieces, unit="BYTE"), tf.int64)
    piece_end = tf.cumsum(piece_bytes)
    first_char = tf.math.unsorted_segment_min(tf.range(tf.size(chars, out_type=tf.int64)), word_of_char, num_words)
    return Words(text=tf.strings.unsorted_segment_join(char_pieces, word_of_char, num_words),
                 row=tf.gather(char_row, tf.gather(chars, first_char)),
                 first_byte=tf.gather(piece_end - piece_bytes, first_char), chars=chars, piece_end=piece_end)


def _past_marks(end: tf.Tensor, marks: tf.Tensor, text_end: tf.Tensor) -> tf.Tensor:
    """Flat character indices `end` moved past the combining marks that follow, up to `text_end`."""
    not_marks = tf.where(~marks)[:, 0]
    following = tf.gather(tf.concat([not_marks, tf.shape(marks, out_type=tf.int64)], axis=0),
                          tf.searchsorted(not_marks, end, side="left"))
    return tf.minimum(following, text_end)


def vocab_list(tokenizer: WordPieceTokenizer) -> list[str]:
    """The vocabulary by id; ids without a token (blank or repeated lines of vocab.txt) get a
    placeholder no normalised word can match (it holds a control character, which are dropped)."""
    tokens = [f"\x01{index}" for index in range(tokenizer.vocab_size)]
    for token, index in tokenizer.vocab.items():
        tokens[index] = token
    return tokens


# ============================================================================= features, model, decoding

@dataclass(frozen=True)
class ServingConfig:
    """What the graph bakes in: squad_utils' featurization and decoding settings, the model's
    head, and whether the encoder is XLA-compiled."""

    features: squad_utils.FeatureConfig
    decode: squad_utils.DecodeConfig
    joint_head: bool
    beam_size: int
    jit_compile: bool = False
    compute_dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Windows:
    """The doc-stride windows of a batch, one row per window ([num_windows]): the question it
    belongs to, its index among that question's windows, its first context token and length,
    the position of its first context token in the sequence (context_offset), and the model
    inputs ([num_windows, max_seq_length])."""

    example: tf.Tensor
    index: tf.Tensor
    start: tf.Tensor
    length: tf.Tensor
    context_offset: tf.Tensor
    step: tf.Tensor
    room: tf.Tensor
    context_length: tf.Tensor
    inputs: dict[str, tf.Tensor]


def doc_windows(question_ids: tf.RaggedTensor, context_ids: tf.RaggedTensor, config: squad_utils.FeatureConfig,
                special_ids: tuple[int, int, int]) -> Windows:
    """squad_utils.featurize_examples in graph ops: the question cut to max_query_length, then
    [CLS] question [SEP] window [SEP] padded to max_seq_length, for every doc-stride window
    (squad_utils.doc_windows: each starts min(room, doc_stride) tokens after the previous one,
    the last ends at the last token); a context without tokens has no window."""
    cls_id, sep_id, pad_id = special_ids
    question_ids = question_ids[:, :config.max_query_length]
    question_length = question_ids.row_lengths()
    context_length = context_ids.row_lengths()
    room = config.max_seq_length - question_length - squad_utils.SPECIAL_TOKENS_IN_FEATURE
    step = tf.minimum(room, config.doc_stride)
    extra = tf.maximum(context_length - room, 0)
    num_windows = tf.where(context_length > 0, 1 + (extra + step - 1) // step, 0)
    index = tf.ragged.range(num_windows)
    example, index = index.value_rowids(), index.flat_values
    start = index * tf.gather(step, example)
    length = tf.minimum(tf.gather(room, example), tf.gather(context_length, example) - start)
    context_offset = tf.gather(question_length, example) + 2

    position = tf.range(config.max_seq_length, dtype=tf.int64)[tf.newaxis, :]
    offset, end = context_offset[:, tf.newaxis], (context_offset + length)[:, tf.newaxis]
    in_question = (position >= 1) & (position < offset - 1)
    in_context = (position >= offset) & (position < end)
    question_token = _safe_gather(question_ids.flat_values,
                                  tf.gather(_row_starts(question_ids), example)[:, tf.newaxis] + position - 1,
                                  in_question, pad_id)
    context_token = _safe_gather(context_ids.flat_values,
                                 (tf.gather(_row_starts(context_ids), example) + start)[:, tf.newaxis] + position
                                 - offset, in_context, pad_id)
    input_ids = tf.where(in_question, question_token, tf.where(in_context, context_token, pad_id))
    input_ids = tf.where((position == offset - 1) | (position == end), sep_id, input_ids)
    input_ids = tf.where(position == 0, cls_id, input_ids)
    inputs = {"input_ids": input_ids,
              "input_mask": tf.cast(position <= end, tf.int32),
              "segment_ids": tf.cast((position >= offset) & (position <= end), tf.int32),
              "p_mask": tf.cast(~in_context & (position != 0), tf.int32)}
    return Windows(example=example, index=index, start=start, length=length, context_offset=context_offset,
                   step=tf.gather(step, example), room=tf.gather(room, example),
                   context_length=tf.gather(context_length, example), inputs=inputs)


def is_max_context(windows: Windows, token: tf.Tensor) -> tf.Tensor:
    """[num_windows, k] bool: whether each window is where its context token `token` (an index
    into the question's context tokens) has the most context (squad_utils.max_context_windows:
    min(tokens left, tokens right) + 0.01 x window length, the first window winning ties)."""
    max_windows = tf.reduce_max(tf.concat([windows.index + 1, [0]], axis=0))
    other = tf.range(max_windows)[tf.newaxis, :]  # [1, W]: every window of the question (and beyond)
    other_start = other * windows.step[:, tf.newaxis]
    other_length = tf.minimum(windows.room[:, tf.newaxis], windows.context_length[:, tf.newaxis] - other_start)
    t, s, n = token[:, :, tf.newaxis], other_start[:, tf.newaxis, :], other_length[:, tf.newaxis, :]
    inside = (t >= s) & (t < s + n)
    score = tf.cast(tf.minimum(t - s, s + n - 1 - t), tf.float64) + 0.01 * tf.cast(n, tf.float64)
    score = tf.where(inside, score, -np.inf)  # [num_windows, k, W]
    own = tf.cast(windows.index, tf.int32)[:, tf.newaxis, tf.newaxis]
    others = tf.range(tf.cast(max_windows, tf.int32))[tf.newaxis, tf.newaxis, :]
    own_score = tf.reduce_max(tf.where(others == own, score, -np.inf), axis=-1)
    best_before = tf.reduce_max(tf.where(others < own, score, -np.inf), axis=-1)
    best_after = tf.reduce_max(tf.where(others > own, score, -np.inf), axis=-1)
    return (own_score > best_before) & (own_score >= best_after)


@dataclass
class Candidates:
    """Candidate spans of every window, [num_windows, k], in squad_utils' order (start by start):
    start and end positions in the window's sequence and their float64 scores; `null` is each
    window's float64 null score (SQuAD 2.0)."""

    start: tf.Tensor
    end: tf.Tensor
    score: tf.Tensor
    null: tf.Tensor | None


def joint_candidates(outputs: dict[str, tf.Tensor]) -> Candidates:
    """Start i of the beam with each of its k ends; score = start + end log-probability."""
    beam = tf.shape(outputs["start_top_index"])[1]
    start = tf.repeat(outputs["start_top_index"], beam, axis=1)
    end = tf.reshape(outputs["end_top_index"], [tf.shape(start)[0], -1])
    score = (tf.repeat(tf.cast(outputs["start_top_log_probs"], tf.float64), beam, axis=1)
             + tf.reshape(tf.cast(outputs["end_top_log_probs"], tf.float64), tf.shape(start)))
    null = tf.cast(outputs["cls_logits"], tf.float64) if "cls_logits" in outputs else None
    return Candidates(start=start, end=end, score=score, null=null)


def plain_candidates(outputs: dict[str, tf.Tensor], n_best_size: int) -> Candidates:
    """The top n_best starts with each of the top n_best ends (top_k keeps the lower index first
    on ties, as squad_utils' stable sort); score = start + end logit; null = both at [CLS]."""
    start_logits, end_logits = outputs["start_logits"], outputs["end_logits"]
    k = min(n_best_size, start_logits.shape[1])
    starts, ends = tf.math.top_k(start_logits, k).indices, tf.math.top_k(end_logits, k).indices
    start, end = tf.repeat(starts, k, axis=1), tf.tile(ends, [1, k])
    score = (tf.cast(tf.gather(start_logits, start, batch_dims=1), tf.float64)
             + tf.cast(tf.gather(end_logits, end, batch_dims=1), tf.float64))
    null = tf.cast(start_logits[:, 0], tf.float64) + tf.cast(end_logits[:, 0], tf.float64)
    return Candidates(start=start, end=end, score=score, null=null)


@dataclass
class BestSpans:
    """Per question ([batch]): the best span's first and last context token (NO_ANSWER_INDEX
    when not answered), its score (-inf without any valid span), whether it is answered, and for
    SQuAD 2.0 the null odds."""

    first_token: tf.Tensor
    last_token: tf.Tensor
    score: tf.Tensor
    answered: tf.Tensor
    null_odds: tf.Tensor | None


def best_spans(windows: Windows, candidates: Candidates, num_questions: tf.Tensor, config: ServingConfig
               ) -> BestSpans:
    """squad_utils._decode's best answer: the valid spans of all windows of a question, the
    highest score first, the earlier candidate on ties; SQuAD 2.0: "" when the null odds
    (least null score over the windows, minus the best span's score for the plain head) exceed
    the threshold."""
    start = tf.cast(candidates.start, tf.int64) - windows.context_offset[:, tf.newaxis]
    end = tf.cast(candidates.end, tf.int64) - windows.context_offset[:, tf.newaxis]
    length = windows.length[:, tf.newaxis]
    first_token = windows.start[:, tf.newaxis] + start
    valid = ((start >= 0) & (start < length) & (end >= 0) & (end < length) & (end >= start)
             & (end - start + 1 <= config.decode.max_answer_length)
             & is_max_context(windows, tf.where((start >= 0) & (start < length), first_token, 0)))
    per_window = tf.shape(valid, out_type=tf.int64)[1]
    question = tf.reshape(tf.repeat(windows.example[:, tf.newaxis], per_window, axis=1), [-1])
    valid, score = tf.reshape(valid, [-1]), tf.reshape(candidates.score, [-1])
    score = tf.where(valid, score, -np.inf)
    best_score = tf.math.unsorted_segment_max(score, question, num_questions)
    has_span = tf.math.unsorted_segment_max(tf.cast(valid, tf.int32), question, num_questions) > 0
    best_score = tf.where(has_span, best_score, -np.inf)
    order = tf.range(tf.size(valid, out_type=tf.int64))
    first_best = tf.math.unsorted_segment_min(
        tf.where(valid & (score == tf.gather(best_score, question)), order, tf.int64.max), question, num_questions)
    first_best = tf.where(has_span, first_best, 0)
    flat_first, flat_last = tf.reshape(first_token, [-1]), tf.reshape(windows.start[:, tf.newaxis] + end, [-1])
    answered, null_odds = has_span, None
    if config.decode.version_2_with_negative:
        null_odds = tf.math.unsorted_segment_min(candidates.null, windows.example, num_questions)
        if not config.joint_head:
            null_odds = tf.where(has_span, null_odds - best_score, null_odds)
        answered = has_span & ~(null_odds > config.decode.null_score_diff_threshold)
    return BestSpans(first_token=tf.where(answered, _safe_gather(flat_first, first_best, has_span, 0), NO_ANSWER_INDEX),
                     last_token=tf.where(answered, _safe_gather(flat_last, first_best, has_span, 0), NO_ANSWER_INDEX),
                     score=best_score, answered=answered, null_odds=null_odds)


# ============================================================================= the SavedModel

class QuestionAnswering(tf.Module):
    """The exported module: the tokenizer, the model and the decoding settings."""

    def __init__(self, model: ElectraForQuestionAnswering, tokenizer: WordPieceTokenizer, table: CharacterTable,
                 config: ServingConfig):
        super().__init__(name="question_answering")
        # The weights are tracked, not the Keras model: saving a Keras model traces its own
        # default signature, which this model does not have.
        self.model_variables = list(model.variables)
        self.tokenizer = GraphTokenizer(tokenizer, table)
        self.config = config
        self.special_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)

        def model_outputs(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return model(inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"], p_mask=inputs["p_mask"],
                         training=False)

        self.run_model = tf.function(model_outputs, jit_compile=config.jit_compile, autograph=False)

    def spans(self, question_ids: tf.RaggedTensor, context_ids: tf.RaggedTensor) -> BestSpans:
        """The best span of each question, in context token indices."""
        windows = doc_windows(question_ids, context_ids, self.config.features, self.special_ids)
        inputs = windows.inputs
        num_windows = tf.shape(inputs["input_ids"])[0]
        if self.config.jit_compile:  # one compilation per power of two windows, not per count
            inputs = {name: _pad_rows_to_power_of_two(value) for name, value in inputs.items()}
        outputs = {name: value[:num_windows] for name, value in self.run_model(inputs).items()}
        candidates = (joint_candidates(outputs) if self.config.joint_head
                      else plain_candidates(outputs, self.config.decode.n_best_size))
        return best_spans(windows, candidates, question_ids.nrows(), self.config)

    def _common_outputs(self, best: BestSpans) -> dict[str, tf.Tensor]:
        outputs = {"score": tf.cast(best.score, tf.float32)}
        if best.null_odds is not None:
            outputs["no_answer"] = ~best.answered
            outputs["null_odds"] = tf.cast(best.null_odds, tf.float32)
        return outputs

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="question"),
                                                   tf.TensorSpec([None], tf.string, name="context")])
    def answer_text(self, question: tf.Tensor, context: tf.Tensor) -> dict[str, tf.Tensor]:
        """Answers cut out of the contexts: `answer`, its character span `start`/`end` (-1
        without an answer), `score` and, for SQuAD 2.0, `no_answer` and `null_odds`."""
        tokens = self.tokenizer.tokenize(context)
        best = self.spans(self.tokenizer.ids(question), tokens.ids)
        token_base = _row_starts(tokens.ids)
        first = _safe_gather(tokens.char_start.flat_values, token_base + best.first_token, best.answered, -1)
        end = _safe_gather(tokens.char_end.flat_values, token_base + best.last_token, best.answered, -1)
        answer = tf.where(best.answered, _cut(context, first, end), "")
        return {"answer": answer, "start": first, "end": end, **self._common_outputs(best)}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32, name="question_ids"),
                                                   tf.TensorSpec([None, None], tf.int32, name="context_ids")])
    def answer_token_ids(self, question_ids: tf.Tensor, context_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """Answers as context token indices, from WordPiece ids ([PAD] ids are left out)."""
        pad_id = self.special_ids[2]
        best = self.spans(tf.ragged.boolean_mask(question_ids, question_ids != pad_id),
                          tf.ragged.boolean_mask(context_ids, context_ids != pad_id))
        return {"start_token": best.first_token, "end_token": best.last_token, **self._common_outputs(best)}


def _pad_rows_to_power_of_two(value: tf.Tensor) -> tf.Tensor:
    rows = tf.shape(value)[0]
    padded = tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(tf.maximum(rows, 1), tf.float32)) / np.log(2.0)), tf.int32)
    return tf.pad(value, [[0, padded - rows], [0, 0]])


def _cut(texts: tf.Tensor, first: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """texts[i][first[i]:end[i]] in characters (any span where first is -1)."""
    chars, byte_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8")
    num_chars = chars.row_lengths()
    inside = (first >= 0) & (end >= first) & (end <= num_chars)
    flat, base = byte_starts.flat_values, _row_starts(byte_starts)
    byte_first = _safe_gather(flat, base + first, inside & (first < num_chars), 0)
    byte_end = tf.where(end == num_chars, tf.cast(tf.strings.length(texts, unit="BYTE"), tf.int64),
                        _safe_gather(flat, base + end, inside & (end < num_chars), 0))
    return tf.strings.substr(texts, byte_first, tf.where(inside, byte_end - byte_first, 0), unit="BYTE")


def export(model: ElectraForQuestionAnswering, tokenizer: WordPieceTokenizer, config: ServingConfig,
           output_dir: str, overwrite: bool = False) -> None:
    """Write the SavedModel to output_dir (through a temporary folder beside it, so a failed
    export leaves a previous one as it was); the vocabulary and the settings go to its assets."""
    check_output_dir(output_dir, overwrite)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    module = QuestionAnswering(model, tokenizer, character_table(tokenizer), config)
    staging = tempfile.mkdtemp(prefix=os.path.basename(output_dir) + ".", suffix=".partial", dir=parent)
    try:
        settings = os.path.join(staging, "settings", EXPORT_CONFIG_FILE)
        os.makedirs(os.path.dirname(settings))
        with open(settings, "w", encoding="utf-8") as f:
            json.dump(config.to_json(), f, indent=1)
        module.vocab_file = tf.saved_model.Asset(tokenizer.vocab_file)
        module.export_config = tf.saved_model.Asset(settings)
        signatures = {"serving_default": module.answer_text.get_concrete_function(),
                      SIGNATURE_TOKEN_IDS: module.answer_token_ids.get_concrete_function()}
        saved = os.path.join(staging, "saved_model")
        tf.saved_model.save(module, saved, signatures=signatures)
        _replace_folder(saved, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Wrote the SavedModel %s", output_dir)


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """A folder that already holds files is replaced only on request."""
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(f"{output_dir} already holds files; pass --overwrite to replace them or choose "
                         "another --output_dir")


def _replace_folder(source: str, destination: str) -> None:
    """Move source to destination; an existing destination is moved aside first and removed
    only once the new folder is in place."""
    old = None
    if os.path.exists(destination):
        old = tempfile.mkdtemp(prefix=os.path.basename(destination) + ".", suffix=".old",
                               dir=os.path.dirname(os.path.abspath(destination)))
        os.rmdir(old)
        os.replace(destination, old)
    os.replace(source, destination)
    if old:
        shutil.rmtree(old)
