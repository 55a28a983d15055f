"""run_pretraining.py: the objective's losses, the training step, checkpoints and resume, phases,
signals, and learning on real text."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import pretrain_utils
import run_pretraining
import run_utils
import training
from configuration import ElectraConfig, PretrainingObjective
from model_folder import assign_tensors, read_tensors, save_model_folder
from modeling import (ElectraDiscriminator, ElectraForQuestionAnswering, ElectraGenerator, ElectraPretrainingModel,
                      masked_lm_loss, replaced_token_loss)

TINY_CONFIG = {"vocab_size": 30522, "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 1, "intermediate_size": 128, "max_position_embeddings": 128}
PROCESS_TIMEOUT = 300


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


def pretraining_command(config_file: str, tfrecords: str, results_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "run_pretraining.py", "--model_config", config_file, "--generator_hidden_size", "1.0",
            "--pretrain_tfrecords", tfrecords, "--train_batch_size", "4", "--learning_rate", "1e-3",
            "--num_warmup_steps", "2", "--log_freq", "1", "--shuffle_buffer", "100",
            "--results_dir", str(results_dir), *extra]


def run(command: list[str], repo_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


def checkpoint_variables(path: str) -> dict[str, np.ndarray]:
    """Every saved tensor: model, optimizer slots, loss scale, step (the input position is
    compared through the losses logged after the resume)."""
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if not name.startswith(("iterator", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def metrics_records(results_dir: Path) -> list[dict]:
    lines = (results_dir / "logs" / run_utils.METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


# ----------------------------------------------------------------------------- losses


def test_masked_lm_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
    targets = np.array([[1, 4, 0], [6, 2, 5]], np.int32)
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_position = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    expected = (per_position * weights).sum() / weights.sum()
    np.testing.assert_allclose(masked_lm_loss(logits, targets, weights).numpy(), expected, rtol=1e-6)


def test_replaced_token_loss_matches_numpy():
    logits = np.array([[2.0, -1.0, 0.5, 3.0], [-2.0, 0.0, 1.0, 9.0]], np.float32)
    labels = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], np.int32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int32)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_token = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    expected = (per_token * mask).sum() / mask.sum()
    np.testing.assert_allclose(replaced_token_loss(logits, labels, mask).numpy(), expected, rtol=1e-6)


def test_pretraining_model_combines_the_two_losses_and_labels_the_replacements():
    config = ElectraConfig(**TINY_CONFIG)
    model = ElectraPretrainingModel(config, config, PretrainingObjective(discriminator_weight=50.0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(3, 40)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    mask[2, 20:] = 0
    outputs = model(ids, mask, np.zeros_like(ids), tf.constant([3, 4]), training=False)
    np.testing.assert_allclose(outputs["total_loss"],
                               outputs["generator_loss"] + 50.0 * outputs["discriminator_loss"], rtol=1e-6)
    weights = outputs["masked_weights"].numpy()
    assert weights.sum(axis=1).tolist() == [6, 6, 3]  # round(40 x 0.15), round(20 x 0.15)
    labels = outputs["discriminator_labels"].numpy()
    replaced = weights * (1 - outputs["sampled_correct"].numpy())
    assert labels.sum() == replaced.sum()  # an untrained generator rarely samples the original
    assert labels[2, 20:].sum() == 0


# ----------------------------------------------------------------------------- the training step


class QuadraticModel(keras.Model):
    """A deterministic stand-in with the pretraining model's call signature: the loss is a
    function of the batch and the weights only, so accumulation can be compared exactly."""

    def __init__(self):
        super().__init__()
        self.embedding = keras.layers.Embedding(50, 4)
        self.dense = keras.layers.Dense(1)
        self.embedding.build((None, None))
        self.dense.build((None, 4))

    def call(self, input_ids, input_mask, segment_ids, seed, first_row=0, training=False):
        pooled = tf.reduce_mean(self.embedding(input_ids) * tf.cast(input_mask, tf.float32)[..., None], axis=1)
        return {"total_loss": tf.reduce_mean(tf.square(self.dense(pooled) - 1.0))}


def trainer_args(accumulation: int, batch: int) -> object:
    return run_pretraining.parse_args([
        "--pretrain_tfrecords", "unused", "--optimizer", "adam", "--learning_rate", "0.1",
        "--num_warmup_steps", "0", "--num_train_steps", "10", "--train_batch_size", str(batch),
        "--gradient_accumulation_steps", str(accumulation)])


def test_accumulated_micro_batches_equal_one_large_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(16, 6)).astype(np.int32)
    mask = (rng.random((16, 6)) > 0.2).astype(np.int32)
    batches = {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}
    final_weights = []
    for accumulation, batch in ((4, 4), (1, 16)):
        keras.utils.set_random_seed(0)
        model = QuadraticModel()
        args = trainer_args(accumulation, batch)
        trainer = run_pretraining.build_trainer(args, model)
        micro_batches = iter([{k: v[i:i + batch] for k, v in batches.items()} for i in range(0, 16, batch)] * 3)
        for step in range(3):
            trainer.step(micro_batches, step)
        final_weights.append([v.numpy() for v in model.trainable_variables])
    for accumulated, large in zip(*final_weights):
        np.testing.assert_allclose(accumulated, large, atol=1e-5)


def test_accumulated_gradient_is_the_large_batch_gradient():
    """Adam and LAMB hardly see a gradient's scale, so check the averaged gradient itself."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, size=(12, 5)).astype(np.int32)
    batch = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
    model = QuadraticModel()
    args = trainer_args(3, 4)
    trainer = run_pretraining.build_trainer(args, model)
    for i in range(0, 12, 4):
        trainer.micro_step({k: v[i:i + 4] for k, v in batch.items()}, tf.constant([0, 0], tf.int64),
                           tf.constant(i // 4))
    with tf.GradientTape() as tape:
        loss = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], None)["total_loss"]
    expected = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
    for accumulated, large in zip(trainer.accumulator.mean(), expected):
        np.testing.assert_allclose(accumulated, large, rtol=1e-5, atol=1e-7)


def test_accumulation_is_exact_for_the_electra_objective(tmp_path):
    """Masks and samples are drawn per example row, so 2 micro-batches of 4 are 1 batch of 8
    (dropout off: Keras draws its dropout masks per batch)."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**TINY_CONFIG, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    rng = np.random.default_rng(2)
    ids = rng.integers(1000, 30000, size=(8, 32)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
    final_weights = []
    for accumulation, size in ((2, 4), (1, 8)):
        args = run_pretraining.parse_args([
            "--model_config", str(config_file), "--generator_hidden_size", "1.0", "--pretrain_tfrecords", "unused",
            "--num_warmup_steps", "0", "--num_train_steps", "10", "--learning_rate", "1e-3",
            "--train_batch_size", str(size), "--gradient_accumulation_steps", str(accumulation)])
        keras.utils.set_random_seed(0)
        model = run_pretraining.build_model(args)
        trainer = run_pretraining.build_trainer(args, model)
        micro_batches = iter([{k: v[i:i + size] for k, v in batch.items()} for i in range(0, 8, size)] * 2)
        for step in range(2):
            trainer.step(micro_batches, step)
        final_weights.append([v.numpy() for v in model.trainable_variables])
    for accumulated, large in zip(*final_weights):
        np.testing.assert_allclose(accumulated, large, atol=1e-5)


def test_every_flag_has_help_and_booleans_parse_both_ways():
    parser_actions = run_pretraining.build_parser()._actions
    for action in parser_actions:
        assert action.help, action.option_strings
    args = run_pretraining.parse_args(["--pretrain_tfrecords", "x", "--amp", "--no-xla", "--skip_adaptive"])
    assert args.amp is True and args.xla is False and args.skip_adaptive is True
    assert run_pretraining.parse_args(["--pretrain_tfrecords", "x"]).amp is False


# ----------------------------------------------------------------------------- runs, checkpoints, signals


def test_resume_after_sigkill_continues_as_if_never_stopped(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    steps = ["--num_train_steps", "12", "--save_checkpoints_steps", "2"]
    result = run(pretraining_command(tiny_config_file, austen_tfrecords["train"], straight, *steps), repo_root)
    assert result.returncode == 0, result.stderr[-3000:]

    process = subprocess.Popen(pretraining_command(tiny_config_file, austen_tfrecords["train"], interrupted, *steps),
                               cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    # The manager's `checkpoint` file names a save only once it is complete.
    while not (interrupted / "checkpoints" / "checkpoint").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    resumed = run(pretraining_command(tiny_config_file, austen_tfrecords["train"], interrupted, *steps,
                                      "--restore_checkpoint", "latest"), repo_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = int(resumed.stderr.split("at step ")[1].split()[0])
    assert 2 <= resumed_from < 12, "the kill should land mid-run"

    final_straight = checkpoint_variables(str(straight / "checkpoints" / "ckpt-12"))
    final_resumed = checkpoint_variables(str(interrupted / "checkpoints" / "ckpt-12"))
    assert final_straight.keys() == final_resumed.keys() and len(final_straight) > 50
    for name, value in final_straight.items():
        np.testing.assert_allclose(final_resumed[name], value, atol=1e-6, err_msg=name)
    # Same data in the same order, same masks: the logged losses of the steps after the resume agree.
    after = {r["step"]: r["total_loss"] for r in metrics_records(straight) if r["step"] > resumed_from}
    resumed_after = {r["step"]: r["total_loss"] for r in metrics_records(interrupted) if r["step"] > resumed_from}
    assert after.keys() == resumed_after.keys()
    for step, loss in after.items():
        assert resumed_after[step] == pytest.approx(loss, abs=1e-5), step


def test_sigterm_saves_a_checkpoint_and_exits_zero(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    process = subprocess.Popen(
        pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path, "--num_train_steps", "100000",
                            "--save_checkpoints_steps", "100000"),
        cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "logs" / run_utils.METRICS_FILE
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "SIGTERM received" in stderr
    saved = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("ckpt-*.index"))
    assert len(saved) == 1 and 2 <= saved[0] < 100000
    assert metrics_records(tmp_path)[-1]["step"] <= saved[0]


def test_restoring_into_another_model_size_is_a_clear_error(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    first = run(pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path, "--num_train_steps", "3",
                                    "--num_warmup_steps", "1"), repo_root)
    assert first.returncode == 0, first.stderr[-3000:]
    bigger = tmp_path / "bigger.json"
    bigger.write_text(json.dumps({**TINY_CONFIG, "hidden_size": 128, "num_attention_heads": 2}))
    command = pretraining_command(str(bigger), austen_tfrecords["train"], tmp_path, "--num_train_steps", "6",
                                  "--restore_checkpoint", "latest")
    second = run(command, repo_root)
    assert second.returncode == 1
    assert "different architecture (hidden_size: checkpoint 64, this run 128" in second.stderr


def test_existing_checkpoints_are_not_overwritten_without_restore(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    args = ("--num_train_steps", "3", "--num_warmup_steps", "1")
    assert run(pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path, *args), repo_root).returncode == 0
    again = run(pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path, *args), repo_root)
    assert again.returncode == 1 and "already holds checkpoints" in again.stderr


def test_phase2_starts_from_phase1_weights_with_the_step_reset(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    phase1, phase2 = tmp_path / "phase1", tmp_path / "phase2"
    assert run(pretraining_command(tiny_config_file, austen_tfrecords["train"], phase1, "--num_train_steps", "4"),
               repo_root).returncode == 0
    # Learning rate 0 in phase 2's first step (warm-up starts at 0), so its weights stay phase 1's.
    command = pretraining_command(tiny_config_file, austen_tfrecords["heldout"], phase2, "--phase2",
                                  "--restore_checkpoint", str(phase1 / "checkpoints"), "--num_train_steps", "3",
                                  "--steps_this_run", "1")
    result = run(command, repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Phase 2 starts from phase-1 checkpoint" in result.stderr
    phase1_final = tf.train.load_checkpoint(str(phase1 / "checkpoints" / "ckpt-4"))
    phase2_first = tf.train.load_checkpoint(str(phase2 / "checkpoints" / "ckpt-1"))
    assert phase2_first.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 1
    # A checkpoint stores each variable once, under its first path: the weights are the optimizer's.
    model_tensors = [n for n, _ in tf.train.list_variables(str(phase2 / "checkpoints" / "ckpt-1"))
                     if n.startswith("optimizer/_trainable_variables/")]
    assert len(model_tensors) > 50
    for name in model_tensors:
        np.testing.assert_array_equal(phase2_first.get_tensor(name), phase1_final.get_tensor(name), err_msg=name)
    # Running the same phase-2 command again resumes phase 2's own checkpoint, not phase 1's.
    again = run(command, repo_root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resumed from" in again.stderr and "at step 1" in again.stderr


def test_init_checkpoint_loads_hugging_face_model_folders(repo_root, tiny_config_file, austen_tfrecords, tmp_path):
    config = ElectraConfig(**TINY_CONFIG)
    discriminator = ElectraDiscriminator(config)
    generator = ElectraGenerator(config.generator_config(hidden_fraction=1.0),
                                 embeddings=discriminator.electra.embeddings)
    save_model_folder(discriminator, str(tmp_path / "init" / "discriminator"))
    save_model_folder(generator, str(tmp_path / "init" / "generator"))
    result = run(pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path / "run",
                                     "--init_checkpoint", str(tmp_path / "init"), "--num_train_steps", "3",
                                     "--steps_this_run", "1"), repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints" / "ckpt-1"))
    # Saved under the optimizer's unnamed paths; the word embeddings are the one [vocab, 32] tensor.
    word_embeddings = next(n for n, shape in tf.train.list_variables(str(tmp_path / "run" / "checkpoints" / "ckpt-1"))
                           if n.startswith("optimizer/_trainable_variables/") and shape == [30522, 32])
    np.testing.assert_array_equal(saved.get_tensor(word_embeddings),
                                  discriminator.electra.embeddings.word_embeddings.numpy())


def test_masked_lm_objective_trains_the_generator_alone_and_postprocesses_to_it(repo_root, tiny_config_file,
                                                                            austen_tfrecords, tmp_path):
    """ELECTRA's control: the generator on its masked-LM loss, the discriminator neither run nor
    trained, and a generator folder whose encoder a fine-tuning model loads whole."""
    command = pretraining_command(tiny_config_file, austen_tfrecords["train"], tmp_path / "run",
                                  "--objective", "masked_lm", "--num_train_steps", "3", "--save_checkpoints_steps", "1")
    flag = command.index("--generator_hidden_size")
    del command[flag:flag + 2]  # the default: the discriminator's architecture, intermediate size included
    result = run(command, repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    records = metrics_records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["total_loss"] == r["generator_loss"] and "discriminator_loss" not in r
               and "discriminator_auc" not in r for r in records)
    first, second = (checkpoint_variables(str(tmp_path / "run" / "checkpoints" / f"ckpt-{n}")) for n in (2, 3))
    moved = {name for name in first if not np.array_equal(first[name], second[name])}
    # The trained weights are saved under the optimizer's paths, the discriminator's own under the model's.
    assert any(name.startswith("optimizer/_trainable_variables/") for name in moved)
    discriminator = [name for name in first if name.startswith("model/discriminator/electra/layer_")]
    assert discriminator and not moved.intersection(discriminator)

    command[command.index("masked_lm")] = "electra"
    other = run([*command, "--restore_checkpoint", "latest"], repo_root)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert (f"was written with --objective masked_lm, this run has --objective electra: pass --objective masked_lm "
            "to continue it") in other.stderr

    post = run([sys.executable, "postprocess_pretrained_ckpt.py", "--pretrained_checkpoint",
                str(tmp_path / "run" / "checkpoints"), "--output_dir", str(tmp_path / "post")], repo_root)
    assert post.returncode == 0, post.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "post").iterdir()) == ["generator"]
    assert "masked-LM-only run" in post.stderr
    tensors = read_tensors(str(tmp_path / "post" / "generator"))
    question_answering = ElectraForQuestionAnswering(ElectraConfig(**TINY_CONFIG))
    report = assign_tensors(question_answering, tensors, source="generator")
    assert report.newly_initialised and all(name.startswith("qa_head.") for name in report.newly_initialised)
    assert report.unused and all(name.startswith("generator_") for name in report.unused)
    np.testing.assert_array_equal(question_answering.electra.encoder_layers[1].query.kernel.numpy().T,
                                  tensors["electra.encoder.layer.1.attention.self.query.weight"])


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_xla_steps_train_with_float32_master_weights(precision, tiny_config_file, austen_tfrecords,
                                                                     tmp_path):
    """The GPU paths on the CPU: fp16 (with dynamic loss scaling) or bf16 compute under XLA. The
    default --max_consecutive_skipped_steps lets fp16's skipped steps at the start pass."""
    args = run_pretraining.parse_args(
        ["--model_config", tiny_config_file, "--generator_hidden_size", "1.0", "--pretrain_tfrecords",
         austen_tfrecords["train"], "--train_batch_size", "4", "--num_train_steps", "8", "--num_warmup_steps", "1",
         "--log_freq", "1", "--amp", "--amp_dtype", precision, "--xla", "--results_dir", str(tmp_path)])
    result = run_pretraining.train(args)
    assert result["step"] == 8
    records = metrics_records(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 9))
    for record in records:
        assert np.isfinite(record["total_loss"]) and record["total_loss"] > 0
    scales = [r["loss_scale"] for r in records]
    if precision == "float16":
        # Each skipped (overflowing) step halves the scale from 2**15; applied steps keep it.
        assert all(s == 2.0 ** 15 / 2 ** r["skipped_steps"] for s, r in zip(scales, records))
        # 2**15 x (1 x generator loss + 50 x discriminator loss) overflows float16's backward pass
        # at first; the scale comes down until steps apply (measured: 5 skipped of 8).
        assert 1 <= records[-1]["skipped_steps"] < 8
    else:
        assert scales == [1.0] * 8 and records[-1]["skipped_steps"] == 0
    model_weights = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "ckpt-8"))
    dtypes = {model_weights.get_variable_to_dtype_map()[n] for n, _ in tf.train.list_variables(
        str(tmp_path / "checkpoints" / "ckpt-8")) if n.startswith("optimizer/_trainable_variables/")}
    assert dtypes == {tf.float32}


def test_float16s_skipped_steps_at_the_start_stop_a_run_only_under_a_lower_limit(tiny_config_file, austen_tfrecords,
                                                                                 tmp_path):
    """The float16 run above skips its first steps in a row while the loss scale comes down and
    finishes under the default limit; a limit of 2 stops it at step 3, pointing at the scale."""
    args = run_pretraining.parse_args(
        ["--model_config", tiny_config_file, "--generator_hidden_size", "1.0", "--pretrain_tfrecords",
         austen_tfrecords["train"], "--train_batch_size", "4", "--num_train_steps", "8", "--num_warmup_steps", "1",
         "--amp", "--amp_dtype", "float16", "--max_consecutive_skipped_steps", "2", "--results_dir", str(tmp_path)])
    with pytest.raises(training.TrainingDiverged, match=(
            r"^step 3: 3 optimizer steps in a row were skipped \(steps 1-3: gradients not finite; the last finite "
            r"loss \S+ at step 3\), more than --max_consecutive_skipped_steps 2: .* if loss_scale was still falling "
            r"in the log, raise --max_consecutive_skipped_steps$")):
        run_pretraining.train(args)
    assert not (tmp_path / "checkpoints").exists()


# ----------------------------------------------------------------------------- learning on real text

LEARNING_CONFIG = {"vocab_size": 30522, "embedding_size": 64, "hidden_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "intermediate_size": 512, "max_position_embeddings": 128}


def heldout_metrics(model: ElectraPretrainingModel, tfrecords: str, batches: int = 8) -> dict[str, float]:
    """The objective's metrics on fixed held-out batches with fixed masks and samples."""
    metrics = run_pretraining.PretrainingMetrics()
    original_fractions = []
    dataset = pretrain_utils.pretraining_dataset(tfrecords, 16, 128, seed=7, repeat=False, shuffle_buffer=1)
    for i, batch in enumerate(dataset.take(batches)):
        outputs = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], tf.constant([99, i]))
        metrics.update(outputs)
        labels, mask = outputs["discriminator_labels"].numpy(), outputs["input_mask"].numpy()
        original_fractions.append(1 - labels.sum() / mask.sum())
    return {**metrics.result_and_reset(), "always_original_accuracy": float(np.mean(original_fractions))}


def test_pretraining_learns_on_austen(austen_tfrecords, tmp_path):
    """A 2-layer model, 120 LAMB steps of 16 sequences on five novels, judged on the sixth."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(LEARNING_CONFIG))
    args = run_pretraining.parse_args([
        "--model_config", str(config_file), "--generator_hidden_size", "0.5",
        "--pretrain_tfrecords", austen_tfrecords["train"], "--train_batch_size", "16",
        "--learning_rate", "1e-2", "--num_train_steps", "120", "--num_warmup_steps", "12", "--log_freq", "40",
        "--save_checkpoints_steps", "1000", "--results_dir", str(tmp_path / "run")])
    keras.utils.set_random_seed(args.seed)
    untrained = run_pretraining.build_model(args)
    before = heldout_metrics(untrained, austen_tfrecords["heldout"])
    run_pretraining.train(args)
    trained = run_pretraining.build_model(args)
    tf.train.Checkpoint(model=trained).read(str(tmp_path / "run" / "checkpoints" / "ckpt-120")).expect_partial()
    after = heldout_metrics(trained, austen_tfrecords["heldout"])
    # Measured here (seed 12345): generator loss 10.34 -> 7.40, masked-LM accuracy 0 -> 0.073,
    # discriminator accuracy 0.867 against 0.852 for always "original", AUC 0.52 -> 0.83,
    # discriminator loss 0.327 against 0.420 for the best constant prediction.
    assert before["generator_loss"] == pytest.approx(np.log(30522), abs=0.1)
    assert after["generator_loss"] < before["generator_loss"] - 2.0
    assert after["masked_lm_accuracy"] > 0.05
    assert after["discriminator_accuracy"] > after["always_original_accuracy"] + 0.01
    assert after["discriminator_auc"] > 0.75
    replaced = 1 - after["always_original_accuracy"]
    constant_prediction_loss = -(replaced * np.log(replaced) + (1 - replaced) * np.log(1 - replaced))
    assert after["discriminator_loss"] < constant_prediction_loss - 0.05
