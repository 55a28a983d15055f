"""Pretraining input pipeline and the per-step math of replaced-token detection.

The input pipeline reads the TFRecords of `build_pretraining_dataset.py` (unmasked examples)
into int32 batches. Masking happens per step (SPEC section 3), then the generator's samples
replace the masked tokens and give the discriminator its labels (SPEC section 4).

The per-step functions take an explicit `seed` tensor, either [2] for the whole batch or [B, 2]
with one seed per row (`row_seeds`: an example's masks and samples then do not depend on how
the global batch is split into micro-batches and ranks). They use only stateless random ops, and run unchanged inside
`tf.function(jit_compile=True)`, giving the same masks and samples compiled or not. That
takes two precautions (both verified on TF 2.21, CPU): seeds are reduced to the low 32 bits of
each component, the only bits XLA uses (eager uses all 64, so a negative seed would differ);
and uniforms are built from integer random bits, because the float `stateless_uniform` gives
other numbers under XLA.
"""
from __future__ import annotations

import logging
import struct
from typing import NamedTuple, Sequence

import tensorflow as tf
from google.protobuf import message

from safe_io import UserError

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
    rank_files = files[rank::world_size] if shard_by_file else files
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


# ----------------------------------------------------------------------------- random numbers

def canonical_seed(seed: tf.Tensor) -> tf.Tensor:
    """A [2] (or per-row [B, 2]) seed as int64 with each component reduced to its low 32 bits."""
    return tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0xFFFFFFFF, tf.int64))


def row_seeds(seed: tf.Tensor, first_row: tf.Tensor | int, num_rows: int) -> tf.Tensor:
    """[num_rows, 2] seeds for rows first_row, first_row + 1, ... of a global batch.

    Row i's seed depends only on (seed, i), so an example gets the same masks and samples
    whether it is processed in one large batch, in accumulated micro-batches or on another
    rank: row i of `tf.random.split(seed, n)` is the same for every n > i.
    """
    return tf.random.split(canonical_seed(seed), first_row + num_rows)[first_row:]


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent seeds derived from a [2] seed, or from each row of [B, 2] seeds."""
    seed = canonical_seed(seed)
    if seed.shape.rank == 1:
        return tf.unstack(tf.random.split(seed, num))
    per_row = tf.map_fn(lambda row: tf.random.split(row, num), seed)  # [B, num, 2]
    return tf.unstack(per_row, axis=1)


def random_bits(shape: tf.Tensor | Sequence[int], seed: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Integer random bits over the full range of `dtype`. With per-row seeds [B, 2], row b of
    the [B, ...] result is drawn from seed b alone."""
    seed = canonical_seed(seed)
    if seed.shape.rank == 1:
        return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=dtype)
    row_shape = tf.convert_to_tensor(shape)[1:]
    return tf.map_fn(lambda row: tf.random.stateless_uniform(row_shape, row, minval=None, maxval=None, dtype=dtype),
                     seed, fn_output_signature=dtype)


def stateless_unit_uniform(shape: tf.Tensor | Sequence[int], seed: tf.Tensor) -> tf.Tensor:
    """float32 uniforms strictly inside (0, 1), identical eagerly and under XLA."""
    bits = random_bits(shape, seed, tf.uint32)
    top_bits = tf.bitwise.right_shift(bits, tf.constant(32 - UNIFORM_BITS, tf.uint32))
    return (tf.cast(top_bits, tf.float32) + 0.5) * (2.0 ** -UNIFORM_BITS)


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
                special_ids: Sequence[int] = (CLS_ID, SEP_ID, MASK_ID)) -> MaskedBatch:
    """Dynamic masking (SPEC section 3): choose positions uniformly among candidates, without
    replacement, and put [MASK] on each with probability 0.85.

    num_to_predict = max(1, min(N, round(num_real_tokens x mask_prob))) as in Google's
    `pretrain_helpers.mask()`: num_real_tokens counts every input_mask-1 token, [CLS] and
    [SEP] included (24 real tokens give 4 predictions, not round(22 x 0.15) = 3), and the
    float32 product is rounded half to even by tf.round (30 x 0.15 -> 4). It is then capped by
    the number of candidates, so a row without candidates gets no prediction (Google's sampler
    would divide by zero there). Positions are drawn without replacement, so the count is
    exact; Google draws with replacement and a repeated position predicts a token twice.
    """
    _check_masking_args(input_ids, mask_prob, max_predictions)
    position_seed, mask_token_seed = split_seed(seed, 2)
    candidates = masking_candidates(input_ids, input_mask, special_ids)
    num_to_predict = num_predictions(input_mask, candidates, mask_prob, max_predictions)
    is_real_slot = tf.sequence_mask(num_to_predict, max_predictions)
    positions = tf.where(is_real_slot, choose_positions(candidates, max_predictions, position_seed), 0)
    masked_ids = tf.where(is_real_slot, gather_positions(input_ids, positions),
                          tf.zeros_like(positions, input_ids.dtype))
    gets_mask_token = tf.logical_and(
        is_real_slot, stateless_unit_uniform(tf.shape(positions), mask_token_seed) < MASK_TOKEN_PROB)
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


def choose_positions(candidates: tf.Tensor, num_positions: int, seed: tf.Tensor) -> tf.Tensor:
    """[B, num_positions] int32 distinct positions: the candidates with the highest random
    scores, so any prefix is a uniform sample without replacement; once a row's candidates run
    out the remaining positions are non-candidates.

    Scores are 63-bit integers, so ties (which top_k breaks towards the lower index) are
    practically impossible.
    """
    bits = random_bits(tf.shape(candidates), seed, tf.int64)
    non_negative_bits = tf.bitwise.bitwise_and(bits, tf.constant(2**63 - 1, tf.int64))
    scores = tf.where(candidates, non_negative_bits, tf.constant(-1, tf.int64))
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
                        temperature: float = 1.0, disallow_correct: bool = False) -> tf.Tensor:
    """[B, N] int32 samples from softmax(logits / temperature) by the Gumbel-max trick.

    The logits are under stop-gradient: the discriminator's loss never trains the generator.
    With `disallow_correct` the original id gets a large negative logit and is never drawn.
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = tf.stop_gradient(tf.cast(generator_logits, tf.float32)) / temperature
    if disallow_correct:
        logits = tf.where(one_hot_bool(masked_ids, tf.shape(logits)[-1]), DISALLOWED_LOGIT, logits)
    gumbel_noise = -tf.math.log(-tf.math.log(stateless_unit_uniform(tf.shape(logits), seed)))
    return tf.argmax(logits + gumbel_noise, axis=-1, output_type=tf.int32)


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
