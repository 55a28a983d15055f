"""Optimisation against NumPy re-derivations: LAMB, AdamW, the schedule, layer-wise LR decay,
gradient accumulation, dynamic loss scaling with skipped steps, and checkpoint round trips."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from configuration import ElectraConfig
from modeling import ElectraDiscriminator
from optimization import (AdamW, DynamicLossScale, GradientAccumulator, Lamb, NoLossScale,
                          WarmupPolynomialDecay, apply_gradients_if_finite, create_optimizer,
                          layerwise_lr_multipliers)

RTOL = 1e-5
ATOL = 1e-6
WEIGHT_DECAY = 0.3  # large, so that a variable wrongly decayed (or not) shows up clearly
LR = 0.01

GAMMA = "electra/layer_0/attention_layer_norm/gamma"
QUERY_BIAS = "electra/layer_0/query/bias"  # gets a zero gradient: its update norm is 0
QUERY_KERNEL = "electra/layer_0/query/kernel"
OUTPUT_BIAS = "electra_generator/generator_predictions/output_bias"
ZERO_KERNEL = "electra_discriminator/discriminator_predictions/dense/kernel"  # weight norm 0
SHAPES = {GAMMA: (4,), QUERY_BIAS: (3,), QUERY_KERNEL: (3, 4), OUTPUT_BIAS: (5,), ZERO_KERNEL: (2, 3)}
# Written out by hand rather than derived from the library's patterns.
DECAYED = {GAMMA: False, QUERY_BIAS: False, QUERY_KERNEL: True, OUTPUT_BIAS: False, ZERO_KERNEL: True}


def path_variable(path: str, value: np.ndarray) -> keras.Variable:
    """A Keras variable whose `path` is `path` (Keras forbids '/' in one scope, so nest them)."""
    *scopes, name = path.split("/")
    with contextlib.ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(keras.name_scope(scope))
        return keras.Variable(value, name=name)


def initial_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {path: rng.normal(0.0, 0.5, shape).astype(np.float32) for path, shape in SHAPES.items()}
    weights[GAMMA] += 1.0
    weights[ZERO_KERNEL][:] = 0.0
    return weights


def gradient_sequence(steps: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sequence = []
    for _ in range(steps):
        grads = {path: rng.normal(0.0, 1.0, shape).astype(np.float32) for path, shape in SHAPES.items()}
        grads[QUERY_BIAS][:] = 0.0
        sequence.append(grads)
    return sequence


def reference_steps(weights: dict[str, np.ndarray], gradients: list[dict[str, np.ndarray]],
                    learning_rates: list[float], beta_1: float, beta_2: float, epsilon: float,
                    weight_decay: float, adapted: dict[str, bool], multipliers: dict[str, float],
                    bias_correction: bool = True) -> dict[str, np.ndarray]:
    """LAMB (adapted=True) / AdamW (adapted=False) in float64, one variable at a time."""
    result = {}
    for path, start in weights.items():
        w = start.astype(np.float64)
        m = np.zeros_like(w)
        v = np.zeros_like(w)
        for t, (grads, lr) in enumerate(zip(gradients, learning_rates), start=1):
            g = grads[path].astype(np.float64)
            m = beta_1 * m + (1 - beta_1) * g
            v = beta_2 * v + (1 - beta_2) * g * g
            m_hat, v_hat = (m / (1 - beta_1 ** t), v / (1 - beta_2 ** t)) if bias_correction else (m, v)
            update = m_hat / (np.sqrt(v_hat) + epsilon)
            if DECAYED[path]:
                update = update + weight_decay * w
            ratio = 1.0
            w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
            if adapted[path] and w_norm > 0 and u_norm > 0:
                ratio = w_norm / u_norm
            w = w - lr * multipliers.get(path, 1.0) * ratio * update
        result[path] = w
    return result


def run_optimizer(optimizer: keras.optimizers.Optimizer, weights: dict[str, np.ndarray],
                  gradients: list[dict[str, np.ndarray]], jit: bool) -> dict[str, np.ndarray]:
    variables = [path_variable(path, value) for path, value in weights.items()]
    optimizer.build(variables)

    def step(grads: list[tf.Tensor]) -> None:
        optimizer.apply(grads, variables)

    if jit:
        step = tf.function(step, jit_compile=True)
    for grads in gradients:
        step([tf.constant(grads[path]) for path in weights])
    return {v.path: v.numpy() for v in variables}


def assert_weights_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for path in expected:
        assert np.all(np.isfinite(actual[path])), path
        np.testing.assert_allclose(actual[path], expected[path], rtol=RTOL, atol=ATOL, err_msg=path)


def lamb_adapted(skip_adaptive: bool) -> dict[str, bool]:
    return {path: DECAYED[path] or not skip_adaptive for path in SHAPES}


@pytest.mark.parametrize("skip_adaptive", [False, True])
def test_lamb_one_step_matches_numpy(skip_adaptive: bool):
    weights, gradients = initial_weights(), gradient_sequence(1)
    optimizer = Lamb(LR, weight_decay_rate=WEIGHT_DECAY, skip_adaptive=skip_adaptive)
    actual = run_optimizer(optimizer, weights, gradients, jit=False)
    expected = reference_steps(weights, gradients, [LR], 0.878, 0.974, 1e-6, WEIGHT_DECAY,
                               lamb_adapted(skip_adaptive), {})
    assert_weights_close(actual, expected)
    np.testing.assert_array_equal(actual[QUERY_BIAS], weights[QUERY_BIAS])


def reference_schedule(step: int, peak: float, warmup: int, total: int, end: float, power: float) -> float:
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return end + (peak - end) * (1 - progress) ** power


@pytest.mark.parametrize("skip_adaptive", [False, True])
def test_lamb_several_steps_with_schedule_and_multiplier_match_numpy(skip_adaptive: bool):
    steps, multipliers = 6, {QUERY_KERNEL: 0.5, GAMMA: 0.25}
    weights, gradients = initial_weights(), gradient_sequence(steps)
    schedule = WarmupPolynomialDecay(0.05, warmup_steps=2, total_steps=5, end_learning_rate=0.001, power=0.5)
    optimizer = Lamb(schedule, weight_decay_rate=WEIGHT_DECAY, skip_adaptive=skip_adaptive,
                     lr_multipliers=multipliers)
    actual = run_optimizer(optimizer, weights, gradients, jit=True)
    learning_rates = [reference_schedule(t, 0.05, 2, 5, 0.001, 0.5) for t in range(steps)]
    expected = reference_steps(weights, gradients, learning_rates, 0.878, 0.974, 1e-6, WEIGHT_DECAY,
                               lamb_adapted(skip_adaptive), multipliers)
    assert_weights_close(actual, expected)
    assert int(optimizer.iterations.numpy()) == steps


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("steps,jit", [(1, False), (5, True)])
def test_adamw_matches_numpy_with_exclusions_and_multipliers(bias_correction: bool, steps: int, jit: bool):
    multipliers = {QUERY_KERNEL: 0.5, GAMMA: 0.25, ZERO_KERNEL: 2.0}
    weights, gradients = initial_weights(), gradient_sequence(steps)
    optimizer = AdamW(LR, beta_1=0.9, beta_2=0.999, weight_decay_rate=WEIGHT_DECAY,
                      lr_multipliers=multipliers, bias_correction=bias_correction)
    actual = run_optimizer(optimizer, weights, gradients, jit=jit)
    expected = reference_steps(weights, gradients, [LR] * steps, 0.9, 0.999, 1e-6, WEIGHT_DECAY,
                               {path: False for path in SHAPES}, multipliers, bias_correction)
    assert_weights_close(actual, expected)


@pytest.mark.parametrize("power,mid_decay", [(1.0, 0.1 + 1.9 * 0.5), (0.5, 0.1 + 1.9 * 0.5 ** 0.5)])
def test_schedule_values(power: float, mid_decay: float):
    schedule = WarmupPolynomialDecay(2.0, warmup_steps=10, total_steps=110, end_learning_rate=0.1, power=power)
    expected = {0: 0.0, 5: 1.0, 10: 2.0, 60: mid_decay, 110: 0.1, 500: 0.1}
    for step, value in expected.items():
        assert float(schedule(tf.constant(step, tf.int64))) == pytest.approx(value, rel=1e-6), step
    restored = WarmupPolynomialDecay.from_config(schedule.get_config())
    assert float(restored(tf.constant(60))) == pytest.approx(mid_decay, rel=1e-6)


def test_schedule_without_warmup_starts_at_peak_and_rejects_bad_lengths():
    assert float(WarmupPolynomialDecay(3.0, warmup_steps=0, total_steps=4)(0)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupPolynomialDecay(1.0, warmup_steps=10, total_steps=10)


def test_layerwise_multipliers_on_a_real_discriminator():
    model = ElectraDiscriminator(ElectraConfig.from_size("small", num_hidden_layers=2))
    multipliers = layerwise_lr_multipliers(model.trainable_variables, num_layers=2, decay=0.8)
    assert len(multipliers) == len(model.trainable_variables)
    expected = {
        "electra/embeddings/word_embeddings": 0.8 ** 4,
        "electra/embeddings/layer_norm/gamma": 0.8 ** 4,
        "electra/embeddings_project/kernel": 0.8 ** 4,
        "electra/embeddings_project/bias": 0.8 ** 4,
        "electra/layer_0/query/kernel": 0.8 ** 3,
        "electra/layer_0/output_layer_norm/beta": 0.8 ** 3,
        "electra/layer_1/intermediate/bias": 0.8 ** 2,
        "electra/layer_1/attention_layer_norm/gamma": 0.8 ** 2,
        "electra_discriminator/discriminator_predictions/dense/kernel": 1.0,
        "electra_discriminator/discriminator_predictions/dense_prediction/bias": 1.0,
    }
    for path, value in expected.items():
        assert multipliers[path] == value, path
    by_prefix = {"electra/embeddings": 0.8 ** 4, "electra/layer_0/": 0.8 ** 3, "electra/layer_1/": 0.8 ** 2,
                 "electra_discriminator/": 1.0}
    for path, value in multipliers.items():
        prefix = next(p for p in by_prefix if path.startswith(p))
        assert value == by_prefix[prefix], path


def test_layerwise_multipliers_reject_a_layer_beyond_num_layers():
    with pytest.raises(ValueError, match="layer 2"):
        layerwise_lr_multipliers([path_variable("electra/layer_2/query/kernel", np.zeros(2, np.float32))],
                                 num_layers=2, decay=0.8)


def tagging_model(seed: int = 0) -> keras.Model:
    """Embedding (its lookups give IndexedSlices gradients) -> Dense(1): one logit per token."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(40, 8),
                             keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)])


def detection_loss(model: keras.Model, ids: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    logits = tf.squeeze(model(ids), -1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))


@pytest.mark.parametrize("optimizer_class", [Lamb, AdamW])
def test_accumulated_micro_batches_equal_one_big_batch(optimizer_class):
    micro_batches, micro_size, optimizer_steps = 3, 2, 2
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, (optimizer_steps, micro_batches * micro_size, 10)).astype(np.int32)
    labels = rng.integers(0, 2, ids.shape).astype(np.float32)
    accumulated_model, big_batch_model = tagging_model(), tagging_model()
    big_batch_model.set_weights(accumulated_model.get_weights())
    start = [w.copy() for w in accumulated_model.get_weights()]
    accumulated_opt, big_batch_opt = optimizer_class(1e-2), optimizer_class(1e-2)
    variables_a, variables_b = accumulated_model.trainable_variables, big_batch_model.trainable_variables
    accumulated_opt.build(variables_a)
    big_batch_opt.build(variables_b)
    accumulator = GradientAccumulator(variables_a)
    loss_scale = NoLossScale()

    @tf.function(jit_compile=True)
    def accumulate(batch_ids, batch_labels):
        with tf.GradientTape() as tape:
            loss = detection_loss(accumulated_model, batch_ids, batch_labels)
        grads = tape.gradient(loss, variables_a)
        assert any(isinstance(g, tf.IndexedSlices) for g in grads)  # the embedding lookups
        accumulator.accumulate(grads)

    @tf.function(jit_compile=True)
    def apply_accumulated():
        grads = loss_scale.unscale(accumulator.mean())
        apply_gradients_if_finite(accumulated_opt, grads, variables_a, loss_scale.update(grads))
        accumulator.reset()

    @tf.function(jit_compile=True)
    def big_batch_step(batch_ids, batch_labels):
        with tf.GradientTape() as tape:
            loss = detection_loss(big_batch_model, batch_ids, batch_labels)
        grads = tape.gradient(loss, variables_b)
        apply_gradients_if_finite(big_batch_opt, grads, variables_b, loss_scale.update(grads))

    for step in range(optimizer_steps):
        for micro in range(micro_batches):
            rows = slice(micro * micro_size, (micro + 1) * micro_size)
            accumulate(ids[step, rows], labels[step, rows])
        apply_accumulated()
        big_batch_step(ids[step], labels[step])

    assert int(accumulated_opt.iterations.numpy()) == optimizer_steps
    for a, b, w0 in zip(variables_a, variables_b, start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5, err_msg=a.path)
    assert max(np.max(np.abs(w.numpy() - w0)) for w, w0 in zip(variables_a, start)) > 1e-3


def snapshot(optimizer: keras.optimizers.Optimizer, variables: list) -> list[np.ndarray]:
    """Weights, then every optimizer variable (iterations and slots)."""
    return [v.numpy().copy() for v in list(variables) + list(optimizer.variables)]


@pytest.mark.parametrize("optimizer_class", [Lamb, AdamW])
def test_fp16_overflow_skips_the_step_and_good_steps_grow_the_scale(optimizer_class):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="mixed_float16")])
    variables = model.trainable_variables
    assert variables[0].dtype == "float32"
    optimizer = optimizer_class(1e-2)
    optimizer.build(variables)
    loss_scale = DynamicLossScale(growth_interval=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)

    @tf.function(jit_compile=True)
    def train_step(loss_multiplier):
        with tf.GradientTape() as tape:
            outputs = model(x)
            assert outputs.dtype == tf.float16
            loss = tf.reduce_mean(tf.square(tf.cast(outputs, tf.float32) - y)) * loss_multiplier
            scaled = loss_scale.scale(loss)
        grads = loss_scale.unscale(tape.gradient(scaled, variables))
        finite = loss_scale.update(grads)
        apply_gradients_if_finite(optimizer, grads, variables, finite)
        return finite

    assert bool(train_step(tf.constant(1.0)))
    before = snapshot(optimizer, variables)
    # The gradient reaching the float16 outputs is about 2 * 1e4 * 2**15 / 24: beyond float16's 65504.
    assert not bool(train_step(tf.constant(1e4)))
    for old, new in zip(before, snapshot(optimizer, variables)):
        np.testing.assert_array_equal(old, new)
    assert int(optimizer.iterations.numpy()) == 1
    assert float(loss_scale.value) == 2.0 ** 14
    assert int(loss_scale.good_steps) == 0

    for good_step in (1, 2):
        assert bool(train_step(tf.constant(1.0)))
        assert float(loss_scale.value) == 2.0 ** 14 and int(loss_scale.good_steps) == good_step
    assert bool(train_step(tf.constant(1.0)))
    assert float(loss_scale.value) == 2.0 ** 15 and int(loss_scale.good_steps) == 0
    assert int(optimizer.iterations.numpy()) == 4
    assert not np.array_equal(before[0], variables[0].numpy())


def test_gradients_are_clipped_by_global_norm_before_they_are_applied():
    variables = [path_variable("head/kernel", np.zeros(2, np.float32)),
                 path_variable("head/bias", np.zeros(1, np.float32))]
    sgd = keras.optimizers.SGD(1.0)  # Adam and LAMB are nearly scale-invariant; SGD shows the clip
    sgd.build(variables)
    norm = apply_gradients_if_finite(sgd, [tf.constant([3.0, 4.0]), tf.constant([12.0])], variables,
                                     tf.constant(True))
    assert float(norm) == pytest.approx(13.0)
    np.testing.assert_allclose(variables[0].numpy(), [-3.0 / 13.0, -4.0 / 13.0], rtol=1e-6)
    np.testing.assert_allclose(variables[1].numpy(), [-12.0 / 13.0], rtol=1e-6)


def test_loss_scale_does_not_fall_below_one_and_no_loss_scale_never_changes():
    loss_scale = DynamicLossScale(initial_scale=2.0)
    bad = [tf.constant([1.0, np.nan])]
    assert not bool(loss_scale.update(bad))
    assert not bool(loss_scale.update(bad))
    assert float(loss_scale.value) == 1.0
    unscaled = NoLossScale()
    assert not bool(unscaled.update([tf.constant([np.inf])]))
    assert bool(unscaled.update([tf.constant([1e30, -1e30])]))
    assert float(unscaled.value) == 1.0 and float(unscaled.scale(tf.constant(3.0))) == 3.0


def dense_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])


def test_checkpoint_round_trip_of_slots_and_loss_scale(tmp_path: Path):
    def build(seed: int):
        model = dense_model(seed)
        optimizer = AdamW(1e-2, lr_multipliers={"sequential/dense/kernel": 0.5})
        optimizer.build(model.trainable_variables)
        return model, optimizer, DynamicLossScale(growth_interval=5)

    model, optimizer, loss_scale = build(seed=0)
    grads = [tf.ones_like(v) * 0.3 for v in model.trainable_variables]
    for _ in range(2):
        apply_gradients_if_finite(optimizer, grads, model.trainable_variables, loss_scale.update(grads))
    loss_scale.update([tf.constant([np.inf])])
    loss_scale.update(grads)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer, loss_scale=loss_scale).save(
        str(tmp_path / "ckpt"))

    restored_model, restored_optimizer, restored_scale = build(seed=1)
    status = tf.train.Checkpoint(model=restored_model, optimizer=restored_optimizer,
                                 loss_scale=restored_scale).restore(path)
    status.assert_existing_objects_matched()
    assert int(restored_optimizer.iterations.numpy()) == 2
    assert float(restored_scale.value) == 2.0 ** 14 and int(restored_scale.good_steps) == 1
    original = snapshot(optimizer, model.trainable_variables)
    assert any(np.any(slot != 0) for slot in original[3:])
    for old, new in zip(original, snapshot(restored_optimizer, restored_model.trainable_variables)):
        np.testing.assert_array_equal(old, new)
    # The restored slots belong to the right variables: one more step stays identical.
    apply_gradients_if_finite(optimizer, grads, model.trainable_variables, tf.constant(True))
    apply_gradients_if_finite(restored_optimizer, grads, restored_model.trainable_variables, tf.constant(True))
    for old, new in zip(snapshot(optimizer, model.trainable_variables),
                        snapshot(restored_optimizer, restored_model.trainable_variables)):
        np.testing.assert_array_equal(old, new)


def test_create_optimizer_and_config_round_trip():
    schedule = WarmupPolynomialDecay(6e-3, warmup_steps=2000, total_steps=10000, power=0.5)
    lamb = create_optimizer("lamb", schedule, weight_decay_rate=0.01, beta_1=0.878, beta_2=0.974,
                            epsilon=1e-6, skip_adaptive=True)
    assert isinstance(lamb, Lamb) and lamb.skip_adaptive and lamb.beta_1 == 0.878
    restored = Lamb.from_config(lamb.get_config())
    assert restored.get_config() == lamb.get_config()
    assert float(restored.learning_rate) == 0.0
    adam = create_optimizer("adam", schedule, weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999,
                            epsilon=1e-6, skip_adaptive=False, lr_multipliers={"a/kernel": 0.5})
    assert isinstance(adam, AdamW) and adam.lr_multipliers == {"a/kernel": 0.5}
    assert AdamW.from_config(adam.get_config()).get_config() == adam.get_config()
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer("sgd", schedule, weight_decay_rate=0.0, beta_1=0.9, beta_2=0.999,
                         epsilon=1e-6, skip_adaptive=False)
    with pytest.raises(ValueError, match="weight_decay_rate"):
        Lamb(1e-3, weight_decay=0.01)


def test_unbuilt_optimizer_and_unknown_multipliers_are_reported(caplog):
    variable = path_variable("head/kernel", np.ones(2, np.float32))
    optimizer = AdamW(1e-3, lr_multipliers={"head/kernal": 0.5})
    with pytest.raises(ValueError, match="build the optimizer"):
        apply_gradients_if_finite(optimizer, [tf.ones(2)], [variable], tf.constant(True))
    with caplog.at_level(logging.WARNING, logger="optimization"):
        optimizer.build([variable])
    assert "head/kernal" in caplog.text
