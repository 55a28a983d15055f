"""scripts/attention_matching.py: the attention it reads is transformers' attention, its ratio is
right on a hand-checked case, and it finds a head built to match words."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from configuration import ElectraConfig
from model_folder import save_model_folder
from modeling import ElectraDiscriminator
from test_modeling import assert_close, padded_batch, perturb_keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import attention_matching  # noqa: E402

CONFIG = ElectraConfig(vocab_size=30522, embedding_size=64, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)
CLS, SEP = 101, 102


def test_attention_weights_equal_transformers_attentions(tmp_path: Path) -> None:
    """Every layer's attention_weights, fed the layer's input, is what transformers' eager
    attention returns for the same folder."""
    model = ElectraDiscriminator(CONFIG)
    perturb_keras(model, seed=3)
    save_model_folder(model, str(tmp_path))
    reference = transformers.ElectraModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = padded_batch(CONFIG.vocab_size)
    with torch.no_grad():
        theirs = reference(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()},
                           output_attentions=True).attentions
    encoder, _ = attention_matching.load_encoder(str(tmp_path))
    hidden = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     output_hidden_states=True)["hidden_states"]
    real = batch["attention_mask"].astype(bool)
    for index, layer in enumerate(encoder.encoder_layers):
        ours = layer.attention_weights(hidden[index], batch["attention_mask"]).numpy()
        for row in range(len(real)):  # padded query rows are not compared: nothing reads them
            assert_close(ours[row][:, real[row]], theirs[index][row].numpy()[:, real[row]],
                         f"layer {index}, row {row}", tolerance=1e-5)


def test_matching_sums_on_a_hand_checked_window() -> None:
    """[CLS] 5 6 [SEP] 6 7 [SEP]: only passage token 4 (word 6) has its word in the question
    (position 2). Head 0 gives it 0.1 / 0.5 to question positions 1 / 2: same-word mean 0.5,
    question mean 0.3, ratio 5/3; head 1 attends uniformly: ratio 1."""
    ids = np.array([[CLS, 5, 6, SEP, 6, 7, SEP]])
    segments = np.array([[0, 0, 0, 0, 1, 1, 1]])
    question, same = attention_matching.same_word_masks(ids, segments, np.ones_like(ids), (CLS, SEP, 0))
    assert question.tolist() == [[False, True, True, False, False, False, False]]
    assert np.argwhere(same).tolist() == [[0, 4, 2]]
    attention = np.full((1, 2, 7, 7), 1 / 7)
    attention[0, 0, 4] = [0.0, 0.1, 0.5, 0.0, 0.4, 0.0, 0.0]
    to_same, to_question = attention_matching.matching_sums(attention, question, same)
    np.testing.assert_allclose(to_same, [0.5, 1 / 7])
    np.testing.assert_allclose(to_question, [0.3, 1 / 7])


def word_matching_folder(folder: Path) -> None:
    """Layer 0's head 0 scores a pair by the dot product of the two tokens' embeddings (no
    position or segment in them, so a word meets itself with the highest score); head 1 scores
    every pair 0, so it attends uniformly."""
    model = ElectraDiscriminator(CONFIG)
    embeddings = model.electra.embeddings
    embeddings.position_embeddings.assign(np.zeros(embeddings.position_embeddings.shape, np.float32))
    embeddings.token_type_embeddings.assign(np.zeros(embeddings.token_type_embeddings.shape, np.float32))
    layer = model.electra.encoder_layers[0]
    head_size = CONFIG.hidden_size // CONFIG.num_attention_heads
    kernel = np.zeros((CONFIG.hidden_size, CONFIG.hidden_size), np.float32)
    kernel[np.arange(head_size), np.arange(head_size)] = 2.0
    for projection in (layer.query, layer.key):
        projection.kernel.assign(kernel)
        projection.bias.assign(np.zeros(CONFIG.hidden_size, np.float32))
    save_model_folder(model, str(folder))


def squad_file(path: Path) -> Path:
    """Three cloze questions, each window of a sentence of its passage with one word blanked."""
    items = [("Anne walked slowly to the great house of her sister, and sat down by the window.",
              "walked slowly to the great _ of her sister", "house"),
             ("The letter was read twice before Elizabeth could believe what her father had written.",
              "read twice before Elizabeth could _ what her father", "believe"),
             ("Captain Wentworth said nothing, but his silence was understood by everyone in the room.",
              "but his silence was _ by everyone in the", "understood")]
    paragraphs = [{"context": context, "qas": [{"id": f"q{i}", "question": question, "answers": [
        {"text": answer, "answer_start": context.index(answer)}]}]}
                  for i, (context, question, answer) in enumerate(items)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_finds_the_word_matching_head_and_the_uniform_one(tmp_path: Path, vocab_file: Path, capsys) -> None:
    word_matching_folder(tmp_path / "model")
    output = tmp_path / "ratios.json"
    assert attention_matching.main(["--model", str(tmp_path / "model"), "--squad_file",
                                    str(squad_file(tmp_path / "dev.json")), "--vocab_file", str(vocab_file),
                                    "--output_json", str(output)]) == 0
    ratios = json.loads(output.read_text())
    assert sorted(ratios) == ["0", "1"]
    assert ratios["0"][0] > 3.0, ratios  # the head that matches words
    assert ratios["0"][1] == pytest.approx(1.0, abs=1e-4), ratios  # uniform attention: no preference
    table = capsys.readouterr().out.splitlines()
    assert "(3 questions; 1 = no preference)" in table[0]
    assert table[2].split()[:3] == ["0", f"{ratios['0'][0]:.2f}", "1.00"]


def test_a_missing_squad_file_is_one_error_line(tmp_path: Path, vocab_file: Path, caplog) -> None:
    word_matching_folder(tmp_path / "model")
    missing = tmp_path / "nowhere" / "dev.json"
    with caplog.at_level(logging.ERROR):
        assert attention_matching.main(["--model", str(tmp_path / "model"), "--squad_file", str(missing),
                                        "--vocab_file", str(vocab_file)]) == 1
    assert [record.getMessage() for record in caplog.records if str(missing) in record.getMessage()]


def test_counts_below_one_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        attention_matching.main(["--model", "m", "--squad_file", "f", "--num_questions", "0"])
    assert exit_info.value.code == 2
    assert "--num_questions must be 1 or more, got 0" in capsys.readouterr().err


def test_an_unwritable_output_json_is_one_error_line(tmp_path: Path, vocab_file: Path, caplog) -> None:
    word_matching_folder(tmp_path / "model")
    unwritable = tmp_path / "no_such_folder" / "ratios.json"
    with caplog.at_level(logging.ERROR):
        assert attention_matching.main(["--model", str(tmp_path / "model"), "--squad_file",
                                        str(squad_file(tmp_path / "dev.json")), "--vocab_file", str(vocab_file),
                                        "--output_json", str(unwritable)]) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(unwritable) in errors[0]
