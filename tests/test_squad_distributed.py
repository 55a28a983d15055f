"""run_tf_squad.py on two processes, started by scripts/run_squad.sh, with both engines: the
weights of one process with twice the batch, only rank 0 writes, and a SIGTERM to one rank stops
both at the same step."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model_folder import read_tensors
from test_distributed import ENGINES
from test_run_squad import FEATURE_FLAGS, TINY, cloze_squad, random_discriminator_folder

NO_DROPOUT = dataclasses.replace(TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
PER_RANK_BATCH = 4
STEPS = 3
TIMEOUT = 300
# One process writes these, and so must two: anything more came from rank 1.
EXPECTED_OUTPUTS = {"logfile.txt", "run_config.json", "predictions.json", "nbest_predictions.json",
                    "eval_results.json", "logs/metrics.jsonl", "logs/events.out.tfevents",
                    "checkpoints/checkpoint", f"checkpoints/ckpt-{STEPS}.index",
                    f"checkpoints/ckpt-{STEPS}.data-00000-of-00001", "model/config.json",
                    "model/model.safetensors", "model/vocab.txt"}


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory: pytest.TempPathFactory, sample_corpus_dir: Path) -> Path:
    """48 training cloze questions (at least 8 optimizer steps of 8 windows per epoch) and 8 dev ones."""
    folder = tmp_path_factory.mktemp("squad")
    assert cloze_squad.main(["--corpus-dir", str(sample_corpus_dir), "--output-dir", str(folder),
                             "--num-train-questions", "48", "--num-dev-questions", "8"]) == 0
    return folder


@pytest.fixture(scope="module")
def discriminator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny discriminator without dropout: every process computes the same function."""
    return random_discriminator_folder(tmp_path_factory, NO_DROPOUT, "discriminator")


def run_squad_sh(repo_root: Path, squad_dir: Path, init: Path, output: Path, processes: int, batch: int,
                 engine: str = "", port: int = 23456) -> subprocess.CompletedProcess:
    """scripts/run_squad.sh in train_eval mode for STEPS steps (positional arguments of the recipe)."""
    positional = [str(init), "1", str(batch), "16", "1e-4", "fp32", str(processes), "7", "1.1", str(squad_dir),
                  str(output), str(init), "train_eval", "interactive", str(output / "cache"), str(STEPS),
                  str(repo_root / "vocab" / "vocab.txt"), "false"]
    env = {**os.environ, "ENGINE": engine, "ELECTRA_BASE_PORT": str(port)}
    return subprocess.run(["bash", "scripts/run_squad.sh", *positional, *FEATURE_FLAGS, "--log_freq", "1"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def written_files(output: Path) -> set[str]:
    """Files under `output` (the feature cache left out), TensorBoard files under one name."""
    names = set()
    for path in output.rglob("*"):
        name = path.relative_to(output).as_posix()
        if path.is_file() and not name.startswith("cache/"):
            names.add("logs/events.out.tfevents" if ".tfevents." in name else name)
    return names


def logged(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]


def assert_trained_as_one_process(engine: str, initial_folder: Path, one_process_run: Path, output: Path,
                                  steps: int) -> None:
    """The model folder of a 2-process run equals the 1-process run's (twice the batch) within
    1e-5, the steps moved the weights by far more than that, and each step's gradient norm is the
    same (the mean over both ranks' rows: a sum would double it)."""
    initial, single = read_tensors(str(initial_folder)), read_tensors(str(one_process_run / "model"))
    two = read_tensors(str(output / "model"))
    assert two.keys() == single.keys() and len(single) > 30
    differences = {name: float(np.max(np.abs(two[name] - value))) for name, value in single.items()}
    print(f"{engine}: largest weight difference {max(differences.values()):.2e}")
    # (In SQuAD the largest is the start logits' bias: softmax ignores it, so its gradient is
    # rounding noise, which Adam turns into steps of up to the learning rate; hence the small 1e-4.)
    assert max(differences.values()) < 1e-5, sorted(differences.items(), key=lambda item: -item[1])[:3]
    moved = max(float(np.max(np.abs(single[name] - value))) for name, value in initial.items() if name in single)
    assert moved > 1e-4  # the steps did change the encoder, by far more than the tolerance
    single_log, two_log = logged(one_process_run), logged(output)
    assert [r["step"] for r in two_log] == [r["step"] for r in single_log] == [*range(1, steps + 1), steps]
    np.testing.assert_allclose([r["gradient_norm"] for r in two_log[:steps]],
                               [r["gradient_norm"] for r in single_log[:steps]], rtol=1e-5)


@pytest.fixture(scope="module")
def one_process_run(repo_root: Path, squad_dir: Path, discriminator: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process with the global batch of 2 x PER_RANK_BATCH."""
    output = tmp_path_factory.mktemp("one_process")
    result = run_squad_sh(repo_root, squad_dir, discriminator, output, 1, 2 * PER_RANK_BATCH)
    assert result.returncode == 0, result.stdout[-3000:]
    return output


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_fine_tune_as_one_with_twice_the_batch_and_only_rank0_writes(
        engine: str, repo_root: Path, squad_dir: Path, discriminator: Path, one_process_run: Path, tmp_path: Path):
    output = tmp_path / "two_processes"
    result = run_squad_sh(repo_root, squad_dir, discriminator, output, 2, PER_RANK_BATCH, engine,
                          port=24500 + 10 * ENGINES.index(engine))
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"engine {engine}: rank 0 of 2" in result.stdout

    assert_trained_as_one_process(engine, discriminator, one_process_run, output, STEPS)

    # Rank 0 alone wrote files, logged and predicted.
    assert written_files(output) == written_files(one_process_run) == EXPECTED_OUTPUTS
    log_text = (output / "logfile.txt").read_text()
    for line in ("Training:", "Saved checkpoint", "Saved the fine-tuned model folder", "Predicting"):
        assert log_text.count(line) == 1, line
    predictions = json.loads((output / "predictions.json").read_text())
    assert predictions.keys() == json.loads((one_process_run / "predictions.json").read_text()).keys()


def worker_environment(rank: int, port: int) -> dict[str, str]:
    workers = [f"127.0.0.1:{port + i}" for i in range(2)]
    return {**os.environ, "LOCAL_RANK": str(rank),
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})}


def test_sigterm_to_one_rank_stops_both_at_the_same_step(repo_root: Path, squad_dir: Path, discriminator: Path,
                                                          tmp_path: Path):
    """The two tf_distribute workers are started here, so the signal reaches rank 1 only."""
    command = [sys.executable, "run_tf_squad.py", "--init_checkpoint", str(discriminator), "--data_dir",
               str(squad_dir), "--output_dir", str(tmp_path), "--cache_dir", str(tmp_path / "cache"),
               "--do_train", "--do_eval", "--train_batch_size", str(PER_RANK_BATCH), "--max_steps", "500",
               "--log_freq", "1", "--engine", "tf_distribute", *FEATURE_FLAGS]
    workers = [subprocess.Popen(command, cwd=repo_root, env=worker_environment(rank, 24600), text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for rank in range(2)]
    metrics = tmp_path / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGTERM)
    stderr = [worker.communicate(timeout=TIMEOUT)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], stderr[0][-2000:] + stderr[1][-2000:]

    checkpoints = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("ckpt-*.index"))
    stopped_at = checkpoints[-1]
    assert 1 <= stopped_at < 500
    assert f"SIGTERM received: saved a checkpoint at step {stopped_at}, exiting" in stderr[1]
    assert f"another rank was stopped: saved a checkpoint at step {stopped_at}, exiting" in stderr[0]
    assert not (tmp_path / "model").exists() and not (tmp_path / "predictions.json").exists()
