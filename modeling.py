"""ELECTRA in Keras 3 on TensorFlow: embeddings, BERT-style encoder, discriminator and generator.

Models build their weights from the config at construction (each `build` builds its children
explicitly), so a model can be restored from a checkpoint or a model folder before it has seen
data, and variable paths are stable: `electra/embeddings/...`, `electra/embeddings_project/...`,
`electra/layer_{i}/...`, `<model>/discriminator_predictions/...`, `<model>/generator_predictions/...`,
`<model>/qa_head/...` or `<model>/qa_outputs/...`, `<model>/classifier/...`.
Layers accept a Keras dtype policy (`float32`, `mixed_float16`, `mixed_bfloat16`): weights stay
float32, compute follows the policy, attention softmax and model outputs are float32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

import pretrain_utils
from configuration import ElectraConfig, PretrainingObjective

ATTENTION_MASK_BIAS = -1e9


SQRT_HALF = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


@tf.custom_gradient
def gelu_exact(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """x * Phi(x) (the erf form), computed in float32 whatever x's dtype, with its derivative
    Phi(x) + x * phi(x) written out to reuse the forward's Phi. On CPU bfloat16's erfc and exp
    run several times slower than float32's: the bfloat16 step spent 14% of its time here."""
    x32 = tf.cast(x, tf.float32)
    cdf = 0.5 * tf.math.erfc(x32 * -SQRT_HALF)

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        pdf = tf.exp(-0.5 * tf.square(x32)) * INV_SQRT_2PI
        return tf.cast(tf.cast(upstream, tf.float32) * (cdf + x32 * pdf), x.dtype)

    return tf.cast(x32 * cdf, x.dtype), gradient


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation named in a Hugging Face config (`gelu` is the exact erf form)."""
    activations = {
        "gelu": gelu_exact,
        "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: tf.nn.gelu(x, approximate=True),
        "relu": tf.nn.relu,
    }
    return activations[name]


def weight_initializer(config: ElectraConfig) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


def dense(units: int, config: ElectraConfig, name: str, dtype: Any) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=weight_initializer(config), name=name, dtype=dtype)


def layer_norm(config: ElectraConfig, name: str, dtype: Any) -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name=name, dtype=dtype)


class Dropout(keras.layers.Dropout):
    """Keras's dropout with TensorFlow's random-number algorithm named: Philox.

    Keras leaves the choice to TensorFlow (`auto_select`), which is Philox eagerly and in graph
    mode, but which XLA compiles on CPU to a generator about 100x slower (measured 430 ns per
    number against 4 ns for Philox); it made the compiled step 4x slower. Seeds come from the
    layer's own seed generator, as in Keras, so graph-mode masks are Keras's.
    """

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return inputs
        seed = self.seed_generator.next()
        if seed.dtype != tf.int32:  # Keras's own conversion of its int64 seed-generator state
            seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, rng_alg="philox")


class ElectraEmbeddings(keras.layers.Layer):
    """Word + position + token-type embeddings, LayerNorm, dropout.

    Autocast is off so lookups gather float32 rows and cast only the rows used, instead of
    casting the whole vocabulary table every step.
    """

    def __init__(self, config: ElectraConfig, **kwargs: Any):
        super().__init__(autocast=False, **kwargs)
        self.config = config
        self.layer_norm = layer_norm(config, "layer_norm", self.dtype_policy)
        self.dropout = Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        c = self.config
        init = weight_initializer(c)
        self.word_embeddings = self.add_weight(
            shape=(c.vocab_size, c.embedding_size), initializer=init, name="word_embeddings")
        self.position_embeddings = self.add_weight(
            shape=(c.max_position_embeddings, c.embedding_size), initializer=init,
            name="position_embeddings")
        self.token_type_embeddings = self.add_weight(
            shape=(c.type_vocab_size, c.embedding_size), initializer=init, name="token_type_embeddings")
        self.layer_norm.build((None, None, c.embedding_size))

    def call(self, input_ids: tf.Tensor, token_type_ids: tf.Tensor | None = None,
             training: bool = False) -> tf.Tensor:
        seq_length = tf.shape(input_ids)[1]
        if token_type_ids is None:
            token_type_ids = tf.zeros_like(input_ids)
        embeddings = (tf.gather(self.word_embeddings, input_ids)
                      + tf.gather(self.token_type_embeddings, token_type_ids)
                      + self.position_embeddings[tf.newaxis, :seq_length])
        embeddings = tf.cast(embeddings, self.compute_dtype)
        return self.dropout(self.layer_norm(embeddings), training=training)


class ElectraLayer(keras.layers.Layer):
    """One post-LayerNorm transformer block: self-attention, then the feed-forward network."""

    def __init__(self, config: ElectraConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        policy = self.dtype_policy
        self.query = dense(config.hidden_size, config, "query", policy)
        self.key = dense(config.hidden_size, config, "key", policy)
        self.value = dense(config.hidden_size, config, "value", policy)
        self.attention_output = dense(config.hidden_size, config, "attention_output", policy)
        self.attention_layer_norm = layer_norm(config, "attention_layer_norm", policy)
        self.intermediate = dense(config.intermediate_size, config, "intermediate", policy)
        self.output_dense = dense(config.hidden_size, config, "output", policy)
        self.output_layer_norm = layer_norm(config, "output_layer_norm", policy)
        self.attention_dropout = Dropout(config.attention_probs_dropout_prob, dtype=self.dtype_policy)
        self.hidden_dropout = Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)
        self.activation = get_activation(config.hidden_act)

    def build(self, input_shape: Any = None) -> None:
        hidden, intermediate = self.config.hidden_size, self.config.intermediate_size
        for projection in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            projection.build((None, None, hidden))
        self.output_dense.build((None, None, intermediate))
        self.attention_layer_norm.build((None, None, hidden))
        self.output_layer_norm.build((None, None, hidden))

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_size]."""
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.config.num_attention_heads, self.config.head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def attention_probabilities(self, query: tf.Tensor, key: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        """softmax(query . key / sqrt(head_size)) over the real tokens, float32 [batch, heads, seq, seq],
        from [batch, heads, seq, head_size] projections."""
        query = query * tf.cast(1.0 / math.sqrt(self.config.head_size), query.dtype)
        scores = tf.matmul(query, key, transpose_b=True)
        return tf.nn.softmax(tf.cast(scores, tf.float32) + attention_bias_from_mask(attention_mask), axis=-1)

    def attention_weights(self, hidden: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        """What each token attends to in this layer, float32 [batch, heads, seq, seq], for the
        layer's input `hidden` [batch, seq, hidden] (inference: no dropout); for inspecting a
        model (scripts/attention_matching.py)."""
        query, key = (self._split_heads(projection(hidden)) for projection in (self.query, self.key))
        return self.attention_probabilities(query, key, attention_mask)

    def self_attention(self, hidden: tf.Tensor, attention_mask: tf.Tensor, training: bool,
                       real_tokens: RealTokens | None = None) -> tf.Tensor:
        """Scores and context as batched matmuls over [batch, heads] (on CPU several times faster
        than the equivalent einsums on [batch, seq, heads, head_size], which transpose inside).
        With `real_tokens`, `hidden` holds only the real tokens: the projections are spread back
        over [batch, seq] for the attention, and the context is returned for the real tokens."""
        projections = [self.query(hidden), self.key(hidden), self.value(hidden)]
        if real_tokens is not None:
            projections = [real_tokens.spread(projection) for projection in projections]
        query, key, value = (self._split_heads(projection) for projection in projections)
        probs = self.attention_probabilities(query, key, attention_mask)
        probs = self.attention_dropout(tf.cast(probs, value.dtype), training=training)
        context = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])
        shape = tf.shape(projections[0])
        context = tf.reshape(context, [shape[0], shape[1], self.config.hidden_size])
        return context if real_tokens is None else real_tokens.gather(context)

    def call(self, hidden: tf.Tensor, attention_mask: tf.Tensor, training: bool = False,
             real_tokens: RealTokens | None = None) -> tf.Tensor:
        """`attention_mask` is the integer [batch, seq] padding mask (1 = real token); it stays
        an integer so Keras autocasting cannot turn the large negative bias into float16 -inf.
        With `real_tokens`, `hidden` is [real tokens, hidden] and so is the result."""
        context = self.self_attention(hidden, attention_mask, training, real_tokens)
        attended = self.attention_layer_norm(
            hidden + self.hidden_dropout(self.attention_output(context), training=training))
        intermediate = self.activation(self.intermediate(attended))
        return self.output_layer_norm(
            attended + self.hidden_dropout(self.output_dense(intermediate), training=training))


@dataclasses.dataclass(frozen=True)
class RealTokens:
    """Where the real (unpadded) tokens of a [batch, seq] batch are, to run the position-wise
    parts of the encoder (projections, feed-forward, LayerNorm, dropout) on them alone.

    Padding takes a quarter to a half of many batches (short sentence pairs, GLUE sentences,
    SQuAD's last windows), and those parts are most of the work; only attention needs the
    [batch, seq] layout. The index list has a data-dependent length, which XLA cannot compile,
    so the compiled step keeps the padded layout.
    """

    indices: tf.Tensor  # [real tokens, 2] int64 (row, position)
    batch_and_length: tf.Tensor  # [2] int64

    @classmethod
    def of(cls, attention_mask: tf.Tensor) -> "RealTokens":
        return cls(tf.where(attention_mask > 0), tf.shape(attention_mask, out_type=tf.int64))

    def gather(self, padded: tf.Tensor) -> tf.Tensor:
        """[batch, seq, width] -> [real tokens, width]."""
        return tf.gather_nd(padded, self.indices)

    def spread(self, real: tf.Tensor) -> tf.Tensor:
        """[real tokens, width] -> [batch, seq, width], zeros at the padding."""
        return tf.scatter_nd(self.indices, real, tf.concat([self.batch_and_length, tf.shape(real, tf.int64)[-1:]], 0))


def attention_bias_from_mask(attention_mask: tf.Tensor) -> tf.Tensor:
    """[batch, seq] 1/0 mask -> additive float32 bias [batch, 1, 1, seq] for attention scores."""
    mask = tf.cast(attention_mask, tf.float32)
    return (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * ATTENTION_MASK_BIAS


class ElectraModel(keras.Model):
    """The ELECTRA encoder: embeddings, optional `embeddings_project`, transformer layers.

    `embeddings` may be passed in to share one embedding block between generator and
    discriminator (docs/recipe.md, The objective).
    """

    def __init__(self, config: ElectraConfig, embeddings: ElectraEmbeddings | None = None,
                 name: str = "electra", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.config = config
        policy = self.dtype_policy
        self.embeddings = embeddings or ElectraEmbeddings(config, name="embeddings", dtype=policy)
        self.embeddings_project = (
            dense(config.hidden_size, config, "embeddings_project", policy)
            if config.embedding_size != config.hidden_size else None)
        self.encoder_layers = [ElectraLayer(config, name=f"layer_{i}", dtype=policy)
                               for i in range(config.num_hidden_layers)]
        # On, training runs the position-wise work on the real tokens only (RealTokens);
        # pretraining turns it on for graph-mode steps (skip_padding_in_training).
        self.skip_padding = False
        # Keras tracks the list, but tf.train.Checkpoint does not see Keras lists: without these
        # names a checkpoint of the model alone would silently leave out every encoder layer.
        for i, layer in enumerate(self.encoder_layers):
            self._track_trackable(layer, name=f"layer_{i}")
        self.build(None)

    def build(self, input_shape: Any = None) -> None:
        if not self.embeddings.built:
            self.embeddings.build(None)
        if self.embeddings_project is not None:
            self.embeddings_project.build((None, None, self.config.embedding_size))
        for layer in self.encoder_layers:
            layer.build(None)

    def call(self, input_ids: tf.Tensor, attention_mask: tf.Tensor | None = None,
             token_type_ids: tf.Tensor | None = None, training: bool = False,
             output_hidden_states: bool = False) -> dict[str, Any]:
        """Returns `last_hidden_state` [batch, seq, hidden] and, on request, `hidden_states`:
        the embedding output followed by each layer's output (as in transformers)."""
        if attention_mask is None:
            attention_mask = tf.ones_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, training=training)
        if self.embeddings_project is not None:
            hidden = self.embeddings_project(hidden)
        real_tokens = RealTokens.of(attention_mask) if training and self.skip_padding else None
        if real_tokens is not None:
            hidden = real_tokens.gather(hidden)
        all_hidden = [hidden]
        for layer in self.encoder_layers:
            hidden = layer(hidden, attention_mask, training=training, real_tokens=real_tokens)
            all_hidden.append(hidden)
        padded = real_tokens.spread if real_tokens is not None else tf.identity
        outputs: dict[str, Any] = {"last_hidden_state": padded(hidden)}
        if output_hidden_states:
            outputs["hidden_states"] = tuple(padded(layer_output) for layer_output in all_hidden)
        return outputs


def skip_padding_in_training(model: keras.Model, skip: bool) -> None:
    """Turns RealTokens on or off in every encoder of `model` (off for an XLA-compiled step)."""
    for layer in [model, *getattr(model, "layers", [])]:
        if isinstance(layer, ElectraModel):
            layer.skip_padding = skip
        elif layer is not model and isinstance(layer, keras.Model):
            skip_padding_in_training(layer, skip)


class DiscriminatorHead(keras.layers.Layer):
    """Replaced-token detection: dense(hidden) -> activation -> dense(1), one logit per token."""

    def __init__(self, config: ElectraConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.dense = dense(config.hidden_size, config, "dense", self.dtype_policy)
        self.dense_prediction = dense(1, config, "dense_prediction", self.dtype_policy)
        self.activation = get_activation(config.hidden_act)

    def build(self, input_shape: Any = None) -> None:
        self.dense.build((None, None, self.config.hidden_size))
        self.dense_prediction.build((None, None, self.config.hidden_size))

    def call(self, hidden: tf.Tensor) -> tf.Tensor:
        logits = self.dense_prediction(self.activation(self.dense(hidden)))
        return tf.cast(tf.squeeze(logits, -1), tf.float32)


class GeneratorHead(keras.layers.Layer):
    """Masked-LM head: dense(embedding size) -> gelu -> LayerNorm -> logits through the tied
    word-embedding matrix plus the head's own vocabulary bias."""

    def __init__(self, config: ElectraConfig, embeddings: ElectraEmbeddings, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = embeddings
        self.dense = dense(config.embedding_size, config, "dense", self.dtype_policy)
        self.layer_norm = layer_norm(config, "layer_norm", self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.dense.build((None, None, self.config.hidden_size))
        self.layer_norm.build((None, None, self.config.embedding_size))
        self.output_bias = self.add_weight(shape=(self.config.vocab_size,), initializer="zeros",
                                           name="output_bias")

    def call(self, hidden: tf.Tensor) -> tf.Tensor:
        """hidden [..., hidden_size] -> float32 logits [..., vocab_size].

        The projection is one 2-D matmul: a batched matmul against the shared table would
        compute the table's gradient once per batch row and then sum the copies.
        """
        projected = self.layer_norm(gelu_exact(self.dense(hidden)))
        table = tf.cast(self.embeddings.word_embeddings, projected.dtype)
        flat = tf.reshape(projected, [-1, self.config.embedding_size])
        logits = tf.matmul(flat, table, transpose_b=True) + self.output_bias
        logits = tf.reshape(logits, tf.concat([tf.shape(projected)[:-1], [self.config.vocab_size]], axis=0))
        return tf.cast(logits, tf.float32)


class ElectraDiscriminator(keras.Model):
    """ELECTRA encoder + replaced-token-detection head (transformers' ElectraForPreTraining)."""

    def __init__(self, config: ElectraConfig, embeddings: ElectraEmbeddings | None = None,
                 name: str = "electra_discriminator", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.electra = ElectraModel(config, embeddings, name="electra", dtype=self.dtype_policy)
        self.discriminator_predictions = DiscriminatorHead(
            config, name="discriminator_predictions", dtype=self.dtype_policy)
        self.build(None)

    def build(self, input_shape: Any = None) -> None:
        self.discriminator_predictions.build(None)

    def call(self, input_ids: tf.Tensor, attention_mask: tf.Tensor | None = None,
             token_type_ids: tf.Tensor | None = None, training: bool = False,
             output_hidden_states: bool = False) -> dict[str, Any]:
        """Adds `logits` [batch, seq] (float32, > 0 means "replaced") to the encoder outputs."""
        outputs = self.electra(input_ids, attention_mask, token_type_ids, training=training,
                               output_hidden_states=output_hidden_states)
        return {**outputs, "logits": self.discriminator_predictions(outputs["last_hidden_state"])}


class ElectraGenerator(keras.Model):
    """ELECTRA encoder + masked-LM head tied to its word embeddings (ElectraForMaskedLM)."""

    def __init__(self, config: ElectraConfig, embeddings: ElectraEmbeddings | None = None,
                 name: str = "electra_generator", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.electra = ElectraModel(config, embeddings, name="electra", dtype=self.dtype_policy)
        self.generator_predictions = GeneratorHead(
            config, self.electra.embeddings, name="generator_predictions", dtype=self.dtype_policy)
        self.build(None)

    def build(self, input_shape: Any = None) -> None:
        self.generator_predictions.build(None)

    def call(self, input_ids: tf.Tensor, attention_mask: tf.Tensor | None = None,
             token_type_ids: tf.Tensor | None = None, training: bool = False,
             output_hidden_states: bool = False) -> dict[str, Any]:
        """Adds `logits` [batch, seq, vocab] (float32) to the encoder outputs."""
        outputs = self.electra(input_ids, attention_mask, token_type_ids, training=training,
                               output_hidden_states=output_hidden_states)
        return {**outputs, "logits": self.generator_predictions(outputs["last_hidden_state"])}


class ElectraPretrainingModel(keras.Model):
    """Generator + discriminator for replaced-token detection (docs/recipe.md, The objective).

    The two share one embedding block. The generator's masked-LM head runs only at the masked
    positions (about 15% of tokens), which is where its loss and samples are needed.
    """

    def __init__(self, discriminator_config: ElectraConfig, generator_config: ElectraConfig,
                 objective: PretrainingObjective, name: str = "electra_pretraining", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.objective = objective
        self.discriminator = ElectraDiscriminator(discriminator_config, dtype=self.dtype_policy)
        self.generator = ElectraGenerator(generator_config, embeddings=self.discriminator.electra.embeddings,
                                          dtype=self.dtype_policy)
        self.build(None)

    def build(self, input_shape: Any = None) -> None:
        """Both halves built themselves from their configs."""

    def call(self, input_ids: tf.Tensor, input_mask: tf.Tensor, segment_ids: tf.Tensor,
             seed: tf.Tensor, first_row: tf.Tensor | int = 0, training: bool = False) -> dict[str, tf.Tensor]:
        """Losses (float32) and the per-token tensors the metrics need, for one batch.

        `seed` is an int [2] tensor for the stateless random ops (masking, sampling) and
        `first_row` the index of this batch's first row in the global batch: each example's
        masks and samples depend only on (seed, its global row), eagerly or under XLA.
        """
        objective = self.objective
        max_predictions = pretrain_utils.max_predictions_per_seq(objective.mask_prob, input_ids.shape[1])
        masked = pretrain_utils.mask_tokens(input_ids, input_mask, objective.mask_prob, max_predictions,
                                            seed=seed, first_row=first_row)
        generator_hidden = self.generator.electra(
            masked.masked_input_ids, input_mask, segment_ids, training=training)["last_hidden_state"]
        generator_logits = self.generator.generator_predictions(
            pretrain_utils.gather_positions(generator_hidden, masked.masked_positions))
        generator_loss = masked_lm_loss(generator_logits, masked.masked_ids, masked.masked_weights)
        outputs = {
            "total_loss": objective.generator_weight * generator_loss,
            "generator_loss": generator_loss,
            "masked_weights": masked.masked_weights,
            "masked_lm_correct": tf.cast(
                tf.equal(tf.argmax(generator_logits, -1, output_type=tf.int32), masked.masked_ids), tf.float32),
        }
        if not objective.detects_replaced_tokens:
            return outputs
        sampled_ids = pretrain_utils.sample_replacements(
            generator_logits, masked.masked_ids, seed=seed, temperature=objective.temperature,
            disallow_correct=objective.disallow_correct, first_row=first_row)
        fake_input_ids, labels = pretrain_utils.replace_and_label(
            input_ids, masked.masked_positions, sampled_ids, masked.masked_weights)
        discriminator_logits = self.discriminator(
            fake_input_ids, input_mask, segment_ids, training=training)["logits"]
        discriminator_loss = replaced_token_loss(discriminator_logits, labels, input_mask)
        return {
            **outputs,
            "total_loss": outputs["total_loss"] + objective.discriminator_weight * discriminator_loss,
            "discriminator_loss": discriminator_loss,
            "sampled_correct": tf.cast(tf.equal(sampled_ids, masked.masked_ids), tf.float32),
            "discriminator_probs": tf.sigmoid(discriminator_logits),
            "discriminator_labels": labels,
            "input_mask": tf.cast(input_mask, tf.float32),
        }


def masked_lm_loss(logits: tf.Tensor, target_ids: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Cross-entropy at the masked positions, averaged over real predictions (float32)."""
    per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_ids, logits=logits)
    return tf.reduce_sum(per_position * weights) / tf.maximum(tf.reduce_sum(weights), 1e-6)


def replaced_token_loss(logits: tf.Tensor, labels: tf.Tensor, input_mask: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy of "replaced" vs "original", averaged over real tokens (float32)."""
    mask = tf.cast(input_mask, tf.float32)
    per_token = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
    return tf.reduce_sum(per_token * mask) / tf.maximum(tf.reduce_sum(mask), 1e-6)


# ============================================================================= question answering

P_MASK_LOGIT = -1e30  # the logit of a position p_mask rules out (float32, after the head)


def apply_p_mask(logits: tf.Tensor, p_mask: tf.Tensor | None) -> tf.Tensor:
    """float32 logits with the positions where p_mask is 1 (no answer can be there) set to a
    large negative, so softmax gives them no probability and top-k never picks them."""
    logits = tf.cast(logits, tf.float32)
    if p_mask is None:
        return logits
    p_mask = tf.cast(p_mask, tf.bool)
    while p_mask.shape.rank < logits.shape.rank:
        p_mask = p_mask[..., tf.newaxis]
    return tf.where(p_mask, tf.constant(P_MASK_LOGIT, tf.float32), logits)


class JointQAHead(keras.layers.Layer):
    """The XLNet-style head of Google ELECTRA and NVIDIA's recipe (docs/recipe.md, SQuAD fine-tuning).

    start logits = dense(1)(h_t); end logits given a start s = dense(1)(LayerNorm(tanh(
    dense(hidden)(concat[h_t, h_s])))); for SQuAD 2.0 an answer classifier
    dense(1, no bias)(tanh(dense(hidden)(concat[start state, h_[CLS]]))) whose logit means
    "unanswerable" (its start state: see `no_answer_logits`). The concat dense is applied as two
    matmuls (token half, start half), so the k start candidates of beam search cost k additions
    instead of k full matmuls.
    """

    def __init__(self, config: ElectraConfig, version_2: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.version_2 = version_2
        policy = self.dtype_policy
        self.start_dense = dense(1, config, "start_dense", policy)
        self.end_dense_0 = dense(config.hidden_size, config, "end_dense_0", policy)
        self.end_layer_norm = layer_norm(config, "end_layer_norm", policy)
        self.end_dense_1 = dense(1, config, "end_dense_1", policy)
        if version_2:
            self.answer_dense_0 = dense(config.hidden_size, config, "answer_dense_0", policy)
            self.answer_dense_1 = keras.layers.Dense(1, use_bias=False, kernel_initializer=weight_initializer(config),
                                                     name="answer_dense_1", dtype=policy)

    def build(self, input_shape: Any = None) -> None:
        hidden = self.config.hidden_size
        self.start_dense.build((None, None, hidden))
        self.end_dense_0.build((None, None, 2 * hidden))
        self.end_layer_norm.build((None, None, hidden))
        self.end_dense_1.build((None, None, hidden))
        if self.version_2:
            self.answer_dense_0.build((None, 2 * hidden))
            self.answer_dense_1.build((None, hidden))

    def start_logits(self, hidden: tf.Tensor, p_mask: tf.Tensor | None) -> tf.Tensor:
        """[batch, seq] float32."""
        return apply_p_mask(tf.squeeze(self.start_dense(hidden), -1), p_mask)

    def end_logits(self, hidden: tf.Tensor, start_states: tf.Tensor, p_mask: tf.Tensor | None) -> tf.Tensor:
        """End logits for each of k start candidates: hidden [batch, seq, H], start_states
        [batch, k, H] -> float32 [batch, seq, k]."""
        size = self.config.hidden_size
        kernel = tf.cast(self.end_dense_0.kernel, hidden.dtype)
        token_part = tf.matmul(hidden, kernel[:size]) + tf.cast(self.end_dense_0.bias, hidden.dtype)
        start_part = tf.matmul(start_states, kernel[size:])
        joint = tf.tanh(token_part[:, :, tf.newaxis, :] + start_part[:, tf.newaxis, :, :])
        logits = tf.squeeze(self.end_dense_1(self.end_layer_norm(joint)), -1)
        return apply_p_mask(logits, p_mask)

    def answer_logits(self, start_state: tf.Tensor, cls_state: tf.Tensor) -> tf.Tensor:
        """[batch] float32 logit of "unanswerable" from [batch, H] start and [CLS] states."""
        joint = tf.tanh(self.answer_dense_0(tf.concat([start_state, cls_state], axis=-1)))
        return tf.cast(tf.squeeze(self.answer_dense_1(joint), -1), tf.float32)

    def no_answer_logits(self, hidden: tf.Tensor, start_logits: tf.Tensor) -> tf.Tensor:
        """The answer classifier's [batch] logit of "unanswerable". Its start state is the average
        of the hidden states weighted by the start distribution, in training as in inference
        (XLNet, Google ELECTRA). NVIDIA trains it on the gold start's state instead, which leaks
        the label: the gold start of an unanswerable window is [CLS] itself, so the classifier
        learns "start state == [CLS] state" and is useless at inference, where no gold start exists.
        """
        start_probs = tf.cast(tf.nn.softmax(start_logits), hidden.dtype)
        return self.answer_logits(tf.einsum("bsh,bs->bh", hidden, start_probs), hidden[:, 0])

    def training_logits(self, hidden: tf.Tensor, p_mask: tf.Tensor | None,
                        start_positions: tf.Tensor) -> dict[str, tf.Tensor]:
        """Logits with the end conditioned on the GOLD start."""
        start_states = tf.gather(hidden, tf.cast(start_positions, tf.int32)[:, tf.newaxis], batch_dims=1)
        logits = {"start_logits": self.start_logits(hidden, p_mask),
                  "end_logits": self.end_logits(hidden, start_states, p_mask)[:, :, 0]}
        if self.version_2:
            logits["cls_logits"] = self.no_answer_logits(hidden, logits["start_logits"])
        return logits

    def beam_search(self, hidden: tf.Tensor, p_mask: tf.Tensor | None, beam_size: int) -> dict[str, tf.Tensor]:
        """The top `beam_size` starts by log-probability and, for each, the top `beam_size` ends
        with the end conditioned on that start: the `squad_utils.JointHeadOutputs` fields, with
        one null score per window for SQuAD 2.0 (`cls_logits`)."""
        start_logits = self.start_logits(hidden, p_mask)
        start_top_log_probs, start_top_index = tf.math.top_k(tf.nn.log_softmax(start_logits), k=beam_size)
        start_states = tf.gather(hidden, start_top_index, batch_dims=1)
        end_log_probs = tf.nn.log_softmax(self.end_logits(hidden, start_states, p_mask), axis=1)
        end_top_log_probs, end_top_index = tf.math.top_k(tf.transpose(end_log_probs, [0, 2, 1]), k=beam_size)
        outputs = {"start_top_log_probs": start_top_log_probs, "start_top_index": start_top_index,
                   "end_top_log_probs": end_top_log_probs, "end_top_index": end_top_index}
        if self.version_2:
            outputs["cls_logits"] = self.no_answer_logits(hidden, start_logits)
        return outputs


class ElectraForQuestionAnswering(keras.Model):
    """ELECTRA encoder + a SQuAD head: the joint beam-search head (`joint_head=True`,
    `JointQAHead`) or the plain dense(2) start/end head (transformers' ElectraForQuestionAnswering,
    `qa_outputs`). `version_2` adds the joint head's answer classifier; `beam_size` is its k.

    Calling the model is inference: the plain head returns `start_logits`/`end_logits`
    [batch, seq]; the joint head returns the `squad_utils.JointHeadOutputs` fields.
    `training_losses` is the fine-tuning objective.
    """

    # Hugging Face names a discriminator folder lacks: reported as newly initialised on load.
    HF_NEW_HEAD_PREFIXES = ("qa_outputs.", "qa_head.")

    def __init__(self, config: ElectraConfig, joint_head: bool = True, version_2: bool = False,
                 beam_size: int = 5, name: str = "electra_for_question_answering", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        self.config = config
        self.joint_head = joint_head
        self.version_2 = version_2
        self.beam_size = beam_size
        self.electra = ElectraModel(config, name="electra", dtype=self.dtype_policy)
        self.qa_head = JointQAHead(config, version_2, name="qa_head", dtype=self.dtype_policy) if joint_head else None
        self.qa_outputs = None if joint_head else dense(2, config, "qa_outputs", self.dtype_policy)
        self.build(None)

    def build(self, input_shape: Any = None) -> None:
        if self.joint_head:
            self.qa_head.build(None)
        else:
            self.qa_outputs.build((None, None, self.config.hidden_size))

    def head_settings(self) -> dict[str, Any]:
        """What besides the ElectraConfig it takes to rebuild this model."""
        return {"joint_head": self.joint_head, "version_2_with_negative": self.version_2,
                "beam_size": self.beam_size}

    def plain_logits(self, hidden: tf.Tensor, p_mask: tf.Tensor | None) -> dict[str, tf.Tensor]:
        logits = self.qa_outputs(hidden)
        return {"start_logits": apply_p_mask(logits[..., 0], p_mask),
                "end_logits": apply_p_mask(logits[..., 1], p_mask)}

    def call(self, input_ids: tf.Tensor, attention_mask: tf.Tensor | None = None,
             token_type_ids: tf.Tensor | None = None, p_mask: tf.Tensor | None = None,
             training: bool = False) -> dict[str, tf.Tensor]:
        """Inference outputs (float32 scores, int32 indices); `p_mask` 1 = never an answer."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids, training=training)["last_hidden_state"]
        if self.joint_head:
            return self.qa_head.beam_search(hidden, p_mask, self.beam_size)
        return self.plain_logits(hidden, p_mask)

    def training_losses(self, batch: dict[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        """float32 losses of a batch of `squad_utils.SquadFeatures` fields: (CE(start) +
        CE(end)) / 2, plus 0.5 x BCE("unanswerable") for the joint head on SQuAD 2.0."""
        hidden = self.electra(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                              training=training)["last_hidden_state"]
        if self.joint_head:
            logits = self.qa_head.training_logits(hidden, batch["p_mask"], batch["start_position"])
        else:
            logits = self.plain_logits(hidden, batch["p_mask"])
        start_loss = span_position_loss(logits["start_logits"], batch["start_position"])
        end_loss = span_position_loss(logits["end_logits"], batch["end_position"])
        losses = {"start_loss": start_loss, "end_loss": end_loss, "total_loss": (start_loss + end_loss) / 2.0}
        if "cls_logits" in logits:
            losses["answer_class_loss"] = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(batch["is_impossible"], tf.float32), logits=logits["cls_logits"]))
            losses["total_loss"] += 0.5 * losses["answer_class_loss"]
        return losses


def span_position_loss(logits: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy of the gold positions under softmax over the sequence (float32)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(positions, tf.int32), logits=tf.cast(logits, tf.float32)))


# ============================================================================= sequence classification

class ClassificationHead(keras.layers.Layer):
    """ELECTRA's sentence head on the [CLS] state: dropout -> dense(hidden) -> gelu -> dropout ->
    dense(num_labels), transformers' ElectraClassificationHead (gelu whatever the encoder's
    activation, dropout at the encoder's hidden dropout rate)."""

    def __init__(self, config: ElectraConfig, num_labels: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.dense = dense(config.hidden_size, config, "dense", self.dtype_policy)
        self.out_proj = dense(num_labels, config, "out_proj", self.dtype_policy)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.dense.build((None, self.config.hidden_size))
        self.out_proj.build((None, self.config.hidden_size))

    def call(self, hidden: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[batch, seq, hidden] -> float32 [batch, num_labels]."""
        x = self.dropout(hidden[:, 0], training=training)
        x = tf.nn.gelu(self.dense(x), approximate=False)
        x = self.dropout(x, training=training)
        return tf.cast(self.out_proj(x), tf.float32)


class ElectraForSequenceClassification(keras.Model):
    """ELECTRA encoder + `ClassificationHead` for sentence and sentence-pair tasks: `labels` names
    the classes (cross-entropy), `labels=None` makes one regression output (mean squared error),
    as transformers' ElectraForSequenceClassification with num_labels=1."""

    # Hugging Face names a discriminator folder lacks: reported as newly initialised on load.
    HF_NEW_HEAD_PREFIXES = ("classifier.",)

    def __init__(self, config: ElectraConfig, labels: Sequence[str] | None = ("0", "1"),
                 name: str = "electra_for_sequence_classification", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if labels is not None and len(labels) < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {list(labels)} (labels=None: regression)")
        self.config = config
        self.labels = None if labels is None else tuple(labels)
        self.electra = ElectraModel(config, name="electra", dtype=self.dtype_policy)
        self.classifier = ClassificationHead(config, self.num_labels, name="classifier", dtype=self.dtype_policy)
        self.build(None)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def build(self, input_shape: Any = None) -> None:
        self.classifier.build(None)

    def head_settings(self) -> dict[str, Any]:
        """transformers' config.json keys for the head: num_labels, id2label, label2id, problem_type."""
        names = list(self.labels) if self.labels is not None else ["LABEL_0"]
        return {"num_labels": self.num_labels, "id2label": {str(i): n for i, n in enumerate(names)},
                "label2id": {n: i for i, n in enumerate(names)},
                "problem_type": "regression" if self.is_regression else "single_label_classification"}

    def call(self, input_ids: tf.Tensor, attention_mask: tf.Tensor | None = None,
             token_type_ids: tf.Tensor | None = None, training: bool = False) -> dict[str, tf.Tensor]:
        """{"logits": float32 [batch, num_labels]} (regression: [batch, 1] scores)."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids, training=training)["last_hidden_state"]
        return {"logits": self.classifier(hidden, training=training)}

    def training_losses(self, batch: dict[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        """float32 loss of a batch of `glue_utils.GlueFeatures` fields."""
        logits = self(batch["input_ids"], batch["input_mask"], batch["segment_ids"], training=training)["logits"]
        return {"total_loss": sequence_classification_loss(logits, batch["label_ids"], self.is_regression)}


def sequence_classification_loss(logits: tf.Tensor, targets: tf.Tensor, regression: bool) -> tf.Tensor:
    """Mean squared error of [batch, 1] scores, or mean cross-entropy of class ids (float32)."""
    logits = tf.cast(logits, tf.float32)
    if regression:
        return tf.reduce_mean(tf.square(logits[:, 0] - tf.cast(targets, tf.float32)))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=logits))
