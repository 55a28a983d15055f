"""The sequence classification/regression head against transformers' ElectraForSequenceClassification,
both ways (folders saved by each load in the other with no missing or unexpected tensor and give the
same logits and loss), and a discriminator folder as its starting point."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from configuration import ElectraConfig
from model_folder import ModelFolderError, load_model_folder, read_classifier_labels, save_model_folder
from modeling import ElectraDiscriminator, ElectraForSequenceClassification
from test_modeling import (assert_close, hf_config, load_in_transformers, padded_batch, perturb_keras,
                           perturb_torch)

PARITY_CONFIG = ElectraConfig.from_size("small", num_hidden_layers=2)
TINY = ElectraConfig(vocab_size=120, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=32)
HEADS = {"three_classes": ("contradiction", "entailment", "neutral"), "regression": None}


def transformers_classifier(labels: tuple[str, ...] | None, seed: int) -> transformers.ElectraForSequenceClassification:
    names = labels or ("LABEL_0",)
    config = hf_config(PARITY_CONFIG)
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    config.problem_type = "regression" if labels is None else "single_label_classification"
    torch.manual_seed(seed)
    model = transformers.ElectraForSequenceClassification(config).eval()
    perturb_torch(model, seed=seed)
    return model


def targets(labels: tuple[str, ...] | None, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if labels is None:
        return rng.uniform(0.0, 5.0, rows).astype(np.float32)
    return rng.integers(0, len(labels), rows).astype(np.int32)


def ours_and_theirs(model: ElectraForSequenceClassification, reference: torch.nn.Module,
                    labels: tuple[str, ...] | None, seed: int) -> tuple[dict, dict]:
    """Logits and loss of both models on one padded pair batch."""
    batch = padded_batch(PARITY_CONFIG.vocab_size, seed=seed)
    gold = targets(labels, len(batch["input_ids"]), seed)
    ours = {"logits": model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["logits"].numpy(),
            "loss": float(model.training_losses({"input_ids": batch["input_ids"], "input_mask": batch["attention_mask"],
                                                 "segment_ids": batch["token_type_ids"], "label_ids": gold},
                                                training=False)["total_loss"])}
    inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
    torch_gold = torch.from_numpy(gold if labels is None else gold.astype(np.int64))
    with torch.no_grad():
        output = reference(**inputs, labels=torch_gold)
    return ours, {"logits": output.logits.numpy(), "loss": float(output.loss)}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_classifier_saved_by_transformers_loads_with_the_same_logits_and_loss(head: str, tmp_path: Path) -> None:
    labels = HEADS[head]
    reference = transformers_classifier(labels, seed=11)
    reference.save_pretrained(tmp_path)
    assert read_classifier_labels(str(tmp_path)) == (True, labels)
    model, report = load_model_folder(str(tmp_path), functools.partial(ElectraForSequenceClassification, labels=labels))
    assert report.newly_initialised == [] and report.unused == []
    ours, theirs = ours_and_theirs(model, reference, labels, seed=11)
    assert ours["logits"].shape == (3, len(labels or (0,)))
    assert_close(ours["logits"], theirs["logits"], "logits")
    assert abs(ours["loss"] - theirs["loss"]) <= 1e-4


@pytest.mark.parametrize("head", sorted(HEADS))
def test_classifier_saved_here_loads_in_transformers_with_the_same_logits_and_loss(head: str, tmp_path: Path) -> None:
    labels = HEADS[head]
    model = ElectraForSequenceClassification(PARITY_CONFIG, labels=labels)
    perturb_keras(model, seed=12)
    save_model_folder(model, str(tmp_path))
    reference = load_in_transformers(transformers.ElectraForSequenceClassification, tmp_path)
    config = reference.config
    assert config.architectures == ["ElectraForSequenceClassification"]
    assert config.num_labels == len(labels or (0,))
    assert config.problem_type == ("regression" if labels is None else "single_label_classification")
    if labels is not None:
        assert [config.id2label[i] for i in range(len(labels))] == list(labels)
        assert config.label2id == {name: i for i, name in enumerate(labels)}
    ours, theirs = ours_and_theirs(model, reference, labels, seed=12)
    assert_close(ours["logits"], theirs["logits"], "logits")
    assert abs(ours["loss"] - theirs["loss"]) <= 1e-4


def test_discriminator_folder_starts_a_classifier_with_a_new_head(tmp_path: Path) -> None:
    discriminator = ElectraDiscriminator(TINY)
    perturb_keras(discriminator, seed=13)
    save_model_folder(discriminator, str(tmp_path))
    assert read_classifier_labels(str(tmp_path)) == (False, None)
    model, report = load_model_folder(str(tmp_path), functools.partial(ElectraForSequenceClassification,
                                                                       labels=("a", "b")))
    assert sorted(report.newly_initialised) == ["classifier.dense.bias", "classifier.dense.weight",
                                                "classifier.out_proj.bias", "classifier.out_proj.weight"]
    assert all(name.startswith("discriminator_predictions.") for name in report.unused) and len(report.unused) == 4
    for ours, theirs in zip(model.electra.weights, discriminator.electra.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_classifier_folder_does_not_fit_another_number_of_classes(tmp_path: Path) -> None:
    save_model_folder(ElectraForSequenceClassification(TINY, labels=("a", "b", "c")), str(tmp_path))
    with pytest.raises(ModelFolderError, match=r"wrong shape classifier.out_proj.weight: file \(3, 64\)"):
        load_model_folder(str(tmp_path), functools.partial(ElectraForSequenceClassification, labels=("a", "b")))


def test_inconsistent_id2label_is_reported(tmp_path: Path) -> None:
    save_model_folder(ElectraForSequenceClassification(TINY, labels=("a", "b", "c")), str(tmp_path))
    config_file = tmp_path / "config.json"
    content = json.loads(config_file.read_text())
    content["id2label"] = {"0": "a", "1": "b"}
    config_file.write_text(json.dumps(content))
    with pytest.raises(ModelFolderError, match="id2label names 2 classes, num_labels says 3"):
        read_classifier_labels(str(tmp_path))


def test_dropout_is_active_only_in_training() -> None:
    model = ElectraForSequenceClassification(TINY, labels=("a", "b"))
    input_ids = np.random.default_rng(14).integers(5, TINY.vocab_size, size=(2, 16)).astype(np.int32)
    run = functools.partial(model, input_ids, np.ones_like(input_ids), np.zeros_like(input_ids))
    np.testing.assert_array_equal(run(training=False)["logits"].numpy(), run(training=False)["logits"].numpy())
    assert not np.array_equal(run(training=True)["logits"].numpy(), run(training=True)["logits"].numpy())
