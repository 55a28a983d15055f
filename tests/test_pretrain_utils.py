"""Tests of the pretraining input pipeline (unreadable records included), dynamic masking,
generator sampling and labels.

Statistical tests use fixed seeds, so they are deterministic; their thresholds (4 sigma,
chi-square p-value 1e-3) are what a correct implementation passes with a random seed too.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import pretrain_utils as pu
import pretraining
import training
from safe_io import UserError
from damaged_tfrecords import damage_record
from tfrecord_format import RecordState

CLS, SEP, MASK = pu.CLS_ID, pu.SEP_ID, pu.MASK_ID
P_VALUE_THRESHOLD = 1e-3
SIGMAS = 4.0


# ----------------------------------------------------------------------------- helpers

def chi_square_p_value(statistic: float, degrees_of_freedom: int) -> float:
    """Upper tail of the chi-square distribution (regularized upper incomplete gamma)."""
    return float(tf.math.igammac(tf.constant(degrees_of_freedom / 2.0, tf.float64),
                                 tf.constant(statistic / 2.0, tf.float64)))


def pearson_p_value(observed: np.ndarray, probabilities: np.ndarray) -> float:
    expected = observed.sum() * probabilities
    return chi_square_p_value(float(((observed - expected) ** 2 / expected).sum()), len(observed) - 1)


def token_batch(real_lengths: list[int], seq_length: int, rng: np.random.Generator,
                mask_token_every: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, input_mask) with rows `[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]` when short)
    of the given real lengths, zero padded; optionally a [MASK] token in the data every few tokens."""
    input_ids = np.zeros((len(real_lengths), seq_length), np.int32)
    input_mask = np.zeros_like(input_ids)
    for row, length in enumerate(real_lengths):
        input_ids[row, :length] = rng.integers(1000, 30000, length)
        input_ids[row, 0] = CLS
        input_ids[row, length - 1] = SEP
        if length >= 6:
            input_ids[row, length // 2] = SEP
        if mask_token_every:
            input_ids[row, 1:length - 1:mask_token_every] = MASK
        input_mask[row, :length] = 1
    return input_ids, input_mask


def expected_num_predictions(input_ids: np.ndarray, input_mask: np.ndarray, mask_prob: float,
                             max_predictions: int) -> np.ndarray:
    """NumPy re-derivation: Google's float32 round(num_real_tokens x mask_prob) clipped to
    [1, N], then capped by the number of candidates."""
    num_real = input_mask.sum(axis=1).astype(np.float32)
    wanted = np.clip(np.round(num_real * np.float32(mask_prob)).astype(np.int64), 1, max_predictions)
    candidates = (input_mask == 1) & ~np.isin(input_ids, [CLS, SEP, MASK])
    return np.minimum(wanted, candidates.sum(axis=1))


def run_mask(input_ids: np.ndarray, input_mask: np.ndarray, mask_prob: float, seed: tuple[int, int],
             max_predictions: int | None = None) -> pu.MaskedBatch:
    n = max_predictions or pu.max_predictions_per_seq(mask_prob, input_ids.shape[1])
    batch = pu.mask_tokens(tf.constant(input_ids), tf.constant(input_mask), mask_prob, n, tf.constant(seed))
    return pu.MaskedBatch(*(t.numpy() for t in batch))


def assert_valid_masking(input_ids: np.ndarray, input_mask: np.ndarray, masked: pu.MaskedBatch,
                         expected_counts: np.ndarray) -> None:
    """Every invariant of one masked batch, row by row."""
    n = masked.masked_positions.shape[1]
    assert masked.masked_positions.dtype == np.int32 and masked.masked_weights.dtype == np.float32
    for row, count in enumerate(expected_counts):
        weights = masked.masked_weights[row]
        np.testing.assert_array_equal(weights, (np.arange(n) < count).astype(np.float32))
        positions = masked.masked_positions[row, :count]
        assert len(set(positions.tolist())) == count, "positions repeat"
        assert np.all(input_mask[row, positions] == 1), "a padding position was chosen"
        assert not np.isin(input_ids[row, positions], [CLS, SEP, MASK]).any(), "a special token was chosen"
        np.testing.assert_array_equal(masked.masked_ids[row, :count], input_ids[row, positions])
        np.testing.assert_array_equal(masked.masked_positions[row, count:], 0)
        np.testing.assert_array_equal(masked.masked_ids[row, count:], 0)
        changed = np.flatnonzero(masked.masked_input_ids[row] != input_ids[row])
        assert set(changed.tolist()) <= set(positions.tolist()), "an unchosen position changed"
        assert np.all(masked.masked_input_ids[row, changed] == MASK)


# ----------------------------------------------------------------------------- random numbers

# Known answers of Philox4x32-10 from Random123's kat_vectors: (counter, key) -> output words.
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_words(counter: np.ndarray, key: np.ndarray, compiled: bool = False) -> np.ndarray:
    """[n, 4] uint32 outputs for [n, 4] counters and [n, 2] keys."""
    def words(c: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
        return tf.stack(pu.philox_4x32(tf.unstack(c, axis=1), tf.unstack(k, axis=1)), axis=1)
    function = tf.function(words, jit_compile=True) if compiled else words
    return function(tf.constant(counter, tf.uint32), tf.constant(key, tf.uint32)).numpy()


def tensorflow_philox_block(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """TensorFlow's own Philox4x32-10 kernel: 4 uint32 from a 128-bit counter and 64-bit key."""
    as_uint64 = lambda low, high: np.uint64(low) | (np.uint64(high) << np.uint64(32))  # noqa: E731
    return tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=[4], key=tf.constant([as_uint64(*key)], tf.uint64),
        counter=tf.constant([as_uint64(*counter[:2]), as_uint64(*counter[2:])], tf.uint64),
        alg=1, dtype=tf.uint32).numpy()


@pytest.mark.parametrize("compiled", [False, True])
def test_philox_gives_the_known_answers_and_tensorflows_numbers(compiled):
    counters = np.array([c for c, _, _ in PHILOX_KNOWN_ANSWERS], np.uint32)
    keys = np.array([k for _, k, _ in PHILOX_KNOWN_ANSWERS], np.uint32)
    np.testing.assert_array_equal(philox_words(counters, keys, compiled),
                                  np.array([w for _, _, w in PHILOX_KNOWN_ANSWERS], np.uint32))
    rng = np.random.default_rng(20)
    counters = rng.integers(0, 2**32, (16, 4), dtype=np.uint64).astype(np.uint32)
    keys = rng.integers(0, 2**32, (16, 2), dtype=np.uint64).astype(np.uint32)
    expected = np.stack([tensorflow_philox_block(c, k) for c, k in zip(counters, keys)])
    np.testing.assert_array_equal(philox_words(counters, keys, compiled), expected)


def test_random_words_of_a_row_depend_only_on_seed_step_and_global_row():
    seed = tf.constant([12345, 7], tf.int64)
    whole = np.stack(pu.random_words(seed, pu.Stream.SAMPLING, 0, 8, 19))
    for first_row, num_rows in ((0, 3), (3, 5), (6, 2)):
        part = np.stack(pu.random_words(seed, pu.Stream.SAMPLING, first_row, num_rows, 19))
        np.testing.assert_array_equal(part, whole[:, first_row:first_row + num_rows])
    for other_seed, stream in (((12345, 8), pu.Stream.SAMPLING), ((12346, 7), pu.Stream.SAMPLING),
                               ((12345, 7), pu.Stream.MASK_TOKEN)):
        other = np.stack(pu.random_words(tf.constant(other_seed, tf.int64), stream, 0, 8, 19))
        assert (other != whole).mean() > 0.99
    # Seeds are reduced to their low 32 bits: what XLA's stateless ops keep, so old seeds stay valid.
    wrapped = np.stack(pu.random_words(tf.constant([12345 - 2**32, 7 + 2**40], tf.int64), pu.Stream.SAMPLING, 0, 8, 19))
    np.testing.assert_array_equal(wrapped, whole)


def test_uniforms_lie_strictly_inside_the_unit_interval():
    extremes = tf.constant([0, 0xFFFFFFFF], tf.uint32)
    single = pu.unit_uniform(extremes).numpy()
    double = pu.unit_uniform_float64(extremes, extremes).numpy()
    assert single.dtype == np.float32 and double.dtype == np.float64
    np.testing.assert_array_equal(single, [0.5 / 2**23, 1 - 0.5 / 2**23])
    np.testing.assert_array_equal(double, [0.5 / 2**53, 1 - 0.5 / 2**53])
    scores = pu.non_negative_int64(extremes, extremes).numpy()
    np.testing.assert_array_equal(scores, [0, 2**63 - 1])


# ----------------------------------------------------------------------------- dynamic masking

def test_max_predictions_per_seq_matches_the_recipe():
    assert pu.max_predictions_per_seq(0.15, 128) == 19
    assert pu.max_predictions_per_seq(0.15, 512) == 79
    assert pu.max_predictions_per_seq(0.25, 128) == 32


@pytest.mark.parametrize("mask_prob", [0.15, 0.25])
def test_masking_counts_and_invariants(mask_prob):
    # 2: [CLS][SEP], no candidate; 3: one candidate; 30 and 70: float32 x.5 products; 128: full.
    lengths = [2, 3, 4, 5, 7, 10, 17, 30, 50, 70, 100, 127, 128]
    rng = np.random.default_rng(0)
    input_ids, input_mask = token_batch(lengths * 3, 128, rng)
    with_data_mask_tokens = token_batch(lengths, 128, rng, mask_token_every=3)
    input_ids = np.concatenate([input_ids, with_data_mask_tokens[0]])
    input_mask = np.concatenate([input_mask, with_data_mask_tokens[1]])
    n = pu.max_predictions_per_seq(mask_prob, 128)
    expected = expected_num_predictions(input_ids, input_mask, mask_prob, n)
    assert expected[0] == 0 and expected[1] == 1 and expected.max() == n
    for seed in [(0, 0), (0, 1), (7, 123), (-3, 2**40)]:
        masked = run_mask(input_ids, input_mask, mask_prob, seed)
        assert_valid_masking(input_ids, input_mask, masked, expected)


def test_count_includes_special_tokens_and_rounds_half_to_even():
    """24 real tokens (22 candidates) x 0.15 = 3.6 -> 4, where 22 x 0.15 would give 3;
    30 x 0.15 = 4.5 -> 4 (tf.round, as Google's code)."""
    input_ids, input_mask = token_batch([24, 30], 64, np.random.default_rng(1))
    input_ids[:, 12] = 2000  # one [SEP] only, at the end
    masked = run_mask(input_ids, input_mask, 0.15, (1, 1))
    np.testing.assert_array_equal(masked.masked_weights.sum(axis=1), [4, 4])


def test_mask_token_fraction_is_85_percent():
    input_ids, input_mask = token_batch([128] * 2000, 128, np.random.default_rng(2))
    masked = run_mask(input_ids, input_mask, 0.15, (5, 9))
    weights = masked.masked_weights.astype(bool)
    at_positions = np.take_along_axis(masked.masked_input_ids, masked.masked_positions, axis=1)
    num_chosen = int(weights.sum())
    num_mask_tokens = int((at_positions[weights] == MASK).sum())
    p = pu.MASK_TOKEN_PROB
    sigma = np.sqrt(num_chosen * p * (1 - p))
    assert abs(num_mask_tokens - num_chosen * p) < SIGMAS * sigma, (num_mask_tokens, num_chosen)
    kept = at_positions[weights] != MASK
    np.testing.assert_array_equal(at_positions[weights][kept], masked.masked_ids[weights][kept])


def test_chosen_positions_are_uniform_over_candidates():
    """Each row draws k distinct positions of C candidates, so a position's count is a sum of
    Bernoulli(k/C) with covariance p(1-p) C/(C-1) (I - 11'/C) per row: the statistic below is
    chi-square with C-1 degrees of freedom (the plain Pearson statistic would be too small)."""
    rows, length = 4000, 24
    input_ids, input_mask = token_batch([length] * rows, 32, np.random.default_rng(3))
    masked = run_mask(input_ids, input_mask, 0.15, (11, 0))
    candidates = np.flatnonzero((input_mask[0] == 1) & ~np.isin(input_ids[0], [CLS, SEP]))
    k = int(masked.masked_weights[0].sum())
    chosen = masked.masked_positions[masked.masked_weights.astype(bool)]
    counts = np.bincount(chosen, minlength=32)
    assert counts[np.setdiff1d(np.arange(32), candidates)].sum() == 0
    c, p = len(candidates), k / len(candidates)
    variance = rows * p * (1 - p) * c / (c - 1)
    statistic = float(((counts[candidates] - rows * p) ** 2).sum() / variance)
    assert chi_square_p_value(statistic, c - 1) > P_VALUE_THRESHOLD, statistic


def test_masking_is_deterministic_per_seed():
    input_ids, input_mask = token_batch([60, 128, 9], 128, np.random.default_rng(4))
    first = run_mask(input_ids, input_mask, 0.15, (42, 7))
    again = run_mask(input_ids, input_mask, 0.15, (42, 7))
    next_step = run_mask(input_ids, input_mask, 0.15, (42, 8))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.masked_positions, next_step.masked_positions)


def test_masking_under_xla_equals_eager():
    input_ids, input_mask = token_batch([2, 3, 20, 64, 128] * 4, 128, np.random.default_rng(5))
    ids, mask = tf.constant(input_ids), tf.constant(input_mask)
    compiled = tf.function(lambda seed: pu.mask_tokens(ids, mask, 0.15, 19, seed), jit_compile=True)
    for seed in [(1, 2), (-5, 3), (2**40 + 1, 77)]:
        eager = pu.mask_tokens(ids, mask, 0.15, 19, tf.constant(seed, tf.int64))
        for a, b in zip(eager, compiled(tf.constant(seed, tf.int64))):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_masking_rejects_too_many_predictions():
    input_ids, input_mask = token_batch([8], 8, np.random.default_rng(6))
    with pytest.raises(ValueError, match="max_predictions"):
        run_mask(input_ids, input_mask, 0.15, (0, 0), max_predictions=9)


# ----------------------------------------------------------------------------- generator sampling

def sample_frequencies(logits: np.ndarray, temperature: float, num_draws: int,
                       seed: tuple[int, int]) -> np.ndarray:
    tiled = tf.tile(tf.constant(logits, tf.float32)[None, None, :], [num_draws // 100, 100, 1])
    samples = pu.sample_replacements(tiled, tf.zeros([num_draws // 100, 100], tf.int32),
                                     tf.constant(seed), temperature=temperature)
    return np.bincount(samples.numpy().ravel(), minlength=len(logits))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("temperature,other_temperature", [(1.0, 0.5), (0.5, 1.0)])
def test_gumbel_samples_follow_softmax_of_tempered_logits(temperature, other_temperature):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 1.5])
    counts = sample_frequencies(logits, temperature, 40000, (3, 14))
    assert pearson_p_value(counts, softmax(logits / temperature)) > P_VALUE_THRESHOLD
    # The same test rejects the other temperature: it has the power to fail.
    assert pearson_p_value(counts, softmax(logits / other_temperature)) < 1e-6


def test_disallow_correct_never_returns_the_original():
    rng = np.random.default_rng(7)
    masked_ids = rng.integers(0, 50, (64, 19)).astype(np.int32)
    logits = rng.normal(size=(64, 19, 50)).astype(np.float32)
    np.put_along_axis(logits, masked_ids[..., None], 10.0, axis=-1)  # the original dominates
    args = (tf.constant(logits), tf.constant(masked_ids), tf.constant((1, 2)))
    allowed = pu.sample_replacements(*args).numpy()
    disallowed = pu.sample_replacements(*args, disallow_correct=True).numpy()
    assert (allowed == masked_ids).mean() > 0.9
    assert not np.any(disallowed == masked_ids)


def test_no_gradient_flows_through_the_sample():
    logits = tf.Variable(tf.random.stateless_normal([2, 3, 11], (0, 1)))
    with tf.GradientTape() as tape:
        samples = pu.sample_replacements(logits, tf.zeros([2, 3], tf.int32), tf.constant((4, 5)))
        downstream = tf.reduce_sum(tf.cast(samples, tf.float32) * 2.0)
    assert tape.gradient(downstream, logits) is None


def test_sampling_under_xla_equals_eager_and_is_seeded():
    logits = tf.random.stateless_normal([8, 19, 300], (2, 3)) * 2.0
    masked_ids = tf.random.stateless_uniform([8, 19], (4, 5), maxval=300, dtype=tf.int32)
    compiled = tf.function(lambda seed: pu.sample_replacements(logits, masked_ids, seed, 0.8, True),
                           jit_compile=True)
    seed = tf.constant((-9, 2**33), tf.int64)
    eager = pu.sample_replacements(logits, masked_ids, seed, 0.8, disallow_correct=True)
    np.testing.assert_array_equal(eager.numpy(), compiled(seed).numpy())
    other = pu.sample_replacements(logits, masked_ids, tf.constant((-9, 2**33 + 1), tf.int64), 0.8, True)
    assert not np.array_equal(eager.numpy(), other.numpy())


def test_samples_follow_softmax_over_a_full_vocabulary():
    """30,522 classes (175 blocks of 175, the last padded) with probabilities from 0.02 down to
    1e-9, binned into 40 groups of about equal mass by sorted probability, so the rarest
    tokens form groups of their own."""
    rng = np.random.default_rng(21)
    logits = rng.normal(scale=2.0, size=30522).astype(np.float32)
    probabilities = softmax(logits.astype(np.float64))
    rows, slots, chunks = 10, 100, 40
    tiled = tf.tile(tf.constant(logits)[None, None, :], [rows, slots, 1])
    counts = sum(np.bincount(pu.sample_replacements(tiled, tf.zeros([rows, slots], tf.int32), tf.constant((17, 3)),
                                                    first_row=chunk * rows).numpy().ravel(), minlength=30522)
                 for chunk in range(chunks))
    order = np.argsort(probabilities)
    groups = np.minimum((np.cumsum(probabilities[order]) * 40).astype(int), 39)
    observed = np.bincount(groups, weights=counts[order], minlength=40)
    expected = np.bincount(groups, weights=probabilities[order], minlength=40)
    assert expected.min() > 0.01
    assert pearson_p_value(observed, expected / expected.sum()) > P_VALUE_THRESHOLD
    # The same test rejects a slightly sharper distribution: it has the power to fail.
    sharper = softmax(logits.astype(np.float64) * 1.03)
    sharper_expected = np.bincount(groups, weights=sharper[order], minlength=40)
    assert pearson_p_value(observed, sharper_expected / sharper_expected.sum()) < 1e-6


def test_inverse_cdf_draws_only_classes_of_positive_weight():
    """Uniforms at both ends of (0, 1), zero weights first, last and in between (10 classes:
    3 blocks of 4, the last with two padding entries), and rows without any positive weight."""
    weights = np.array([[0, 0, 1, 0, 0, 2, 0, 3, 0, 0],
                        [5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                        [0] * 10,
                        [np.nan] * 10], np.float32)
    low, high = 0.5 / 2**53, 1 - 0.5 / 2**53
    for block_uniform in (low, 0.5, high):
        for class_uniform in (low, 0.5, high):
            drawn = pu.categorical_by_inverse_cdf(tf.constant(weights), tf.constant([block_uniform] * 5, tf.float64),
                                                  tf.constant([class_uniform] * 5, tf.float64)).numpy()
            assert drawn[0] in (2, 5, 7) and drawn[1] == 0 and drawn[2] == 9
            assert 0 <= drawn[3] < 10 and 0 <= drawn[4] < 10
    ends = pu.categorical_by_inverse_cdf(tf.constant(weights[[0, 0]]), tf.constant([low, high], tf.float64),
                                         tf.constant([low, high], tf.float64))
    np.testing.assert_array_equal(ends.numpy(), [2, 7])


# ----------------------------------------------------------------------------- replacement and labels

def test_replace_and_label_hand_built():
    input_ids = tf.constant([[CLS, 5, 6, 7, SEP, 0], [CLS, 8, 9, SEP, 0, 0]])
    positions = tf.constant([[1, 3, 0], [2, 0, 0]])
    sampled = tf.constant([[5, 70, 99], [90, 42, 43]])  # row 0 slot 0 samples the original id
    weights = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # padding slots point at [CLS]
    for fn in (pu.replace_and_label, tf.function(pu.replace_and_label, jit_compile=True)):
        fake, labels = fn(input_ids, positions, sampled, weights)
        np.testing.assert_array_equal(fake.numpy(), [[CLS, 5, 6, 70, SEP, 0], [CLS, 8, 90, SEP, 0, 0]])
        np.testing.assert_array_equal(labels.numpy(), [[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]])
        assert labels.dtype == tf.int32


def test_mask_sample_replace_chain_is_consistent():
    input_ids, input_mask = token_batch([128, 40, 3, 2], 128, np.random.default_rng(8))
    masked = pu.mask_tokens(tf.constant(input_ids), tf.constant(input_mask), 0.15, 19, tf.constant((6, 6)))
    logits = tf.random.stateless_normal([4, 19, 30522], (7, 7))
    sampled = pu.sample_replacements(logits, masked.masked_ids, tf.constant((8, 8)))
    fake, labels = pu.replace_and_label(tf.constant(input_ids), masked.masked_positions, sampled,
                                        masked.masked_weights)
    fake, labels = fake.numpy(), labels.numpy()
    weights = masked.masked_weights.numpy().astype(bool)
    for row in range(4):
        positions = masked.masked_positions.numpy()[row][weights[row]]
        np.testing.assert_array_equal(fake[row, positions], sampled.numpy()[row][weights[row]])
        untouched = np.setdiff1d(np.arange(128), positions)
        np.testing.assert_array_equal(fake[row, untouched], input_ids[row, untouched])
        np.testing.assert_array_equal(labels[row], (fake[row] != input_ids[row]).astype(np.int32))
    assert labels.sum() > 0


@pytest.mark.parametrize("depth", [None, 5])
def test_gather_positions(depth):
    shape = (3, 10) if depth is None else (3, 10, depth)
    sequence = np.arange(np.prod(shape)).reshape(shape).astype(np.float32)
    positions = np.array([[0, 9, 4], [1, 1, 2], [7, 3, 0]], np.int32)
    gathered = pu.gather_positions(tf.constant(sequence), tf.constant(positions)).numpy()
    np.testing.assert_array_equal(gathered, sequence[np.arange(3)[:, None], positions])


# ----------------------------------------------------------------------------- input pipeline

SEQ_LENGTH = 16
RECORDS_PER_FILE = 6
NUM_FILES = 4


def example_features(record_id: int, seq_length: int) -> dict[str, list[int]]:
    """A record whose content follows from its id (stored at position 1)."""
    length = 3 + record_id % (seq_length - 2)
    input_ids = [CLS, 1000 + record_id] + [2000 + i for i in range(length - 3)] + [SEP]
    segment_ids = [0] * (length // 2) + [1] * (length - length // 2)
    pad = [0] * (seq_length - length)
    return {"input_ids": input_ids + pad, "input_mask": [1] * length + pad,
            "segment_ids": segment_ids + pad}


def write_records(path: Path, record_ids: range, seq_length: int) -> None:
    write_records_of_lengths(path, [(record_id, seq_length) for record_id in record_ids])


def write_records_of_lengths(path: Path, records: list[tuple[int, int]]) -> None:
    """One record per (record id, sequence length)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record_id, seq_length in records:
            features = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                        for name, values in example_features(record_id, seq_length).items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def write_shards(folder: Path, num_files: int, seq_length: int = SEQ_LENGTH) -> str:
    for i in range(num_files):
        write_records(folder / f"pretrain_data.tfrecord-{i}-of-{num_files}",
                      range(i * RECORDS_PER_FILE, (i + 1) * RECORDS_PER_FILE), seq_length)
    return str(folder / "pretrain_data.tfrecord-*")


@pytest.fixture
def shards(tmp_path: Path) -> str:
    return write_shards(tmp_path, NUM_FILES)


def record_ids(dataset: tf.data.Dataset) -> list[int]:
    return [int(i) - 1000 for batch in dataset for i in batch["input_ids"][:, 1].numpy()]


def take_batches(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy() for k, v in next(iterator).items()} for _ in range(count)]


def assert_same_batches(first: list[dict[str, np.ndarray]], second: list[dict[str, np.ndarray]]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for name in pu.FEATURE_NAMES:
            np.testing.assert_array_equal(a[name], b[name])


def test_pipeline_parses_int32_batches_of_every_record(shards):
    dataset = pu.pretraining_dataset(shards, batch_size=4, max_seq_length=SEQ_LENGTH, seed=1, repeat=False)
    for name in pu.FEATURE_NAMES:
        assert dataset.element_spec[name] == tf.TensorSpec([4, SEQ_LENGTH], tf.int32)
    seen = []
    for batch in dataset:
        for row in range(4):
            record_id = int(batch["input_ids"][row, 1]) - 1000
            for name, values in example_features(record_id, SEQ_LENGTH).items():
                np.testing.assert_array_equal(batch[name][row].numpy(), values)
            seen.append(record_id)
    assert sorted(seen) == list(range(NUM_FILES * RECORDS_PER_FILE))
    assert seen != sorted(seen), "records were not shuffled"


def test_pipeline_drops_the_remainder_and_repeats(shards):
    once = pu.pretraining_dataset(shards, batch_size=5, max_seq_length=SEQ_LENGTH, seed=1, repeat=False)
    assert len(record_ids(once)) == 20
    repeated = iter(pu.pretraining_dataset(shards, batch_size=5, max_seq_length=SEQ_LENGTH, seed=1,
                                           shuffle_buffer=20))
    ids = [i for batch in take_batches(repeated, 10) for i in batch["input_ids"][:, 1]]
    assert len(ids) == 50


def test_comma_separated_patterns_are_deduplicated(tmp_path):
    write_shards(tmp_path, NUM_FILES)
    patterns = ",".join(str(tmp_path / f"pretrain_data.tfrecord-{i}-of-4") for i in (0, 1, 0)) + ","
    dataset = pu.pretraining_dataset(patterns, 2, SEQ_LENGTH, seed=0, repeat=False)
    assert sorted(record_ids(dataset)) == list(range(2 * RECORDS_PER_FILE))


def test_ranks_read_disjoint_files_covering_all(shards):
    per_rank = [record_ids(pu.pretraining_dataset(shards, 2, SEQ_LENGTH, seed=3, rank=rank, world_size=2,
                                                  repeat=False)) for rank in range(2)]
    for rank, ids in enumerate(per_rank):
        assert {i // RECORDS_PER_FILE for i in ids} == {rank, rank + 2}
    assert sorted(per_rank[0] + per_rank[1]) == list(range(NUM_FILES * RECORDS_PER_FILE))


def test_ranks_split_records_when_files_are_fewer_than_ranks(tmp_path):
    pattern = write_shards(tmp_path, 1)
    per_rank = [set(record_ids(pu.pretraining_dataset(pattern, 1, SEQ_LENGTH, seed=3, rank=rank,
                                                      world_size=2, repeat=False))) for rank in range(2)]
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == set(range(RECORDS_PER_FILE))


def test_pipeline_order_is_deterministic_per_seed(shards):
    def first_batches(seed: int) -> list[dict[str, np.ndarray]]:
        dataset = pu.pretraining_dataset(shards, 3, SEQ_LENGTH, seed=seed, shuffle_buffer=20)
        return take_batches(iter(dataset), 12)

    assert_same_batches(first_batches(5), first_batches(5))
    assert [b["input_ids"][:, 1].tolist() for b in first_batches(5)] != \
        [b["input_ids"][:, 1].tolist() for b in first_batches(6)]


def test_files_of_another_length_are_refused_before_reading_naming_the_file_and_the_fix(tmp_path):
    write_shards(tmp_path, 2)
    bad_file = tmp_path / "pretrain_data.tfrecord-9-of-9"
    write_records(bad_file, range(100, 103), seq_length=8)
    with pytest.raises(UserError) as error:
        pu.pretraining_dataset(str(tmp_path / "*"), 2, SEQ_LENGTH, seed=0, repeat=False)
    message = str(error.value)
    assert message.startswith(f"{bad_file}: its records hold input_ids of length 8, but --max_seq_length is "
                              f"{SEQ_LENGTH}: pass --max_seq_length 8") and "\n" not in message


def test_a_record_of_another_length_within_a_file_names_the_file_and_both_lengths(tmp_path):
    write_shards(tmp_path, 2)
    mixed_file = tmp_path / "pretrain_data.tfrecord-9-of-9"
    write_records_of_lengths(mixed_file, [(100, SEQ_LENGTH), (101, 8)])
    dataset = pu.pretraining_dataset(str(tmp_path / "*"), 2, SEQ_LENGTH, seed=0, repeat=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        record_ids(dataset)
    message = str(error.value)
    assert str(mixed_file) in message
    assert "of length 8" in message and f"max_seq_length {SEQ_LENGTH}" in message


def test_no_matching_file_names_the_patterns(tmp_path):
    patterns = f"{tmp_path}/nothing-*,{tmp_path}/neither-*"
    with pytest.raises(FileNotFoundError, match="nothing-.*neither-"):
        pu.pretraining_dataset(patterns, 2, SEQ_LENGTH, seed=0)


def test_invalid_rank_is_rejected(shards):
    with pytest.raises(ValueError, match="rank 2"):
        pu.pretraining_dataset(shards, 2, SEQ_LENGTH, seed=0, rank=2, world_size=2)


def test_restored_iterator_continues_where_it_was_saved(shards, tmp_path):
    def new_iterator():
        return iter(pu.pretraining_dataset(shards, 3, SEQ_LENGTH, seed=8, shuffle_buffer=7))

    iterator = new_iterator()
    take_batches(iterator, 5)
    checkpoint_path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "ckpt" / "data"))
    continued = take_batches(iterator, 11)  # crosses two epochs (8 batches each)

    restored = new_iterator()
    tf.train.Checkpoint(iterator=restored).restore(checkpoint_path).assert_consumed()
    assert_same_batches(take_batches(restored, 11), continued)
    fresh_start = take_batches(new_iterator(), 1)[0]
    assert not np.array_equal(fresh_start["input_ids"], continued[0]["input_ids"]), "restore had no effect"


# ----------------------------------------------------------------------------- unreadable records

def read_all(path: str) -> tuple[int, tf.errors.DataLossError | None]:
    """The records TensorFlow's reader reads from a file, and the error it stops with."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except tf.errors.DataLossError as error:
        return count, error
    return count, None


DAMAGE_FOUND = {"data flipped": RecordState.BAD_CHECKSUM, "checksum flipped": RecordState.BAD_CHECKSUM,
                "length flipped": RecordState.BAD_HEADER, "data cut": RecordState.CUT_SHORT}


@pytest.mark.parametrize("how", DAMAGE_FOUND)
def test_the_record_a_reader_rejects_is_named_with_its_file(tmp_path, how):
    files = pu.list_pretraining_files(write_shards(tmp_path, NUM_FILES))  # records at the same offsets in each
    start = damage_record(Path(files[2]), 4, how)
    count, error = read_all(files[2])
    assert count == 4 and "record at" in error.message and files[2] not in error.message  # TensorFlow names no file
    assert pu.find_bad_records(files, error.message) == [pu.BadRecord(files[2], 4, start, DAMAGE_FOUND[how])]
    assert pu.describe_reader_error(files, error) == f"{files[2]}: record 4 (at byte {start}) {DAMAGE_FOUND[how].value}"


def test_a_file_cut_inside_a_record_header_reads_as_a_shorter_file(tmp_path):
    """Nothing tells it from a file that ends there: the reader stops silently (docs/troubleshooting.md)."""
    path = tmp_path / "pretrain_data.tfrecord-0-of-1"
    write_records(path, range(RECORDS_PER_FILE), SEQ_LENGTH)
    damage_record(path, 4, "header cut")
    assert read_all(str(path)) == (4, None)


def test_an_error_no_file_explains_says_so(tmp_path):
    files = pu.list_pretraining_files(write_shards(tmp_path, 2))
    error = tf.errors.DataLossError(None, None, "corrupted record at 999")
    assert pu.find_bad_records(files, error.message) == []
    assert pu.describe_reader_error(files, error).startswith(
        'the TFRecord reader reported "corrupted record at 999", but none of the 2 files this process reads has a '
        "bad record there now")


def record_source(pattern: str, files: list[str], skip: bool) -> pretraining.RecordBatchSource:
    iterator = iter(pu.pretraining_dataset(pattern, 2, SEQ_LENGTH, seed=1, shuffle_buffer=4))
    return pretraining.RecordBatchSource(iterator, files=files, skip_bad_records=skip)


def test_a_bad_record_stops_the_source_naming_it(tmp_path):
    pattern = write_shards(tmp_path, NUM_FILES)
    files = pu.list_pretraining_files(pattern)
    start = damage_record(Path(files[1]), 3, "data cut")
    source = record_source(pattern, files, skip=False)
    reads = [source.read_step(2) for _ in range(5)]  # an epoch: 24 - 3 records in 4-record steps
    stops = [bad for _, bad in reads if bad is not None]
    assert stops[0] == training.BadInput(f"{files[1]}: record 3 (at byte {start}) is cut short (the file ends inside "
                                         "it)", pretraining.BAD_RECORD_FIX)


def test_with_skip_bad_records_the_rest_of_the_file_is_skipped_each_epoch_with_a_warning(tmp_path, caplog):
    pattern = write_shards(tmp_path, NUM_FILES)
    files = pu.list_pretraining_files(pattern)
    start = damage_record(Path(files[1]), 3, "data flipped")  # file 1 holds ids 6-11: 9, 10 and 11 are never read
    source = record_source(pattern, files, skip=True)
    seen = set()
    with caplog.at_level(logging.WARNING):
        for _ in range(15):  # three epochs
            batches, bad = source.read_step(2)
            assert bad is None and len(batches) == 2
            seen |= {int(i) - 1000 for batch in batches for i in batch["input_ids"][:, 1]}
    assert seen == set(range(NUM_FILES * RECORDS_PER_FILE)) - {9, 10, 11}
    warning = (f"skipping {files[1]}: record 3 (at byte {start}) is corrupt (its data does not match its checksum), "
               "and the rest of that file this epoch (--skip_bad_records)")
    assert caplog.messages.count(warning) == 3


def test_skipping_gives_up_when_no_batch_can_be_read(tmp_path):
    """Each file has one good record, fewer than a batch: every batch meets an error (and is
    dropped), so skipping would go on forever."""
    pattern = write_shards(tmp_path, 1)
    files = pu.list_pretraining_files(pattern)
    start = damage_record(Path(files[0]), 1, "data cut")
    iterator = iter(pu.pretraining_dataset(pattern, 2, SEQ_LENGTH, seed=1, shuffle_buffer=4))
    source = pretraining.RecordBatchSource(iterator, files=files, skip_bad_records=True)
    assert source.read_step(1) == ([], training.BadInput(
        f"{files[0]}: record 1 (at byte {start}) is cut short (the file ends inside it), and 3 bad records in a row "
        "gave no batch", pretraining.REBUILD_FIX))


def test_files_without_a_readable_record_stop_the_source(tmp_path):
    pattern = write_shards(tmp_path, 2)
    files = pu.list_pretraining_files(pattern)
    for path in files:
        damage_record(Path(path), 0, "data cut")
    batches, bad = record_source(pattern, files, skip=True).read_step(1)
    assert batches == [] and bad == training.BadInput(
        "none of the 2 pretraining files this process reads holds a readable record", pretraining.REBUILD_FIX)
