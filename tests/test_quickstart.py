"""scripts/quickstart.sh in its reduced mode, end to end: every stage's output exists and makes
sense, a re-run skips finished stages, one stage runs alone, an interrupted pretraining resumes."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

import squad_utils

STAGES = ("data", "squad_data", "pretrain", "postprocess", "finetune", "inference", "finetune_random")
TIMEOUT = 900


def quickstart(repo_root: Path, results: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo_root / "scripts" / "quickstart.sh"), "--reduced", "--results",
                           str(results), *args], cwd=repo_root, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    results = tmp_path_factory.mktemp("quickstart")
    process = quickstart(repo_root, results)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return {"results": results, "stdout": process.stdout}


def test_every_stage_finishes_and_the_results_folder_is_named(first_run: dict):
    results, stdout = first_run["results"], first_run["stdout"]
    assert all((results / f".done-{stage}").exists() for stage in STAGES)
    assert stdout.rstrip().endswith(f"everything is in {results}")
    assert "SQuAD-format cloze dev set (Persuasion):" in stdout and "One question: answer:" in stdout


def test_pretraining_data_and_question_sets(first_run: dict):
    results = first_run["results"]
    tfrecords = results / "data" / "tfrecord_lower_case_1_seq_len_64_random_seed_12345" / "custom"
    summary = json.loads((tfrecords / "train" / "build_summary.json").read_text())
    assert summary["examples"] > 1000 and len(list((tfrecords / "train").glob("pretrain_data.tfrecord-*"))) == 16
    train = squad_utils.read_squad_file(results / "squad_data" / "train-v1.1.json")
    dev = squad_utils.read_squad_file(results / "squad_data" / "dev-v1.1.json")
    assert (len(train.examples), len(dev.examples)) == (320, 40)


def test_pretraining_losses_are_finite_and_fall_and_both_models_are_written(first_run: dict):
    results = first_run["results"]
    logged = [m for m in metrics(results / "pretraining" / "phase1" / "logs" / "metrics.jsonl") if "total_loss" in m]
    assert [m["step"] for m in logged] == [3, 6, 9, 12]
    for name in ("total_loss", "generator_loss", "discriminator_loss"):
        assert all(math.isfinite(m[name]) for m in logged)
        assert logged[-1][name] < logged[0][name], name
    for part in ("discriminator", "generator"):
        config = json.loads((results / "postprocessed" / part / "config.json").read_text())
        assert config["num_hidden_layers"] == 4 and (results / "postprocessed" / part / "model.safetensors").exists()


def test_fine_tuning_learns_and_predicts_every_dev_question(first_run: dict):
    results = first_run["results"]
    logged = [m for m in metrics(results / "squad" / "logs" / "metrics.jsonl") if "total_loss" in m]
    assert all(math.isfinite(m["total_loss"]) for m in logged) and logged[-1]["total_loss"] < logged[0]["total_loss"]
    dev = squad_utils.read_squad_file(results / "squad_data" / "dev-v1.1.json").examples
    predictions = json.loads((results / "squad" / "predictions.json").read_text())
    assert set(predictions) == {e.qas_id for e in dev}
    assert all(predictions[e.qas_id] and predictions[e.qas_id] in e.context for e in dev)
    evaluation = json.loads((results / "squad" / "eval_results.json").read_text())
    assert evaluation == squad_utils.evaluate_v1(squad_utils.gold_answers(dev), predictions)


def test_the_random_start_has_the_pretrained_shape_and_its_own_weights(first_run: dict):
    results = first_run["results"]
    assert "starts from random weights" in (results / "finetune_random.log").read_text()
    assert "starts from random weights" not in (results / "finetune.log").read_text()
    dev = squad_utils.read_squad_file(results / "squad_data" / "dev-v1.1.json").examples
    predictions = json.loads((results / "squad_random" / "predictions.json").read_text())
    evaluation = json.loads((results / "squad_random" / "eval_results.json").read_text())
    assert evaluation == squad_utils.evaluate_v1(squad_utils.gold_answers(dev), predictions)
    pretrained = json.loads((results / "squad" / "model" / "config.json").read_text())
    random = json.loads((results / "squad_random" / "model" / "config.json").read_text())
    shape = ("hidden_size", "num_hidden_layers", "intermediate_size", "embedding_size", "vocab_size")
    assert [pretrained[k] for k in shape] == [random[k] for k in shape]


def test_the_summary_sets_both_starts_beside_the_computed_baselines(first_run: dict):
    results, stdout = first_run["results"], first_run["stdout"]
    pretrained = json.loads((results / "squad" / "eval_results.json").read_text())
    random = json.loads((results / "squad_random" / "eval_results.json").read_text())
    baselines = json.loads((results / "squad_data" / "baselines-v1.1.json").read_text())
    assert set(baselines) == {"first long word in the passage", "first long word in the passage not in the question",
                              "most frequent training answer"}
    lines = {line.split(" EM ")[0].strip(): line.split(" EM ")[1] for line in stdout.splitlines() if " EM " in line}
    for name, score in {"fine-tuned from the pretrained discriminator": pretrained,
                        "fine-tuned from random weights, same shape and settings": random, **baselines}.items():
        assert lines[name] == f"{score['exact_match']:5.1f}  F1 {score['f1']:5.1f}", name
    assert f"Pretraining brings {pretrained['f1'] - random['f1']:+.1f} F1 over the random start." in stdout


def test_inference_answers_the_first_dev_question_with_a_span_of_its_context(first_run: dict):
    results = first_run["results"]
    first = json.loads((results / "squad_data" / "dev-v1.1.json").read_text())["data"][0]["paragraphs"][0]
    lines = (results / "inference.txt").read_text().splitlines()
    assert lines[0].startswith("answer: ") and lines[0][len("answer: "):] in first["context"]
    assert f"One question: {lines[0]}" in first_run["stdout"]


def test_a_rerun_skips_finished_stages_and_one_stage_reruns_alone(first_run: dict, repo_root: Path):
    results = first_run["results"]
    rerun = quickstart(repo_root, results)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(f"stage {stage}: already done, skipped" in rerun.stdout for stage in STAGES)
    answer = (results / "inference.txt").read_text()
    alone = quickstart(repo_root, results, "--stage", "inference")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "stage inference: starting" in alone.stdout and "stage finetune" not in alone.stdout
    assert (results / "inference.txt").read_text() == answer  # the same model gives the same answer


def test_an_unfinished_pretraining_resumes_from_its_checkpoint(first_run: dict, repo_root: Path):
    results = first_run["results"]
    (results / ".done-pretrain").unlink()
    process = quickstart(repo_root, results)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "stage pretrain: starting" in process.stdout and "stage finetune: already done" in process.stdout
    assert "Resumed from" in (results / "pretrain.log").read_text()


def test_compare_mlm_adds_the_masked_lm_only_control_at_equal_time(first_run: dict, repo_root: Path):
    results = first_run["results"]
    process = quickstart(repo_root, results, "--compare-mlm")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert all(f"stage {stage}: already done, skipped" in process.stdout for stage in STAGES)
    logged = [m for m in metrics(results / "pretraining_mlm" / "phase1" / "logs" / "metrics.jsonl")
              if "total_loss" in m]
    assert logged[-1]["step"] == 14  # 12 x 6/5: a masked-LM-only step costs 5/6 of an ELECTRA step
    assert all("discriminator_loss" not in m and math.isfinite(m["generator_loss"]) for m in logged)
    assert logged[-1]["generator_loss"] < logged[0]["generator_loss"]
    assert sorted(p.name for p in (results / "postprocessed_mlm").iterdir()) == ["generator"]
    generator = json.loads((results / "postprocessed_mlm" / "generator" / "config.json").read_text())
    assert (generator["hidden_size"], generator["num_hidden_layers"]) == (256, 4)  # the discriminator's size
    dev = squad_utils.read_squad_file(results / "squad_data" / "dev-v1.1.json").examples
    predictions = json.loads((results / "squad_mlm" / "predictions.json").read_text())
    evaluation = json.loads((results / "squad_mlm" / "eval_results.json").read_text())
    assert evaluation == squad_utils.evaluate_v1(squad_utils.gold_answers(dev), predictions)
    pretrained = json.loads((results / "squad" / "eval_results.json").read_text())
    assert (f"  {'fine-tuned from the masked-LM-only model, same time':<56} EM {evaluation['exact_match']:5.1f}  "
            f"F1 {evaluation['f1']:5.1f}") in process.stdout
    assert (f"Replaced-token detection brings {pretrained['f1'] - evaluation['f1']:+.1f} F1 over masked-LM-only "
            "pretraining.") in process.stdout


@pytest.mark.parametrize("args, message", [
    (("--stage", "pretraining"), "unknown stage 'pretraining'"),
    (("--stage", "finetune"), "stage 'finetune' needs stage 'data' first"),
    (("--steps", "3"), "unknown argument '--steps'"),
])
def test_bad_arguments_are_named(args: tuple[str, ...], message: str, repo_root: Path, tmp_path: Path):
    process = quickstart(repo_root, tmp_path, *args)
    assert process.returncode != 0 and message in process.stderr
