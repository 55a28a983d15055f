"""One training loop for every training program, and the checkpoint that lets a run stop and
resume as if it never had.

`run_training_loop` runs the optimizer steps of a run (pretraining, SQuAD or GLUE fine-tuning);
what differs between programs comes in as arguments:
- a `optimization.Trainer`: the model's variables, the loss function
  `loss_fn(batch, seed, first_row) -> {"total_loss": ..., other scalars}` and the optimizer
  (programs build it with `run_utils.make_trainer`);
- a `BatchSource`: the iterator of micro-batches (a tf.data iterator or any Python iterator);
- a `TrainingPlan`: the last step, when to log and when to checkpoint;
- a `TrainingCheckpoint`: what is saved and restored (its `step` is the number of optimizer steps
  done, which the loop advances);
- the process engine and the stop request of `run_utils.stop_requests()`;
- `WindowMetrics` (what a log line averages; `MeanOutputs` by default) and `LoopHook`s (called
  at each log line and each checkpoint; `run_utils.MetricsLog` is one).

Every optimizer step: its micro-batches are read (a source that can meet unreadable input, such
as a corrupt TFRecord, makes every process agree on it first: all then save a checkpoint at the
last completed step and stop with `InputDataError`); `trainer.step` (gradient average over
processes, skip when not finite); every `log_every` steps a log line; then all processes agree
whether one of them received SIGTERM/SIGINT, so all stop after the same step with a checkpoint; a
checkpoint at the plan's steps. Only the chief (rank 0) shows the progress bar.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, ClassVar, Iterator, Mapping, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import distributed
import optimization
from safe_io import UserError

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- plan and batches

@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """When the loop stops, logs and checkpoints. Steps count optimizer steps from the start of
    the whole run (a resumed run continues the count)."""

    last_step: int  # the loop stops after this step (the run's last, or an earlier stop)
    log_every: int  # a log line every this many steps, and at the last step
    checkpoint_every: int  # a checkpoint every this many steps (e.g. an epoch), and at the last step
    sequences_per_step: int  # for the logged speed
    description: str = "training"  # the progress bar's label

    def logs_at(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.last_step

    def saves_at(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.last_step


@dataclasses.dataclass(frozen=True)
class BadInput:
    """Input a source could not read: where (file and record) and how the user fixes it."""

    where: str
    fix: str


@dataclasses.dataclass
class BatchSource:
    """The micro-batches the loop trains on: `batches` yields one dict of arrays per micro-batch
    (a tf.data iterator, or a Python generator of NumPy arrays).

    A source that can meet unreadable input (`reports_bad_input`, e.g. a corrupt TFRecord)
    returns it from `read_step` instead of raising, so that the loop can stop every rank at the
    same step with a checkpoint; every rank then agrees on it before each step.
    """

    batches: Iterator[Mapping[str, Any]]
    reports_bad_input: ClassVar[bool] = False

    def read_step(self, count: int) -> tuple[list[Mapping[str, Any]], BadInput | None]:
        """The `count` micro-batches of one optimizer step, and the unreadable input that
        stopped the reading (None: all were read)."""
        return [next(self.batches) for _ in range(count)], None


class WindowMetrics(Protocol):
    """What a log line shows of the steps since the previous one."""

    def update(self, outputs: Mapping[str, tf.Tensor]) -> None:
        """Add one micro-batch's outputs of the loss function."""

    def result_and_reset(self) -> dict[str, float]:
        """The values since the last call (then start a new window)."""


class MeanOutputs:
    """The mean of every scalar the loss function returns, over the micro-batches of a window."""

    def __init__(self) -> None:
        self.window: dict[str, list[float]] = {}

    def update(self, outputs: Mapping[str, tf.Tensor]) -> None:
        for name, value in outputs.items():
            self.window.setdefault(name, []).append(float(value))

    def result_and_reset(self) -> dict[str, float]:
        values = {name: float(np.mean(v)) for name, v in self.window.items()}
        self.window = {}
        return values


class LoopHook:
    """Called by the loop on the chief and on every other rank; override what you need."""

    def on_log(self, step: int, values: dict[str, float]) -> None:
        """A log line: `values` holds the window's metrics, learning_rate, gradient_norm,
        loss_scale, skipped_steps and sequences_per_second."""

    def on_save(self, step: int, path: str | None) -> None:
        """A checkpoint at `step` (path None on ranks that save nothing)."""


@dataclasses.dataclass
class LoopResult:
    """What the loop did: the step reached, why it stopped early (None: it ran to the plan's
    last step), the skipped (non-finite) steps, the last log line, and the time of the steps
    after the first (which traces and compiles the graph)."""

    step: int
    stopped_by: str | None
    skipped_steps: int
    logged: dict[str, float]
    timed_steps: int
    timed_seconds: float

    def sequences_per_second(self, sequences_per_step: int) -> float | None:
        return self.timed_steps * sequences_per_step / self.timed_seconds if self.timed_steps else None


# ----------------------------------------------------------------------------- the loop

def run_training_loop(trainer: optimization.Trainer, source: BatchSource, plan: TrainingPlan,
                      checkpoint: "TrainingCheckpoint", engine: distributed.SingleProcess, stop: Any,
                      metrics: WindowMetrics | None = None, hooks: Sequence[LoopHook] = ()) -> LoopResult:
    """Train from the checkpoint's step to `plan.last_step`; `stop.signal_name` (set by a signal
    handler, see `run_utils.stop_requests`) ends the run on every rank after the same step, with
    a checkpoint. Unreadable input the source reports raises `InputDataError` on every rank,
    after a checkpoint at the last completed step."""
    metrics = metrics if metrics is not None else MeanOutputs()
    start = int(checkpoint.step.numpy())
    window_start, window_steps, skipped, timed_steps, timed_seconds = time.perf_counter(), 0, 0, 0, 0.0
    logged: dict[str, float] = {}
    stopped_by = None
    bar = tqdm(total=plan.last_step, initial=start, desc=plan.description, unit="step", dynamic_ncols=True,
               disable=not engine.is_chief)
    for step in range(start, plan.last_step):
        step_start = time.perf_counter()
        batches, bad_input = source.read_step(trainer.accumulation_steps)
        if source.reports_bad_input and agree_on_bad_input(engine, bad_input):  # before the step's collectives
            bar.close()
            raise stop_for_bad_input(checkpoint, hooks, bad_input)
        outputs, update = trainer.step(iter(batches), step)
        for micro_outputs in outputs:
            metrics.update(micro_outputs)
        skipped += int(not bool(update["finite"]))
        if step > start:  # the first step of a process traces (and compiles) the graph
            timed_steps, timed_seconds = timed_steps + 1, timed_seconds + time.perf_counter() - step_start
        checkpoint.step.assign(step + 1)
        window_steps += 1
        bar.update(1)
        if plan.logs_at(step + 1):
            elapsed = time.perf_counter() - window_start
            logged = {**metrics.result_and_reset(), "learning_rate": float(trainer.optimizer.learning_rate),
                      "gradient_norm": float(update["gradient_norm"]), "loss_scale": float(trainer.loss_scale.value),
                      "skipped_steps": skipped,
                      "sequences_per_second": window_steps * plan.sequences_per_step / elapsed}
            for hook in hooks:
                hook.on_log(step + 1, logged)
            bar.set_postfix(loss=f"{logged['total_loss']:.3f}")
            window_start, window_steps = time.perf_counter(), 0
        stopping = engine.agree(stop.signal_name is not None)  # every rank stops at the same step
        if plan.saves_at(step + 1) or stopping:
            path = checkpoint.save()
            for hook in hooks:
                hook.on_save(step + 1, path)
        if stopping:
            stopped_by = f"{stop.signal_name} received" if stop.signal_name else "another rank was stopped"
            logger.warning("%s: saved a checkpoint at step %d, exiting", stopped_by, step + 1)
            break
    bar.close()
    return LoopResult(int(checkpoint.step.numpy()), stopped_by, skipped, logged, timed_steps, timed_seconds)


def agree_on_bad_input(engine: distributed.SingleProcess, bad_input: BadInput | None) -> bool:
    """Whether any rank met unreadable input. With several ranks the one that met it names it
    first: once all have agreed, a launcher may stop the others as soon as the chief exits."""
    if bad_input is not None and engine.size > 1:
        logger.warning("rank %d: %s; stopping every rank with a checkpoint", engine.rank, bad_input.where)
    return engine.agree(bad_input is not None)


class InputDataError(UserError):
    """Training stopped on unreadable input, after saving a checkpoint at the last completed step."""


def stop_for_bad_input(checkpoint: "TrainingCheckpoint", hooks: Sequence[LoopHook],
                       bad_input: BadInput | None) -> InputDataError:
    """Save a checkpoint at the last completed step, so that the steps since the previous one are
    not lost, and the one-line error to stop with (`bad_input` None: another rank met it)."""
    step = int(checkpoint.step.numpy())
    path = checkpoint.save()
    for hook in hooks:
        hook.on_save(step, path)
    where = bad_input.where if bad_input else "another rank met unreadable input (its error names it)"
    fix = f"; {bad_input.fix}" if bad_input else ""
    return InputDataError(f"{where}: saved a checkpoint at step {step} in {checkpoint.directory}{fix}")


# ----------------------------------------------------------------------------- checkpoints

def resolve_checkpoint(spec: str, default_directory: str) -> str:
    """'latest' -> newest checkpoint of `default_directory`; a folder -> its newest; else the path itself."""
    directory = default_directory if spec == "latest" else spec
    if spec == "latest" or os.path.isdir(spec):
        path = tf.train.latest_checkpoint(directory)
        if path is None:
            raise FileNotFoundError(f"no checkpoint found in {directory}")
        return path
    if not tf.io.gfile.exists(spec + ".index"):
        raise FileNotFoundError(f"checkpoint not found: {spec} (expected {spec}.index)")
    return spec


class TrainingCheckpoint:
    """Everything a resumed run needs, in DIRECTORY/ckpt-N (N = the step) under a
    tf.train.CheckpointManager: the model, optimizer, loss scale and step (and, given
    `total_steps`, the planned length of the run, which a resume must match).

    With `input_state` (a checkpointable iterator, e.g. pretraining's tf.data iterator, whose
    position differs per rank) every rank also keeps its own input position and dropout RNG
    state: the chief in its checkpoint, rank r in DIRECTORY/rank{r}/ckpt-N. Without, only the
    chief saves (the dropout RNG states included) and every rank resumes from its checkpoint,
    keeping its own dropout seeds (fine-tuning, whose batches follow from the step).
    """

    def __init__(self, directory: str, model: keras.Model, trainer: optimization.Trainer, keep: int,
                 engine: distributed.SingleProcess | None = None, input_state: Any = None,
                 total_steps: int | None = None):
        self.engine = engine or distributed.SingleProcess()
        self.rank = self.engine.rank
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.total_steps = None if total_steps is None else tf.Variable(total_steps, dtype=tf.int64,
                                                                        trainable=False, name="total_steps")
        # Keras keeps the dropout RNG states outside what the model checkpoints; saved here so a
        # resumed run draws the same dropout masks.
        self.dropout_rng = list(model.non_trainable_variables)
        shared: dict[str, Any] = dict(model=model, optimizer=trainer.optimizer, loss_scale=trainer.loss_scale,
                                      step=self.step)
        if self.total_steps is not None:
            shared["total_steps"] = self.total_steps
        own = {} if input_state is None else dict(iterator=input_state, dropout_rng=self.dropout_rng)
        if not own:
            shared["dropout_rng"] = self.dropout_rng
        self.shared = tf.train.Checkpoint(**shared)
        self.own_state = bool(own)
        if self.rank == 0:
            self.checkpoint = tf.train.Checkpoint(**shared, **own)
        else:
            self.checkpoint = tf.train.Checkpoint(step=self.step, **own) if own else None
        self.directory = directory
        self.own_directory = directory if self.rank == 0 else os.path.join(directory, f"rank{self.rank}")
        self.manager = (tf.train.CheckpointManager(self.checkpoint, self.own_directory, max_to_keep=keep)
                        if self.checkpoint is not None else None)

    def newest(self) -> str | None:
        """The newest checkpoint of this run (the chief's), or None."""
        return tf.train.latest_checkpoint(self.directory)

    def own_path(self, path: str) -> str:
        """This rank's part of the checkpoint `path` (the chief's own is `path` itself)."""
        return path if self.rank == 0 else os.path.join(self.own_directory, os.path.basename(path))

    def save(self) -> str | None:
        """Save at the current step; the path, or None on a rank that saves nothing."""
        if self.manager is None:
            return None
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        logger.info("Saved checkpoint %s", path)
        return path

    def resume(self, path: str) -> None:
        """Continue the run that wrote checkpoint `path` (the chief's)."""
        planned = None if self.total_steps is None else int(self.total_steps.numpy())
        own_seeds = [int(state.numpy()[0]) for state in self.dropout_rng]
        if self.rank == 0:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        else:
            self.shared.restore(path).expect_partial().assert_existing_objects_matched()
            if self.own_state:
                own = self.own_path(path)
                if not tf.io.gfile.exists(own + ".index"):
                    raise FileNotFoundError(f"rank {self.rank} has no input position {own} for checkpoint {path}; "
                                            "resume with the number of processes that wrote it")
                self.checkpoint.restore(own).assert_existing_objects_matched()
            else:
                self.keep_own_dropout_seeds(own_seeds)
        if planned is not None and int(self.total_steps.numpy()) != planned:
            raise ValueError(f"{path} belongs to a run of {int(self.total_steps.numpy())} steps, this command plans "
                             f"{planned}; use the same settings to resume or another --output_dir")
        logger.info("Resumed from %s at step %d", path, int(self.step.numpy()))

    def keep_own_dropout_seeds(self, own_seeds: list[int]) -> None:
        """A dropout RNG state is [seed, draws]: every rank draws as often as the chief, so the
        chief's counts with this rank's own seeds continue this rank's masks exactly."""
        for state, seed in zip(self.dropout_rng, own_seeds):
            state.assign(tf.constant([seed, int(state.numpy()[1])], dtype=state.dtype))

    def start_from(self, path: str) -> None:
        """Weights, optimizer slots and loss scale of another run's checkpoint (e.g. pretraining's
        phase 1); the step and the input position start anew."""
        previous = tf.train.Checkpoint(model=self.shared.model, optimizer=self.shared.optimizer,
                                       loss_scale=self.shared.loss_scale)
        previous.restore(path).expect_partial().assert_existing_objects_matched()
        self.shared.optimizer.iterations.assign(0)
        self.step.assign(0)
