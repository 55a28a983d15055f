"""run_inference.py and run_tf_squad.py on bad inputs: a beam wider than the window, arguments
that are not UTF-8, questions that are empty once normalised, and model folders without
config.json whose architecture --electra_model gives."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import run_inference
import run_tf_squad
from configuration import ElectraConfig
from model_folder import save_model_folder
from modeling import ElectraForQuestionAnswering

TINY = ElectraConfig(vocab_size=30522, embedding_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
FEATURE_FLAGS = ["--max_seq_length", "64", "--doc_stride", "32", "--max_query_length", "16"]
CONTEXT = "Anne walked to Uppercross with Mary and Charles Musgrove on a fine autumn morning."
QUESTION = "Who walked to Uppercross with Mary?"


def qa_folder(folder: Path, config: ElectraConfig, joint_head: bool = True) -> Path:
    """A QA model folder with a (random) head, as run_tf_squad.py writes one."""
    keras.utils.set_random_seed(0)
    model = ElectraForQuestionAnswering(config, joint_head=joint_head, version_2=False, beam_size=5)
    ones = np.ones((1, 8), np.int32)
    model(ones, ones, 0 * ones, p_mask=0 * ones)
    save_model_folder(model, str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return qa_folder(tmp_path_factory.mktemp("tiny_qa"), TINY)


def without_config(folder: Path, destination: Path) -> Path:
    """The folder's weights alone, as a folder someone copied without its config.json."""
    destination.mkdir()
    shutil.copy(folder / "model.safetensors", destination)
    return destination


def inference_args(model: Path, question: str = QUESTION, context: str = CONTEXT, *extra: str) -> list[str]:
    return ["--init_checkpoint", str(model), "--question", question, "--context", context, *FEATURE_FLAGS, *extra]


def inference_error(caplog: pytest.LogCaptureFixture, argv: list[str]) -> str:
    """The one error line run_inference.py logs for `argv` (it must exit 1)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="run_inference"):
        assert run_inference.main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


# ----------------------------------------------------------------------------- the beam and the window

def test_beam_wider_than_the_window_is_one_clear_error(tiny_qa: Path, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture):
    argv = inference_args(tiny_qa, QUESTION, CONTEXT, "--beam_size", "65")
    assert inference_error(caplog, argv) == ("beam_size 65 exceeds max_seq_length 64: the joint head picks its beam "
                                             "among the positions of a window; use a beam of at most 64")
    # The window is capped by the model's max_position_embeddings (128), and so is the beam.
    argv = inference_args(tiny_qa, QUESTION, CONTEXT, "--max_seq_length", "384", "--beam_size", "129")
    assert "beam_size 129 exceeds max_seq_length 128" in inference_error(caplog, argv)
    # The widest beam the window allows answers.
    assert run_inference.answer(run_inference.build_parser().parse_args(
        inference_args(tiny_qa, QUESTION, CONTEXT, "--beam_size", "64")))["text"] in CONTEXT

    with pytest.raises(SystemExit):
        run_tf_squad.parse_args(["--init_checkpoint", str(tiny_qa), "--predict_file", "dev.json", "--do_predict",
                                 "--output_dir", "out", *FEATURE_FLAGS, "--beam_size", "65"])
    assert "beam_size 65 exceeds max_seq_length 64" in capsys.readouterr().err
    run_tf_squad.parse_args(["--init_checkpoint", str(tiny_qa), "--predict_file", "dev.json", "--do_predict",
                             "--output_dir", "out", *FEATURE_FLAGS, "--beam_size", "65", "--no-joint_head"])


# ----------------------------------------------------------------------------- the texts

@pytest.mark.parametrize("flag, raw, message", [
    ("--context", b"Anne \xff walked", "--context holds the byte 0xff, which is not UTF-8, at character 5"),
    ("--question", b"Who walked \xc3?", "--question holds the byte 0xc3, which is not UTF-8, at character 11"),
    ("--question", b"caf\xe9?", "--question holds the byte 0xe9, which is not UTF-8, at character 3"),
])
def test_arguments_that_are_not_utf8_are_one_clear_error(tiny_qa: Path, caplog: pytest.LogCaptureFixture,
                                                         flag: str, raw: bytes, message: str):
    # The arguments as Python receives them from the command line (surrogateescape).
    texts = {"--question": QUESTION, "--context": CONTEXT, flag: os.fsdecode(raw)}
    error = inference_error(caplog, inference_args(tiny_qa, texts["--question"], texts["--context"]))
    assert error == f"{message}: pass UTF-8 text"


def test_a_lone_surrogate_from_python_is_one_clear_error(tiny_qa: Path, caplog: pytest.LogCaptureFixture):
    error = inference_error(caplog, inference_args(tiny_qa, "Who\ud800?"))
    assert error == ("--question holds the lone surrogate \\ud800, which is not valid Unicode, at character 3: "
                     "pass UTF-8 text")


@pytest.mark.parametrize("question", ["", "   ", "\u200b", "\u200b\u200c\u200d", "\ufeff\u2060", " \x00\x07 \u200b"])
def test_a_question_empty_once_normalised_is_rejected_like_an_empty_one(tiny_qa: Path, question: str,
                                                                        caplog: pytest.LogCaptureFixture):
    assert inference_error(caplog, inference_args(tiny_qa, question)) == (
        "the question is empty (--question): nothing is left of it once whitespace, control and zero-width "
        "characters are removed")


def test_a_context_empty_once_normalised_is_rejected(tiny_qa: Path, caplog: pytest.LogCaptureFixture):
    assert inference_error(caplog, inference_args(tiny_qa, QUESTION, "\u200b \u2060\t")).startswith(
        "the context is empty (--context)")


def test_zero_width_characters_inside_a_question_do_not_change_the_answer(tiny_qa: Path):
    def answer(question: str) -> dict:
        return run_inference.answer(run_inference.build_parser().parse_args(inference_args(tiny_qa, question)))

    assert answer("Who\u200b walked to\u2060 Uppercross with Mary?") == answer(QUESTION)


# ----------------------------------------------------------------------------- --electra_model for a folder without config.json

def test_run_inference_takes_the_architecture_from_electra_model(tiny_qa: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture):
    weights_only = without_config(tiny_qa, tmp_path / "weights_only")
    expected = run_inference.answer(run_inference.build_parser().parse_args(inference_args(tiny_qa)))
    for architecture in (tiny_qa, tmp_path / "architecture"):  # the QA folder itself, or any folder with its config
        if not architecture.exists():
            architecture.mkdir()
            shutil.copy(tiny_qa / "config.json", architecture)
        got = run_inference.answer(run_inference.build_parser().parse_args(
            inference_args(weights_only, QUESTION, CONTEXT, "--electra_model", str(architecture))))
        assert got == expected
    # An architecture that does not fit these weights: an error naming the folder, after a warning
    # that says where the architecture came from.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_inference.main(inference_args(weights_only, QUESTION, CONTEXT, "--electra_model", "small")) == 1
    assert f"{weights_only} has no config.json: its architecture is --electra_model small" in caplog.text
    assert f"{weights_only} does not fit ElectraForQuestionAnswering:" in caplog.text


def test_run_inference_takes_a_size_as_electra_model(tmp_path: Path):
    small = qa_folder(tmp_path / "small_qa", ElectraConfig.from_size("small"))
    expected = run_inference.answer(run_inference.build_parser().parse_args(inference_args(small)))
    got = run_inference.answer(run_inference.build_parser().parse_args(
        inference_args(without_config(small, tmp_path / "weights_only"), QUESTION, CONTEXT, "--electra_model",
                       "small")))
    assert got == expected


def test_run_tf_squad_takes_the_architecture_from_electra_model(tiny_qa: Path, tmp_path: Path):
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "who", "question": QUESTION, "answers": [{"text": "Anne", "answer_start": 0}]},
        {"id": "when", "question": "On what kind of morning?", "answers": [{"text": "a fine autumn morning",
                                                                          "answer_start": CONTEXT.index("a fine")}]},
    ]}]}]}))
    outputs = {}
    for name, init, extra in (("with_config", tiny_qa, []),
                              ("electra_model", without_config(tiny_qa, tmp_path / "weights_only"),
                               ["--electra_model", str(tiny_qa)])):
        outputs[name] = tmp_path / name
        assert run_tf_squad.main(["--init_checkpoint", str(init), "--predict_file", str(dev), "--do_eval",
                                  "--output_dir", str(outputs[name]), "--cache_dir", str(tmp_path / "cache"),
                                  *FEATURE_FLAGS, *extra]) == 0
    for result in ("predictions.json", "nbest_predictions.json", "eval_results.json"):
        assert (outputs["with_config"] / result).read_text() == (outputs["electra_model"] / result).read_text()


@pytest.mark.parametrize("flag", ["--n_best_size", "--max_answer_length", "--max_seq_length", "--doc_stride",
                                  "--beam_size"])
def test_counts_below_one_are_refused_when_flags_are_parsed(tiny_qa: Path, flag: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_code:
        run_inference.main(inference_args(tiny_qa, QUESTION, CONTEXT, flag, "0"))
    assert exit_code.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
