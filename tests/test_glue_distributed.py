"""run_tf_glue.py on two processes, started by scripts/run_glue.sh, with both engines: the weights of
one process with twice the batch, and only rank 0 writes, evaluates and predicts."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_distributed import ENGINES
from test_run_glue import austen_tasks  # noqa: F401  (a fixture)
from test_squad_distributed import NO_DROPOUT, assert_trained_as_one_process, written_files
from test_run_squad import random_discriminator_folder

TASK = "austen-next"  # a pair task: segment ids and the pair truncation take part
PER_RANK_BATCH = 4
STEPS = 3
TIMEOUT = 300
EXPECTED_OUTPUTS = {"logfile.txt", "run_config.json", "eval_results.json", f"submission/{TASK}.tsv",
                    "logs/metrics.jsonl", "logs/events.out.tfevents", "checkpoints/checkpoint",
                    f"checkpoints/ckpt-{STEPS}.index", f"checkpoints/ckpt-{STEPS}.data-00000-of-00001",
                    "model/config.json", "model/model.safetensors", "model/vocab.txt"}


@pytest.fixture(scope="module")
def discriminator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny discriminator without dropout: every process computes the same function."""
    return random_discriminator_folder(tmp_path_factory, NO_DROPOUT, "discriminator")


def run_glue_sh(repo_root: Path, data_dir: Path, init: Path, output: Path, processes: int, batch: int,
                engine: str = "", port: int = 25456) -> subprocess.CompletedProcess:
    """scripts/run_glue.sh in train_eval_predict mode for STEPS steps."""
    positional = [TASK, str(init), "1", str(batch), "64", "1e-4", "fp32", str(processes), "7", str(data_dir),
                  str(output), str(init), "train_eval_predict", "interactive", str(STEPS),
                  str(repo_root / "vocab" / "vocab.txt"), "false"]
    env = {**os.environ, "ENGINE": engine, "ELECTRA_BASE_PORT": str(port)}
    return subprocess.run(["bash", "scripts/run_glue.sh", *positional, "--max_seq_length", "48", "--log_freq", "1"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def one_process_run(repo_root: Path, austen_tasks: Path, discriminator: Path,  # noqa: F811
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process with the global batch of 2 x PER_RANK_BATCH."""
    output = tmp_path_factory.mktemp("one_process")
    result = run_glue_sh(repo_root, austen_tasks / TASK, discriminator, output, 1, 2 * PER_RANK_BATCH)
    assert result.returncode == 0, result.stdout[-3000:]
    return output


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_fine_tune_as_one_with_twice_the_batch_and_only_rank0_writes(
        engine: str, repo_root: Path, austen_tasks: Path, discriminator: Path, one_process_run: Path,  # noqa: F811
        tmp_path: Path):
    output = tmp_path / "two_processes"
    result = run_glue_sh(repo_root, austen_tasks / TASK, discriminator, output, 2, PER_RANK_BATCH, engine,
                         port=25500 + 10 * ENGINES.index(engine))
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"engine {engine}: rank 0 of 2" in result.stdout

    assert_trained_as_one_process(engine, discriminator, one_process_run, output, STEPS)
    assert written_files(output) == written_files(one_process_run) == EXPECTED_OUTPUTS
    log_text = (output / "logfile.txt").read_text()
    for line in ("Training:", "Saved the fine-tuned model folder", "Evaluation of", "Wrote "):
        assert log_text.count(line) == 1, line
    results, reference = (json.loads((folder / "eval_results.json").read_text()) for folder in (output, one_process_run))
    assert results[TASK]["num_examples"] == 600
    assert results[TASK]["accuracy"] == pytest.approx(reference[TASK]["accuracy"], abs=2 / 600)
