"""training.py, the loop every training program runs, on a small regression model: when it logs
and checkpoints, the hooks it calls, a stopped and resumed run ending with the weights of an
uninterrupted one (dropout included), and a stop on unreadable input (on this rank or another)."""
from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import distributed
import finetuning
import optimization
import run_utils
import training

NUM_ROWS, BATCH = 48, 4


class TinyRegressor(keras.Model):
    """Dense -> dropout -> dense on 6 features; `training_losses` as the task models have it."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.dropout = keras.layers.Dropout(0.2, seed=3)
        self.out = keras.layers.Dense(1)
        self.hidden.build((None, 6))
        self.out.build((None, 8))

    def training_losses(self, batch: dict[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        prediction = self.out(self.dropout(self.hidden(batch["x"]), training=training))[:, 0]
        return {"total_loss": tf.reduce_mean(tf.square(prediction - tf.cast(batch["y"], tf.float32)))}


def regression_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_ROWS, 6)).astype(np.float32)
    return {"x": x, "y": (x @ np.arange(1, 7, dtype=np.float32) / 6).astype(np.float32)}


STEP_SETTINGS = argparse.Namespace(gradient_accumulation_steps=2, seed=1, xla=False, amp=False, amp_dtype="float16",
                                   fp16_compression=False)


class Recorder(training.LoopHook):
    """Remembers the loop's calls; sets a stop request after `stop_after` steps, as a signal would."""

    def __init__(self, stop: argparse.Namespace | None = None, stop_after: int | None = None):
        self.logged: list[tuple[int, dict]] = []
        self.saved: list[tuple[int, str | None]] = []
        self.stop, self.stop_after = stop, stop_after

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self.logged.append((step, values))
        if step == self.stop_after:
            self.stop.signal_name = "SIGTERM"

    def on_save(self, step: int, path: str | None) -> None:
        self.saved.append((step, path))


def run(directory: Path, last_step: int, hooks_for=lambda stop: [], init_seed: int = 0, wrap_source=lambda s: s,
        engine: distributed.SingleProcess | None = None):
    """A fresh model (weights from `init_seed`) trained by the loop from DIRECTORY's newest
    checkpoint (if any) to `last_step`, on the batch source `wrap_source` makes of the data's;
    returns the model, the loop's result and the hooks."""
    keras.utils.set_random_seed(init_seed)
    model = TinyRegressor()
    optimizer = optimization.create_optimizer(
        "adam", optimization.WarmupPolynomialDecay(0.05, 2, 12), weight_decay_rate=0.0, beta_1=0.9, beta_2=0.999,
        epsilon=1e-6, skip_adaptive=False)
    optimizer.build(model.trainable_variables)
    trainer = run_utils.make_trainer(STEP_SETTINGS, lambda batch, seed, row: model.training_losses(batch),
                                     model.trainable_variables, optimizer)
    checkpoint = training.TrainingCheckpoint(str(directory), model, trainer, keep=10, total_steps=12)
    if checkpoint.newest():
        checkpoint.resume(checkpoint.newest())
    first_batch = int(checkpoint.step.numpy()) * STEP_SETTINGS.gradient_accumulation_steps
    source = wrap_source(training.BatchSource(finetuning.epoch_batches(regression_data(), BATCH, seed=5,
                                                                       first_batch=first_batch)))
    plan = training.TrainingPlan(last_step=last_step, log_every=3, checkpoint_every=4, sequences_per_step=2 * BATCH)
    stop = argparse.Namespace(signal_name=None)
    hooks = hooks_for(stop)
    result = training.run_training_loop(trainer, source, plan, checkpoint, engine or distributed.SingleProcess(),
                                        stop, hooks=hooks)
    return model, result, hooks


def test_loop_logs_and_checkpoints_as_planned_and_calls_the_hooks(tmp_path: Path):
    _, result, hooks = run(tmp_path, last_step=7, hooks_for=lambda stop: [Recorder()])
    recorder = hooks[0]
    assert [step for step, _ in recorder.logged] == [3, 6, 7]
    assert [step for step, _ in recorder.saved] == [4, 7]
    assert [Path(path).name for _, path in recorder.saved] == ["ckpt-4", "ckpt-7"]
    assert result.step == 7 and result.stopped_by is None and result.skipped_steps == 0
    assert result.timed_steps == 6 and result.sequences_per_second(8) > 0
    values = recorder.logged[-1][1]
    assert set(values) == {"total_loss", "learning_rate", "gradient_norm", "loss_scale", "skipped_steps",
                           "sequences_per_second"}
    assert result.logged == values
    assert recorder.logged[-1][1]["total_loss"] < recorder.logged[0][1]["total_loss"]


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path):
    straight, _, _ = run(tmp_path / "straight", last_step=12)
    stopped, result, hooks = run(tmp_path / "resumed", last_step=12,
                                 hooks_for=lambda stop: [Recorder(stop, stop_after=6)])
    assert result.stopped_by == "SIGTERM received" and result.step == 6
    assert [step for step, _ in hooks[0].saved] == [4, 6]
    # Another initialisation: everything must come from the checkpoint, dropout state included.
    resumed, result, _ = run(tmp_path / "resumed", last_step=12, init_seed=99)
    assert result.step == 12
    for ours, reference in zip(resumed.trainable_variables, straight.trainable_variables):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(stopped.trainable_variables[0].numpy(), straight.trainable_variables[0].numpy())


class FailingSource(training.BatchSource):
    """Reports unreadable input when it reads the micro-batches of step `fail_at` (0-based)."""

    reports_bad_input = True

    def __init__(self, source: training.BatchSource, fail_at: int | None):
        super().__init__(source.batches)
        self.fail_at, self.steps_read = fail_at, 0

    def read_step(self, count: int):
        batches, _ = super().read_step(count)
        self.steps_read += 1
        if self.steps_read - 1 == self.fail_at:
            return batches[:1], training.BadInput("data-3: record 7 (at byte 99) is cut short", "rebuild data-3")
        return batches, None


class CountingEngine(distributed.SingleProcess):
    """One process whose `agree` counts its calls and can answer as if another rank raised the
    flag from call `other_rank_from` on."""

    def __init__(self, other_rank_from: int | None = None):
        super().__init__()
        self.calls, self.other_rank_from = 0, other_rank_from

    def agree(self, flag: bool) -> bool:
        self.calls += 1
        return flag or (self.other_rank_from is not None and self.calls > self.other_rank_from)


def test_bad_input_saves_the_last_completed_step_and_stops_with_one_line(tmp_path: Path):
    recorder = Recorder()
    with pytest.raises(training.InputDataError) as error:
        run(tmp_path, last_step=12, hooks_for=lambda stop: [recorder],
            wrap_source=lambda source: FailingSource(source, fail_at=5))
    assert str(error.value) == (f"data-3: record 7 (at byte 99) is cut short: saved a checkpoint at step 5 in "
                                f"{tmp_path}; rebuild data-3")
    assert [step for step, _ in recorder.saved] == [4, 5]  # the plan's, then steps 0-4 done; 5 not started
    assert tf.train.latest_checkpoint(str(tmp_path)) == recorder.saved[-1][1]
    resumed, result, _ = run(tmp_path, last_step=12)  # the checkpoint resumes
    assert result.step == 12


def test_every_rank_stops_at_the_same_step_when_another_meets_bad_input(tmp_path: Path):
    engine = CountingEngine(other_rank_from=2 * 3)  # two agreements a step: another rank fails reading step 3
    with pytest.raises(training.InputDataError, match="^another rank met unreadable input .*: saved a checkpoint "
                                                      "at step 3 in "):
        run(tmp_path, last_step=12, wrap_source=lambda source: FailingSource(source, fail_at=None), engine=engine)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-3")


def test_a_source_that_cannot_meet_bad_input_adds_no_agreement_to_a_step(tmp_path: Path):
    engine = CountingEngine()
    run(tmp_path, last_step=5, engine=engine)
    assert engine.calls == 5  # the stop request's, one a step
