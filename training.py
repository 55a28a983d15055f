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

A diverged run stops with `TrainingDiverged` (one line, exit 1) and saves nothing more: when more
than `plan.max_consecutive_skipped_steps` steps in a row are skipped (`SkippedSteps`), or when
the weights are not finite at a save (`TrainingCheckpoint.save`). A checkpoint that falls due
amid skipped steps waits for the first step that trains again, so a run that turns out to have
diverged has not pushed a good checkpoint out of the kept ones with the weights it is stuck on.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import re
import time
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tqdm import tqdm

import distributed
import optimization
import safe_io

logger = logging.getLogger(__name__)

# More optimizer steps than this skipped in a row stop a run as diverged. float16's dynamic loss
# scale starts at 2**15 and halves at each skipped step down to 1 (optimization.DynamicLossScale),
# so bringing it down skips at most 15 steps in a row (5 in the tiny fp16 test); after that only
# a jump of the gradients by a factor of 2**20 would skip 20 in a row: 20 leaves it room. Without
# a loss scale (float32, bfloat16) no skipped step is normal: 3 in a row stop the run at once
# (the 8-step run at --learning_rate 1e6 skipped 5 in a row and "finished").
MAX_CONSECUTIVE_SKIPPED_STEPS_LOSS_SCALED = 20
MAX_CONSECUTIVE_SKIPPED_STEPS_UNSCALED = 3


def max_consecutive_skipped_steps(requested: int | None, loss_scaled: bool) -> int:
    """The limit a run uses: the one asked for, else the default for its kind of run."""
    if requested is not None:
        return requested
    return MAX_CONSECUTIVE_SKIPPED_STEPS_LOSS_SCALED if loss_scaled else MAX_CONSECUTIVE_SKIPPED_STEPS_UNSCALED


DIVERGENCE_FIXES = ("lower --learning_rate (or warm up longer), check the training data, or with --amp "
                    "float16 try --amp_dtype bfloat16 or --no-amp")


class TrainingDiverged(safe_io.UserError):
    """The loss or the weights stopped being finite; nothing more was saved."""


def kept_checkpoint(newest: str | None) -> str:
    """What a diverged run leaves, for its message."""
    return f"the newest checkpoint, {newest}, is kept" if newest else "no checkpoint had been saved"


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
    # more skipped (non-finite) steps in a row than this stop the run as diverged (None: the
    # default for the run's precision, see `max_consecutive_skipped_steps`)
    max_consecutive_skipped_steps: int | None = None

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


class SkippedSteps:
    """The optimizer steps skipped because their gradients were not finite (weights, optimizer
    slots and schedule unchanged): their number, the current run of them and the last finite
    loss. A run of more than `limit` means the run has diverged: `record` raises."""

    def __init__(self, limit: int | None, newest_checkpoint: Callable[[], str | None], loss_scaled: bool = False):
        self.limit = max_consecutive_skipped_steps(limit, loss_scaled)
        self.newest_checkpoint = newest_checkpoint  # for the message
        self.loss_scaled = loss_scaled  # float16: skipped steps also bring the loss scale down
        self.total = 0
        self.in_a_row = 0
        self.last_finite_loss: tuple[int, float] | None = None  # (step, loss)

    def record(self, step: int, finite: bool, outputs: Sequence[Mapping[str, tf.Tensor]]) -> None:
        """Count step `step` (1-based); raise TrainingDiverged after too many skipped in a row."""
        loss = float(np.mean([float(micro["total_loss"]) for micro in outputs]))
        if math.isfinite(loss):
            self.last_finite_loss = (step, loss)
        self.in_a_row = 0 if finite else self.in_a_row + 1
        self.total += int(not finite)
        if self.in_a_row > self.limit:
            raise TrainingDiverged(self.message(step))

    def message(self, step: int) -> str:
        loss = ("no finite loss in this invocation" if self.last_finite_loss is None
                else "the last finite loss {1:.4g} at step {0}".format(*self.last_finite_loss))
        scale_hint = ("; if loss_scale was still falling in the log, raise --max_consecutive_skipped_steps"
                      if self.loss_scaled else "")
        return (f"step {step}: {self.in_a_row} optimizer steps in a row were skipped (steps "
                f"{step - self.in_a_row + 1}-{step}: gradients not finite; {loss}), more than "
                f"--max_consecutive_skipped_steps {self.limit}: the run has diverged. Stopped without saving a "
                f"checkpoint (skipped steps leave the weights unchanged); {kept_checkpoint(self.newest_checkpoint())}. "
                f"Fix: {DIVERGENCE_FIXES}{scale_hint}")


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
    window_start, window_steps, timed_steps, timed_seconds = time.perf_counter(), 0, 0, 0.0
    skipped = SkippedSteps(plan.max_consecutive_skipped_steps, checkpoint.last_saved,
                           isinstance(trainer.loss_scale, optimization.DynamicLossScale))
    logged: dict[str, float] = {}
    stopped_by, save_due = None, False
    bar = tqdm(total=plan.last_step, initial=start, desc=plan.description, unit="step", dynamic_ncols=True,
               disable=not engine.is_chief)
    try:  # (closed before an error is logged, which would otherwise be drawn over)
        for step in range(start, plan.last_step):
            step_start = time.perf_counter()
            batches, bad_input = source.read_step(trainer.accumulation_steps)
            if source.reports_bad_input and agree_on_bad_input(engine, bad_input):  # before the step's collectives
                raise stop_for_bad_input(checkpoint, hooks, bad_input)
            outputs, update = trainer.step(iter(batches), step)
            for micro_outputs in outputs:
                metrics.update(micro_outputs)
            skipped.record(step + 1, bool(update["finite"]), outputs)
            if step > start:  # the first step of a process traces (and compiles) the graph
                timed_steps, timed_seconds = timed_steps + 1, timed_seconds + time.perf_counter() - step_start
            checkpoint.step.assign(step + 1)
            window_steps += 1
            bar.update(1)
            if plan.logs_at(step + 1):
                elapsed = time.perf_counter() - window_start
                logged = {**metrics.result_and_reset(), "learning_rate": float(trainer.optimizer.learning_rate),
                          "gradient_norm": float(update["gradient_norm"]),
                          "loss_scale": float(trainer.loss_scale.value), "skipped_steps": skipped.total,
                          "sequences_per_second": window_steps * plan.sequences_per_step / elapsed}
                for hook in hooks:
                    hook.on_log(step + 1, logged)
                bar.set_postfix(loss=f"{logged['total_loss']:.3f}")
                window_start, window_steps = time.perf_counter(), 0
            stopping = engine.agree(stop.signal_name is not None)  # every rank stops at the same step
            save_due = save_due or plan.saves_at(step + 1)
            if stopping or step + 1 == plan.last_step or (save_due and not skipped.in_a_row):
                if skipped.in_a_row:
                    logger.warning("step %d: saving after %d skipped steps in a row (gradients not finite): if the "
                                   "loss stays NaN, the run has diverged", step + 1, skipped.in_a_row)
                save_due = False
                path = checkpoint.save()
                for hook in hooks:
                    hook.on_save(step + 1, path)
            if stopping:
                stopped_by = f"{stop.signal_name} received" if stop.signal_name else "another rank was stopped"
                logger.warning("%s: saved a checkpoint at step %d, exiting", stopped_by, step + 1)
                break
    finally:
        bar.close()
    return LoopResult(int(checkpoint.step.numpy()), stopped_by, skipped.total, logged, timed_steps, timed_seconds)


def agree_on_bad_input(engine: distributed.SingleProcess, bad_input: BadInput | None) -> bool:
    """Whether any rank met unreadable input. With several ranks the one that met it names it
    first: once all have agreed, a launcher may stop the others as soon as the chief exits."""
    if bad_input is not None and engine.size > 1:
        logger.warning("rank %d: %s; stopping every rank with a checkpoint", engine.rank, bad_input.where)
    return engine.agree(bad_input is not None)


class InputDataError(safe_io.UserError):
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

CHECKPOINT_FILE = re.compile(r"^(?P<name>.+-\d+)\.index$")  # what a CheckpointManager writes
RANK_FOLDER = re.compile(r"^rank\d+$")  # TrainingCheckpoint's parts of the other ranks
PATH_BYTES = 4096  # Linux's PATH_MAX: the longest checkpoint path the chief can tell the other ranks


class UnreadableCheckpoint(safe_io.UserError):
    """A checkpoint (or every checkpoint of a folder) does not read fully."""


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """Why checkpoint `path` does not read: the bad `file` and TensorFlow's `reason`."""

    path: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} ({self.reason})"


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint to use (None: the folder holds none at all) and the newer ones passed over
    because they do not read."""

    path: str | None
    skipped: tuple[Unreadable, ...] = ()


def checkpoint_number(path: str) -> int:
    """N of a checkpoint NAME-N (-1 for a name without a number), to order checkpoints by step."""
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else -1


def checkpoint_problem(path: str) -> Unreadable | None:
    """None when every tensor of checkpoint `path` reads, else which file is bad and why.

    Only reading proves a checkpoint whole: TensorFlow checks each tensor's checksum as it reads
    it. Read with the op a restore runs, one tensor at a time, since a plain reader cannot read an
    iterator's state (a variant tensor). Whatever TensorFlow raises counts (an OpError for a bad
    .index or a damaged, short or missing .data file; a plain IndexError, from some readers, for a
    short one)."""
    index = path + ".index"
    if not tf.io.gfile.exists(index):
        return Unreadable(path, index, "missing")
    try:
        dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
    except Exception as error:  # noqa: BLE001 (any failure to read makes it unreadable)
        return Unreadable(path, index, error_summary(error))
    try:
        for name, dtype in dtypes.items():
            tf.raw_ops.RestoreV2(prefix=path, tensor_names=[name], shape_and_slices=[""], dtypes=[dtype])
    except Exception as error:  # noqa: BLE001
        return Unreadable(path, bad_data_file(path, error), error_summary(error))
    return None


def bad_data_file(path: str, error: Exception) -> str:
    """The .data file of checkpoint `path` that failed to read: the one TensorFlow's message names
    (a missing one), else its shards (it names none for a damaged one)."""
    named = re.search(r"\S+\.data-\d{5}-of-\d{5}", str(error))
    if named:
        return named.group(0).rstrip(";")
    return ", ".join(sorted(tf.io.gfile.glob(path + ".data-?????-of-?????"))) or path + ".data-*"


def error_summary(error: Exception) -> str:
    """The error's type and the first line of its message, without the op's name, short enough
    for a log line."""
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:\w+\]", "", str(error)).strip()
    return f"{type(error).__name__}: {message.splitlines()[0][:200] if message else ''}"


def checkpoint_candidates(directory: str) -> list[str]:
    """Every checkpoint of the folder, readable or not, newest (highest step) first: those its
    CheckpointState (the `checkpoint` file) lists, and every NAME-N.index beside them (the state
    may be lost, or name a checkpoint whose files are gone)."""
    if not tf.io.gfile.isdir(directory):
        return []
    state = tf.train.get_checkpoint_state(directory)
    listed = [p for p in (*state.all_model_checkpoint_paths, state.model_checkpoint_path) if p] if state else []
    on_disk = [os.path.join(directory, match["name"])
               for match in map(CHECKPOINT_FILE.match, tf.io.gfile.listdir(directory)) if match]
    unique: dict[str, str] = {}
    for path in listed + on_disk:
        unique.setdefault(os.path.abspath(path), path)
    return sorted(unique.values(), key=checkpoint_number, reverse=True)


def newest_readable_checkpoint(directory: str) -> CheckpointChoice:
    """The newest checkpoint of the folder that reads fully, with a warning naming each newer
    one passed over; path None when the folder holds no checkpoint. Raises UnreadableCheckpoint
    when it holds some and none reads (the files are left as they are)."""
    skipped: list[Unreadable] = []
    for path in checkpoint_candidates(directory):
        problem = checkpoint_problem(path)
        if problem is None:
            for bad in skipped:
                logger.warning("checkpoint %s is unreadable: %s; using the previous one, %s", bad.path, bad, path)
            return CheckpointChoice(path, tuple(skipped))
        skipped.append(problem)
    if skipped:
        raise UnreadableCheckpoint(f"no checkpoint in {directory} reads fully: " + "; ".join(map(str, skipped))
                                   + "; nothing was changed: restore the files from a copy, or start afresh elsewhere")
    return CheckpointChoice(None)


def choose_checkpoint(spec: str | None, default_directory: str) -> CheckpointChoice:
    """The checkpoint every program restores, checked to read fully. `spec`: None -> the newest
    readable checkpoint of `default_directory` if it holds any (path None if none); 'latest' ->
    the same, but one must exist; a folder -> its newest readable one; else the checkpoint path
    itself, which must read fully. Unreadable ones are never deleted."""
    if spec is None or spec == "latest" or tf.io.gfile.isdir(spec):
        directory = default_directory if spec in (None, "latest") else spec
        choice = newest_readable_checkpoint(directory)
        if choice.path is None and spec is not None:
            raise FileNotFoundError(f"no checkpoint found in {directory}")
        return choice
    if not tf.io.gfile.exists(spec + ".index"):
        raise FileNotFoundError(f"checkpoint not found: {spec} (expected {spec}.index)")
    problem = checkpoint_problem(spec)
    if problem is not None:
        raise UnreadableCheckpoint(f"checkpoint {spec} is unreadable: {problem}; give an older checkpoint, or its "
                                   "folder to use the newest one that reads")
    return CheckpointChoice(spec)


def resolve_checkpoint(spec: str, default_directory: str) -> str:
    """The path `choose_checkpoint` picks for `spec` ('latest', a folder or a checkpoint)."""
    return choose_checkpoint(spec, default_directory).path


def share_chief_choice(engine: distributed.SingleProcess, path: str | None, failed: bool = False
                       ) -> tuple[str | None, bool]:
    """The chief's (path, failed) on every rank, so every rank restores the checkpoint the chief
    chose from its own files (and fails when it failed) instead of choosing for itself. Every rank
    must call it, the chief even when it failed: the others wait for its answer."""
    encoded = (path or "").encode()
    values = np.zeros(PATH_BYTES + 2, np.float32)  # float32: the dtype every engine's collectives carry
    if engine.is_chief:
        values[:2] = failed, path is not None
        values[2:2 + len(encoded)] = np.frombuffer(encoded[:PATH_BYTES], np.uint8)
    shared = tf.Variable(values, trainable=False)
    engine.broadcast_from_chief([shared])
    values = shared.numpy()
    chosen = bytes(values[2:].astype(np.uint8)).rstrip(b"\0").decode() if values[1] else None
    return chosen, bool(values[0])


def forget_checkpoints(folder: str, names: set[str]) -> None:
    """Drop the checkpoints `names` (e.g. {"ckpt-8"}) from the folder's CheckpointState, which a
    CheckpointManager would otherwise keep counting among the checkpoints it keeps."""
    state = tf.train.get_checkpoint_state(folder)
    if state is None:
        return
    timestamps = list(state.all_model_checkpoint_timestamps)
    kept = [(os.path.relpath(path, folder), timestamps[i] if timestamps else None)
            for i, path in enumerate(state.all_model_checkpoint_paths) if os.path.basename(path) not in names]
    state_file = os.path.join(folder, "checkpoint")
    if len(kept) == len(state.all_model_checkpoint_paths):
        return
    if not kept:  # bookkeeping of nothing left: the next save starts a new one
        os.remove(state_file)
        return
    del state.all_model_checkpoint_paths[:], state.all_model_checkpoint_timestamps[:]
    state.all_model_checkpoint_paths.extend(path for path, _ in kept)
    if timestamps:
        state.all_model_checkpoint_timestamps.extend(timestamp for _, timestamp in kept)
    state.model_checkpoint_path = kept[-1][0]  # the manager's convention: the last is the newest
    with safe_io.staged_file(state_file) as staged:
        staged.write_text(text_format.MessageToString(state), encoding="utf-8")


def new_folder_path(path: str) -> str:
    """`path`, or PATH-2, PATH-3... if it exists (two set-asides in the same second)."""
    candidate, number = path, 1
    while os.path.exists(candidate):
        number += 1
        candidate = f"{path}-{number}"
    return candidate


def set_aside(directory: str, paths: Sequence[str]) -> str:
    """Move the checkpoints `paths` of DIRECTORY (each rank's part too, from DIRECTORY/rank{r})
    into a new folder DIRECTORY/unreadable-TIME, with the same layout, and drop them from the
    CheckpointStates: a run resumed from an older checkpoint then saves those steps anew without
    overwriting them, and keeps as many readable checkpoints as it was asked to. Returns the folder."""
    names = {os.path.basename(path) for path in paths}
    aside = new_folder_path(os.path.join(directory, time.strftime("unreadable-%Y%m%d-%H%M%S")))
    folders = [directory, *(os.path.join(directory, d) for d in sorted(os.listdir(directory)) if RANK_FOLDER.match(d))]
    for folder in folders:
        forget_checkpoints(folder, names)  # first: a run killed in between finds the files and moves them
        target = os.path.join(aside, os.path.relpath(folder, directory))
        for name in sorted(names):
            for file in glob.glob(glob.escape(os.path.join(folder, name)) + ".*"):
                os.makedirs(target, exist_ok=True)
                os.replace(file, os.path.join(target, os.path.basename(file)))
    return aside


class NonFiniteValues:
    """Counts the NaN and infinite values of each variable in one graph call (a reduction per
    variable, one transfer to the host): cheap enough to run before every checkpoint."""

    def __init__(self, variables: Sequence[Any]):
        self.variables = list(variables)
        self.counts = tf.function(self._counts)

    def _counts(self) -> tf.Tensor:
        return tf.stack([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(v)), tf.int64))
                         for v in self.variables])

    def first(self) -> tuple[str, int, int] | None:
        """(path, non-finite values, size) of the first variable that holds any, else None."""
        if not self.variables:
            return None
        counts = self.counts().numpy()
        bad = np.flatnonzero(counts)
        if not bad.size:
            return None
        variable = self.variables[bad[0]]
        return optimization.variable_path(variable), int(counts[bad[0]]), int(np.prod(variable.shape))


class InputPositionMismatch(safe_io.UserError):
    """A checkpoint's input position was written for other input files than this run reads."""


def restore_input_position(path: str, restore: Callable[[], Any]) -> None:
    """Run `restore` (a restore of checkpoint `path` that includes a tf.data iterator); the
    iterator's refusal of another dataset (a file removed or added, another number of processes)
    becomes one line saying what must match."""
    try:
        restore()
    except tf.errors.OpError as error:
        if "Failed to restore dataset iterator" not in str(error):
            raise
        raise InputPositionMismatch(
            f"checkpoint {path} holds an input position for other input files than this run reads "
            f"({error_summary(error)}): "
            "resume with the same --pretrain_tfrecords files (rebuild or copy back a removed file; "
            "--skip_bad_records gets past a bad one) and the same number of processes, or start a new run from "
            "its weights (--phase2 --restore_checkpoint PATH, another --results_dir)") from None


class TrainingCheckpoint:
    """Everything a resumed run needs, in DIRECTORY/ckpt-N (N = the step) under a
    tf.train.CheckpointManager: the model, optimizer, loss scale and step (and, given
    `total_steps`, the planned length of the run, which a resume must match).

    With `input_state` (a checkpointable iterator, e.g. pretraining's tf.data iterator, whose
    position differs per rank) every rank also keeps its own input position and dropout RNG
    state: the chief in its checkpoint, rank r in DIRECTORY/rank{r}/ckpt-N. Without, only the
    chief saves (the dropout RNG states included) and every rank resumes from its checkpoint,
    keeping its own dropout seeds (fine-tuning, whose batches follow from the step).

    What to resume comes from `choose` (or `newest`): the newest checkpoint that reads fully,
    chosen by the chief. An unreadable newer one is moved to DIRECTORY/unreadable-TIME/ (every
    rank's part) before the run saves its step again; nothing is deleted.
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
        self.keep = keep
        self.manager: tf.train.CheckpointManager | None = None  # made at the first save, after `choose`
        self.non_finite = NonFiniteValues(model.trainable_variables)

    def newest(self) -> str | None:
        """The newest readable checkpoint of this run, or None when it has none (see `choose`)."""
        return self.choose(None)

    def choose(self, spec: str | None) -> str | None:
        """The checkpoint to restore for `spec` (see `choose_checkpoint`; None: this run's newest,
        if any), the same on every rank: the chief chooses from its own files and tells the other
        ranks. Unreadable checkpoints of this run it passed over are set aside first (`set_aside`)."""
        if not self.engine.is_chief:
            path, failed = share_chief_choice(self.engine, None)
            if failed:
                raise UnreadableCheckpoint(f"rank {self.rank}: rank 0 found no checkpoint to restore in "
                                           f"{self.directory} (its error says why)")
            return path
        try:
            choice = choose_checkpoint(spec, self.directory)
            self.set_aside_skipped(choice)
        except Exception:
            share_chief_choice(self.engine, None, failed=True)
            raise
        return share_chief_choice(self.engine, choice.path)[0]

    def set_aside_skipped(self, choice: CheckpointChoice) -> None:
        """Move the unreadable checkpoints of this run that `choice` passed over out of the way of
        the steps this run saves again (another run's, e.g. phase 1's, are left where they are)."""
        ours = [bad.path for bad in choice.skipped
                if os.path.abspath(os.path.dirname(bad.path)) == os.path.abspath(self.directory)]
        if ours:
            aside = set_aside(self.directory, ours)
            logger.warning("Moved the unreadable checkpoint(s) %s to %s: this run saves their steps anew",
                           ", ".join(os.path.basename(path) for path in ours), aside)

    def last_saved(self) -> str | None:
        """The newest checkpoint the run's CheckpointState lists (for messages: not read, not
        shared between ranks, unlike `newest`)."""
        return tf.train.latest_checkpoint(self.directory)

    def own_path(self, path: str) -> str:
        """This rank's part of the checkpoint `path` (the chief's own is `path` itself)."""
        return path if self.rank == 0 else os.path.join(self.own_directory, os.path.basename(path))

    def save(self) -> str | None:
        """Save at the current step; the path, or None on a rank that saves nothing. Weights that
        are not finite raise TrainingDiverged first, on every rank (the ranks' weights are the
        same): saving them would push the oldest good checkpoint out of the `keep` kept."""
        self.check_weights_finite()
        if self.checkpoint is None:
            return None
        if self.manager is None:  # reads the CheckpointState as `choose` left it
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.own_directory, max_to_keep=self.keep)
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        logger.info("Saved checkpoint %s", path)
        return path

    def check_weights_finite(self) -> None:
        bad = self.non_finite.first()
        if bad is not None:
            name, count, size = bad
            raise TrainingDiverged(
                f"step {int(self.step.numpy())}: the weights are not finite ({name}: {count} of {size} values are "
                f"NaN or infinite): the run has diverged. Refused to save a checkpoint; "
                f"{kept_checkpoint(self.last_saved())}. Fix: {DIVERGENCE_FIXES}")

    def resume(self, path: str) -> None:
        """Continue the run that wrote checkpoint `path` (the chief's, as `choose` returns it)."""
        planned = None if self.total_steps is None else int(self.total_steps.numpy())
        own_seeds = [int(state.numpy()[0]) for state in self.dropout_rng]
        own_problem = self.own_part_problem(path)
        if self.engine.agree(own_problem is not None):  # every rank stops, none waits in a broadcast
            raise UnreadableCheckpoint(own_problem or f"rank {self.rank}: another rank's part of checkpoint {path} "
                                                      "is missing or unreadable (that rank's error names it)")
        if self.rank == 0:
            restore_input_position(path, lambda: self.checkpoint.restore(path).assert_existing_objects_matched())
        else:
            self.shared.restore(path).expect_partial().assert_existing_objects_matched()
            if self.own_state:
                own = self.own_path(path)
                restore_input_position(path, lambda: self.checkpoint.restore(own).assert_existing_objects_matched())
            else:
                self.keep_own_dropout_seeds(own_seeds)
        if planned is not None and int(self.total_steps.numpy()) != planned:
            raise ValueError(f"{path} belongs to a run of {int(self.total_steps.numpy())} steps, this command plans "
                             f"{planned}; use the same settings to resume or another --output_dir")
        logger.info("Resumed from %s at step %d", path, int(self.step.numpy()))

    def own_part_problem(self, path: str) -> str | None:
        """Why this rank's own part of checkpoint `path` (its input position) cannot be restored,
        or None (the chief's part is `path` itself, already read fully by `choose`)."""
        if self.rank == 0 or not self.own_state:
            return None
        own = self.own_path(path)
        if not tf.io.gfile.exists(own + ".index"):
            return (f"rank {self.rank} has no input position {own} for checkpoint {path}; resume with the number of "
                    "processes that wrote it")
        problem = checkpoint_problem(own)
        if problem is not None:
            return f"rank {self.rank}'s part of checkpoint {path} is unreadable: {problem}; restore the file from a copy"
        return None

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
