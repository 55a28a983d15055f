"""Optimisation for ELECTRA (docs/recipe.md, Optimisation): LAMB, AdamW, the warm-up + polynomial-decay schedule,
layer-wise learning-rate decay, gradient accumulation and dynamic loss scaling.

The pieces fit the training step as follows: accumulate the micro-batch gradients of the scaled
loss, take their mean, (all-reduce), unscale, ask the loss scale whether they are finite (which
also adjusts the scale), then `apply_gradients_if_finite` clips them by global norm and applies
them only when finite. A skipped step changes neither the weights, the optimizer slots nor
`optimizer.iterations`, so the learning-rate schedule does not advance either.

Weight decay is handled inside the optimizers' own `update_step` (as in NVIDIA's recipe), never
through Keras's `weight_decay` argument, which is decoupled from the learning-rate multipliers and
applied outside `update_step`. Variables are matched by regex on `variable.path`.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

# LayerNorm weights (`.../layer_norm/gamma|beta`, `.../attention_layer_norm/...`) and every bias
# (`.../bias`, the generator's `output_bias`) are excluded from weight decay; with LAMB's
# `skip_adaptive` they are also excluded from the trust ratio.
DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY: tuple[str, ...] = ("layer_norm", "bias")
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "lamb")
DEFAULT_CLIP_NORM = 1.0


@keras.saving.register_keras_serializable(package="electra")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak_learning_rate` over `warmup_steps`, then polynomial decay
    (exponent `power`) to `end_learning_rate` over the remaining `total_steps - warmup_steps`
    steps, constant `end_learning_rate` afterwards.

    The step is the optimizer's `iterations` before the update, so the very first update uses
    a learning rate of 0 when there is a warm-up (as in Google's and NVIDIA's recipes).
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int, total_steps: int,
                 end_learning_rate: float = 0.0, power: float = 1.0, name: str = "warmup_polynomial_decay"):
        super().__init__()
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
                             f"total_steps={total_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(tf.convert_to_tensor(step), tf.float32)
        warmup = float(self.warmup_steps)
        warmup_lr = self.peak_learning_rate * step / max(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / float(self.total_steps - self.warmup_steps), 0.0, 1.0)
        decayed_lr = (self.end_learning_rate + (self.peak_learning_rate - self.end_learning_rate)
                      * tf.pow(1.0 - progress, self.power))
        return tf.where(step < warmup, warmup_lr, decayed_lr)

    def get_config(self) -> dict[str, Any]:
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "name": self.name}


def variable_path(variable: Any) -> str:
    """A Keras variable's `path` (`electra/layer_0/query/kernel`); a raw tf.Variable's name."""
    return getattr(variable, "path", None) or variable.name.split(":")[0]


def to_dense(gradient: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    """Embedding lookups give `tf.IndexedSlices` gradients; moments, norms and sums need dense."""
    return tf.convert_to_tensor(gradient)


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(re.search(pattern, path) for pattern in patterns)


class _AdamStyleOptimizer(keras.optimizers.Optimizer):
    """Adam moments with weight decay added to the update inside `update_step`:
    update = m_hat / (sqrt(v_hat) + epsilon) + weight_decay_rate * w, then
    w -= lr * multiplier * trust_ratio * update (subclasses choose the trust ratio).

    With `bias_correction`, m_hat = m / (1 - beta_1^t) and v_hat = v / (1 - beta_2^t);
    without it, m_hat = m and v_hat = v. Per-variable decisions (decay, multiplier) are fixed
    when the optimizer is built, from `variable.path`.
    """

    def __init__(self, learning_rate: Any, beta_1: float, beta_2: float, epsilon: float,
                 weight_decay_rate: float, exclude_from_weight_decay: Sequence[str],
                 lr_multipliers: Mapping[str, float] | None, bias_correction: bool, name: str,
                 **kwargs: Any):
        if kwargs.pop("weight_decay", None) is not None:
            raise ValueError("use weight_decay_rate: Keras's decoupled weight_decay is not supported here")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.weight_decay_rate = float(weight_decay_rate)
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.bias_correction = bool(bias_correction)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._momentums = [self.add_variable_from_reference(v, name="m") for v in var_list]
        self._velocities = [self.add_variable_from_reference(v, name="v") for v in var_list]
        paths = [variable_path(v) for v in var_list]
        self._decayed = tuple(self._uses_weight_decay(p) for p in paths)
        self._multipliers = tuple(float(self.lr_multipliers.get(p, 1.0)) for p in paths)
        self._warn_unknown_multipliers(paths)
        logger.debug("%s: weight decay off for %s", self.name,
                     [p for p, decayed in zip(paths, self._decayed) if not decayed])

    def _uses_weight_decay(self, path: str) -> bool:
        return self.weight_decay_rate > 0.0 and not matches_any(path, self.exclude_from_weight_decay)

    def _warn_unknown_multipliers(self, paths: list[str]) -> None:
        unknown = sorted(set(self.lr_multipliers) - set(paths))
        if unknown:
            logger.warning("%s: learning-rate multipliers given for unknown variables %s",
                           self.name, unknown)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        gradient = tf.cast(to_dense(gradient), dtype)
        m_hat, v_hat = self._updated_moments(index, gradient)
        update = m_hat / (tf.sqrt(v_hat) + tf.cast(self.epsilon, dtype))
        if self._decayed[index]:
            update += tf.cast(self.weight_decay_rate, dtype) * variable
        lr = tf.cast(learning_rate, dtype) * self._multipliers[index]
        self.assign_sub(variable, lr * self._trust_ratio(index, variable, update) * update)

    def _updated_moments(self, index: int, gradient: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Advance m and v with `gradient`; return them bias-corrected when asked."""
        m_slot, v_slot = self._momentums[index], self._velocities[index]
        m = self.beta_1 * m_slot.value + (1.0 - self.beta_1) * gradient
        v = self.beta_2 * v_slot.value + (1.0 - self.beta_2) * tf.square(gradient)
        self.assign(m_slot, m)
        self.assign(v_slot, v)
        if not self.bias_correction:
            return m, v
        step = tf.cast(self.iterations + 1, gradient.dtype)
        return (m / (1.0 - tf.pow(tf.cast(self.beta_1, gradient.dtype), step)),
                v / (1.0 - tf.pow(tf.cast(self.beta_2, gradient.dtype), step)))

    def _trust_ratio(self, index: int, variable: Any, update: tf.Tensor) -> tf.Tensor | float:
        """Plain Adam-style steps: no layer-wise adaptation."""
        return 1.0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
            "weight_decay_rate": self.weight_decay_rate,
            "exclude_from_weight_decay": list(self.exclude_from_weight_decay),
            "lr_multipliers": dict(self.lr_multipliers), "bias_correction": self.bias_correction,
        })
        return config


@keras.saving.register_keras_serializable(package="electra")
class Lamb(_AdamStyleOptimizer):
    """LAMB (You et al., 2020) as in NVIDIA's recipe (tensorflow_addons' LAMB): Adam moments WITH
    bias correction (the paper's Algorithm 2), weight decay added to the update, then a per-tensor
    trust ratio ||w|| / ||update|| (1.0 when either norm is 0).

    `exclude_from_weight_decay` patterns turn decay off; with `skip_adaptive` the same variables
    also get a trust ratio of 1.0 (NVIDIA's `--skip_adaptive`).
    """

    def __init__(self, learning_rate: Any = 1e-3, beta_1: float = 0.878, beta_2: float = 0.974,
                 epsilon: float = 1e-6, weight_decay_rate: float = 0.01,
                 exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
                 skip_adaptive: bool = False, lr_multipliers: Mapping[str, float] | None = None,
                 bias_correction: bool = True, name: str = "lamb", **kwargs: Any):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay_rate,
                         exclude_from_weight_decay, lr_multipliers, bias_correction, name, **kwargs)
        self.skip_adaptive = bool(skip_adaptive)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._adapted = tuple(
            not (self.skip_adaptive and matches_any(variable_path(v), self.exclude_from_weight_decay))
            for v in var_list)

    def _trust_ratio(self, index: int, variable: Any, update: tf.Tensor) -> tf.Tensor | float:
        if not self._adapted[index]:
            return 1.0
        weight_norm = tf.norm(variable)
        update_norm = tf.norm(update)
        both_positive = tf.logical_and(weight_norm > 0.0, update_norm > 0.0)
        return tf.where(both_positive, weight_norm / update_norm, tf.ones_like(weight_norm))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "skip_adaptive": self.skip_adaptive}


@keras.saving.register_keras_serializable(package="electra")
class AdamW(_AdamStyleOptimizer):
    """Adam with decoupled weight decay: w -= lr * multiplier * (m_hat / (sqrt(v_hat) + eps) + wd * w).

    Bias correction is ON by default, as in NVIDIA's TF2 recipe (its AdamWeightDecay is Keras Adam
    plus decay); `bias_correction=False` gives Google ELECTRA's AdamWeightDecay, which has none.
    Epsilon is added to sqrt(v_hat) (Kingma & Ba's Algorithm 1), not Keras's "epsilon hat".
    `lr_multipliers` maps `variable.path` to a learning-rate factor (layer-wise decay for
    fine-tuning, see `layerwise_lr_multipliers`); missing paths get 1.0. The multiplier scales
    the decay term too, as in both references.

    This is also the pretraining `adam` choice: the recipe's `adam` means Adam with weight decay.
    """

    def __init__(self, learning_rate: Any = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-6, weight_decay_rate: float = 0.01,
                 exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE_FROM_WEIGHT_DECAY,
                 lr_multipliers: Mapping[str, float] | None = None, bias_correction: bool = True,
                 name: str = "adamw", **kwargs: Any):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay_rate,
                         exclude_from_weight_decay, lr_multipliers, bias_correction, name, **kwargs)


def create_optimizer(name: str, learning_rate_schedule: Any, *, weight_decay_rate: float,
                     beta_1: float, beta_2: float, epsilon: float, skip_adaptive: bool,
                     lr_multipliers: Mapping[str, float] | None = None) -> keras.optimizers.Optimizer:
    """`lamb` or `adam` (AdamW) with the recipe's exclusions; `skip_adaptive` is LAMB-only."""
    common = dict(learning_rate=learning_rate_schedule, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                  weight_decay_rate=weight_decay_rate, lr_multipliers=lr_multipliers)
    if name == "lamb":
        return Lamb(skip_adaptive=skip_adaptive, **common)
    if name == "adam":
        return AdamW(**common)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZER_NAMES}")


_EMBEDDINGS_PATTERN = re.compile(r"(^|/)embeddings(_project)?/")
_ENCODER_LAYER_PATTERN = re.compile(r"(^|/)layer_(\d+)/")


def layer_depth(path: str, num_layers: int) -> int:
    """docs/recipe.md, Optimisation: embeddings (and `embeddings_project`) 0, encoder layer i is i + 1,
    anything else (task heads) num_layers + 2."""
    if _EMBEDDINGS_PATTERN.search(path):
        return 0
    layer = _ENCODER_LAYER_PATTERN.search(path)
    if layer is None:
        return num_layers + 2
    index = int(layer.group(2))
    if index >= num_layers:
        raise ValueError(f"variable {path} belongs to layer {index}, but the model has {num_layers} layers")
    return index + 1


def layerwise_lr_multipliers(variables: Iterable[Any], num_layers: int, decay: float) -> dict[str, float]:
    """{variable.path: decay ** (num_layers + 2 - depth)}: lower layers learn more slowly."""
    return {variable_path(v): decay ** (num_layers + 2 - layer_depth(variable_path(v), num_layers))
            for v in variables}


class GradientAccumulator(tf.Module):
    """Sums micro-batch gradients in float32 variables shaped like `variables`, created here
    (before any tf.function traces). Under tf.distribute the sums are replica-local (ON_READ)."""

    def __init__(self, variables: Sequence[Any], name: str = "gradient_accumulator"):
        super().__init__(name=name)
        with self.name_scope:
            self._sums = [
                tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name="sum",
                            synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.MEAN)
                for v in variables]
            self._count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count",
                                      synchronization=tf.VariableSynchronization.ON_READ,
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def accumulate(self, gradients: Sequence[tf.Tensor | tf.IndexedSlices | None]) -> None:
        """Add one micro-batch's gradients (a None gradient adds nothing)."""
        if len(gradients) != len(self._sums):
            raise ValueError(f"expected {len(self._sums)} gradients, got {len(gradients)}")
        for total, gradient in zip(self._sums, gradients):
            if gradient is not None:
                total.assign_add(tf.cast(to_dense(gradient), tf.float32))
        self._count.assign_add(1)

    def mean(self) -> list[tf.Tensor]:
        """Sum / number of micro-batches accumulated (NaN before the first, so a step on it is
        skipped by the finite check rather than silently applied)."""
        count = tf.cast(self._count, tf.float32)
        return [total.value() / count for total in self._sums]

    def reset(self) -> None:
        for total in self._sums:
            total.assign(tf.zeros_like(total))
        self._count.assign(0)


def all_finite(gradients: Sequence[tf.Tensor | tf.IndexedSlices]) -> tf.Tensor:
    """True when no gradient holds an inf or NaN (checked per tensor, so large but finite
    gradients whose squared global norm would overflow still count as finite)."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(to_dense(g))) for g in gradients]))


class NoLossScale(tf.Module):
    """The loss-scale interface for float32 and bfloat16: scale 1, never changes; `update` still
    reports whether the gradients are finite, so a NaN step is skipped in every precision."""

    @property
    def value(self) -> tf.Tensor:
        return tf.constant(1.0)

    def scale(self, loss: tf.Tensor) -> tf.Tensor:
        return loss

    def unscale(self, gradients: Sequence[tf.Tensor | tf.IndexedSlices]) -> list[tf.Tensor]:
        return [to_dense(g) for g in gradients]

    def update(self, gradients: Sequence[tf.Tensor | tf.IndexedSlices]) -> tf.Tensor:
        return all_finite(gradients)


class DynamicLossScale(NoLossScale):
    """Dynamic loss scaling for float16: a non-finite step divides the scale by `factor`
    (not below `min_scale`) and restarts the count of good steps; `growth_interval` consecutive
    finite steps multiply it by `factor` (unless that would overflow). The state lives in
    tf.Variables so a `tf.train.Checkpoint` restores it."""

    def __init__(self, initial_scale: float = 2.0 ** 15, growth_interval: int = 2000,
                 factor: float = 2.0, min_scale: float = 1.0, name: str = "dynamic_loss_scale"):
        super().__init__(name=name)
        self.growth_interval = int(growth_interval)
        self.factor = float(factor)
        self.min_scale = float(min_scale)
        with self.name_scope:
            self._scale = tf.Variable(float(initial_scale), dtype=tf.float32, trainable=False, name="scale",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps",
                                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def value(self) -> tf.Tensor:
        return self._scale.value()

    @property
    def good_steps(self) -> tf.Tensor:
        return self._good_steps.value()

    def scale(self, loss: tf.Tensor) -> tf.Tensor:
        return loss * tf.cast(self._scale, loss.dtype)

    def unscale(self, gradients: Sequence[tf.Tensor | tf.IndexedSlices]) -> list[tf.Tensor]:
        return [to_dense(g) / tf.cast(self._scale, g.dtype) for g in gradients]

    def update(self, gradients: Sequence[tf.Tensor | tf.IndexedSlices]) -> tf.Tensor:
        """Adjust the scale for this step's (unscaled) gradients; returns whether they are finite."""
        finite = all_finite(gradients)
        scale = self._scale.value()
        good_steps = self._good_steps + 1
        grown = scale * self.factor
        grow = tf.logical_and(finite, good_steps >= self.growth_interval)
        lowered = tf.maximum(scale / self.factor, self.min_scale)
        new_scale = tf.where(finite, tf.where(tf.logical_and(grow, tf.math.is_finite(grown)), grown, scale),
                             lowered)
        self._scale.assign(new_scale)
        self._good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), good_steps,
                                         tf.zeros_like(good_steps)))
        return finite


def apply_gradients_if_finite(optimizer: keras.optimizers.Optimizer, gradients: Sequence[tf.Tensor],
                              variables: Sequence[Any], finite: tf.Tensor,
                              clip_norm: float = DEFAULT_CLIP_NORM) -> tf.Tensor:
    """Clip by global norm, then apply only when `finite`; returns the global norm before clipping.

    The optimizer must already be built (`optimizer.build(variables)`): its slots cannot be
    created inside a conditional branch, and must exist before a checkpoint is restored.
    """
    if not optimizer.built:
        raise ValueError("build the optimizer (optimizer.build(variables)) before the training step")
    clipped, global_norm = tf.clip_by_global_norm([to_dense(g) for g in gradients], clip_norm)

    def apply() -> tf.Tensor:
        optimizer.apply(clipped, variables)
        return tf.constant(True)

    tf.cond(finite, apply, lambda: tf.constant(False))
    return global_norm


def make_loss_scale(compute_dtype: str) -> NoLossScale:
    """Dynamic loss scaling for float16 compute; bfloat16 and float32 need none."""
    return DynamicLossScale() if compute_dtype == "float16" else NoLossScale()


class Trainer:
    """The training step shared by pretraining and fine-tuning.

    An optimizer step runs `accumulation_steps` micro-steps, each adding the gradient of the
    (scaled) `total_loss` returned by `loss_fn(batch, seed, first_row)`; then the mean gradient
    is averaged over processes by `reduce_gradients` (once per optimizer step), unscaled, checked
    for inf/NaN (the loss scale adjusts itself), clipped and applied only when finite.
    `seed` is (seed, optimizer step) and `first_row` the index of the micro-batch's first example
    in the step's global batch (micro-batch k of rank r holds rows (k * world_size + r) * b ...),
    so per-row random choices do not depend on how the global batch is split.

    Without accumulation the gradients skip the accumulator (whose sums, division and reset
    are three passes over every weight); in one process the whole step is then one function.
    """

    def __init__(self, loss_fn: Callable[[dict[str, tf.Tensor], tf.Tensor, tf.Tensor], dict[str, tf.Tensor]],
                 variables: Sequence[Any], optimizer: keras.optimizers.Optimizer, *, accumulation_steps: int = 1,
                 loss_scale: NoLossScale | None = None, seed: int = 0, jit_compile: bool = False,
                 clip_norm: float = DEFAULT_CLIP_NORM, rank: int = 0, world_size: int = 1,
                 reduce_gradients: Callable[[list[tf.Tensor]], list[tf.Tensor]] | None = None):
        self.loss_fn = loss_fn
        self.variables = list(variables)
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self.loss_scale = loss_scale or NoLossScale()
        self.accumulator = GradientAccumulator(self.variables) if accumulation_steps > 1 else None
        self.seed = seed
        self.clip_norm = clip_norm
        self.rank = rank
        self.world_size = world_size
        self.reduce_gradients = reduce_gradients
        self.micro_step = tf.function(self._micro_step, jit_compile=jit_compile)
        self.gradient_step = tf.function(self._gradient_step, jit_compile=jit_compile)
        self.apply_step = tf.function(self._apply_step, jit_compile=jit_compile)
        self.whole_step = tf.function(self._whole_step, jit_compile=jit_compile)

    def _gradient_step(self, batch: dict[str, tf.Tensor], seed: tf.Tensor,
                       slot: tf.Tensor) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
        """The loss function's outputs and the float32 dense gradients of the scaled loss (zeros
        for a variable the loss does not reach, as the accumulator's sums would hold)."""
        first_row = slot * tf.shape(next(iter(batch.values())))[0]
        with tf.GradientTape() as tape:
            outputs = self.loss_fn(batch, seed, first_row)
            scaled_loss = self.loss_scale.scale(outputs["total_loss"])
        gradients = tape.gradient(scaled_loss, self.variables)
        return outputs, [tf.zeros(v.shape, tf.float32) if g is None else tf.cast(to_dense(g), tf.float32)
                         for v, g in zip(self.variables, gradients)]

    def _micro_step(self, batch: dict[str, tf.Tensor], seed: tf.Tensor, slot: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs, gradients = self._gradient_step(batch, seed, slot)
        self.accumulator.accumulate(gradients)
        return outputs

    def _apply_step(self, gradients: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        gradients = self.loss_scale.unscale(gradients)
        finite = self.loss_scale.update(gradients)
        global_norm = apply_gradients_if_finite(self.optimizer, gradients, self.variables, finite, self.clip_norm)
        if self.accumulator is not None:
            self.accumulator.reset()
        return {"gradient_norm": global_norm, "finite": finite}

    def _whole_step(self, batch: dict[str, tf.Tensor], seed: tf.Tensor,
                    slot: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        outputs, gradients = self._gradient_step(batch, seed, slot)
        return outputs, self._apply_step(gradients)

    def step(self, iterator: Any, step: int) -> tuple[list[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
        """One optimizer step: the micro-steps' outputs and the update's gradient norm and finiteness."""
        seed = tf.constant([self.seed, step], tf.int64)
        slots = [tf.constant(k * self.world_size + self.rank) for k in range(self.accumulation_steps)]
        if self.accumulator is None and self.reduce_gradients is None:
            outputs, update = self.whole_step(next(iterator), seed, slots[0])
            return [outputs], update
        if self.accumulator is None:
            outputs, gradients = self.gradient_step(next(iterator), seed, slots[0])
            all_outputs = [outputs]
        else:
            all_outputs = [self.micro_step(next(iterator), seed, slot) for slot in slots]
            gradients = self.accumulator.mean()
        if self.reduce_gradients is not None:
            # Outside the (possibly XLA-compiled) steps: collective ops do not compile.
            gradients = self.reduce_gradients(gradients)
        return all_outputs, self.apply_step(gradients)
