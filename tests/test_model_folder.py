"""Model folders: resolution from the Hugging Face cache, partial loads, and bad folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from configuration import ElectraConfig
from model_folder import ModelFolderError, load_model_folder, resolve_model_folder, save_model_folder
from modeling import ElectraDiscriminator, ElectraGenerator, ElectraModel

TINY = ElectraConfig(vocab_size=120, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=32)


@pytest.fixture()
def discriminator_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "discriminator"
    save_model_folder(ElectraDiscriminator(TINY), str(folder))
    return folder


def all_weights(model) -> list[np.ndarray]:
    return [v.numpy() for v in model.weights]


def test_saved_folder_round_trips_every_tensor(discriminator_folder: Path):
    original = ElectraDiscriminator(TINY)
    save_model_folder(original, str(discriminator_folder))
    loaded, report = load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    assert report.newly_initialised == [] and report.unused == []
    assert len(loaded.weights) == len(original.weights)
    for a, b in zip(all_weights(loaded), all_weights(original)):
        np.testing.assert_array_equal(a, b)


def test_bare_encoder_from_a_discriminator_folder_reports_the_unused_head(discriminator_folder: Path):
    encoder, report = load_model_folder(str(discriminator_folder), ElectraModel)
    assert report.unused == ["discriminator_predictions.dense.bias", "discriminator_predictions.dense.weight",
                             "discriminator_predictions.dense_prediction.bias",
                             "discriminator_predictions.dense_prediction.weight"]
    reference, _ = load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    for a, b in zip(all_weights(encoder), all_weights(reference.electra)):
        np.testing.assert_array_equal(a, b)


def test_wrongly_shaped_tensor_is_named(discriminator_folder: Path):
    weights = discriminator_folder / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["electra.encoder.layer.1.intermediate.dense.weight"] = np.zeros((100, 64), np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(ModelFolderError) as error:
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    message = str(error.value)
    assert str(discriminator_folder) in message
    assert "wrong shape electra.encoder.layer.1.intermediate.dense.weight: file (100, 64), " \
           "model expects (128, 64)" in message


def test_missing_and_unexpected_tensors_are_listed_together(discriminator_folder: Path):
    weights = discriminator_folder / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["electra.embeddings.LayerNorm.weight"]
    tensors["electra.pooler.dense.weight"] = np.zeros((64, 64), np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(ModelFolderError) as error:
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    assert "missing electra.embeddings.LayerNorm.weight (32,)" in str(error.value)
    assert "unexpected electra.pooler.dense.weight (64, 64)" in str(error.value)


def test_generator_folder_does_not_fit_a_discriminator(tmp_path: Path):
    save_model_folder(ElectraGenerator(TINY), str(tmp_path))
    with pytest.raises(ModelFolderError, match="missing discriminator_predictions.dense.weight"):
        load_model_folder(str(tmp_path), ElectraDiscriminator)


def test_untied_generator_output_weight_is_refused(tmp_path: Path):
    save_model_folder(ElectraGenerator(TINY), str(tmp_path))
    weights = tmp_path / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["generator_lm_head.weight"] = tensors["electra.embeddings.word_embeddings.weight"] + 1.0
    save_file(tensors, str(weights))
    with pytest.raises(ModelFolderError, match="differs from the word embeddings"):
        load_model_folder(str(tmp_path), ElectraGenerator)


def test_malformed_config_and_weights_name_the_file(discriminator_folder: Path):
    (discriminator_folder / "config.json").write_text("{ broken")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)


def test_corrupt_safetensors_names_the_file(discriminator_folder: Path):
    (discriminator_folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFolderError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)


def test_folder_without_weights_is_a_clear_error(discriminator_folder: Path):
    (discriminator_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)


def test_pytorch_weights_file_is_read_when_there_is_no_safetensors(discriminator_folder: Path):
    weights = discriminator_folder / "model.safetensors"
    state = {k: torch.from_numpy(v) for k, v in load_file(str(weights)).items()}
    torch.save(state, discriminator_folder / "pytorch_model.bin")
    expected, _ = load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    weights.unlink()
    loaded, _ = load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    for a, b in zip(all_weights(loaded), all_weights(expected)):
        np.testing.assert_array_equal(a, b)


def make_hub_cache(cache: Path, name: str, source: Path) -> Path:
    """The layout transformers leaves behind: refs/main names a snapshot folder."""
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_released_name_resolves_from_the_local_hub_cache(tmp_path: Path, discriminator_folder: Path):
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(cache, "google/electra-small-discriminator", discriminator_folder)
    assert resolve_model_folder("google/electra-small-discriminator", str(cache)) == str(snapshot)
    model, _ = load_model_folder("google/electra-small-discriminator", cache_dir=str(cache))
    assert model.config == TINY


def test_unknown_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model_folder(str(tmp_path / "absent"))

