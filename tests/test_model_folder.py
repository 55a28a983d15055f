"""Model folders: resolution from the Hugging Face cache, partial loads, and bad folders."""
from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from configuration import ElectraConfig
from model_folder import (ModelFolderError, load_model_folder, read_config, read_qa_head_settings,
                          resolve_model_folder, save_model_folder)
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



# ----------------------------------------------------------------------------- malformed weights and config

def _torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


class _RunsCode:
    """A pickle that would create `path` if loading ran code (torch.load without weights_only)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("make, message", [
    (lambda state, tmp: _torch_bytes(state)[:len(_torch_bytes(state)) // 2],
     r"not a readable PyTorch weights file \(RuntimeError: PytorchStreamReader failed reading zip archive"),
    (lambda state, tmp: b"", r"not a readable PyTorch weights file \(EOFError\)"),
    (lambda state, tmp: bytes(range(256)) * 4, "not a readable PyTorch weights file"),
    (lambda state, tmp: pickle.dumps({k: v.numpy() for k, v in state.items()}),
     r"not a readable PyTorch weights file \(UnpicklingError: Unsupported"),
    (lambda state, tmp: pickle.dumps(_RunsCode(tmp / "ran")), r"not a readable PyTorch weights file \(UnpicklingError"),
    (lambda state, tmp: _torch_bytes(list(state.values())), "holds an object of type list, expected a dict of tensors"),
    (lambda state, tmp: _torch_bytes({"model": state}), "entry 'model' holds an object of type dict"),
    (lambda state, tmp: _torch_bytes({**state, "step": 3}), "entry 'step' holds an object of type int"),
    (lambda state, tmp: _torch_bytes({**state, 7: torch.zeros(1)}), "entry 7 holds an object of type Tensor"),
    (lambda state, tmp: _torch_bytes({**state, "c": torch.zeros(2, dtype=torch.complex64)}),
     "tensor c holds torch.complex64 values, expected real numbers"),
    (lambda state, tmp: _torch_bytes({**state, "electra.embeddings.LayerNorm.weight": torch.tensor([1.0, float("inf")])}),
     "tensor electra.embeddings.LayerNorm.weight has 1 of 2 values that are NaN, infinite"),
], ids=["truncated", "empty", "garbage", "numpy-pickle", "code-pickle", "list", "nested", "int", "int-key",
        "complex", "infinite"])
def test_malformed_pytorch_weights_are_one_error_naming_the_file(discriminator_folder: Path, tmp_path: Path,
                                                                  make, message: str):
    weights = discriminator_folder / "model.safetensors"
    state = {k: torch.from_numpy(v) for k, v in load_file(str(weights)).items()}
    weights.unlink()
    bin_file = discriminator_folder / "pytorch_model.bin"
    bin_file.write_bytes(make(state, tmp_path))
    with pytest.raises(ModelFolderError, match=f"^{re.escape(str(bin_file))}: {message}"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    assert not (tmp_path / "ran").exists()  # weights_only: nothing in the file ran


@pytest.mark.parametrize("value, message", [
    (np.float32("nan"), "has 1 of 32 values that are NaN, infinite or beyond float32's range"),
    (np.float32("-inf"), "has 1 of 32 values that are NaN, infinite or beyond float32's range"),
])
def test_non_finite_safetensors_are_refused_naming_the_tensor(discriminator_folder: Path, value, message: str):
    weights = discriminator_folder / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["electra.embeddings.LayerNorm.bias"][5] = value
    save_file(tensors, str(weights))
    with pytest.raises(ModelFolderError,
                       match=f"^{re.escape(str(weights))}: tensor electra.embeddings.LayerNorm.bias {message}"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)


def test_weights_that_are_not_finite_are_never_written(discriminator_folder: Path, tmp_path: Path):
    """A diverged run's model: no new folder, and an existing folder keeps its files."""
    model, _ = load_model_folder(str(discriminator_folder), ElectraDiscriminator)
    before = {p.name: p.read_bytes() for p in discriminator_folder.iterdir()}
    kernel = model.electra.encoder_layers[1].query.kernel
    value = kernel.numpy()
    value[0, 3] = np.nan
    kernel.assign(value)
    for folder in (tmp_path / "new", discriminator_folder):
        with pytest.raises(ModelFolderError, match=(
                f"^the ElectraDiscriminator to write to {re.escape(str(folder))}: tensor "
                r"electra.encoder.layer.1.attention.self.query.weight has 1 of 4096 values that are NaN or infinite: "
                "the run that trained it diverged; refusing to write a model folder of it")):
            save_model_folder(model, str(folder))
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in discriminator_folder.iterdir()} == before


def test_float64_beyond_float32_range_is_refused(discriminator_folder: Path):
    weights = discriminator_folder / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["electra.embeddings.LayerNorm.bias"] = tensors["electra.embeddings.LayerNorm.bias"].astype(np.float64)
    tensors["electra.embeddings.LayerNorm.bias"][0] = 1e300
    save_file(tensors, str(weights))
    with pytest.raises(ModelFolderError, match="LayerNorm.bias has 1 of 32 values"):
        load_model_folder(str(discriminator_folder), ElectraDiscriminator)


@pytest.mark.parametrize("key, value, message", [
    ("layer_norm_eps", float("nan"), "layer_norm_eps must be a positive finite number, got nan"),
    ("hidden_dropout_prob", 1.5, r"hidden_dropout_prob must be a probability in \[0, 1\), got 1.5"),
    ("pad_token_id", "abc", r"pad_token_id must be a token id \(an integer >= 0\), got 'abc'"),
    ("joint_head", "yes", "joint_head must be true or false, got 'yes'"),
    ("beam_size", True, "beam_size must be a positive integer, got True"),
    ("beam_size", 0, "beam_size must be a positive integer, got 0"),
    ("version_2_with_negative", 1, "version_2_with_negative must be true or false, got 1"),
])
def test_config_values_are_checked_when_a_folder_is_read(discriminator_folder: Path, key: str, value, message: str):
    config_file = discriminator_folder / "config.json"
    content = json.loads(config_file.read_text())
    content.update({"joint_head": True, "version_2_with_negative": False, "beam_size": 5, key: value})
    config_file.write_text(json.dumps(content))
    for read in (read_config, read_qa_head_settings):
        with pytest.raises(ValueError, match=f"^{re.escape(str(config_file))}: {message}$"):
            read(str(discriminator_folder))


def test_folder_without_config_has_no_head_settings(discriminator_folder: Path):
    (discriminator_folder / "config.json").unlink()
    assert read_qa_head_settings(str(discriminator_folder)) is None
