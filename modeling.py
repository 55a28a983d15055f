"""ELECTRA in Keras 3 on TensorFlow: embeddings, BERT-style encoder, discriminator and generator.

Models build their weights from the config at construction (each `build` builds its children
explicitly), so a model can be restored from a checkpoint or a model folder before it has seen
data, and variable paths are stable: `electra/embeddings/...`, `electra/embeddings_project/...`,
`electra/layer_{i}/...`, `<model>/discriminator_predictions/...`, `<model>/generator_predictions/...`.
Layers accept a Keras dtype policy (`float32`, `mixed_float16`, `mixed_bfloat16`): weights stay
float32, compute follows the policy, attention softmax and model outputs are float32.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import keras
import tensorflow as tf

import pretrain_utils
from configuration import ElectraConfig, PretrainingObjective

ATTENTION_MASK_BIAS = -1e9


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation named in a Hugging Face config (`gelu` is the exact erf form)."""
    activations = {
        "gelu": lambda x: tf.nn.gelu(x, approximate=False),
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


class ElectraEmbeddings(keras.layers.Layer):
    """Word + position + token-type embeddings, LayerNorm, dropout.

    Autocast is off so lookups gather float32 rows and cast only the rows used, instead of
    casting the whole vocabulary table every step.
    """

    def __init__(self, config: ElectraConfig, **kwargs: Any):
        super().__init__(autocast=False, **kwargs)
        self.config = config
        self.layer_norm = layer_norm(config, "layer_norm", self.dtype_policy)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

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
        self.attention_dropout = keras.layers.Dropout(config.attention_probs_dropout_prob, dtype=self.dtype_policy)
        self.hidden_dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)
        self.activation = get_activation(config.hidden_act)

    def build(self, input_shape: Any = None) -> None:
        hidden, intermediate = self.config.hidden_size, self.config.intermediate_size
        for projection in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            projection.build((None, None, hidden))
        self.output_dense.build((None, None, intermediate))
        self.attention_layer_norm.build((None, None, hidden))
        self.output_layer_norm.build((None, None, hidden))

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """[batch, seq, hidden] -> [batch, seq, heads, head_size]."""
        shape = tf.shape(x)
        return tf.reshape(x, [shape[0], shape[1], self.config.num_attention_heads, self.config.head_size])

    def self_attention(self, hidden: tf.Tensor, attention_mask: tf.Tensor, training: bool) -> tf.Tensor:
        query = self._split_heads(self.query(hidden)) * tf.cast(
            1.0 / math.sqrt(self.config.head_size), hidden.dtype)
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        scores = tf.einsum("bqhd,bkhd->bhqk", query, key)
        scores = tf.cast(scores, tf.float32) + attention_bias_from_mask(attention_mask)
        probs = tf.nn.softmax(scores, axis=-1)
        probs = self.attention_dropout(tf.cast(probs, hidden.dtype), training=training)
        context = tf.einsum("bhqk,bkhd->bqhd", probs, value)
        shape = tf.shape(hidden)
        return tf.reshape(context, [shape[0], shape[1], self.config.hidden_size])

    def call(self, hidden: tf.Tensor, attention_mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`attention_mask` is the integer [batch, seq] padding mask (1 = real token); it stays
        an integer so Keras autocasting cannot turn the large negative bias into float16 -inf."""
        context = self.self_attention(hidden, attention_mask, training)
        attended = self.attention_layer_norm(
            hidden + self.hidden_dropout(self.attention_output(context), training=training))
        intermediate = self.activation(self.intermediate(attended))
        return self.output_layer_norm(
            attended + self.hidden_dropout(self.output_dense(intermediate), training=training))


def attention_bias_from_mask(attention_mask: tf.Tensor) -> tf.Tensor:
    """[batch, seq] 1/0 mask -> additive float32 bias [batch, 1, 1, seq] for attention scores."""
    mask = tf.cast(attention_mask, tf.float32)
    return (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * ATTENTION_MASK_BIAS


class ElectraModel(keras.Model):
    """The ELECTRA encoder: embeddings, optional `embeddings_project`, transformer layers.

    `embeddings` may be passed in to share one embedding block between generator and
    discriminator (SPEC section 4).
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
        all_hidden = [hidden]
        for layer in self.encoder_layers:
            hidden = layer(hidden, attention_mask, training=training)
            all_hidden.append(hidden)
        outputs: dict[str, Any] = {"last_hidden_state": hidden}
        if output_hidden_states:
            outputs["hidden_states"] = tuple(all_hidden)
        return outputs


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
        """hidden [..., hidden_size] -> float32 logits [..., vocab_size]."""
        projected = self.layer_norm(tf.nn.gelu(self.dense(hidden), approximate=False))
        table = tf.cast(self.embeddings.word_embeddings, projected.dtype)
        logits = tf.matmul(projected, table, transpose_b=True)
        return tf.cast(logits + self.output_bias, tf.float32)


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
    """Generator + discriminator for replaced-token detection (SPEC section 4).

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
        num_rows = tf.shape(input_ids)[0]
        masking_seed, sampling_seed = (pretrain_utils.row_seeds(s, first_row, num_rows)
                                       for s in pretrain_utils.split_seed(seed, 2))
        max_predictions = pretrain_utils.max_predictions_per_seq(objective.mask_prob, input_ids.shape[1])
        masked = pretrain_utils.mask_tokens(input_ids, input_mask, objective.mask_prob, max_predictions,
                                            seed=masking_seed)
        generator_hidden = self.generator.electra(
            masked.masked_input_ids, input_mask, segment_ids, training=training)["last_hidden_state"]
        generator_logits = self.generator.generator_predictions(
            pretrain_utils.gather_positions(generator_hidden, masked.masked_positions))
        sampled_ids = pretrain_utils.sample_replacements(
            generator_logits, masked.masked_ids, seed=sampling_seed, temperature=objective.temperature,
            disallow_correct=objective.disallow_correct)
        fake_input_ids, labels = pretrain_utils.replace_and_label(
            input_ids, masked.masked_positions, sampled_ids, masked.masked_weights)
        discriminator_logits = self.discriminator(
            fake_input_ids, input_mask, segment_ids, training=training)["logits"]
        generator_loss = masked_lm_loss(generator_logits, masked.masked_ids, masked.masked_weights)
        discriminator_loss = replaced_token_loss(discriminator_logits, labels, input_mask)
        return {
            "total_loss": objective.generator_weight * generator_loss
                          + objective.discriminator_weight * discriminator_loss,
            "generator_loss": generator_loss,
            "discriminator_loss": discriminator_loss,
            "masked_weights": masked.masked_weights,
            "masked_lm_correct": tf.cast(
                tf.equal(tf.argmax(generator_logits, -1, output_type=tf.int32), masked.masked_ids), tf.float32),
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
