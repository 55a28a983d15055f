"""SQuAD end to end: fine-tuning on cloze questions cut from the Austen sample (trained on five
novels, judged on Persuasion), SIGTERM and resume, SQuAD 2.0 abstention, run_inference.py,
postprocess_pretrained_ckpt.py on a run_pretraining.py checkpoint, the launcher, bad inputs."""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import postprocess_pretrained_ckpt
import run_inference
import run_pretraining
import run_tf_squad
import squad_utils
from configuration import ElectraConfig
from conftest import write_sentence_corpus
from model_folder import save_model_folder
from modeling import ElectraDiscriminator
from test_modeling import load_in_transformers, padded_batch
from test_run_pretraining import TINY_CONFIG as PRETRAINING_CONFIG
from test_run_pretraining import pretraining_command

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import cloze_squad  # noqa: E402

TINY = ElectraConfig(vocab_size=30522, embedding_size=64, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=256, max_position_embeddings=128)
HELD_OUT_NOVEL = "persuasion"
FEATURE_FLAGS = ["--max_seq_length", "96", "--doc_stride", "48", "--max_query_length", "24"]
# From scratch, so no layer-wise decay and a high learning rate; 150 steps of 32 windows.
TRAIN_FLAGS = ["--train_batch_size", "32", "--learning_rate", "3e-3", "--layerwise_lr_decay", "1.0",
               "--max_steps", "150", "--log_freq", "10", "--predict_batch_size", "128"]
PROCESS_TIMEOUT = 600


@pytest.fixture(scope="module")
def squad_dirs(tmp_path_factory: pytest.TempPathFactory, sample_corpus_dir: Path) -> dict[str, Path]:
    """{"1.1": folder, "2.0": folder}, each with train-vX.json (2500 cloze questions from five
    novels) and dev-vX.json (400 from Persuasion), made by data/cloze_squad.py's defaults."""
    dirs = {}
    for version in ("1.1", "2.0"):
        dirs[version] = tmp_path_factory.mktemp(f"squad_v{version}")
        assert cloze_squad.main(["--corpus-dir", str(sample_corpus_dir), "--output-dir", str(dirs[version]),
                                 "--version", version]) == 0
    return dirs


def first_words_baseline(examples: list[squad_utils.SquadExample], words: int = 2) -> dict[str, str]:
    """Always answer with the first words of the context (2 words is this baseline's best F1 here)."""
    return {e.qas_id: " ".join(e.context.split()[:words]) for e in examples}


# ----------------------------------------------------------------------------- fine-tuning runs

def random_discriminator_folder(tmp_path_factory: pytest.TempPathFactory, config: ElectraConfig, name: str) -> Path:
    """A discriminator folder with weights drawn from seed 0."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp(name)
    save_model_folder(ElectraDiscriminator(config), str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_discriminator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny discriminator folder: fine-tuning starts from scratch."""
    return random_discriminator_folder(tmp_path_factory, TINY, "tiny_discriminator")


def v1_command(squad_dir: Path, init: Path, output: Path) -> list[str]:
    return ["--init_checkpoint", str(init), "--data_dir", str(squad_dir), "--output_dir", str(output),
            "--no-joint_head", "--do_train", "--do_eval", *FEATURE_FLAGS, *TRAIN_FLAGS]


def metrics_steps(output: Path) -> list[int]:
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def fine_tuned_v1(squad_dirs: dict[str, Path], tiny_discriminator: Path, repo_root: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict:
    """SQuAD 1.1 with the plain head: a process stopped by SIGTERM after its first log line, then
    the same command again (in this process) to the end. Returns the output folder and what the
    stopped process did."""
    output = tmp_path_factory.mktemp("v1_run")
    command = v1_command(squad_dirs["1.1"], tiny_discriminator, output)
    process = subprocess.Popen([sys.executable, "run_tf_squad.py", *command], cwd=repo_root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = output / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    stopped_at = sorted(int(p.stem.split("-")[1]) for p in (output / "checkpoints").glob("ckpt-*.index"))
    steps_before_resume = metrics_steps(output)
    assert run_tf_squad.main(command) == 0
    return {"output": output, "returncode": process.returncode, "stderr": stderr, "stopped_at": stopped_at,
            "steps_before_resume": steps_before_resume}


def test_v1_fine_tuning_survives_sigterm_resumes_and_learns(fine_tuned_v1: dict, squad_dirs: dict[str, Path]):
    run = fine_tuned_v1
    assert run["returncode"] == 0, run["stderr"][-3000:]
    assert "SIGTERM received" in run["stderr"]
    assert len(run["stopped_at"]) == 1 and 10 <= run["stopped_at"][0] < 150
    # The same command continued from the checkpoint: its log lines follow the stopped run's.
    steps = metrics_steps(run["output"])
    resumed_steps = steps[len(run["steps_before_resume"]):]
    assert resumed_steps[0] > run["stopped_at"][0] and resumed_steps[0] % 10 == 0
    assert 150 in resumed_steps and sorted(int(p.stem.split("-")[1]) for p in
                                           (run["output"] / "checkpoints").glob("ckpt-*.index"))[-1] == 150

    dev = squad_utils.read_squad_file(squad_dirs["1.1"] / "dev-v1.1.json").examples
    results = json.loads((run["output"] / "eval_results.json").read_text())
    predictions = json.loads((run["output"] / "predictions.json").read_text())
    assert results == squad_utils.evaluate_v1(squad_utils.gold_answers(dev), predictions)
    baseline = squad_utils.evaluate_v1(squad_utils.gold_answers(dev), first_words_baseline(dev))
    # Measured here: F1 28.5 (EM 16.5) against 4.6 for the first two words of the context. (Always
    # answering with the passage's first name scores 40.7: 150 steps from scratch teach the tiny
    # model which words are names and some of the question matching, not all of it.)
    assert results["f1"] > baseline["f1"] + 15.0
    assert results["exact_match"] > 8.0
    nbest = json.loads((run["output"] / "nbest_predictions.json").read_text())
    assert set(nbest) == set(predictions)
    for example in dev:
        assert predictions[example.qas_id] in example.context  # cut from the context as written
    summary = json.loads((run["output"] / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["training_sequences_per_second"] > 0
    percentiles = [summary[f"inference_batch_latency_ms_p{p}"] for p in (50, 90, 95, 99)]
    assert percentiles == sorted(percentiles) and summary["inference_sequences_per_second"] > 0


def test_v2_joint_head_learns_when_to_abstain(squad_dirs: dict[str, Path], tiny_discriminator: Path,
                                              tmp_path: Path):
    command = ["--init_checkpoint", str(tiny_discriminator), "--data_dir", str(squad_dirs["2.0"]),
               "--output_dir", str(tmp_path), "--joint_head", "--beam_size", "5", "--version_2_with_negative",
               "--null_score_diff_threshold", "0", "--do_train", "--do_eval", *FEATURE_FLAGS, *TRAIN_FLAGS]
    assert run_tf_squad.main(command) == 0
    dev = squad_utils.read_squad_file(squad_dirs["2.0"] / "dev-v2.0.json").examples
    gold = squad_utils.gold_answers(dev)
    results = json.loads((tmp_path / "eval_results.json").read_text())
    always_empty = squad_utils.evaluate_v2(gold, {e.qas_id: "" for e in dev})
    first_words = squad_utils.evaluate_v2(gold, first_words_baseline(dev))
    # Measured here: F1 58.6 (answerable 20.3, unanswerable 97.0) against 50.0 for always
    # abstaining and 2.1 for the first two words (answerable 4.1).
    assert always_empty["f1"] == 50.0
    assert results["f1"] > always_empty["f1"] + 4.0
    assert results["NoAns_f1"] > 90.0 and results["HasAns_f1"] > first_words["HasAns_f1"] + 5.0
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    null_odds = json.loads((tmp_path / "null_odds.json").read_text())
    nbest = json.loads((tmp_path / "nbest_predictions.json").read_text())
    for qas_id, answer in predictions.items():  # "" exactly when the null odds exceed the threshold
        assert (answer == "") == (null_odds[qas_id] > 0.0 or not nbest[qas_id]), qas_id

    # run_inference.py makes the same call with the same sign (NVIDIA's compares the other way).
    unanswerable = next(e for e in dev if e.is_impossible and predictions[e.qas_id] == "")
    answered = next(e for e in dev if predictions[e.qas_id])
    for example in (unanswerable, answered):
        result = run_inference.answer(inference_args(tmp_path / "model", example.question, example.context,
                                                     "--null_score_diff_threshold", "0"))
        assert result["text"] == predictions[example.qas_id]
        assert result["null_odds"] == pytest.approx(null_odds[example.qas_id], abs=1e-4)


# ----------------------------------------------------------------------------- run_inference.py

def inference_args(model: Path, question: str, context: str, *extra: str):
    return run_inference.build_parser().parse_args(
        ["--init_checkpoint", str(model), "--question", question, "--context", context, *FEATURE_FLAGS, *extra])


def test_run_inference_prints_the_answer_cut_from_the_context(fine_tuned_v1: dict, squad_dirs: dict[str, Path],
                                                              repo_root: Path):
    dev = squad_utils.read_squad_file(squad_dirs["1.1"] / "dev-v1.1.json").examples
    predictions = json.loads((fine_tuned_v1["output"] / "predictions.json").read_text())
    example = max(dev, key=lambda e: len(e.context))  # more than one 96-token window
    result = subprocess.run([sys.executable, "run_inference.py", "--init_checkpoint",
                             str(fine_tuned_v1["output"] / "model"), "--question", example.question,
                             "--context", example.context, *FEATURE_FLAGS],
                            cwd=repo_root, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"answer: {predictions[example.qas_id]}"
    assert re.fullmatch(r"score: -?\d+\.\d{4} \(probability \d\.\d{4}\)", lines[1])

    # A long context of several passages goes through doc-stride windows; the answer is a span of it.
    long_context = " ".join(e.context for e in dev[:6])
    answer = run_inference.answer(inference_args(fine_tuned_v1["output"] / "model", dev[3].question, long_context))
    assert answer["text"] and answer["text"] in long_context


# ----------------------------------------------------------------------------- bad inputs

def write_squad(path: Path, paragraphs: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def predict_command(model: Path, predict_file: Path, output: Path, *extra: str) -> list[str]:
    return ["--init_checkpoint", str(model), "--predict_file", str(predict_file), "--output_dir", str(output),
            "--do_eval", *FEATURE_FLAGS, *extra]


def test_bad_inputs_give_clear_errors_or_counted_warnings(fine_tuned_v1: dict, tiny_discriminator: Path,
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture):
    model = fine_tuned_v1["output"] / "model"
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"data": [')
    with caplog.at_level(logging.ERROR):
        assert run_tf_squad.main(predict_command(model, malformed, tmp_path / "a", "--no-joint_head")) == 1
    assert "malformed.json: malformed JSON at line 1" in caplog.text

    context = "Anne walked to Uppercross with Mary and Charles Musgrove on a fine morning."
    flawed = write_squad(tmp_path / "flawed.json", [
        {"context": context, "qas": [
            {"id": "shifted", "question": "Anne walked to Uppercross with _ and", "answers": [
                {"text": "Mary", "answer_start": context.index("Mary") + 3}]},
            {"id": "long", "question": " ".join(["walked"] * 80) + " with _ and", "answers": [
                {"text": "Mary", "answer_start": context.index("Mary")}]}]},
        {"context": "   ", "qas": [{"id": "empty", "question": "who _ ?", "answers": []}]}])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_tf_squad.main(predict_command(model, flawed, tmp_path / "b", "--no-joint_head")) == 0
    assert "1 of 2 answers have an answer_start that does not point at their text" in caplog.text
    assert "1 empty contexts, 1 questions skipped" in caplog.text
    assert "1 questions longer than max_query_length=24 tokens were truncated" in caplog.text
    predictions = json.loads((tmp_path / "b" / "predictions.json").read_text())
    assert set(predictions) == {"shifted", "long"} and all(p in context for p in predictions.values())
    assert json.loads((tmp_path / "b" / "eval_results.json").read_text())["f1"] >= 0.0

    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert run_inference.main(["--init_checkpoint", str(model), "--question", "who?", "--context", " "]) == 1
        assert run_tf_squad.main(predict_command(tiny_discriminator, flawed, tmp_path / "c")) == 1
        assert run_tf_squad.main(predict_command(model, flawed, tmp_path / "d", "--joint_head")) == 1
    assert "the context is empty" in caplog.text
    assert "needs a fine-tuned QA model folder" in caplog.text  # a discriminator has no trained head
    assert "holds a QA model with joint_head=False" in caplog.text


# ----------------------------------------------------------------------------- postprocess_pretrained_ckpt.py

@pytest.fixture(scope="module")
def pretraining_run(tmp_path_factory: pytest.TempPathFactory, sample_corpus_dir: Path, vocab_file: Path) -> Path:
    """A run_pretraining.py results folder after 3 steps on TFRecords of the first chapters of Persuasion."""
    from build_pretraining_dataset import BuildConfig, build_dataset

    root = tmp_path_factory.mktemp("pretraining")
    excerpt = root / "persuasion_excerpt.txt"
    excerpt.write_text((sample_corpus_dir / f"{HELD_OUT_NOVEL}.txt").read_text(encoding="utf-8")[:60000])
    (root / "text").mkdir()
    write_sentence_corpus([excerpt], root / "text" / "corpus.txt")
    build_dataset(BuildConfig(corpus_dir=str(root / "text"), output_dir=str(root / "tfrecords"),
                              vocab_file=str(vocab_file), max_seq_length=128, num_out_files=1))
    (root / "config.json").write_text(json.dumps(PRETRAINING_CONFIG))
    command = pretraining_command(str(root / "config.json"), str(root / "tfrecords" / "pretrain_data.tfrecord-*"),
                                  root / "run", "--num_train_steps", "3")
    run_pretraining.train(run_pretraining.parse_args(command[2:]))  # in this process: no second TF start-up
    return root / "run"


def test_postprocessed_checkpoint_opens_in_transformers_and_run_tf_squad(pretraining_run: Path, vocab_file: Path,
                                                                          tmp_path: Path):
    output = tmp_path / "postprocessed"
    assert postprocess_pretrained_ckpt.main(["--pretrained_checkpoint", str(pretraining_run / "checkpoints"),
                                             "--output_dir", str(output), "--vocab_file", str(vocab_file),
                                             "--amp"]) == 0
    checkpoint = tf.train.latest_checkpoint(str(pretraining_run / "checkpoints"))
    restored = postprocess_pretrained_ckpt.restore_pretraining_model(checkpoint)
    batch = padded_batch(TINY.vocab_size)
    for part, hf_class in (("discriminator", transformers.ElectraForPreTraining),
                           ("generator", transformers.ElectraForMaskedLM)):
        assert (output / part / "vocab.txt").read_bytes() == vocab_file.read_bytes()
        reference = load_in_transformers(hf_class, output / part)  # no missing or unexpected keys
        theirs = reference(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
        ours = getattr(restored, part)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        np.testing.assert_allclose(ours["logits"].numpy(), theirs.logits.detach().numpy(), atol=1e-4, err_msg=part)
    # Every weight is the checkpoint's: run_pretraining's optimizer holds the trainable variables
    # in the model's order (a model-only restore once silently skipped the encoder layers).
    reader = tf.train.load_checkpoint(checkpoint)
    for i, variable in enumerate(restored.trainable_variables):
        np.testing.assert_array_equal(
            variable.numpy(), reader.get_tensor(f"optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"),
            err_msg=variable.path)

    # run_tf_squad.py takes the postprocessed folder (its discriminator/) with a new QA head.
    args = run_tf_squad.parse_args(["--init_checkpoint", str(output), "--output_dir", str(tmp_path / "squad"),
                                    "--do_train", "--train_file", "unused.json", "--max_seq_length", "128"])
    config, folder = run_tf_squad.model_source(args)
    assert folder == str(output / "discriminator") and config.hidden_size == 64
    model, report = run_tf_squad.load_qa_model(config, folder, joint_head=True, version_2=True, beam_size=5)
    assert all(name.startswith("qa_head.") for name in report.newly_initialised) and len(report.newly_initialised) == 11
    assert report.unused[0].startswith("discriminator_predictions.")
    np.testing.assert_array_equal(model.electra.embeddings.word_embeddings.numpy(),
                                  restored.discriminator.electra.embeddings.word_embeddings.numpy())


@pytest.mark.parametrize("problem", ["no run_config.json", "another architecture"])
def test_postprocess_errors_name_the_problem(problem: str, pretraining_run: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture):
    copied = tmp_path / "run" / "checkpoints"
    copied.mkdir(parents=True)
    for path in (pretraining_run / "checkpoints").glob("ckpt-3.*"):
        (copied / path.name).write_bytes(path.read_bytes())
    if problem == "another architecture":
        run_config = json.loads((pretraining_run / "run_config.json").read_text())
        for part in ("discriminator", "generator"):
            run_config[part]["num_hidden_layers"] = 3
        (tmp_path / "run" / "run_config.json").write_text(json.dumps(run_config))
    with caplog.at_level(logging.ERROR):
        assert postprocess_pretrained_ckpt.main(["--pretrained_checkpoint", str(copied / "ckpt-3"),
                                                 "--output_dir", str(tmp_path / "out")]) == 1
    expected = ("run_config.json not found" if problem == "no run_config.json"
                else "does not hold every weight of the model described by")
    assert expected in caplog.text
    if problem == "another architecture":
        assert "electra/layer_2/" in caplog.text
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- launcher, pieces, flags

def test_run_squad_sh_prediction_mode_reproduces_the_predictions(fine_tuned_v1: dict, squad_dirs: dict[str, Path],
                                                                 repo_root: Path, tmp_path: Path, vocab_file: Path):
    output = tmp_path / "launcher"
    positional = [str(fine_tuned_v1["output"] / "model"), "1", "8", "128", "4e-4", "fp32", "2", "1", "1.1",
                  str(squad_dirs["1.1"]), str(output), str(fine_tuned_v1["output"] / "model"), "prediction",
                  "interactive", str(tmp_path / "cache"), "-1", str(vocab_file), "false"]
    result = subprocess.run(["bash", "scripts/run_squad.sh", *positional, "--no-joint_head", *FEATURE_FLAGS],
                            cwd=repo_root, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "num_gpu=2: prediction mode only predicts, which runs in one process." in result.stdout
    assert (output / "logfile.txt").exists()
    assert json.loads((output / "predictions.json").read_text()) == json.loads(
        (fine_tuned_v1["output"] / "predictions.json").read_text())


def test_training_batches_continue_where_a_resumed_run_stopped():
    rng = np.random.default_rng(0)
    features = squad_utils.SquadFeatures(**{name: rng.integers(0, 9, size=(10, 4)) for name in (
        "input_ids", "input_mask", "segment_ids", "p_mask")}, **{name: np.arange(10) for name in (
            "cls_index", "start_position", "end_position", "is_impossible", "example_index", "context_offset")},
        context_splits=np.zeros(11, int), context_char_spans=np.zeros((0, 2), int), context_is_max=np.zeros(0, int))
    straight = run_tf_squad.train_batches(features, batch_size=3, seed=5, first_batch=0)
    first_seven = [next(straight)["start_position"] for _ in range(7)]  # 3 batches per pass, 1 row dropped
    resumed = run_tf_squad.train_batches(features, batch_size=3, seed=5, first_batch=4)
    for expected in first_seven[4:]:
        np.testing.assert_array_equal(next(resumed)["start_position"], expected)
    first_pass = np.concatenate(first_seven[:3])
    assert len(set(first_pass)) == 9  # a pass sees each window at most once
    assert not np.array_equal(np.concatenate(first_seven[3:6]), first_pass)  # and the next pass reshuffles


def test_inference_speed_reports_true_percentiles_without_the_warm_up_batch():
    batch_seconds = [5.0] + [i / 1000 for i in range(1, 101)]  # the first batch traced the graph
    speed = run_tf_squad.inference_speed(batch_seconds, batch_size=4)
    assert speed["inference_batch_latency_ms_p50"] == pytest.approx(50.5)
    assert speed["inference_batch_latency_ms_p90"] == pytest.approx(90.1)
    assert speed["inference_batch_latency_ms_p99"] == pytest.approx(99.01)
    assert speed["inference_sequences_per_second"] == pytest.approx(400 / 5.05)


@pytest.mark.parametrize("module", [run_tf_squad, run_inference, postprocess_pretrained_ckpt])
def test_every_flag_has_help_and_booleans_parse_both_ways(module):
    for action in module.build_parser()._actions:
        assert action.help, action.option_strings
    if module is run_tf_squad:
        args = run_tf_squad.parse_args(["--output_dir", "o", "--data_dir", "d", "--do_eval", "--no-joint_head",
                                        "--version_2_with_negative", "--no-do_lower_case"])
        assert (args.joint_head, args.do_predict, args.do_lower_case) == (False, True, False)
        assert args.predict_file == str(Path("d") / "dev-v2.0.json")


def test_a_config_file_gives_random_weights_of_its_shape(repo_root: Path, tmp_path: Path):
    config_file = repo_root / "scripts" / "configs" / "quickstart_model.json"
    args = run_tf_squad.parse_args(["--electra_model", str(config_file), "--output_dir", str(tmp_path / "squad"),
                                    "--do_train", "--train_file", "unused.json", "--max_seq_length", "128"])
    config, folder = run_tf_squad.model_source(args)
    expected = json.loads(config_file.read_text())
    assert folder is None and (config.hidden_size, config.num_hidden_layers, config.embedding_size) == (
        expected["hidden_size"], expected["num_hidden_layers"], expected["embedding_size"])
