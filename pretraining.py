"""Pretraining's model, optimizer, training step, metrics and batch source, built from the run's
settings: the flags of `add_model_flags` and `add_optimizer_flags` with run_utils' precision and
engine flags. run_pretraining.py trains with them; scripts/benchmark_pretraining.py times the same
step.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any, ClassVar, Mapping, Sequence

import keras
import tensorflow as tf

import distributed
import optimization
import pretrain_utils
import run_utils
import training
from configuration import MODEL_SIZES, ElectraConfig, PretrainingObjective
from modeling import ElectraPretrainingModel, skip_padding_in_training
from safe_io import UserError

logger = logging.getLogger(__name__)
BAD_RECORD_FIX = ("rebuild that file (the same build_pretraining_dataset.py command writes the same files) or copy "
                  "it again, then resume with --restore_checkpoint latest; or resume with --skip_bad_records to skip "
                  "from that record to the end of its file each epoch")
REBUILD_FIX = "rebuild the pretraining files with build_pretraining_dataset.py"
OBJECTIVES = ("electra", "masked_lm")


def add_model_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--objective", choices=OBJECTIVES, default="electra",
                       help="electra: replaced-token detection, the generator feeding the discriminator; masked_lm: "
                            "the generator alone on its masked-LM loss (BERT's objective), the control of ELECTRA's "
                            "comparison at equal compute; it has the discriminator's architecture unless "
                            "--generator_hidden_size is given, and it is the model to fine-tune (OUTPUT/generator)")
    group.add_argument("--model_size", choices=sorted(MODEL_SIZES), default="base", help="discriminator size")
    group.add_argument("--model_config", default=None,
                       help="a discriminator config.json (Hugging Face keys) for a custom size; overrides --model_size")
    group.add_argument("--vocab_size", type=int, default=30522, help="vocabulary size of the TFRecords' ids")
    group.add_argument("--generator_hidden_size", type=float, default=None,
                       help="generator hidden size as a fraction of the discriminator's (default: 0.25 small/large, 1/3 base)")
    group.add_argument("--max_seq_length", type=int, default=128, help="sequence length of the TFRecords")
    group.add_argument("--mask_prob", type=float, default=0.15, help="fraction of tokens masked")
    group.add_argument("--disc_weight", type=float, default=50.0, help="weight of the discriminator loss")
    group.add_argument("--temperature", type=float, default=1.0, help="generator sampling temperature")
    group.add_argument("--disallow_correct", action=argparse.BooleanOptionalAction, default=False,
                       help="never sample the original token")


def add_optimizer_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--optimizer", choices=optimization.OPTIMIZER_NAMES, default="lamb", help="optimizer")
    group.add_argument("--learning_rate", type=float, default=6e-3, help="peak learning rate")
    group.add_argument("--end_lr", type=float, default=0.0, help="learning rate at the end of the decay")
    group.add_argument("--lr_decay_power", type=float, default=0.5, help="exponent of the polynomial decay")
    group.add_argument("--num_train_steps", type=int, default=10000, help="optimizer steps of the whole phase")
    group.add_argument("--num_warmup_steps", type=int, default=2000, help="linear warm-up steps")
    group.add_argument("--steps_this_run", type=int, default=None,
                       help="stop after this many optimizer steps in this invocation (default: to the end)")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    group.add_argument("--opt_beta_1", type=float, default=0.878, help="beta_1 of LAMB/Adam")
    group.add_argument("--opt_beta_2", type=float, default=0.974, help="beta_2 of LAMB/Adam")
    group.add_argument("--weight_decay_rate", type=float, default=0.01, help="weight decay (LayerNorm and biases excluded)")
    group.add_argument("--skip_adaptive", action=argparse.BooleanOptionalAction, default=False,
                       help="LAMB: exclude LayerNorm weights and biases from the trust ratio too")
    group.add_argument("--seed", type=int, default=12345, help="seed of every random choice")
    run_utils.add_divergence_flags(group)


def discriminator_config_from_args(args: argparse.Namespace) -> ElectraConfig:
    if args.model_config:
        config = ElectraConfig.from_json_file(args.model_config)
        source = f"max_position_embeddings in {args.model_config}"
    else:
        config = ElectraConfig.from_size(args.model_size, vocab_size=args.vocab_size)
        source = f"the {args.model_size} model's max_position_embeddings"
    if config.max_position_embeddings < args.max_seq_length:
        raise UserError(f"{source} is {config.max_position_embeddings}, below --max_seq_length "
                        f"{args.max_seq_length}: raise it or pass a smaller --max_seq_length")
    return config


def build_model(args: argparse.Namespace) -> ElectraPretrainingModel:
    discriminator_config = discriminator_config_from_args(args)
    if args.objective == "masked_lm" and args.generator_hidden_size is None:
        generator_config = discriminator_config  # the control is the discriminator's architecture exactly
    else:
        generator_config = discriminator_config.generator_config(hidden_fraction=args.generator_hidden_size)
    objective = PretrainingObjective(kind=args.objective, mask_prob=args.mask_prob,
                                     discriminator_weight=args.disc_weight, temperature=args.temperature,
                                     disallow_correct=args.disallow_correct)
    return ElectraPretrainingModel(discriminator_config, generator_config, objective, dtype=run_utils.compute_policy(args))


def build_optimizer(args: argparse.Namespace, variables: list) -> keras.optimizers.Optimizer:
    schedule = optimization.WarmupPolynomialDecay(
        args.learning_rate, args.num_warmup_steps, args.num_train_steps, args.end_lr, args.lr_decay_power)
    optimizer = optimization.create_optimizer(
        args.optimizer, schedule, weight_decay_rate=args.weight_decay_rate, beta_1=args.opt_beta_1,
        beta_2=args.opt_beta_2, epsilon=1e-6, skip_adaptive=args.skip_adaptive)
    optimizer.build(variables)
    return optimizer


class PretrainingMetrics:
    """Running means of the objective's metrics between two log lines (discriminator AUC included;
    the generator's alone under masked_lm)."""

    NAMES = ("total_loss", "generator_loss", "discriminator_loss", "masked_lm_accuracy", "sampled_accuracy",
             "discriminator_accuracy", "discriminator_precision", "discriminator_recall")
    GENERATOR_NAMES = ("total_loss", "generator_loss", "masked_lm_accuracy")

    def __init__(self, objective: PretrainingObjective = PretrainingObjective()) -> None:
        names = self.NAMES if objective.detects_replaced_tokens else self.GENERATOR_NAMES
        self.means = {name: keras.metrics.Mean(name=name) for name in names}
        self.auc = (keras.metrics.AUC(num_thresholds=200, name="discriminator_auc")
                    if objective.detects_replaced_tokens else None)

    @tf.function
    def update(self, outputs: dict[str, tf.Tensor]) -> None:
        for name in ("total_loss", "generator_loss"):
            self.means[name].update_state(outputs[name])
        self.means["masked_lm_accuracy"].update_state(outputs["masked_lm_correct"], outputs["masked_weights"])
        if self.auc is not None:
            self.update_discriminator(outputs)

    def update_discriminator(self, outputs: dict[str, tf.Tensor]) -> None:
        weights, mask = outputs["masked_weights"], outputs["input_mask"]
        labels = tf.cast(outputs["discriminator_labels"], tf.float32)
        predicted = tf.cast(outputs["discriminator_probs"] > 0.5, tf.float32)
        self.means["discriminator_loss"].update_state(outputs["discriminator_loss"])
        self.means["sampled_accuracy"].update_state(outputs["sampled_correct"], weights)
        self.means["discriminator_accuracy"].update_state(tf.cast(tf.equal(predicted, labels), tf.float32), mask)
        self.means["discriminator_precision"].update_state(labels, predicted * mask)
        self.means["discriminator_recall"].update_state(predicted, labels * mask)
        self.auc.update_state(labels, outputs["discriminator_probs"], sample_weight=mask)

    def result_and_reset(self) -> dict[str, float]:
        metrics = {**self.means, **({"discriminator_auc": self.auc} if self.auc is not None else {})}
        values = {name: float(metric.result()) for name, metric in metrics.items()}
        for metric in metrics.values():
            metric.reset_state()
        return values


def build_trainer(args: argparse.Namespace, model: ElectraPretrainingModel,
                  engine: distributed.SingleProcess | None = None) -> optimization.Trainer:
    def loss_fn(batch: dict[str, tf.Tensor], seed: tf.Tensor, first_row: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], seed, first_row, training=True)

    skip_padding_in_training(model, not args.xla)
    # Under masked_lm only the generator (with the shared embeddings) learns: the discriminator
    # gets no gradient and keeps its initial weights.
    variables = model.generator.trainable_variables if args.objective == "masked_lm" else model.trainable_variables
    return run_utils.make_trainer(args, loss_fn, variables, build_optimizer(args, variables), engine)


@dataclasses.dataclass
class RecordBatchSource(training.BatchSource):
    """Pretraining's micro-batches from its TFRecords (`files`: those this process reads). A
    record the reader rejects (cut short or corrupt) is named with its file; with
    `skip_bad_records` it is skipped with a warning, else the loop saves a checkpoint and stops.

    The skip happens here, not in the tf.data pipeline (`ignore_errors` would change the
    iterator's checkpoint), so checkpoints are the same with or without it. TensorFlow's reader
    ends a file at its first bad record: the rest of that file is skipped for the epoch, as are
    the records already gathered into the batch being built.
    """

    files: Sequence[str] = ()
    skip_bad_records: bool = False
    reports_bad_input: ClassVar[bool] = True

    def read_step(self, count: int) -> tuple[list[Mapping[str, Any]], training.BadInput | None]:
        batches: list[Mapping[str, Any]] = []
        failures = 0  # reader errors since the last batch
        while len(batches) < count:
            try:
                batches.append(next(self.batches))
                failures = 0
            except tf.errors.DataLossError as error:
                failures += 1
                bad_input = self.skip_or_stop(pretrain_utils.describe_reader_error(self.files, error), failures)
                if bad_input:
                    return batches, bad_input
            except StopIteration:  # the repeated dataset ends only when a whole epoch gave no record
                return batches, training.BadInput(f"none of the {len(self.files)} pretraining files this process "
                                                  "reads holds a readable record", REBUILD_FIX)
        return batches, None

    def skip_or_stop(self, where: str, failures: int) -> training.BadInput | None:
        """Skip the bad record (None) with a warning, or the input to stop on."""
        if not self.skip_bad_records:
            return training.BadInput(where, BAD_RECORD_FIX)
        if failures > 2 * len(self.files):  # each file fails at most once an epoch: two epochs gave no batch
            return training.BadInput(f"{where}, and {failures} bad records in a row gave no batch", REBUILD_FIX)
        logger.warning("skipping %s, and the rest of that file this epoch (--skip_bad_records)", where)
        return None
