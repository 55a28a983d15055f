"""Data parallelism with two local processes, for both engines, and run.sub under a real Slurm."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import damage
import distributed
from damaged_tfrecords import damage_record
from distributed_parity_worker import PROBE

ENGINES = ("horovod", "tf_distribute")
TINY_NO_DROPOUT = {"vocab_size": 30522, "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 1, "intermediate_size": 128, "max_position_embeddings": 128,
                   "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TIMEOUT = 600


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("distributed") / "config.json"
    path.write_text(json.dumps(TINY_NO_DROPOUT))
    return str(path)


def launch(repo_root: Path, engine: str, processes: int, *command: str, port: int = 23456,
           extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `command` with scripts/launch_processes.sh, as a user of the launchers would."""
    script = f'source scripts/launch_processes.sh && launch_processes {processes} "$@"'
    env = {**os.environ, "ENGINE": engine, "ELECTRA_BASE_PORT": str(port), **(extra_env or {})}
    return subprocess.run(["bash", "-c", script, "launch", *command], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_slurm_variables_give_one_worker_per_task():
    environ = {"SLURM_JOB_NODELIST": "gpu[07-08],dgx1", "SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_PROCID": "3"}
    config = distributed.tf_config_from_slurm(environ, port=5000)
    assert config["cluster"]["worker"] == ["gpu07:5000", "gpu07:5001", "gpu08:5000", "gpu08:5001", "dgx1:5000"]
    assert config["task"] == {"type": "worker", "index": 3}


@pytest.mark.parametrize("environ, engine", [
    ({}, "single"), ({"HOROVOD_RANK": "0"}, "horovod"), ({"OMPI_COMM_WORLD_RANK": "1"}, "horovod"),
    ({"TF_CONFIG": "{}"}, "tf_distribute"), ({"SLURM_NTASKS": "8"}, "tf_distribute"), ({"SLURM_NTASKS": "1"}, "single"),
])
def test_engine_follows_the_launcher(environ, engine):
    assert distributed.detect_engine(environ) == engine


def test_tf_distribute_alone_is_rank_0_of_1(repo_root):
    """--engine tf_distribute with no TF_CONFIG (run.sub's default engine in a one-task job)."""
    code = "import distributed; e = distributed.create_engine('tf_distribute', {}); print(e.rank, e.size)"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("SLURM_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["0", "1"]


PARITY_WORKER = Path(__file__).resolve().parent / "distributed_parity_worker.py"


@pytest.fixture(scope="module")
def one_process_run(repo_root, config_file, tmp_path_factory) -> Path:
    """The reference: one process with the global batch of 8."""
    output = tmp_path_factory.mktemp("single") / "single.npz"
    single = subprocess.run([sys.executable, str(PARITY_WORKER), "--config", config_file, "--engine", "single",
                             "--output", str(output)], cwd=repo_root, capture_output=True, text=True, timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]
    return output


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_equal_one_process_with_twice_the_batch(engine, repo_root, config_file, one_process_run, tmp_path):
    result = launch(repo_root, engine, 2, sys.executable, str(PARITY_WORKER), "--config", config_file,
                    "--engine", engine, "--output", str(tmp_path / "two.npz"), port=23500 + 10 * ENGINES.index(engine))
    assert result.returncode == 0, result.stderr[-3000:]
    single_run, two_ranks = np.load(one_process_run), np.load(tmp_path / "two.npz")
    # Adam-type updates hardly see a gradient's scale: the norms show a sum taken for a mean.
    np.testing.assert_allclose(two_ranks["gradient_norms"], single_run["gradient_norms"], rtol=1e-5)
    weights = [name for name in single_run.files if name.startswith("weight_")]
    assert len(weights) == len(two_ranks.files) - 3 > 30
    for name in weights:
        np.testing.assert_allclose(two_ranks[name], single_run[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("engine", ENGINES)
def test_fp16_compression_sends_float16_and_training_stays_close(engine, repo_root, config_file, one_process_run,
                                                                  tmp_path):
    result = launch(repo_root, engine, 2, sys.executable, str(PARITY_WORKER), "--config", config_file,
                    "--engine", engine, "--fp16_compression", "--output", str(tmp_path / "two.npz"),
                    port=23600 + 10 * ENGINES.index(engine))
    assert result.returncode == 0, result.stderr[-3000:]
    single_run, two_ranks = np.load(one_process_run), np.load(tmp_path / "two.npz")
    np.testing.assert_array_equal(two_ranks["probe_exact"], PROBE)
    np.testing.assert_array_equal(two_ranks["probe_fp16"], PROBE.astype(np.float16).astype(np.float32))
    assert two_ranks["probe_fp16"].dtype == np.float32 and not np.array_equal(two_ranks["probe_fp16"], PROBE)
    # float16 keeps 11 significant bits: the gradient norms move by about its rounding error.
    np.testing.assert_allclose(two_ranks["gradient_norms"], single_run["gradient_norms"], rtol=1e-3)
    # Measured: at most 2.3e-5 (Horovod) and 8.2e-6 (tf.distribute) after 3 steps of about 1e-4
    # each, against 1e-5 without compression.
    for name in (name for name in single_run.files if name.startswith("weight_")):
        np.testing.assert_allclose(two_ranks[name], single_run[name], atol=5e-5, err_msg=name)


def pretraining_command(config_file: str, tfrecords: str, results: Path, engine: str, *extra: str) -> list[str]:
    return [sys.executable, "run_pretraining.py", "--model_config", config_file, "--generator_hidden_size", "1.0",
            "--pretrain_tfrecords", tfrecords, "--train_batch_size", "4", "--num_train_steps", "4",
            "--num_warmup_steps", "1", "--log_freq", "1", "--save_checkpoints_steps", "2", "--shuffle_buffer", "50",
            "--engine", engine, "--results_dir", str(results), *extra]


def model_tensors(checkpoint: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(checkpoint))
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(str(checkpoint))
            if n.startswith(("optimizer/", "step/"))}


def copy_checkpoints_of_step(source_run: Path, target_run: Path, step: int) -> None:
    """Every rank's checkpoint of `step` and the run's configuration, without the newer ones."""
    for folder in ("checkpoints", "checkpoints/rank1"):
        (target_run / folder).mkdir(parents=True)
        copied = [shutil.copy(path, target_run / folder / path.name)
                  for path in (source_run / folder).glob(f"ckpt-{step}.*")]
        assert len(copied) >= 2, f"{source_run / folder} has no complete ckpt-{step}"
    shutil.copy(source_run / "run_config.json", target_run / "run_config.json")


@pytest.mark.parametrize("engine", ENGINES)
def test_two_rank_checkpoint_resumes_identically_and_only_rank0_writes(engine, repo_root, config_file,
                                                                      austen_tfrecords, tmp_path):
    """Resumed from the step-2 checkpoints of every rank (what a run stopped at step 2 leaves; the
    single-process tests stop runs for real), the run ends with the weights of one never stopped."""
    port = 23600 + 10 * ENGINES.index(engine)
    straight = launch(repo_root, engine, 2, *pretraining_command(
        config_file, austen_tfrecords["train"], tmp_path / "straight", engine), port=port)
    assert straight.returncode == 0, straight.stderr[-3000:]
    copy_checkpoints_of_step(tmp_path / "straight", tmp_path / "resumed", 2)
    resumed_run = launch(repo_root, engine, 2, *pretraining_command(
        config_file, austen_tfrecords["train"], tmp_path / "resumed", engine, "--restore_checkpoint", "latest"),
        port=port)
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    assert "at step 2" in resumed_run.stderr

    expected = model_tensors(tmp_path / "straight" / "checkpoints" / "ckpt-4")
    resumed = model_tensors(tmp_path / "resumed" / "checkpoints" / "ckpt-4")
    assert expected.keys() == resumed.keys() and len(expected) > 50
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)

    # Only rank 0 logs and checkpoints the model; rank 1 keeps just its input position.
    run = tmp_path / "straight"
    steps = [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert len(list((run / "logs").glob("events.out.tfevents.*"))) == 1
    rank1 = run / "checkpoints" / "rank1" / "ckpt-4"
    rank1_objects = {n.split("/")[0] for n, _ in tf.train.list_variables(str(rank1))}
    # (No dropout RNG state here: with dropout 0 Keras creates no seed generators.)
    assert rank1_objects == {"_CHECKPOINTABLE_OBJECT_GRAPH", "iterator", "save_counter", "step"}
    assert "INFO run_pretraining" not in "".join(
        line for line in straight.stderr.splitlines(keepends=True) if "rank1" in line or line.startswith("[1]"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_record_on_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(engine, repo_root, config_file,
                                                                                    austen_tfrecords, tmp_path):
    """Rank 1 reads file 1 (of 2), damaged: it names the record, every rank saves at the same step
    and stops (none waits forever in the step's all-reduce), and the run resumes with the flag."""
    port = 23700 + 10 * ENGINES.index(engine)
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(Path(austen_tfrecords["train"]).parent.glob("pretrain_data.tfrecord-*")):
        shutil.copy(path, data / path.name)
    bad_file = data / "pretrain_data.tfrecord-1-of-2"
    start = damage_record(bad_file, 80, "data flipped")  # reached at about step 8 with a shuffle buffer of 50
    run = [*pretraining_command(config_file, str(data / "pretrain_data.tfrecord-*"), tmp_path / "run", engine),
           "--num_train_steps", "12", "--save_checkpoints_steps", "4", "--log_freq", "4"]
    stopped = launch(repo_root, engine, 2, *run, port=port)
    # No traceback from the ranks (horovodrun prints its own when a process exits non-zero).
    assert stopped.returncode != 0 and 'run_pretraining.py", line' not in stopped.stderr, stopped.stderr[-3000:]
    assert (f"rank 1: {bad_file}: record 80 (at byte {start}) is corrupt (its data does not match its checksum); "
            "stopping every rank with a checkpoint") in stopped.stderr
    step = int(stopped.stderr.split("another rank met unreadable input (its error names it): saved a checkpoint at "
                                    "step ")[1].split(" ")[0])
    assert 4 < step < 12 and step % 4
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / f"ckpt-{step}.index").exists() and (checkpoints / "rank1" / f"ckpt-{step}.index").exists()

    resumed = launch(repo_root, engine, 2, *run, "--restore_checkpoint", "latest", "--skip_bad_records", port=port)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (checkpoints / "ckpt-12.index").exists()


def test_two_ranks_pass_over_a_damaged_newest_checkpoint_together(repo_root, config_file, austen_tfrecords, tmp_path):
    """Rank 0's ckpt-4 damaged: both ranks resume rank 0's choice, ckpt-2 (rank 1 reads none of
    rank 0's files to choose), end with the weights of the undamaged run, and both ranks' parts
    of the damaged checkpoint are set aside together. One engine: the choice travels by the same
    broadcast with both, which test_two_rank_checkpoint_resumes_identically_and_only_rank0_writes runs."""
    engine, run = "tf_distribute", tmp_path / "run"
    checkpoints = run / "checkpoints"
    first = launch(repo_root, engine, 2, *pretraining_command(config_file, austen_tfrecords["train"], run, engine),
                   port=23720)
    assert first.returncode == 0, first.stderr[-3000:]
    expected = model_tensors(checkpoints / "ckpt-4")
    bad_file = damage.damage(checkpoints / "ckpt-4", "truncated data")
    second = launch(repo_root, engine, 2, *pretraining_command(config_file, austen_tfrecords["train"], run, engine,
                                                               "--restore_checkpoint", "latest"), port=23720)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"checkpoint {checkpoints / 'ckpt-4'} is unreadable: {bad_file} (" in second.stderr
    assert f"Resumed from {checkpoints / 'ckpt-2'} at step 2" in second.stderr
    resumed = model_tensors(checkpoints / "ckpt-4")
    assert expected.keys() == resumed.keys() and len(expected) > 50
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    aside = next(checkpoints.glob("unreadable-*"))
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*.index")) == ["ckpt-4.index", "rank1/ckpt-4.index"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_damaged_part_of_rank_1_stops_both_ranks_with_its_name(engine, repo_root, config_file, austen_tfrecords,
                                                                 tmp_path):
    """Rank 1's own part of the newest checkpoint (its input position) damaged: every rank stops
    before restoring, rank 1 naming its file; rank 0 does not wait for it in a broadcast."""
    run = tmp_path / "run"
    port = 23740 + 10 * ENGINES.index(engine)
    first = launch(repo_root, engine, 2, *pretraining_command(config_file, austen_tfrecords["train"], run, engine),
                   port=port)
    assert first.returncode == 0, first.stderr[-3000:]
    bad_file = damage.damage(run / "checkpoints" / "rank1" / "ckpt-4", "truncated data")
    second = launch(repo_root, engine, 2, *pretraining_command(config_file, austen_tfrecords["train"], run, engine,
                                                               "--restore_checkpoint", "latest"), port=port)
    # No traceback from the ranks (horovodrun prints its own when a process exits non-zero).
    assert second.returncode != 0 and 'run_pretraining.py", line' not in second.stderr, second.stderr[-3000:]
    assert f"rank 0: another rank's part of checkpoint {run / 'checkpoints' / 'ckpt-4'} is missing" in second.stderr
    assert (f"rank 1's part of checkpoint {run / 'checkpoints' / 'ckpt-4'} is unreadable: {bad_file} ("
            in second.stderr), second.stderr[-3000:]
    assert "Resumed from" not in second.stderr


def slurm_available() -> str | None:
    """Why Slurm cannot run here, or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "installing Slurm needs root and apt-get"
    return None


def test_run_sub_pretrains_under_a_real_slurm(repo_root, config_file, austen_tfrecords, tmp_path):
    reason = slurm_available()
    if reason:
        print(f"run.sub not tested: {reason}")
        pytest.skip(reason)
    started = subprocess.run(["bash", "scripts/slurm/start_local_slurm.sh"], cwd=repo_root, capture_output=True,
                             text=True, timeout=TIMEOUT)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        submit_both_phases(repo_root, started.stdout, config_file, austen_tfrecords, tmp_path)
    finally:
        subprocess.run(["bash", "scripts/slurm/stop_local_slurm.sh"], cwd=repo_root, capture_output=True, timeout=120)


def submit_both_phases(repo_root: Path, exports: str, config_file: str, austen_tfrecords: dict, tmp_path: Path):
    """Phase 1 then phase 2 (from phase 1's checkpoint), 2 tasks each, through run.sub."""
    env = dict(os.environ)
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    common = {"BATCHSIZE": "4", "WARMUP": "1", "PRECISION": "fp32", "XLA": "no", "RESULTS_DIR": str(tmp_path),
              "DATA_P1": austen_tfrecords["train"], "DATA_P2": austen_tfrecords["heldout"], "PYTHON": sys.executable,
              "EXTRA_ARGS": f"--model_config {config_file} --generator_hidden_size 1.0 --max_seq_length 128"}
    for phase, steps in (("1", "2"), ("2", "2")):
        job = subprocess.run(["sbatch", "--wait", "-N", "1", "--ntasks=2", "-o", str(tmp_path / f"phase{phase}.out"),
                              "run.sub"], cwd=repo_root, env={**env, **common, "PHASE": phase, "STEPS": steps},
                             capture_output=True, text=True, timeout=TIMEOUT)
        output = (tmp_path / f"phase{phase}.out").read_text() if (tmp_path / f"phase{phase}.out").exists() else ""
        assert job.returncode == 0, job.stderr + output[-3000:]
        # sbatch --wait also returns 0 for a job cancelled while pending: check what it wrote.
        assert (tmp_path / f"phase{phase}" / "checkpoints" / "ckpt-2.index").exists(), output[-3000:]
        assert (tmp_path / f"phase{phase}" / "checkpoints" / "rank1" / "ckpt-2.index").exists()
    assert "Phase 2 starts from phase-1 checkpoint" in (tmp_path / "phase2.out").read_text()
