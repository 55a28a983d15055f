"""training.py, the loop every training program runs, on a small regression model: when it logs
and checkpoints, the hooks it calls, a stopped and resumed run ending with the weights of an
uninterrupted one (dropout included), damaged checkpoints (the newest that reads is resumed,
the others are set aside, never deleted, and the choice is the chief's on every rank), and a stop
on unreadable input (on this rank or another)."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import damage
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


def poisoned(losses: dict[str, tf.Tensor], seed: tf.Tensor, bad_steps: Collection[int]) -> dict[str, tf.Tensor]:
    """The loss times NaN at the (1-based) optimizer steps `bad_steps`, as a diverged model gives:
    every gradient of those steps is NaN."""
    bad = tf.reduce_any(tf.equal(seed[1] + 1, tf.constant(sorted(bad_steps), tf.int64)))
    return {**losses, "total_loss": losses["total_loss"] * tf.where(bad, float("nan"), 1.0)}


def tiny_run(directory: Path, init_seed: int = 0, engine: distributed.SingleProcess | None = None,
             input_state: Any = None, bad_steps: Collection[int] = (), keep: int = 10
             ) -> tuple[TinyRegressor, optimization.Trainer, training.TrainingCheckpoint]:
    """A fresh model (weights from `init_seed`), its trainer (NaN at `bad_steps`) and its
    checkpoint in DIRECTORY."""
    keras.utils.set_random_seed(init_seed)
    model = TinyRegressor()
    optimizer = optimization.create_optimizer(
        "adam", optimization.WarmupPolynomialDecay(0.05, 2, 12), weight_decay_rate=0.0, beta_1=0.9, beta_2=0.999,
        epsilon=1e-6, skip_adaptive=False)
    optimizer.build(model.trainable_variables)
    trainer = run_utils.make_trainer(STEP_SETTINGS,
                                     lambda batch, seed, row: poisoned(model.training_losses(batch), seed, bad_steps),
                                     model.trainable_variables, optimizer)
    checkpoint = training.TrainingCheckpoint(str(directory), model, trainer, keep=keep, engine=engine,
                                             input_state=input_state, total_steps=12)
    return model, trainer, checkpoint


def run(directory: Path, last_step: int, hooks_for=lambda stop: [], init_seed: int = 0,
        bad_steps: Collection[int] = (), wrap_source=lambda source: source,
        engine: distributed.SingleProcess | None = None, **plan_settings):
    """A fresh model (weights from `init_seed`) trained by the loop from DIRECTORY's newest
    checkpoint (if any) to `last_step`, on the batch source `wrap_source` makes of the data's
    (and with `engine`'s agreements); returns the model, the loop's result and the hooks.
    `plan_settings` change the TrainingPlan's (a checkpoint every 4 steps)."""
    model, trainer, checkpoint = tiny_run(directory, init_seed, bad_steps=bad_steps)
    path = checkpoint.newest()
    if path is not None:
        checkpoint.resume(path)
    first_batch = int(checkpoint.step.numpy()) * STEP_SETTINGS.gradient_accumulation_steps
    source = wrap_source(training.BatchSource(finetuning.epoch_batches(regression_data(), BATCH, seed=5,
                                                                       first_batch=first_batch)))
    plan = training.TrainingPlan(last_step=last_step, log_every=3, sequences_per_step=2 * BATCH,
                                 **{"checkpoint_every": 4, **plan_settings})
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


# ----------------------------------------------------------------------------- divergence

def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_too_many_skipped_steps_in_a_row_stop_the_run_without_saving(tmp_path: Path):
    """Steps 6 on are NaN: the checkpoint due at step 6 waits, and the 4th skipped step in a row
    (more than 3) stops the run; the checkpoints of steps 2 and 4 are all there is."""
    with pytest.raises(training.TrainingDiverged) as stopped:
        run(tmp_path, last_step=12, bad_steps=range(6, 13), checkpoint_every=2, max_consecutive_skipped_steps=3)
    message = str(stopped.value)
    assert message.startswith("step 9: 4 optimizer steps in a row were skipped (steps 6-9: gradients not finite; "
                              "the last finite loss ")
    assert "at step 5), more than --max_consecutive_skipped_steps 3: the run has diverged" in message
    assert f"the newest checkpoint, {tmp_path / 'ckpt-4'}, is kept" in message and "\n" not in message
    assert "loss_scale" not in message  # float32: no loss scale to wait for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                                                          "ckpt-4.data-00000-of-00001", "ckpt-4.index"]


def test_without_a_loss_scale_the_default_stops_the_issues_eight_step_run(tmp_path: Path):
    """The issue's case: NaN from step 4 of 8 used to skip 5 steps and finish. In float32 no
    skipped step is normal: the 4th in a row stops it."""
    with pytest.raises(training.TrainingDiverged, match=r"^step 7: 4 optimizer steps in a row were skipped .*more "
                                                         r"than --max_consecutive_skipped_steps 3: "):
        run(tmp_path, last_step=8, bad_steps=range(4, 9))


def test_a_checkpoint_due_amid_skipped_steps_waits_for_a_step_that_trains(tmp_path: Path, caplog):
    """Step 4 is skipped: its checkpoint is saved after step 5. The last step is saved even when
    skipped (the run's end), with a warning."""
    with caplog.at_level(logging.WARNING, logger="training"):
        _, result, hooks = run(tmp_path, last_step=8, hooks_for=lambda stop: [Recorder()], bad_steps={4, 8},
                               checkpoint_every=2)
    assert [step for step, _ in hooks[0].saved] == [2, 5, 6, 8]
    assert result.step == 8 and result.skipped_steps == 2
    assert "step 8: saving after 1 skipped steps in a row" in caplog.text


def test_weights_that_are_not_finite_are_never_saved(tmp_path: Path):
    model, _, checkpoint = tiny_run(tmp_path, keep=1)
    checkpoint.step.assign(3)
    good = checkpoint.save()
    before = folder_bytes(tmp_path)
    kernel = model.out.kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[2, 0]], [float("inf")]))
    checkpoint.step.assign(4)
    with pytest.raises(training.TrainingDiverged) as refused:
        checkpoint.save()
    assert str(refused.value).startswith(f"step 4: the weights are not finite ({optimization.variable_path(kernel)}: "
                                         "1 of 8 values are NaN or infinite): the run has diverged. Refused to save")
    assert f"the newest checkpoint, {good}, is kept" in str(refused.value)
    assert folder_bytes(tmp_path) == before  # keep=1: a save would have deleted the good one


def test_the_default_limit_lets_float16s_loss_scale_come_down_from_its_start():
    """A healthy float16 run skips steps at its start until the scale fits its gradients: at
    most one per halving from the initial scale to the minimum, fewer than the default limit."""
    scale = optimization.DynamicLossScale()
    halvings = 0
    while float(scale.value) > scale.min_scale:
        assert not bool(scale.update([tf.constant([np.inf])]))
        halvings += 1
    assert halvings == 15 < training.max_consecutive_skipped_steps(None, loss_scaled=True)


# ----------------------------------------------------------------------------- damaged checkpoints

def weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {str(i): v.numpy() for i, v in enumerate(model.trainable_variables)}


@pytest.mark.parametrize("kind", sorted(damage.DAMAGES))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumed(kind: str, tmp_path: Path, caplog):
    """A run with checkpoints 4 and 8 whose ckpt-8 is damaged resumes from ckpt-4 with a warning
    naming the file, ends with an uninterrupted run's weights, and keeps the damaged files, moved
    aside and forgotten by the CheckpointState, instead of writing its own ckpt-8 over them."""
    straight, _, _ = run(tmp_path / "straight", last_step=12)
    directory = tmp_path / "damaged"
    run(directory, last_step=8)
    bad_file = damage.damage(directory / "ckpt-8", kind)
    damaged = damage.files_of(directory / "ckpt-8")
    with caplog.at_level(logging.WARNING, logger="training"):
        resumed, result, _ = run(directory, last_step=12, init_seed=99)
    assert f"checkpoint {directory / 'ckpt-8'} is unreadable: {bad_file} (" in caplog.text
    assert f"using the previous one, {directory / 'ckpt-4'}" in caplog.text
    assert result.step == 12
    damage.assert_same_tensors(weights(resumed), weights(straight), atol=1e-7)
    aside = list(directory.glob("unreadable-*"))
    assert len(aside) == 1 and damage.files_of(aside[0] / "ckpt-8") == damaged
    state = tf.train.get_checkpoint_state(str(directory))
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-4", "ckpt-8", "ckpt-12"]
    assert training.checkpoint_problem(str(directory / "ckpt-8")) is None  # saved anew


def test_when_no_checkpoint_reads_one_error_names_the_folder_and_every_bad_file(tmp_path: Path):
    run(tmp_path, last_step=8)
    bad_files = [damage.damage(tmp_path / "ckpt-8", "truncated index"),
                 damage.damage(tmp_path / "ckpt-4", "flipped data bytes")]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(training.UnreadableCheckpoint) as error:
        run(tmp_path, last_step=12)
    message = str(error.value)
    assert message.startswith(f"no checkpoint in {tmp_path} reads fully: {bad_files[0]} (")
    assert f"; {bad_files[1]} (" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing moved or deleted


def test_choose_checkpoint_takes_a_folders_newest_readable_one_but_refuses_an_unreadable_path(tmp_path: Path,
                                                                                              caplog):
    run(tmp_path, last_step=8)
    bad_file = damage.damage(tmp_path / "ckpt-8", "truncated data")
    for spec in ("latest", str(tmp_path)):
        assert training.choose_checkpoint(spec, str(tmp_path)).path == str(tmp_path / "ckpt-4")
    assert f"unreadable: {bad_file} (OutOfRangeError: Read less bytes than requested)" in caplog.text
    with pytest.raises(training.UnreadableCheckpoint, match=f"checkpoint {tmp_path / 'ckpt-8'} is unreadable: "
                                                            f"{bad_file} \\(OutOfRangeError"):
        training.choose_checkpoint(str(tmp_path / "ckpt-8"), str(tmp_path))
    assert (tmp_path / "ckpt-8.index").exists()  # choosing alone moves nothing


class TwoRanksInOneProcess(distributed.SingleProcess):
    """Rank `rank` of 2: the chief's broadcasts go to `channel`, rank 1 receives them in order."""

    def __init__(self, rank: int, channel: list):
        super().__init__()
        self.rank, self.size, self.channel, self.received = rank, 2, channel, 0

    def broadcast_from_chief(self, variables) -> None:
        if self.is_chief:
            self.channel.append([v.numpy() for v in variables])
            return
        for variable, value in zip(variables, self.channel[self.received]):
            variable.assign(value)
        self.received += 1


def save_at(checkpoint: training.TrainingCheckpoint, *steps: int) -> None:
    for step in steps:
        checkpoint.step.assign(step)
        checkpoint.save()


def test_every_rank_resumes_the_checkpoint_the_chief_chose_and_its_parts_are_set_aside_together(tmp_path: Path):
    channel: list = []
    ranks = [tiny_run(tmp_path, engine=TwoRanksInOneProcess(rank, channel),
                      input_state=iter(tf.data.Dataset.range(100)))[2] for rank in (0, 1)]
    for checkpoint in ranks:
        save_at(checkpoint, 4, 8)
    assert (tmp_path / "rank1" / "ckpt-8.index").exists()
    damage.damage(tmp_path / "ckpt-8", "flipped data bytes")
    # Rank 1 reads none of the chief's files to choose: it takes what the chief sends.
    chosen = [checkpoint.choose("latest") for checkpoint in ranks]
    assert chosen == [str(tmp_path / "ckpt-4")] * 2
    aside = next(tmp_path.glob("unreadable-*"))
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*.index")) == ["ckpt-8.index", "rank1/ckpt-8.index"]
    for folder in (tmp_path, tmp_path / "rank1"):
        state = tf.train.get_checkpoint_state(str(folder))
        assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-4"]
    ranks[1].resume(chosen[1])
    assert int(ranks[1].step.numpy()) == 4

    bad_part = damage.damage(tmp_path / "rank1" / "ckpt-4", "truncated index")
    with pytest.raises(training.UnreadableCheckpoint, match=f"rank 1's part of checkpoint {chosen[1]} is "
                                                            f"unreadable: {bad_part}"):
        ranks[1].resume(chosen[1])
    damage.damage(tmp_path / "ckpt-4", "truncated index")
    with pytest.raises(training.UnreadableCheckpoint, match=f"no checkpoint in {tmp_path} reads fully"):
        ranks[0].choose("latest")
    with pytest.raises(training.UnreadableCheckpoint, match="rank 1: rank 0 found no checkpoint"):
        ranks[1].choose("latest")


# ----------------------------------------------------------------------------- unreadable input

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
