"""Fine-tuning a discriminator on a task (SQuAD, GLUE): what every fine-tuning program shares.

- Flags, declared once: the optimisation flags with their defaults from `FineTuningConfig`, the
  model and tokenizer flags, the output and log flags.
- Where the model comes from (`model_source`: a model folder, a released name, or a size with
  random weights) and which vocabulary goes with it.
- The run: `FineTuningPlan` (steps per epoch, total steps, warm-up), AdamW with layer-wise
  learning-rate decay and linear warm-up then linear decay (`build_optimizer`), and `fine_tune`,
  which trains with `training.run_training_loop`, checkpointing after each epoch in
  OUTPUT_DIR/checkpoints and resuming from there when run again (from the newest checkpoint
  that reads fully: `training.TrainingCheckpoint.newest`).
- Batches: `epoch_batches` (each rank's slice of every global batch, reshuffled each pass,
  starting at any step), `padded_rows` and `inference_speed` for prediction.

A program builds its task model (which has `training_losses(batch, training)`), its training
arrays and its flags from these pieces; see run_tf_squad.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np

import distributed
import optimization
import run_utils
import training
from configuration import MODEL_SIZES, ElectraConfig
from model_folder import (CONFIG_FILE, VOCAB_FILE, LoadReport, assign_tensors, read_config, read_tensors,
                          resolve_model_folder, save_model_folder)
from tokenization import WordPieceTokenizer

logger = logging.getLogger(__name__)

REPO_VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocab", "vocab.txt")
FINAL_MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS_KEPT = 2
LATENCY_PERCENTILES = (50, 90, 95, 99)


@dataclasses.dataclass(frozen=True)
class FineTuningConfig:
    """Optimisation settings of a fine-tuning run; the defaults are the SQuAD recipe's, a task
    with other defaults passes its own instance to `add_optimisation_flags`."""

    train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 4e-4
    weight_decay_rate: float = 0.01
    layerwise_lr_decay: float = 0.8
    num_train_epochs: int = 2
    max_steps: int = -1
    warmup_proportion: float = 0.05
    seed: int = 42


# ----------------------------------------------------------------------------- flags

def add_model_flags(group: argparse._ArgumentGroup, task_model: str) -> None:
    """--electra_model and --init_checkpoint; `task_model` names the fine-tuned folders of the
    task (e.g. "QA") in the help."""
    group.add_argument("--electra_model", default="google/electra-base-discriminator",
                       help="a model size (small, base, large) or an architecture's config.json (both: random "
                            "weights), a model folder or a released google/electra-* name (the Hugging Face "
                            "cache, else a download); gives the weights when "
                            "--init_checkpoint is not set, and the architecture when --init_checkpoint has no "
                            "config.json")
    group.add_argument("--init_checkpoint", default=None,
                       help="model folder to start from: a discriminator (e.g. postprocess_pretrained_ckpt.py's "
                            "OUTPUT/discriminator, or OUTPUT itself), a released google/electra-*-discriminator, "
                            f"or a fine-tuned {task_model} folder (needed to predict without --do_train)")


def add_tokenizer_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--vocab_file", default=None,
                       help="WordPiece vocab.txt (default: the model folder's, else the repository's)")
    group.add_argument("--do_lower_case", action=argparse.BooleanOptionalAction, default=True,
                       help="lower-case and strip accents (uncased models)")


def add_optimisation_flags(group: argparse._ArgumentGroup, defaults: FineTuningConfig = FineTuningConfig()) -> None:
    group.add_argument("--train_batch_size", type=int, default=defaults.train_batch_size,
                       help="sequences per micro-batch")
    group.add_argument("--gradient_accumulation_steps", type=int, default=defaults.gradient_accumulation_steps,
                       help="micro-batches per optimizer step")
    group.add_argument("--learning_rate", type=float, default=defaults.learning_rate, help="peak learning rate")
    group.add_argument("--weight_decay_rate", type=float, default=defaults.weight_decay_rate,
                       help="AdamW weight decay (LayerNorm and biases excluded)")
    group.add_argument("--layerwise_lr_decay", type=float, default=defaults.layerwise_lr_decay,
                       help="learning-rate factor per layer below the head (0.9 for large)")
    group.add_argument("--num_train_epochs", type=int, default=defaults.num_train_epochs,
                       help="passes over the training examples")
    group.add_argument("--max_steps", type=int, default=defaults.max_steps,
                       help="optimizer steps of the whole run, schedule included (<= 0: from the epochs)")
    group.add_argument("--warmup_proportion", type=float, default=defaults.warmup_proportion,
                       help="fraction of the steps spent warming up")
    group.add_argument("--seed", type=int, default=defaults.seed, help="seed of initialisation, dropout and data order")
    run_utils.add_divergence_flags(group)


def add_output_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--output_dir", required=True, help="checkpoints, model folder, predictions and logs")
    group.add_argument("--log_freq", type=int, default=50, help="optimizer steps between log lines")
    group.add_argument("--json-summary", dest="json_summary", default=None,
                       help="JSON-lines metrics file (default: OUTPUT_DIR/logs/metrics.jsonl)")


def check_optimisation_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    run_utils.require_at_least_one(parser, args, ("train_batch_size", "gradient_accumulation_steps",
                                                  "num_train_epochs", "log_freq"))
    if not 0.0 <= args.warmup_proportion < 1.0:
        parser.error("--warmup_proportion must be in [0, 1)")


# ----------------------------------------------------------------------------- model and vocabulary

def model_source(args: argparse.Namespace) -> tuple[ElectraConfig, str | None]:
    """The architecture and the folder whose weights to load (None: random initialisation), from
    --init_checkpoint and --electra_model."""
    if args.init_checkpoint:
        folder = resolve_model_folder(args.init_checkpoint)
        discriminator = os.path.join(folder, "discriminator")  # postprocess_pretrained_ckpt.py's OUTPUT_DIR
        if not os.path.isfile(os.path.join(folder, CONFIG_FILE)) and os.path.isdir(discriminator):
            folder = discriminator
        if os.path.isfile(os.path.join(folder, CONFIG_FILE)):
            return read_config(folder), folder
        logger.warning("%s has no %s: its architecture is --electra_model %s", folder, CONFIG_FILE, args.electra_model)
        return config_of(args.electra_model), folder
    architecture = random_architecture(args.electra_model)
    if architecture is not None:
        logger.warning("No --init_checkpoint: the %s model starts from random weights", args.electra_model)
        return architecture, None
    folder = resolve_model_folder(args.electra_model)
    return read_config(folder), folder


def random_architecture(electra_model: str) -> ElectraConfig | None:
    """The architecture a size or a config.json names (they come without weights), else None:
    a random start of the same shape as a pretrained model is the control that shows what
    pretraining brings."""
    if electra_model in MODEL_SIZES:
        return ElectraConfig.from_size(electra_model)
    if electra_model.endswith(".json") and os.path.isfile(electra_model):
        return ElectraConfig.from_json_file(electra_model)
    return None


def config_of(electra_model: str) -> ElectraConfig:
    return random_architecture(electra_model) or read_config(resolve_model_folder(electra_model))


def load_task_weights(model: keras.Model, folder: str) -> LoadReport:
    """Assign a model folder's tensors to a task model and log what stayed newly initialised
    (a task head, when starting from a pretrained discriminator) or unused."""
    report = assign_tensors(model, read_tensors(folder), source=folder)
    logger.info("Loaded %s%s%s", folder,
                f"; newly initialised: {', '.join(report.newly_initialised)}" if report.newly_initialised else "",
                f"; unused: {', '.join(report.unused)}" if report.unused else "")
    return report


def vocab_file_for(args: argparse.Namespace, folder: str | None) -> str:
    if args.vocab_file:
        return args.vocab_file
    if folder and os.path.isfile(os.path.join(folder, VOCAB_FILE)):
        return os.path.join(folder, VOCAB_FILE)
    return REPO_VOCAB_FILE


def check_vocab_fits(tokenizer: WordPieceTokenizer, config: ElectraConfig) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{tokenizer.vocab_file} has {tokenizer.vocab_size} tokens but the model only "
                         f"{config.vocab_size}: wrong --vocab_file for this model")


def tokenizer_for(args: argparse.Namespace, folder: str | None, config: ElectraConfig) -> WordPieceTokenizer:
    """The tokenizer of --vocab_file, else of the folder's or the repository's vocabulary, checked
    to fit the model, so a wrong vocabulary is one error before any text is read."""
    tokenizer = WordPieceTokenizer(vocab_file_for(args, folder), do_lower_case=args.do_lower_case)
    check_vocab_fits(tokenizer, config)
    return tokenizer


def save_final_model(model: keras.Model, folder: str, vocab_file: str) -> None:
    save_model_folder(model, folder)
    shutil.copyfile(vocab_file, os.path.join(folder, VOCAB_FILE))
    logger.info("Saved the fine-tuned model folder %s", folder)


# ----------------------------------------------------------------------------- training

class FineTuningPlan:
    """Step counts of a fine-tuning run; an optimizer step takes train_batch_size x
    gradient_accumulation_steps sequences on each of `world_size` processes. `source` and
    `unit` name the training data in errors (e.g. the SQuAD file and "training windows")."""

    def __init__(self, args: argparse.Namespace, num_examples: int, world_size: int = 1, source: str = "the data",
                 unit: str = "training examples"):
        sequences_per_step = args.train_batch_size * args.gradient_accumulation_steps * world_size
        self.steps_per_epoch = num_examples // sequences_per_step
        if self.steps_per_epoch < 1:
            raise ValueError(f"{source} gives {num_examples} {unit}, fewer than one optimizer "
                             f"step of {sequences_per_step} sequences (train_batch_size x "
                             f"gradient_accumulation_steps x {world_size} processes)")
        self.total_steps = args.max_steps if args.max_steps > 0 else args.num_train_epochs * self.steps_per_epoch
        self.warmup_steps = int(args.warmup_proportion * self.total_steps)
        self.sequences_per_step = sequences_per_step

    def loop_plan(self, args: argparse.Namespace) -> training.TrainingPlan:
        """Log every --log_freq steps, checkpoint after each epoch and at the end."""
        return training.TrainingPlan(last_step=self.total_steps, log_every=args.log_freq,
                                     checkpoint_every=self.steps_per_epoch,
                                     sequences_per_step=self.sequences_per_step, description="fine-tuning",
                                     max_consecutive_skipped_steps=args.max_consecutive_skipped_steps)


def build_optimizer(args: argparse.Namespace, model: keras.Model, plan: FineTuningPlan) -> keras.optimizers.Optimizer:
    """AdamW (epsilon 1e-6, no weight decay on LayerNorm weights and biases) with layer-wise
    learning-rate decay, linear warm-up then linear decay to 0; built for the model's variables."""
    variables = model.trainable_variables
    schedule = optimization.WarmupPolynomialDecay(args.learning_rate, plan.warmup_steps, plan.total_steps,
                                                  end_learning_rate=0.0, power=1.0)
    multipliers = optimization.layerwise_lr_multipliers(variables, model.config.num_hidden_layers,
                                                        args.layerwise_lr_decay)
    optimizer = optimization.create_optimizer("adam", schedule, weight_decay_rate=args.weight_decay_rate,
                                              beta_1=0.9, beta_2=0.999, epsilon=1e-6, skip_adaptive=False,
                                              lr_multipliers=multipliers)
    optimizer.build(variables)
    return optimizer


def build_trainer(args: argparse.Namespace, model: keras.Model, plan: FineTuningPlan,
                  engine: distributed.SingleProcess) -> optimization.Trainer:
    def loss_fn(batch: dict[str, Any], seed: Any, first_row: Any) -> dict[str, Any]:
        """Dropout is the only randomness; it draws from the model's checkpointed seed generators."""
        return model.training_losses(batch, training=True)

    return run_utils.make_trainer(args, loss_fn, model.trainable_variables, build_optimizer(args, model, plan), engine)


def fine_tune(args: argparse.Namespace, model: keras.Model, num_examples: int,
              batches_from: Callable[[int], Iterator[Mapping[str, np.ndarray]]], engine: distributed.SingleProcess,
              log: run_utils.MetricsLog | None, source: str, unit: str = "training examples") -> dict[str, Any] | None:
    """Fine-tune `model` (or finish fine-tuning it) on `num_examples` examples, whose batches
    `batches_from(first_batch)` yields from global batch `first_batch` on (see `epoch_batches`).
    Returns the training summary, or None when a signal stopped every rank (after a checkpoint)."""
    plan = FineTuningPlan(args, num_examples, engine.size, source, unit)
    trainer = build_trainer(args, model, plan, engine)
    state = training.TrainingCheckpoint(os.path.join(args.output_dir, CHECKPOINT_DIR), model, trainer,
                                        CHECKPOINTS_KEPT, engine, total_steps=plan.total_steps)
    path = state.newest()
    if path is not None:
        state.resume(path)
    # Rank 0's initial (or restored) state; the step too, so no rank can start elsewhere.
    engine.broadcast_from_chief([*model.trainable_variables, *trainer.optimizer.variables,
                                 *trainer.loss_scale.variables, state.step])
    start = int(state.step.numpy())
    logger.info("Training: %d %s, %d optimizer steps of %d sequences (%d per epoch, %d processes), %d warm-up",
                num_examples, unit, plan.total_steps, plan.sequences_per_step, plan.steps_per_epoch, engine.size,
                plan.warmup_steps)
    source_batches = training.BatchSource(batches_from(start * args.gradient_accumulation_steps))
    with run_utils.stop_requests() as stop:
        result = training.run_training_loop(trainer, source_batches, plan.loop_plan(args), state, engine, stop,
                                            hooks=[log] if log else [])
    if result.stopped_by:
        return None
    summary: dict[str, Any] = {"train_steps": result.step, "train_skipped_steps": result.skipped_steps}
    speed = result.sequences_per_second(plan.sequences_per_step)
    if speed is not None:
        summary["training_sequences_per_second"] = speed
    return summary


# ----------------------------------------------------------------------------- batches

def epoch_batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, first_batch: int,
                  rank: int = 0, world_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches of this rank: each pass over the rows in a fresh order drawn
    from (seed, pass) is cut into global batches of `batch_size x world_size` (the last partial one
    dropped), and rank r takes rows [r x batch_size, (r + 1) x batch_size) of each, so N processes
    see exactly the batches of one process with N times the batch. Starts at global batch
    `first_batch`, so a resumed run sees the batches an uninterrupted one would."""
    num_rows = len(next(iter(arrays.values())))
    global_batch = batch_size * world_size
    batches_per_pass = num_rows // global_batch
    data_pass, offset = divmod(first_batch, batches_per_pass)
    while True:
        order = np.random.default_rng([seed, data_pass]).permutation(num_rows)
        for index in range(offset, batches_per_pass):
            first = index * global_batch + rank * batch_size
            rows = order[first:first + batch_size]
            yield {name: values[rows] for name, values in arrays.items()}
        data_pass, offset = data_pass + 1, 0


def padded_rows(arrays: Mapping[str, np.ndarray], start: int, batch_size: int) -> dict[str, np.ndarray]:
    """Rows [start, start + batch_size) of each array, zero rows appended to fill the last
    batch, so every batch has one shape (one traced graph, comparable timings)."""
    batch = {}
    for name, values in arrays.items():
        rows = values[start:start + batch_size]
        batch[name] = np.concatenate([rows, np.zeros((batch_size - len(rows), *rows.shape[1:]), rows.dtype)])
    return batch


def inference_speed(batch_seconds: Sequence[float], batch_size: int) -> dict[str, float]:
    """Sequences per second and TRUE latency percentiles (numpy.percentile) of the per-batch
    times; the first batch (graph tracing, XLA compilation) is left out when there are others."""
    timed = np.asarray(batch_seconds[1:] if len(batch_seconds) > 1 else batch_seconds)
    speed = {"inference_sequences_per_second": len(timed) * batch_size / float(timed.sum()),
             "inference_batch_latency_ms_mean": 1000.0 * float(timed.mean())}
    for percentile, value in zip(LATENCY_PERCENTILES, np.percentile(timed, LATENCY_PERCENTILES)):
        speed[f"inference_batch_latency_ms_p{percentile}"] = 1000.0 * float(value)
    return speed
