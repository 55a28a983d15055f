"""QA heads: shapes and dtypes, the plain head against transformers, the joint head's loss and beam
search against NumPy, p_mask, and loading a discriminator folder into a QA model."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import transformers

import optimization
from configuration import ElectraConfig
from model_folder import ModelFolderError, hf_parameters, load_model_folder, read_qa_head_settings, save_model_folder
from modeling import P_MASK_LOGIT, ElectraDiscriminator, ElectraForQuestionAnswering
from test_modeling import (assert_close, hf_config, load_in_transformers, padded_batch, perturb_keras,
                           perturb_torch, run_torch)

TINY = ElectraConfig(vocab_size=120, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=64)
PARITY_CONFIG = ElectraConfig.from_size("small", num_hidden_layers=2)
BEAM = 3
SEQ = 24


def qa_model(joint_head: bool, version_2: bool, config: ElectraConfig = TINY, dtype: str | None = None,
             seed: int = 0) -> ElectraForQuestionAnswering:
    model = ElectraForQuestionAnswering(config, joint_head=joint_head, version_2=version_2, beam_size=BEAM,
                                        dtype=dtype)
    perturb_keras(model, seed=seed)
    return model


def qa_batch(seed: int = 0, batch: int = 3) -> dict[str, np.ndarray]:
    """[CLS] question [SEP] context [SEP] padding, p_mask as squad_utils lays it out."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY.vocab_size, size=(batch, SEQ)).astype(np.int32)
    context_start, lengths = 6, [SEQ, SEQ - 4, SEQ - 7][:batch]
    mask, types, p_mask = (np.zeros_like(ids) for _ in range(3))
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, context_start - 1], ids[row, length - 1] = 101 % TINY.vocab_size, 2, 3
        ids[row, length:] = 0
        mask[row, :length] = 1
        types[row, context_start:length] = 1
        p_mask[row] = 1
        p_mask[row, 0] = 0
        p_mask[row, context_start:length - 1] = 0
    return {"input_ids": ids, "input_mask": mask, "segment_ids": types, "p_mask": p_mask,
            "start_position": np.array([0, 8, 10][:batch]), "end_position": np.array([0, 11, 10][:batch]),
            "is_impossible": np.array([1, 0, 0][:batch])}


def infer(model: ElectraForQuestionAnswering, batch: dict[str, np.ndarray], p_mask=None) -> dict[str, np.ndarray]:
    outputs = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                    p_mask=batch["p_mask"] if p_mask is None else p_mask)
    return {k: v.numpy() for k, v in outputs.items()}


# ----------------------------------------------------------------------------- NumPy re-derivation

def numpy_weights(model: ElectraForQuestionAnswering) -> dict[str, np.ndarray]:
    """Hugging Face name -> Keras-layout array (kernels [in, out])."""
    return {name: param.variable.numpy() for name, param in hf_parameters(model).items()}


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def masked(logits: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
    return np.where(p_mask.astype(bool), P_MASK_LOGIT, logits)


class NumpyJointHead:
    """The joint head of docs/recipe.md written out in float64 NumPy from the model's weights."""

    def __init__(self, model: ElectraForQuestionAnswering):
        self.w = {k: v.astype(np.float64) for k, v in numpy_weights(model).items()}
        self.eps = model.config.layer_norm_eps

    def start_logits(self, hidden: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
        w = self.w
        return masked((hidden @ w["qa_head.start_logits.dense.weight"])[..., 0]
                      + w["qa_head.start_logits.dense.bias"][0], p_mask)

    def end_logits(self, hidden: np.ndarray, start_state: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
        """hidden [seq, H], start_state [H] -> [seq] for one example."""
        w = self.w
        joint = np.concatenate([hidden, np.broadcast_to(start_state, hidden.shape)], axis=-1)
        x = np.tanh(joint @ w["qa_head.end_logits.dense_0.weight"] + w["qa_head.end_logits.dense_0.bias"])
        x = layer_norm(x, w["qa_head.end_logits.LayerNorm.weight"], w["qa_head.end_logits.LayerNorm.bias"], self.eps)
        return masked((x @ w["qa_head.end_logits.dense_1.weight"])[:, 0] + w["qa_head.end_logits.dense_1.bias"][0],
                      p_mask)

    def cls_logit(self, start_state: np.ndarray, cls_state: np.ndarray) -> float:
        w = self.w
        x = np.tanh(np.concatenate([start_state, cls_state]) @ w["qa_head.answer_class.dense_0.weight"]
                    + w["qa_head.answer_class.dense_0.bias"])
        return float((x @ w["qa_head.answer_class.dense_1.weight"])[0])


def hidden_states(model: ElectraForQuestionAnswering, batch: dict[str, np.ndarray]) -> np.ndarray:
    return model.electra(batch["input_ids"], batch["input_mask"], batch["segment_ids"])[
        "last_hidden_state"].numpy().astype(np.float64)


def cross_entropy(logits: np.ndarray, target: int) -> float:
    return float(-log_softmax(logits, 0)[target])


# ----------------------------------------------------------------------------- shapes and dtypes

@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("joint_head,version_2", [(True, True), (True, False), (False, False)])
def test_output_shapes_and_dtypes(joint_head: bool, version_2: bool, dtype: str) -> None:
    model = qa_model(joint_head, version_2, dtype=dtype)
    batch = qa_batch()
    outputs = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], p_mask=batch["p_mask"])
    if joint_head:
        expected = {"start_top_log_probs": ((3, BEAM), "float32"), "start_top_index": ((3, BEAM), "int32"),
                    "end_top_log_probs": ((3, BEAM, BEAM), "float32"), "end_top_index": ((3, BEAM, BEAM), "int32")}
        if version_2:
            expected["cls_logits"] = ((3,), "float32")
    else:
        expected = {"start_logits": ((3, SEQ), "float32"), "end_logits": ((3, SEQ), "float32")}
    assert {k: (tuple(v.shape), v.dtype.name) for k, v in outputs.items()} == expected
    losses = model.training_losses(batch, training=True)
    assert all(v.dtype.name == "float32" and v.shape == () and np.isfinite(v.numpy()) for v in losses.values())
    assert ("answer_class_loss" in losses) == version_2
    assert {v.dtype for v in model.trainable_variables} == {"float32"}


def test_head_variables_get_the_task_head_learning_rate() -> None:
    model = qa_model(True, True)
    multipliers = optimization.layerwise_lr_multipliers(model.trainable_variables, TINY.num_hidden_layers, 0.8)
    head = {p: m for p, m in multipliers.items() if "/qa_head/" in p}
    assert len(head) == 11 and set(head.values()) == {1.0}
    assert multipliers["electra/embeddings/word_embeddings"] == pytest.approx(0.8 ** 4)
    assert multipliers["electra/layer_1/query/kernel"] == pytest.approx(0.8 ** 2)


# ----------------------------------------------------------------------------- plain head vs transformers

def plain_outputs(model: ElectraForQuestionAnswering, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return {k: v.numpy() for k, v in outputs.items()}


def test_plain_head_loaded_from_transformers_matches(tmp_path: Path) -> None:
    reference = transformers.ElectraForQuestionAnswering(hf_config(PARITY_CONFIG)).eval()
    perturb_torch(reference, seed=5)
    reference.save_pretrained(tmp_path)
    model, report = load_model_folder(str(tmp_path), functools.partial(ElectraForQuestionAnswering, joint_head=False))
    assert report.newly_initialised == [] and report.unused == []
    batch = padded_batch(PARITY_CONFIG.vocab_size, seed=5)
    ours, theirs = plain_outputs(model, batch), run_torch(reference, batch)
    assert_close(ours["start_logits"], theirs.start_logits.numpy(), "start logits")
    assert_close(ours["end_logits"], theirs.end_logits.numpy(), "end logits")


def test_plain_head_saved_here_loads_in_transformers(tmp_path: Path) -> None:
    model = qa_model(False, True, config=PARITY_CONFIG, seed=6)
    save_model_folder(model, str(tmp_path))
    reference = load_in_transformers(transformers.ElectraForQuestionAnswering, tmp_path)
    assert reference.config.architectures == ["ElectraForQuestionAnswering"]
    batch = padded_batch(PARITY_CONFIG.vocab_size, seed=6)
    ours, theirs = plain_outputs(model, batch), run_torch(reference, batch)
    assert_close(ours["start_logits"], theirs.start_logits.numpy(), "start logits")
    assert_close(ours["end_logits"], theirs.end_logits.numpy(), "end logits")


# ----------------------------------------------------------------------------- joint head vs NumPy

@pytest.mark.parametrize("version_2", [True, False])
def test_joint_training_loss_matches_numpy(version_2: bool) -> None:
    model = qa_model(True, version_2, seed=1)
    batch = qa_batch(seed=1)
    losses = {k: float(v) for k, v in model.training_losses(batch, training=False).items()}
    head, hidden = NumpyJointHead(model), hidden_states(model, batch)
    start_losses, end_losses, class_losses = [], [], []
    for row in range(len(hidden)):
        h, p_mask = hidden[row], batch["p_mask"][row]
        start, end = batch["start_position"][row], batch["end_position"][row]
        start_losses.append(cross_entropy(head.start_logits(h, p_mask), start))
        end_losses.append(cross_entropy(head.end_logits(h, h[start], p_mask), end))  # the GOLD start
        if version_2:  # the classifier's start state: the expected one under the start distribution
            start_probs = np.exp(log_softmax(head.start_logits(h, p_mask), 0))
            logit, label = head.cls_logit(start_probs @ h, h[0]), batch["is_impossible"][row]
            class_losses.append(np.log1p(np.exp(-logit)) if label else np.log1p(np.exp(logit)))
    expected = (np.mean(start_losses) + np.mean(end_losses)) / 2 + (0.5 * np.mean(class_losses) if version_2 else 0.0)
    assert losses["start_loss"] == pytest.approx(np.mean(start_losses), rel=1e-5)
    assert losses["end_loss"] == pytest.approx(np.mean(end_losses), rel=1e-5)
    assert losses["total_loss"] == pytest.approx(expected, rel=1e-5)
    if version_2:
        assert losses["answer_class_loss"] == pytest.approx(np.mean(class_losses), rel=1e-5)


def test_joint_beam_search_matches_numpy_and_conditions_ends_on_each_start() -> None:
    model = qa_model(True, True, seed=2)
    batch = qa_batch(seed=2)
    outputs = infer(model, batch)
    head, hidden = NumpyJointHead(model), hidden_states(model, batch)
    for row in range(len(hidden)):
        h, p_mask = hidden[row], batch["p_mask"][row]
        start_logits = head.start_logits(h, p_mask)
        start_log_probs = log_softmax(start_logits, 0)
        top_starts = np.argsort(-start_log_probs, kind="stable")[:BEAM]
        np.testing.assert_array_equal(outputs["start_top_index"][row], top_starts)
        np.testing.assert_allclose(outputs["start_top_log_probs"][row], start_log_probs[top_starts], rtol=1e-4)
        end_lists = []
        for i, start in enumerate(top_starts):
            end_log_probs = log_softmax(head.end_logits(h, h[start], p_mask), 0)
            top_ends = np.argsort(-end_log_probs, kind="stable")[:BEAM]
            np.testing.assert_array_equal(outputs["end_top_index"][row, i], top_ends)
            np.testing.assert_allclose(outputs["end_top_log_probs"][row, i], end_log_probs[top_ends], rtol=1e-4)
            end_lists.append(tuple(np.round(end_log_probs[top_ends], 4)))
        assert len(set(end_lists)) == BEAM, "each start candidate has its own end distribution"
        start_probs = np.exp(start_log_probs)
        expected_cls = head.cls_logit(start_probs @ h, h[0])  # start state: the expected hidden state
        assert outputs["cls_logits"][row] == pytest.approx(expected_cls, rel=1e-4, abs=1e-5)


def test_changing_the_start_candidates_changes_their_ends() -> None:
    model = qa_model(True, False, seed=3)
    batch = qa_batch(seed=3, batch=1)
    before = infer(model, batch)
    best_start = before["start_top_index"][0, 0]
    p_mask = batch["p_mask"].copy()
    p_mask[0, best_start] = 1  # rule the best start out: the beam shifts by one start
    after = infer(model, batch, p_mask=p_mask)
    np.testing.assert_array_equal(after["start_top_index"][0, :BEAM - 1], before["start_top_index"][0, 1:])
    # A start that stays keeps its ends (minus the position now masked), in the same order ...
    for i in range(BEAM - 1):
        kept = [e for e in before["end_top_index"][0, i + 1] if e != best_start]
        assert list(after["end_top_index"][0, i, :len(kept)]) == kept
    # ... and the start that enters brings an end distribution of its own.
    assert after["start_top_index"][0, BEAM - 1] not in before["start_top_index"][0]
    for i in range(BEAM):
        assert not np.allclose(after["end_top_log_probs"][0, BEAM - 1], before["end_top_log_probs"][0, i], atol=1e-3)


@pytest.mark.parametrize("joint_head", [True, False])
def test_p_mask_positions_are_never_selected(joint_head: bool) -> None:
    model = qa_model(joint_head, True, seed=4)
    batch = qa_batch(seed=4)
    allowed = np.zeros_like(batch["p_mask"])
    allowed[:, [0, 9, 10, 11, 12, 13]] = 1
    unmasked = infer(model, batch, p_mask=np.zeros_like(batch["p_mask"]))
    outputs = infer(model, batch, p_mask=1 - allowed)
    if joint_head:
        picked = [np.concatenate([o["start_top_index"].ravel(), o["end_top_index"].ravel()])
                  for o in (unmasked, outputs)]
        assert not np.isin(picked[0], np.flatnonzero(allowed[0])).all(), "masking must change the choice"
        for row in range(len(allowed)):
            chosen = np.concatenate([outputs["start_top_index"][row].ravel(), outputs["end_top_index"][row].ravel()])
            assert allowed[row, chosen].all(), row
    else:
        for name in ("start_logits", "end_logits"):
            assert (outputs[name][allowed == 0] == P_MASK_LOGIT).all()
            np.testing.assert_allclose(outputs[name][allowed == 1], unmasked[name][allowed == 1], rtol=1e-6)


# ----------------------------------------------------------------------------- model folders

@pytest.mark.parametrize("joint_head", [True, False])
def test_discriminator_folder_loads_into_a_qa_model_with_a_new_head(joint_head: bool, tmp_path: Path) -> None:
    discriminator = ElectraDiscriminator(TINY)
    perturb_keras(discriminator, seed=7)
    save_model_folder(discriminator, str(tmp_path))
    model, report = load_model_folder(
        str(tmp_path), functools.partial(ElectraForQuestionAnswering, joint_head=joint_head, version_2=True))
    head_names = sorted(n for n in hf_parameters(model) if not n.startswith("electra."))
    assert sorted(report.newly_initialised) == head_names
    assert head_names[0].startswith("qa_head." if joint_head else "qa_outputs.")
    assert report.unused == ["discriminator_predictions.dense.bias", "discriminator_predictions.dense.weight",
                             "discriminator_predictions.dense_prediction.bias",
                             "discriminator_predictions.dense_prediction.weight"]
    for a, b in zip(model.electra.weights, discriminator.electra.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_joint_head_folder_round_trips_with_its_settings(tmp_path: Path) -> None:
    model = qa_model(True, True, seed=8)
    save_model_folder(model, str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["ElectraForQuestionAnsweringJointHead"]
    settings = read_qa_head_settings(str(tmp_path))
    assert settings == {"joint_head": True, "version_2_with_negative": True, "beam_size": BEAM}
    loaded, report = load_model_folder(str(tmp_path), functools.partial(
        ElectraForQuestionAnswering, joint_head=True, version_2=True, beam_size=settings["beam_size"]))
    assert report.newly_initialised == [] and report.unused == []
    batch = qa_batch(seed=8)
    for name, value in infer(model, batch).items():
        np.testing.assert_array_equal(infer(loaded, batch)[name], value, err_msg=name)


def test_plain_head_folder_does_not_load_into_a_joint_head_model(tmp_path: Path) -> None:
    save_model_folder(qa_model(False, False), str(tmp_path))
    with pytest.raises(ModelFolderError, match="unexpected qa_outputs.weight"):
        load_model_folder(str(tmp_path), functools.partial(ElectraForQuestionAnswering, joint_head=True))
