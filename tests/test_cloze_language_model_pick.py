"""scripts/cloze_language_model_pick.py: its candidate scores are transformers' masked-LM
log-probabilities, and its three scores are right on hand-checked questions."""
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
from modeling import ElectraDiscriminator, ElectraGenerator
from tokenization import WordPieceTokenizer
from test_modeling import perturb_keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import cloze_language_model_pick as pick  # noqa: E402

CONFIG = ElectraConfig(vocab_size=30522, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, max_position_embeddings=64)
# Every long word of the context but "opinion" and the question's own is a possible answer.
CONTEXT = "She was perfectly decided in her opinion, and she wondered whether anybody was unpersuadable."
QUESTIONS = [("was perfectly _ in her opinion,", "decided"),  # possible: decided wondered whether anybody unpersuadable
             ("and she _ whether anybody", "wondered")]  # possible: perfectly decided opinion wondered unpersuadable


def cloze_file(path: Path, questions=QUESTIONS) -> Path:
    qas = [{"id": f"q{i}", "question": question, "answers": [{"text": answer, "answer_start": CONTEXT.index(answer)}]}
           for i, (question, answer) in enumerate(questions)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": CONTEXT, "qas": qas}]}]}))
    return path


def test_candidate_scores_are_transformers_masked_lm_log_probabilities(tmp_path: Path, vocab_file: Path) -> None:
    """A candidate's score is the sum of its pieces' log-softmax, each at its own [MASK] of the
    question, as transformers' ElectraForMaskedLM computes it for the same folder, whatever the
    batch (padding) the question is read in; a word of several pieces is read with as many [MASK]s."""
    generator = ElectraGenerator(CONFIG)
    perturb_keras(generator, seed=5)
    save_model_folder(generator, str(tmp_path / "model"))
    reference = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "model").eval()
    tokenizer = WordPieceTokenizer(str(vocab_file))
    questions, _ = pick.cloze_questions(str(cloze_file(tmp_path / "dev.json")), tokenizer, "words", None)
    assert [q.candidates for q in questions] == [["decided", "wondered", "whether", "anybody", "unpersuadable"],
                                                 ["perfectly", "decided", "opinion", "wondered", "unpersuadable"]]
    assert len(questions[0].candidate_ids[-1]) == 4  # un ##pers ##ua ##dable: four [MASK]s
    loaded, _ = pick.load_generator(str(tmp_path / "model"))
    for batch_size in (1, 64):
        ours = pick.candidate_scores(loaded, questions, tokenizer, batch_size)
        for question, scores in zip(questions, ours):
            for ids, score in zip(question.candidate_ids, scores):
                input_ids, first = pick.masked_inputs(question, len(ids), tokenizer)
                with torch.no_grad():
                    logits = reference(input_ids=torch.tensor([input_ids])).logits[0].double()
                log_probs = torch.log_softmax(logits, dim=-1)
                theirs = sum(log_probs[first + piece, token].item() for piece, token in enumerate(ids))
                assert score == pytest.approx(theirs, abs=1e-4), (question.qas_id, ids)


def test_scores_on_hand_checked_questions(tmp_path: Path, vocab_file: Path, capsys) -> None:
    """A generator whose vocabulary bias makes "decided" certain picks it for both questions:
    right once (EM 50). The first possible answer is "decided" and "perfectly": right once (50).
    A uniform pick among five words, the answer one of them: 20 expected."""
    generator = ElectraGenerator(CONFIG)
    bias = np.zeros(CONFIG.vocab_size, np.float32)
    bias[WordPieceTokenizer(str(vocab_file)).convert_tokens_to_ids(["decided"])[0]] = 50.0
    generator.generator_predictions.output_bias.assign(bias)
    save_model_folder(generator, str(tmp_path / "model"))
    output = tmp_path / "scores.json"
    assert pick.main(["--model", str(tmp_path / "model"), "--squad_file", str(cloze_file(tmp_path / "dev.json")),
                      "--blank", "words", "--vocab_file", str(vocab_file), "--output_json", str(output)]) == 0
    scores = json.loads(output.read_text())
    assert scores == {"language model's pick": {"exact_match": 50.0, "f1": 50.0},
                      "uniform pick (expected)": {"exact_match": pytest.approx(20.0), "f1": pytest.approx(20.0)},
                      "first of them": {"exact_match": 50.0, "f1": 50.0}}
    lines = capsys.readouterr().out.splitlines()
    assert "2 questions, 5.0 possible answers a question on average (0 with none)" in lines[0]
    assert lines[1].split()[-4:] == ["EM", "50.0", "F1", "50.0"]


def test_a_folder_without_a_masked_lm_head_is_one_error_line(tmp_path: Path, vocab_file: Path, caplog) -> None:
    save_model_folder(ElectraDiscriminator(CONFIG), str(tmp_path / "discriminator"))
    with caplog.at_level(logging.ERROR):
        assert pick.main(["--model", str(tmp_path / "discriminator"), "--squad_file",
                          str(cloze_file(tmp_path / "dev.json")), "--blank", "words"]) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "holds no masked-LM head" in errors[0] and "discriminator" in errors[0]


def test_a_question_without_one_blank_is_named(tmp_path: Path, vocab_file: Path, caplog) -> None:
    save_model_folder(ElectraGenerator(CONFIG), str(tmp_path / "model"))
    squad = cloze_file(tmp_path / "dev.json", [QUESTIONS[0], ("Who wondered whether anybody was unpersuadable?", "She")])
    with caplog.at_level(logging.ERROR):
        assert pick.main(["--model", str(tmp_path / "model"), "--squad_file", str(squad), "--blank", "words",
                          "--vocab_file", str(vocab_file)]) == 1
    assert [r.getMessage() for r in caplog.records if "question q1 has 0 '_' blanks, not one" in r.getMessage()]


def test_counts_below_one_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pick.main(["--model", "m", "--squad_file", "f", "--blank", "words", "--batch_size", "0"])
    assert exit_info.value.code == 2
    assert "--batch_size must be 1 or more, got 0" in capsys.readouterr().err


def test_an_unwritable_output_json_is_one_error_line(tmp_path: Path, vocab_file: Path, caplog) -> None:
    save_model_folder(ElectraGenerator(CONFIG), str(tmp_path / "model"))
    unwritable = tmp_path / "no_such_folder" / "scores.json"
    with caplog.at_level(logging.ERROR):
        assert pick.main(["--model", str(tmp_path / "model"), "--squad_file", str(cloze_file(tmp_path / "dev.json")),
                          "--blank", "words", "--vocab_file", str(vocab_file), "--output_json", str(unwritable)]) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(unwritable) in errors[0]
