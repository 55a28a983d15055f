"""The Keras ELECTRA against transformers' PyTorch ELECTRA, in both directions of conversion."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

from configuration import ElectraConfig
from model_folder import hf_parameters, load_model_folder, save_model_folder
from modeling import Dropout, ElectraDiscriminator, ElectraGenerator, ElectraModel, gelu_exact, skip_padding_in_training

PARITY_TOLERANCE = 1e-4
# Every tensor, biases and LayerNorm included, is redrawn at this scale so that a swapped or
# untransposed tensor changes the outputs, while activations keep a realistic O(1) size.
PERTURBATION_STD = 0.05
CONFIGS = {
    "small": ElectraConfig.from_size("small"),
    "base_width_2_layers": ElectraConfig.from_size("base", num_hidden_layers=2),
}
EXPECTED_PARAMETERS = {"small": 13_549_057, "base": 109_483_009, "large": 335_142_913}


def padded_batch(vocab_size: int, lengths=(24, 17, 9), seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids with [CLS]/[SEP], two segments and zero padding after each length."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(1000, vocab_size, size=(len(lengths), seq))
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, length - 1] = 101, 102
        ids[row, length:] = 0
        mask[row, :length] = 1
        types[row, length // 2:length] = 1
    return {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32),
            "token_type_ids": types.astype(np.int32)}


def perturb_torch(model: torch.nn.Module, seed: int = 0) -> None:
    """Redraw every weight (see PERTURBATION_STD); LayerNorm scales stay around 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * PERTURBATION_STD
            param.copy_(1.0 + noise if "LayerNorm.weight" in name else noise)


def perturb_keras(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, param in hf_parameters(model).items():
        noise = rng.normal(0.0, PERTURBATION_STD, size=param.variable.shape).astype(np.float32)
        param.variable.assign(1.0 + noise if "LayerNorm.weight" in name else noise)


def hf_config(config: ElectraConfig) -> transformers.ElectraConfig:
    return transformers.ElectraConfig(**config.to_dict())


def run_torch(model: torch.nn.Module, batch: dict[str, np.ndarray]):
    inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


def run_keras(model: keras.Model, batch: dict[str, np.ndarray]) -> dict:
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                 output_hidden_states=True)


def assert_close(ours, theirs, what: str, tolerance: float = PARITY_TOLERANCE) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    diff = float(np.max(np.abs(ours - theirs)))
    assert diff <= tolerance, f"{what}: max abs diff {diff}"


def assert_same_outputs(ours: dict, theirs, with_hidden_states: bool = True) -> None:
    assert_close(ours["logits"], theirs.logits.numpy(), "logits")
    if with_hidden_states:
        assert len(ours["hidden_states"]) == len(theirs.hidden_states)
        for i, (a, b) in enumerate(zip(ours["hidden_states"], theirs.hidden_states)):
            assert_close(a, b.numpy(), f"hidden state {i}")
        assert_close(ours["last_hidden_state"], theirs.hidden_states[-1].numpy(), "last hidden state")


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_discriminator_loaded_from_transformers_matches(config_name: str, tmp_path: Path) -> None:
    config = CONFIGS[config_name]
    torch.manual_seed(0)
    reference = transformers.ElectraForPreTraining(hf_config(config)).eval()
    perturb_torch(reference)
    reference.save_pretrained(tmp_path)
    model, report = load_model_folder(str(tmp_path), ElectraDiscriminator)
    assert report.newly_initialised == [] and report.unused == []
    batch = padded_batch(config.vocab_size)
    assert_same_outputs(run_keras(model, batch), run_torch(reference, batch))


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_generator_loaded_from_transformers_matches(config_name: str, tmp_path: Path) -> None:
    config = CONFIGS[config_name].generator_config()
    torch.manual_seed(1)
    reference = transformers.ElectraForMaskedLM(hf_config(config)).eval()
    perturb_torch(reference, seed=1)
    reference.tie_weights()
    reference.save_pretrained(tmp_path)
    model, _ = load_model_folder(str(tmp_path), ElectraGenerator)
    batch = padded_batch(config.vocab_size, seed=1)
    assert_same_outputs(run_keras(model, batch), run_torch(reference, batch))


def load_in_transformers(model_class, folder: Path) -> torch.nn.Module:
    model, info = model_class.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_discriminator_saved_here_loads_in_transformers(config_name: str, tmp_path: Path) -> None:
    config = CONFIGS[config_name]
    model = ElectraDiscriminator(config)
    perturb_keras(model, seed=2)
    save_model_folder(model, str(tmp_path))
    reference = load_in_transformers(transformers.ElectraForPreTraining, tmp_path)
    batch = padded_batch(config.vocab_size, seed=2)
    assert_same_outputs(run_keras(model, batch), run_torch(reference, batch))


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_generator_saved_here_loads_in_transformers(config_name: str, tmp_path: Path) -> None:
    config = CONFIGS[config_name].generator_config()
    model = ElectraGenerator(config)
    perturb_keras(model, seed=3)
    save_model_folder(model, str(tmp_path))
    reference = load_in_transformers(transformers.ElectraForMaskedLM, tmp_path)
    batch = padded_batch(config.vocab_size, seed=3)
    assert_same_outputs(run_keras(model, batch), run_torch(reference, batch))


def test_bare_encoder_round_trips_through_transformers(tmp_path: Path) -> None:
    config = CONFIGS["small"]
    model = ElectraModel(config)
    perturb_keras(model, seed=4)
    save_model_folder(model, str(tmp_path))
    reference = load_in_transformers(transformers.ElectraModel, tmp_path)
    batch = padded_batch(config.vocab_size, seed=4)
    ours = run_keras(model, batch)
    theirs = run_torch(reference, batch)
    assert_close(ours["last_hidden_state"], theirs.last_hidden_state.numpy(), "last hidden state")
    for i, (a, b) in enumerate(zip(ours["hidden_states"], theirs.hidden_states)):
        assert_close(a, b.numpy(), f"hidden state {i}")


def test_padding_does_not_change_real_positions() -> None:
    """Outputs at real tokens are the same whatever the amount of padding after them."""
    config = ElectraConfig.from_size("small", num_hidden_layers=2)
    model = ElectraDiscriminator(config)
    perturb_keras(model, seed=5)
    short = padded_batch(config.vocab_size, lengths=(9, 9), seed=5)
    long = {k: np.pad(v, [(0, 0), (0, 15)]) for k, v in short.items()}
    logits_short = run_keras(model, short)["logits"].numpy()
    logits_long = run_keras(model, long)["logits"].numpy()[:, :9]
    assert_close(logits_short, logits_long, "logits at real tokens", tolerance=1e-5)


def training_pass(model: ElectraDiscriminator, batch: dict[str, np.ndarray], skip_padding: bool) -> tuple[dict, list]:
    """A training-mode forward pass and the gradient of every weight for a loss over real tokens."""
    skip_padding_in_training(model, skip_padding)
    real = tf.cast(batch["attention_mask"], tf.float32)
    with tf.GradientTape() as tape:
        outputs = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], training=True,
                        output_hidden_states=True)
        loss = tf.reduce_sum(tf.sin(outputs["logits"]) * real)
    return outputs, [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_training_on_real_tokens_only_gives_the_padded_encoders_outputs_and_gradients() -> None:
    """RealTokens leaves the padding out of the position-wise work: every hidden state at the
    real tokens and every weight's gradient must be those of the padded computation, and the
    padding comes out as zeros. Dropout is off so that both passes draw nothing."""
    config = ElectraConfig.from_size("small", num_hidden_layers=2, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = ElectraDiscriminator(config)
    perturb_keras(model, seed=7)
    batch = padded_batch(config.vocab_size, lengths=(24, 17, 9, 3), seed=7)
    padded, padded_gradients = training_pass(model, batch, skip_padding=False)
    unpadded, unpadded_gradients = training_pass(model, batch, skip_padding=True)
    real = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(padded["hidden_states"], unpadded["hidden_states"])):
        assert_close(b.numpy()[real], a.numpy()[real], f"hidden state {i} at real tokens", tolerance=1e-5)
        assert not np.any(b.numpy()[~real]), f"hidden state {i} is not zero at the padding"
    assert_close(unpadded["logits"].numpy()[real], padded["logits"].numpy()[real], "logits", tolerance=1e-5)
    assert len(padded_gradients) == len(unpadded_gradients) == len(model.trainable_variables)
    for variable, a, b in zip(model.trainable_variables, padded_gradients, unpadded_gradients):
        assert_close(b, a, f"gradient of {variable.path}", tolerance=1e-5)


def test_generator_and_discriminator_can_share_embeddings() -> None:
    config = ElectraConfig.from_size("small", num_hidden_layers=1)
    discriminator = ElectraDiscriminator(config)
    generator = ElectraGenerator(config.generator_config(), embeddings=discriminator.electra.embeddings)
    assert generator.electra.embeddings is discriminator.electra.embeddings
    shared = {id(v) for v in discriminator.weights} & {id(v) for v in generator.weights}
    assert len(shared) == 5  # word, position, token-type embeddings and the LayerNorm pair
    # The generator projects the shared 128-wide embeddings to its own 64-wide hidden size.
    assert tuple(generator.electra.embeddings_project.kernel.shape) == (128, 64)


@pytest.mark.parametrize("size", sorted(EXPECTED_PARAMETERS))
def test_parameter_counts_match_transformers(size: str) -> None:
    """Counted from shapes: neither model allocates its weights."""
    config = ElectraConfig.from_size(size)
    with keras.StatelessScope(initialize_variables=False):
        ours = ElectraDiscriminator(config)
    our_count = sum(int(np.prod(v.shape)) for v in ours.weights)
    with torch.device("meta"):
        reference = transformers.ElectraForPreTraining(hf_config(config))
    their_count = sum(p.numel() for p in reference.parameters())
    assert our_count == their_count == EXPECTED_PARAMETERS[size]


# Relative to the largest float32 output: about 5x the dtype's epsilon (float16 9.8e-4,
# bfloat16 7.8e-3); measured here 1.5e-3 and 1.7e-2 on a 4-layer small model.
@pytest.mark.parametrize("policy, relative_tolerance", [("mixed_float16", 5e-3), ("mixed_bfloat16", 5e-2)])
def test_mixed_precision_agrees_with_float32(policy: str, relative_tolerance: float) -> None:
    config = ElectraConfig.from_size("small", num_hidden_layers=4)
    reference = ElectraDiscriminator(config)
    perturb_keras(reference, seed=6)
    model = ElectraDiscriminator(config, dtype=policy)
    model.set_weights(reference.get_weights())
    batch = padded_batch(config.vocab_size, seed=6)
    ours = run_keras(model, batch)
    expected = run_keras(reference, batch)
    assert ours["logits"].dtype == tf.float32
    assert ours["last_hidden_state"].dtype == tf.as_dtype(policy.split("_")[1])
    assert all(v.dtype == "float32" for v in model.weights)
    for name in ("logits", "last_hidden_state"):
        scale = float(np.max(np.abs(expected[name])))
        assert_close(tf.cast(ours[name], tf.float32), expected[name], f"{policy} {name}",
                     relative_tolerance * scale)


# Relative to the largest eager output; measured here: float32 6e-7, float16 7e-4, bfloat16 1e-2.
@pytest.mark.parametrize("policy, relative_tolerance",
                         [("float32", 1e-5), ("mixed_float16", 5e-3), ("mixed_bfloat16", 5e-2)])
def test_xla_compiled_forward_agrees_with_eager(policy: str, relative_tolerance: float) -> None:
    config = ElectraConfig.from_size("small", num_hidden_layers=2)
    discriminator = ElectraDiscriminator(config, dtype=policy)
    perturb_keras(discriminator, seed=7)
    generator = ElectraGenerator(config.generator_config(), embeddings=discriminator.electra.embeddings,
                                 dtype=policy)
    perturb_keras(generator, seed=8)
    batch = padded_batch(config.vocab_size, seed=7)

    @tf.function(jit_compile=True)
    def compiled(ids, mask, types):
        return discriminator(ids, mask, types)["logits"], generator(ids, mask, types)["logits"]

    compiled_outputs = compiled(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    for name, model, compiled_logits in zip(("discriminator", "generator"), (discriminator, generator),
                                            compiled_outputs):
        eager_logits = run_keras(model, batch)["logits"]
        scale = float(np.max(np.abs(eager_logits)))
        assert_close(compiled_logits, eager_logits, f"{name} logits", relative_tolerance * scale)


def test_a_checkpoint_of_the_model_alone_restores_every_weight(tmp_path: Path) -> None:
    """tf.train.Checkpoint does not follow Keras-tracked lists; the encoder layers must be named for it."""
    config = CONFIGS["base_width_2_layers"]
    saved, fresh = ElectraDiscriminator(config), ElectraDiscriminator(config)
    path = tf.train.Checkpoint(model=saved).write(str(tmp_path / "model"))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    for a, b in zip(saved.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_dropout_draws_keras_masks_and_compiles_to_the_same_rate():
    """Dropout names Philox, which Keras's own dropout leaves to TensorFlow: the same masks
    eagerly and in graph mode; compiled, a drop rate within 4 sigma of 0.1 and kept values scaled."""
    inputs = tf.random.stateless_normal([16, 32, 64], (1, 2)) + 3.0
    ours, keras_dropout = Dropout(0.1, seed=5), keras.layers.Dropout(0.1, seed=5)
    graph_ours = tf.function(lambda x: ours(x, training=True))
    graph_keras = tf.function(lambda x: keras_dropout(x, training=True))
    for _ in range(2):
        np.testing.assert_array_equal(ours(inputs, training=True), keras_dropout(inputs, training=True))
        np.testing.assert_array_equal(graph_ours(inputs), graph_keras(inputs))
    compiled = tf.function(lambda x: ours(x, training=True), jit_compile=True)(inputs).numpy()
    dropped = compiled == 0.0
    sigma = np.sqrt(0.1 * 0.9 / dropped.size)
    assert abs(dropped.mean() - 0.1) < 4 * sigma
    np.testing.assert_allclose(compiled[~dropped], inputs.numpy()[~dropped] / 0.9, rtol=1e-6)
    np.testing.assert_array_equal(ours(inputs, training=False), inputs)


@pytest.mark.parametrize("dtype, tolerance", [(tf.float32, 1e-6), (tf.bfloat16, 8e-3)])
def test_gelu_and_its_written_out_gradient_match_autodiff_in_float64(dtype, tolerance):
    x = tf.cast(tf.linspace(-7.0, 7.0, 561), dtype)
    x64 = tf.cast(x, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, x64])
        ours = gelu_exact(x)
        reference = tf.nn.gelu(x64, approximate=False)
    assert ours.dtype == dtype
    np.testing.assert_allclose(tf.cast(ours, tf.float64), reference, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(tf.cast(tape.gradient(ours, x), tf.float64), tape.gradient(reference, x64),
                               rtol=tolerance, atol=tolerance)
