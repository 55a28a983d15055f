"""Pretraining input pipeline and the per-step math of replaced-token detection.

The input pipeline reads the TFRecords of `build_pretraining_dataset.py` (unmasked examples)
into int32 batches. Masking happens per step (docs/recipe.md), then the generator's samples
replace the masked tokens and give the discriminator its labels.

Every random number of a step is a Philox4x32-10 block (the generator behind TensorFlow's
stateless ops) computed with integer tensor ops from a counter (global row, position or slot,
`Stream`, 0) and a key (the run's seed, the optimizer step). A row's masks and samples thus
depend only on (seed, step, its row in the step's global batch), whether the global batch is
processed at once, in accumulated micro-batches or across ranks; the whole batch is computed
at once (no per-row loop, under XLA either), and the integers are identical eagerly, in graph
mode and under XLA. docs/performance.md explains the scheme.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import math
import re
import struct
from typing import NamedTuple, Sequence

import tensorflow as tf
from google.protobuf import message

from safe_io import UserError
from tfrecord_format import HEADER_BYTES, RecordState, read_length, record_index, record_state

logger = logging.getLogger(__name__)

FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids")
CLS_ID, SEP_ID, MASK_ID = 101, 102, 103
MASK_TOKEN_PROB = 0.85  # the rest of the chosen positions keep their token; no random-token branch
DISALLOWED_LOGIT = -1e9
MAX_FILES_READ_AT_ONCE = 4
UNIFORM_BITS = 23  # float32 holds (k + 0.5) / 2**23 exactly, so uniforms lie strictly in (0, 1)


# ----------------------------------------------------------------------------- input pipeline

def list_pretraining_files(file_patterns: str) -> list[str]:
    """The sorted, de-duplicated files matching comma-separated glob patterns.

    Sorting makes the file -> rank assignment the same on every rank and every run.
    """
    patterns = [p.strip() for p in file_patterns.split(",") if p.strip()]
    files = sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no pretraining TFRecord files match {patterns} (expected files "
                                "pretrain_data.tfrecord-{i}-of-{N} from build_pretraining_dataset.py)")
    return files


def pretraining_dataset(file_patterns: str, batch_size: int, max_seq_length: int, seed: int,
                        rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10000,
                        repeat: bool = True) -> tf.data.Dataset:
    """Batches of {input_ids, input_mask, segment_ids}, int32 [batch_size, max_seq_length].

    Rank `rank` of `world_size` reads files i with i % world_size == rank; with fewer files
    than ranks every rank reads all files and keeps every world_size-th record instead. Files
    and records are shuffled with `seed`; the iterator is checkpointable with
    `tf.train.Checkpoint(iterator=...)` (shuffle buffer and positions included).
    A record of another length fails with an error naming its file and both lengths.
    """
    _check_pipeline_args(batch_size, max_seq_length, rank, world_size, shuffle_buffer)
    files = list_pretraining_files(file_patterns)
    shard_by_file = len(files) >= world_size
    rank_files = files_of_rank(files, rank, world_size)
    for path in rank_files:
        check_record_length(path, max_seq_length)
    logger.info("rank %d of %d reads %d of %d pretraining files (sharded by %s)", rank, world_size,
                len(rank_files), len(files), "file" if shard_by_file else "record")

    records = _records_with_filenames(rank_files, seed)
    if not shard_by_file:
        records = records.shard(world_size, rank)
    if repeat:
        records = records.repeat()
    records = records.shuffle(shuffle_buffer, seed=seed)
    batches = records.batch(batch_size, drop_remainder=True)
    batches = batches.map(lambda filenames, serialized: parse_batch(filenames, serialized, max_seq_length),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def files_of_rank(files: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The files rank `rank` reads: every world_size-th, or all of them when there are fewer
    files than ranks (the rank then keeps every world_size-th record)."""
    return list(files[rank::world_size] if len(files) >= world_size else files)


def first_record(path: str) -> bytes | None:
    """The data of a TFRecord file's first record, or None when the file has no whole first
    record (an empty file; a truncated one fails later, in the reader, with its name)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        header = f.read(12)  # uint64 length, uint32 masked CRC of the length
        if len(header) < 12:
            return None
        length = struct.unpack("<Q", header[:8])[0]
        data = f.read(length)
    return data if len(data) == length else None


def check_record_length(path: str, max_seq_length: int) -> None:
    """Fail before training, in one line, when a file's records are not max_seq_length long
    (TFRecords built for the other phase): the pipeline would stop mid-run with a traceback."""
    data = first_record(path)
    if data is None:
        return
    try:
        features = tf.train.Example.FromString(data).features.feature
    except message.DecodeError:
        return  # not an Example: the reader names the file when it gets there
    for name in FEATURE_NAMES:
        if name not in features:
            raise UserError(f"{path}: its records have no {name} feature; expected TFRecords from "
                            "build_pretraining_dataset.py")
        length = len(features[name].int64_list.value)
        if length != max_seq_length:
            raise UserError(f"{path}: its records hold {name} of length {length}, but --max_seq_length is "
                            f"{max_seq_length}: pass --max_seq_length {length}, or rebuild the TFRecords with "
                            f"build_pretraining_dataset.py --max-seq-length {max_seq_length}")


def _check_pipeline_args(batch_size: int, max_seq_length: int, rank: int, world_size: int,
                         shuffle_buffer: int) -> None:
    if batch_size < 1 or max_seq_length < 1 or shuffle_buffer < 1:
        raise ValueError(f"batch_size ({batch_size}), max_seq_length ({max_seq_length}) and "
                         f"shuffle_buffer ({shuffle_buffer}) must be positive")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")


def _records_with_filenames(files: Sequence[str], seed: int) -> tf.data.Dataset:
    """(filename, serialized record) pairs: files in a seeded order, a new order each epoch,
    read a few at a time. The filename travels with each record for error messages."""
    filenames = tf.data.Dataset.from_tensor_slices(list(files))
    filenames = filenames.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read_file(filename: tf.Tensor) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(filename).map(lambda record: (filename, record))

    return filenames.interleave(read_file, cycle_length=min(MAX_FILES_READ_AT_ONCE, len(files)),
                                block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)


def parse_batch(filenames: tf.Tensor, serialized: tf.Tensor, max_seq_length: int) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized examples into int32 [batch, max_seq_length] features.

    Features are read as ragged so a wrong length is reported with its file; a fixed-length
    parse would only say "Can't parse serialized Example".
    """
    spec = {name: tf.io.RaggedFeature(tf.int64) for name in FEATURE_NAMES}
    features = tf.io.parse_example(serialized, spec)
    checks = [_assert_feature_length(name, features[name], filenames, max_seq_length)
              for name in FEATURE_NAMES]
    shape = [serialized.shape[0], max_seq_length]
    with tf.control_dependencies(checks):
        return {name: tf.cast(features[name].to_tensor(shape=shape), tf.int32) for name in FEATURE_NAMES}


def _assert_feature_length(name: str, values: tf.RaggedTensor, filenames: tf.Tensor,
                           max_seq_length: int) -> tf.Operation:
    lengths = values.row_lengths()
    wrong = tf.not_equal(lengths, max_seq_length)
    first_wrong = tf.argmax(tf.cast(wrong, tf.int32), output_type=tf.int32)
    message = tf.strings.format(
        "pretraining record in file {} has " + name + " of length {}, expected max_seq_length "
        + str(max_seq_length) + " (were the TFRecords built with another --max_seq_length?)",
        (filenames[first_wrong], lengths[first_wrong]))
    return tf.debugging.Assert(tf.logical_not(tf.reduce_any(wrong)), [message])


# ----------------------------------------------------------------------------- unreadable records

READER_ERROR = re.compile(r"(corrupted|truncated) record at (\d+)")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record TensorFlow's reader rejects: its file, its index (0 = the first), where it starts."""

    path: str
    index: int
    offset: int
    state: RecordState

    def __str__(self) -> str:
        return f"{self.path}: record {self.index} (at byte {self.offset}) {self.state.value}"


def find_bad_records(files: Sequence[str], reader_message: str) -> list[BadRecord]:
    """The records of `files` a reader error ("corrupted record at N", "truncated record at N";
    TensorFlow names no file) is about. Searched only when the error happens: first for a record
    with a valid header whose data is cut short or corrupt there (a few bytes read per file); if
    none, for a corrupt header at N (each file's headers walked up to N)."""
    match = READER_ERROR.search(reader_message)
    if match is None:
        return []
    kind, offset = match.group(1), int(match.group(2))
    start = offset if kind == "truncated" else offset - HEADER_BYTES  # "corrupted" data: N is past the header
    found = [bad for path in files if (bad := _bad_data_at(path, start))]
    if not found and kind == "corrupted":
        found = [bad for path in files if (bad := _bad_header_at(path, offset))]
    return found


def _bad_data_at(path: str, start: int) -> BadRecord | None:
    """The record starting at byte `start` of `path`, if it has a valid header but is cut short or corrupt."""
    size = tf.io.gfile.stat(path).length
    if not 0 <= start <= size - HEADER_BYTES:  # tf.io.gfile cannot seek past the end
        return None
    with tf.io.gfile.GFile(path, "rb") as file:
        state = record_state(file, size, start)
        if state not in (RecordState.CUT_SHORT, RecordState.BAD_CHECKSUM):
            return None
        index = record_index(file, start)
    return None if index is None else BadRecord(path, index, start, state)


def _bad_header_at(path: str, start: int) -> BadRecord | None:
    """The record starting at byte `start` of `path`, if its header is corrupt."""
    if tf.io.gfile.stat(path).length < start + HEADER_BYTES:
        return None
    with tf.io.gfile.GFile(path, "rb") as file:
        if read_length(file, start) is not None:
            return None
        index = record_index(file, start)
    return None if index is None else BadRecord(path, index, start, RecordState.BAD_HEADER)


def describe_reader_error(files: Sequence[str], error: tf.errors.DataLossError) -> str:
    """One line naming the file(s) and record(s) of a reader error, or saying none was found."""
    bad = find_bad_records(files, error.message)
    if bad:
        return "; ".join(map(str, bad))
    match = READER_ERROR.search(error.message)
    what = match.group(0) if match else " ".join(error.message.split())
    return (f"the TFRecord reader reported \"{what}\", but none of the {len(files)} files this process reads has "
            "a bad record there now (a checkpoint written after the reader met a bad record, which it reads "
            "ahead, replays the error even once the file is fixed)")


# ----------------------------------------------------------------------------- random numbers

class Stream(enum.IntEnum):
    """What a random number is for: the third word of its Philox counter."""

    POSITION_SCORES = 0  # one per (row, position): which positions are masked
    MASK_TOKEN = 1  # one per (row, slot): [MASK] or the original token
    SAMPLING = 2  # one per (row, slot): the generator's sample


PHILOX_ROUNDS = 10
PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
PHILOX_KEY_INCREMENTS = (0x9E3779B9, 0xBB67AE85)
LOW_32_BITS = 0xFFFFFFFF


def philox_4x32(counter: Sequence[tf.Tensor], key: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Philox4x32-10 (Salmon et al., SC 2011), the generator of `tf.random.stateless_*`: four
    uint32 words of a 128-bit counter and two of a 64-bit key -> four random uint32 words.

    Elementwise on broadcastable uint32 tensors, so a whole batch's numbers come from one
    vectorised computation (no loop over rows, under XLA either) and each is a pure function
    of its own counter and key.
    """
    c0, c1, c2, c3 = (tf.convert_to_tensor(word, tf.uint32) for word in counter)
    k0, k1 = (tf.convert_to_tensor(word, tf.uint32) for word in key)
    for round_index in range(PHILOX_ROUNDS):
        if round_index:
            k0 += tf.constant(PHILOX_KEY_INCREMENTS[0], tf.uint32)
            k1 += tf.constant(PHILOX_KEY_INCREMENTS[1], tf.uint32)
        high0, low0 = _multiply_high_low(c0, PHILOX_MULTIPLIERS[0])
        high1, low1 = _multiply_high_low(c2, PHILOX_MULTIPLIERS[1])
        c0, c1, c2, c3 = (_xor(high1, c1, k0), low1, _xor(high0, c3, k1), low0)
    return [c0, c1, c2, c3]


def _xor(*words: tf.Tensor) -> tf.Tensor:
    result = words[0]
    for word in words[1:]:
        result = tf.bitwise.bitwise_xor(result, word)
    return result


def _multiply_high_low(word: tf.Tensor, multiplier: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The high and low 32 bits of the 64-bit product of a uint32 word and a constant."""
    product = tf.cast(word, tf.uint64) * tf.constant(multiplier, tf.uint64)
    high = tf.cast(tf.bitwise.right_shift(product, tf.constant(32, tf.uint64)), tf.uint32)
    return high, tf.cast(tf.bitwise.bitwise_and(product, tf.constant(LOW_32_BITS, tf.uint64)), tf.uint32)


def philox_key(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The Philox key of a [2] seed (the run's seed, the optimizer step): the low 32 bits of each."""
    seed = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(LOW_32_BITS, tf.int64))
    return tf.cast(seed[0], tf.uint32), tf.cast(seed[1], tf.uint32)


def random_words(seed: tf.Tensor, stream: Stream, first_row: tf.Tensor | int, num_rows: tf.Tensor | int,
                 num_columns: tf.Tensor | int) -> list[tf.Tensor]:
    """Four [num_rows, num_columns] uint32 tensors: the Philox block of counter
    (first_row + row, column, stream, 0) under the key of `seed`.

    An entry depends only on (seed, global row, column, stream), so an example gets the same
    numbers in a large batch, in accumulated micro-batches or on another rank.
    """
    rows = tf.cast(first_row, tf.int32) + tf.range(num_rows, dtype=tf.int32)
    columns = tf.range(num_columns, dtype=tf.int32)
    counter = (tf.cast(rows, tf.uint32)[:, None], tf.cast(columns, tf.uint32)[None, :],
               tf.constant(int(stream), tf.uint32), tf.constant(0, tf.uint32))
    return philox_4x32(counter, philox_key(seed))


def unit_uniform(word: tf.Tensor) -> tf.Tensor:
    """float32 in (0, 1) from a uint32 word: (k + 0.5) / 2**23 for its top 23 bits k, exact."""
    top_bits = tf.bitwise.right_shift(word, tf.constant(32 - UNIFORM_BITS, tf.uint32))
    return (tf.cast(top_bits, tf.float32) + 0.5) * (2.0 ** -UNIFORM_BITS)


def unit_uniform_float64(high_word: tf.Tensor, low_word: tf.Tensor) -> tf.Tensor:
    """float64 in (0, 1) from two uint32 words: (k + 0.5) / 2**53 for 53 of their bits k, exact."""
    high = tf.cast(tf.bitwise.right_shift(high_word, tf.constant(5, tf.uint32)), tf.float64)  # 27 bits
    low = tf.cast(tf.bitwise.right_shift(low_word, tf.constant(6, tf.uint32)), tf.float64)  # 26 bits
    return (high * 2.0 ** 26 + low + 0.5) * 2.0 ** -53


def non_negative_int64(high_word: tf.Tensor, low_word: tf.Tensor) -> tf.Tensor:
    """int64 in [0, 2**63) from two uint32 words (the top bit of the high word dropped)."""
    high = tf.cast(tf.bitwise.bitwise_and(high_word, tf.constant(0x7FFFFFFF, tf.uint32)), tf.int64)
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(high, tf.constant(32, tf.int64)), tf.cast(low_word, tf.int64))


# ----------------------------------------------------------------------------- dynamic masking

class MaskedBatch(NamedTuple):
    """A masked batch. Slot j < num_to_predict of a row is a real prediction (weight 1.0);
    the other slots have position 0, id 0 and weight 0.0."""

    masked_input_ids: tf.Tensor  # [B, L] the input ids with 85% of the chosen positions [MASK]
    masked_positions: tf.Tensor  # [B, N] int32, distinct among the real slots
    masked_ids: tf.Tensor  # [B, N] the original ids at masked_positions
    masked_weights: tf.Tensor  # [B, N] float32


def max_predictions_per_seq(mask_prob: float, max_seq_length: int) -> int:
    """N = int((mask_prob + 0.005) x L): 19 at 128 and 79 at 512 for mask_prob 0.15."""
    return int((mask_prob + 0.005) * max_seq_length)


def mask_tokens(input_ids: tf.Tensor, input_mask: tf.Tensor, mask_prob: float, max_predictions: int,
                seed: tf.Tensor, mask_id: int = MASK_ID,
                special_ids: Sequence[int] = (CLS_ID, SEP_ID, MASK_ID), *,
                first_row: tf.Tensor | int = 0) -> MaskedBatch:
    """Dynamic masking (docs/recipe.md): choose positions uniformly among candidates, without
    replacement, and put [MASK] on each with probability 0.85.

    num_to_predict = max(1, min(N, round(num_real_tokens x mask_prob))) as in Google's
    `pretrain_helpers.mask()`: num_real_tokens counts every input_mask-1 token, [CLS] and
    [SEP] included (24 real tokens give 4 predictions, not round(22 x 0.15) = 3), and the
    float32 product is rounded half to even by tf.round (30 x 0.15 -> 4). It is then capped by
    the number of candidates, so a row without candidates gets no prediction (Google's sampler
    would divide by zero there). Positions are drawn without replacement, so the count is
    exact; Google draws with replacement and a repeated position predicts a token twice.

    `seed` is [2] (the run's seed, the optimizer step) and row b of the batch is row
    first_row + b of the step's global batch: its masks depend on nothing else.
    """
    _check_masking_args(input_ids, mask_prob, max_predictions)
    candidates = masking_candidates(input_ids, input_mask, special_ids)
    num_to_predict = num_predictions(input_mask, candidates, mask_prob, max_predictions)
    is_real_slot = tf.sequence_mask(num_to_predict, max_predictions)
    positions = tf.where(is_real_slot, choose_positions(candidates, max_predictions, seed, first_row), 0)
    masked_ids = tf.where(is_real_slot, gather_positions(input_ids, positions),
                          tf.zeros_like(positions, input_ids.dtype))
    mask_token_word = random_words(seed, Stream.MASK_TOKEN, first_row, tf.shape(input_ids)[0], max_predictions)[0]
    gets_mask_token = tf.logical_and(is_real_slot, unit_uniform(mask_token_word) < MASK_TOKEN_PROB)
    mask_token_at = positions_to_sequence_mask(positions, gets_mask_token, tf.shape(input_ids)[1])
    masked_input_ids = tf.where(mask_token_at, tf.constant(mask_id, input_ids.dtype), input_ids)
    return MaskedBatch(masked_input_ids=masked_input_ids, masked_positions=positions,
                       masked_ids=masked_ids, masked_weights=tf.cast(is_real_slot, tf.float32))


def _check_masking_args(input_ids: tf.Tensor, mask_prob: float, max_predictions: int) -> None:
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    seq_length = input_ids.shape[-1]
    if max_predictions < 1 or (seq_length is not None and max_predictions > seq_length):
        raise ValueError(f"max_predictions must be in [1, sequence length {seq_length}], "
                         f"got {max_predictions}")


def masking_candidates(input_ids: tf.Tensor, input_mask: tf.Tensor,
                       special_ids: Sequence[int]) -> tf.Tensor:
    """[B, L] bool: real tokens (input_mask 1) that are not special tokens."""
    specials = tf.constant(special_ids, input_ids.dtype)
    is_special = tf.reduce_any(tf.equal(input_ids[:, :, None], specials), axis=-1)
    return tf.logical_and(tf.not_equal(input_mask, 0), tf.logical_not(is_special))


def num_predictions(input_mask: tf.Tensor, candidates: tf.Tensor, mask_prob: float,
                    max_predictions: int) -> tf.Tensor:
    """[B] int32 number of positions to mask per row (see `mask_tokens`)."""
    num_real_tokens = tf.reduce_sum(tf.cast(tf.not_equal(input_mask, 0), tf.float32), axis=-1)
    wanted = tf.cast(tf.round(num_real_tokens * mask_prob), tf.int32)
    wanted = tf.maximum(1, tf.minimum(max_predictions, wanted))
    return tf.minimum(wanted, tf.reduce_sum(tf.cast(candidates, tf.int32), axis=-1))


def choose_positions(candidates: tf.Tensor, num_positions: int, seed: tf.Tensor,
                     first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """[B, num_positions] int32 distinct positions: the candidates with the highest random
    scores, so any prefix is a uniform sample without replacement; once a row's candidates run
    out the remaining positions are non-candidates.

    Scores are 63-bit integers, so ties (which top_k breaks towards the lower index) are
    practically impossible.
    """
    shape = tf.shape(candidates)
    words = random_words(seed, Stream.POSITION_SCORES, first_row, shape[0], shape[1])
    scores = tf.where(candidates, non_negative_int64(words[0], words[1]), tf.constant(-1, tf.int64))
    return tf.math.top_k(scores, k=num_positions, sorted=True).indices


def positions_to_sequence_mask(positions: tf.Tensor, selected: tf.Tensor,
                               seq_length: tf.Tensor | int) -> tf.Tensor:
    """[B, L] bool: True at the positions of the selected [B, N] slots."""
    return tf.reduce_any(_position_hits(positions, selected, seq_length), axis=1)


def _position_hits(positions: tf.Tensor, selected: tf.Tensor, seq_length: tf.Tensor | int) -> tf.Tensor:
    """[B, N, L] bool: slot n of row b is selected and points at position l."""
    return tf.logical_and(one_hot_bool(positions, seq_length), selected[:, :, None])


def one_hot_bool(indices: tf.Tensor, depth: tf.Tensor | int) -> tf.Tensor:
    """indices [...] -> [..., depth] bool, True at each index."""
    return tf.equal(indices[..., None], tf.range(depth, dtype=indices.dtype))


def gather_positions(sequence: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """[B, L, ...] gathered at [B, N] positions -> [B, N, ...]: runs heads on masked tokens only."""
    return tf.gather(sequence, positions, batch_dims=1)


# ----------------------------------------------------------------------------- replaced-token detection

def sample_replacements(generator_logits: tf.Tensor, masked_ids: tf.Tensor, seed: tf.Tensor,
                        temperature: float = 1.0, disallow_correct: bool = False, *,
                        first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """[B, N] int32 samples from softmax(logits / temperature), one per slot, by inverse
    transform sampling (`categorical_by_inverse_cdf`) with two uniforms per slot.

    The Gumbel-max trick draws the same distribution but needs a uniform and two logarithms for
    every vocabulary entry of every slot; this needs two uniforms per slot. The logits are under
    stop-gradient: the discriminator's loss never trains the generator. With `disallow_correct`
    the original id gets a large negative logit and is never drawn. `seed` and `first_row` as
    in `mask_tokens`.
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = tf.stop_gradient(tf.cast(generator_logits, tf.float32))
    if temperature != 1.0:
        logits /= temperature
    if disallow_correct:
        logits = tf.where(one_hot_bool(masked_ids, tf.shape(logits)[-1]), DISALLOWED_LOGIT, logits)
    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))  # softmax x a constant
    shape = tf.shape(masked_ids)
    words = random_words(seed, Stream.SAMPLING, first_row, shape[0], shape[1])
    return categorical_by_inverse_cdf(weights, unit_uniform_float64(words[0], words[1]),
                                      unit_uniform_float64(words[2], words[3]))


def categorical_by_inverse_cdf(weights: tf.Tensor, block_uniform: tf.Tensor, class_uniform: tf.Tensor) -> tf.Tensor:
    """int32 [...]: for each row of non-negative `weights` [..., C], class c with probability
    weights[c] / sum(weights), given two float64 uniforms in (0, 1) per row.

    The classes are cut into about sqrt(C) blocks of about sqrt(C): the first uniform picks a
    block in proportion to its total weight, the second a class of that block in proportion to
    its weight, so P(c) = (block total / sum) x (weight / block total) exactly, up to
    rounding. Cumulative sums and comparisons are float64 and only sqrt(C) long: a single
    cumulative sum over C classes would lose float32 precision and compiles, under XLA, to
    work quadratic in its length. A class of zero weight is never drawn.
    """
    num_classes = weights.shape[-1]
    if num_classes is None:
        raise ValueError("categorical_by_inverse_cdf needs a static number of classes")
    block_size = math.isqrt(num_classes - 1) + 1
    num_blocks = -(-num_classes // block_size)
    outer_rank = weights.shape.rank - 1
    padding = tf.zeros(tf.concat([tf.shape(weights)[:-1], [num_blocks * block_size - num_classes]], axis=0),
                       weights.dtype)
    padded = tf.concat([weights, padding], axis=-1)  # tf.pad is several times slower on CPU
    blocks = tf.reshape(padded, tf.concat([tf.shape(weights)[:-1], [num_blocks, block_size]], axis=0))
    block = _inverse_cdf(tf.cast(tf.reduce_sum(blocks, axis=-1), tf.float64), block_uniform)
    in_block = _inverse_cdf(tf.cast(tf.gather(blocks, block, batch_dims=outer_rank), tf.float64), class_uniform)
    return block * block_size + in_block


def _inverse_cdf(weights: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
    """int32 [...]: the first index whose cumulative weight exceeds uniform x total weight
    (never an index of zero weight; index 0 when no weight is positive, e.g. NaN logits)."""
    cumulative = tf.math.cumsum(weights, axis=-1)
    threshold = uniform[..., None] * cumulative[..., -1:]
    index = tf.reduce_sum(tf.cast(cumulative <= threshold, tf.int32), axis=-1)
    indices = tf.range(tf.shape(weights)[-1], dtype=tf.int32)
    last_positive = tf.reduce_max(tf.where(weights > 0.0, indices, 0), axis=-1)
    return tf.minimum(index, last_positive)


def replace_and_label(input_ids: tf.Tensor, masked_positions: tf.Tensor, sampled_ids: tf.Tensor,
                      masked_weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The discriminator's input and labels.

    `input_ids` are the ORIGINAL (unmasked) ids; the samples go to the positions of the real
    slots (weight > 0), which must be distinct, as `mask_tokens` makes them. Label 1 where a
    token was replaced by a different id; a sample equal to the original counts as real (0).
    """
    hits = _position_hits(masked_positions, masked_weights > 0, tf.shape(input_ids)[1])
    replaced = tf.reduce_any(hits, axis=1)
    sampled = tf.cast(sampled_ids, input_ids.dtype)[:, :, None]
    sampled_at_position = tf.reduce_max(tf.where(hits, sampled, tf.zeros([], input_ids.dtype)), axis=1)
    fake_input_ids = tf.where(replaced, sampled_at_position, input_ids)
    labels = tf.cast(tf.not_equal(fake_input_ids, input_ids), tf.int32)
    return fake_input_ids, labels
