"""Pretrain ELECTRA (generator + discriminator, replaced-token detection) from TFRecords.

One optimizer step = `--gradient_accumulation_steps` micro-batches of `--train_batch_size`
sequences; the averaged gradient is unscaled (fp16), checked for inf/NaN (a bad step is skipped),
clipped to global norm 1.0 and applied by LAMB or AdamW. Checkpoints hold the model, the
optimizer, the loss scale, the step and the input position, so `--restore_checkpoint latest`
continues a run as if it had never stopped; SIGTERM/SIGINT (e.g. Slurm pre-emption) saves one
and exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import distributed  # noqa: E402
import optimization  # noqa: E402
import pretrain_utils  # noqa: E402
import run_utils  # noqa: E402
from configuration import MODEL_SIZES, ElectraConfig, PretrainingObjective  # noqa: E402
from model_folder import assign_tensors, read_tensors  # noqa: E402
from modeling import ElectraPretrainingModel  # noqa: E402
from run_utils import RUN_CONFIG_FILE, MetricsLog, compute_policy  # noqa: E402
from safe_io import UserError  # noqa: E402

logger = logging.getLogger("run_pretraining")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model and objective")
    model.add_argument("--model_name", default="electra_pretraining", help="name of the run, used in logs")
    model.add_argument("--model_size", choices=sorted(MODEL_SIZES), default="base", help="discriminator size (SPEC section 1)")
    model.add_argument("--model_config", default=None,
                       help="a discriminator config.json (Hugging Face keys) for a custom size; overrides --model_size")
    model.add_argument("--vocab_size", type=int, default=30522, help="vocabulary size of the TFRecords' ids")
    model.add_argument("--generator_hidden_size", type=float, default=None,
                       help="generator hidden size as a fraction of the discriminator's (default: 0.25 small/large, 1/3 base)")
    model.add_argument("--max_seq_length", type=int, default=128, help="sequence length of the TFRecords")
    model.add_argument("--mask_prob", type=float, default=0.15, help="fraction of tokens masked")
    model.add_argument("--disc_weight", type=float, default=50.0, help="weight of the discriminator loss")
    model.add_argument("--temperature", type=float, default=1.0, help="generator sampling temperature")
    model.add_argument("--disallow_correct", action=argparse.BooleanOptionalAction, default=False,
                       help="never sample the original token")
    data = parser.add_argument_group("data")
    data.add_argument("--pretrain_tfrecords", required=True, help="comma-separated glob(s) of pretraining TFRecords")
    data.add_argument("--train_batch_size", type=int, default=176, help="sequences per micro-batch per process")
    data.add_argument("--shuffle_buffer", type=int, default=10000, help="records in the shuffle buffer")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optimizer", choices=optimization.OPTIMIZER_NAMES, default="lamb", help="optimizer")
    optim.add_argument("--learning_rate", type=float, default=6e-3, help="peak learning rate")
    optim.add_argument("--end_lr", type=float, default=0.0, help="learning rate at the end of the decay")
    optim.add_argument("--lr_decay_power", type=float, default=0.5, help="exponent of the polynomial decay")
    optim.add_argument("--num_train_steps", type=int, default=10000, help="optimizer steps of the whole phase")
    optim.add_argument("--num_warmup_steps", type=int, default=2000, help="linear warm-up steps")
    optim.add_argument("--steps_this_run", type=int, default=None,
                       help="stop after this many optimizer steps in this invocation (default: to the end)")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    optim.add_argument("--opt_beta_1", type=float, default=0.878, help="beta_1 of LAMB/Adam")
    optim.add_argument("--opt_beta_2", type=float, default=0.974, help="beta_2 of LAMB/Adam")
    optim.add_argument("--weight_decay_rate", type=float, default=0.01, help="weight decay (LayerNorm and biases excluded)")
    optim.add_argument("--skip_adaptive", action=argparse.BooleanOptionalAction, default=False,
                       help="LAMB: exclude LayerNorm weights and biases from the trust ratio too")
    optim.add_argument("--seed", type=int, default=12345, help="seed of every random choice")
    speed = parser.add_argument_group("precision, speed and processes")
    run_utils.add_precision_flags(speed, xla_help="XLA-compile the training step")
    run_utils.add_engine_flags(speed)
    ckpt = parser.add_argument_group("checkpoints and logs")
    ckpt.add_argument("--results_dir", default="results", help="checkpoints and the run configuration go here")
    ckpt.add_argument("--log_dir", default=None, help="metrics and TensorBoard logs (default: RESULTS_DIR/logs)")
    ckpt.add_argument("--json-summary", dest="json_summary", default=None,
                      help="JSON-lines metrics file (default: LOG_DIR/metrics.jsonl)")
    ckpt.add_argument("--log_freq", type=int, default=50, help="optimizer steps between log lines")
    ckpt.add_argument("--save_checkpoints_steps", type=int, default=500, help="optimizer steps between checkpoints")
    ckpt.add_argument("--keep_checkpoint_max", type=int, default=5, help="checkpoints kept")
    ckpt.add_argument("--restore_checkpoint", default=None,
                      help="'latest' (of RESULTS_DIR) or a checkpoint path/folder to resume from; with "
                           "--phase2, the phase-1 checkpoint to start from")
    ckpt.add_argument("--phase2", action=argparse.BooleanOptionalAction, default=False,
                      help="start from --restore_checkpoint's weights and optimizer slots with the step reset "
                           "(a phase-2 run that has its own checkpoints resumes them instead)")
    ckpt.add_argument("--init_checkpoint", default=None,
                      help="folder with discriminator/ and generator/ model folders (Hugging Face layout, e.g. "
                           "from postprocess_pretrained_ckpt.py or a released ELECTRA) to start from")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_utils.parse_checked(build_parser(), validate_args, argv)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_warmup_steps >= args.num_train_steps:
        parser.error("--num_warmup_steps must be below --num_train_steps")
    run_utils.require_at_least_one(parser, args, ("train_batch_size", "gradient_accumulation_steps", "log_freq",
                                                  "save_checkpoints_steps", "max_seq_length", "keep_checkpoint_max"))
    if args.phase2 and not args.restore_checkpoint:
        parser.error("--phase2 needs --restore_checkpoint naming the phase-1 checkpoint")
    args.log_dir, args.json_summary = run_utils.log_paths(args.results_dir, args.log_dir, args.json_summary)


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
    generator_config = discriminator_config.generator_config(hidden_fraction=args.generator_hidden_size)
    objective = PretrainingObjective(mask_prob=args.mask_prob, discriminator_weight=args.disc_weight,
                                     temperature=args.temperature, disallow_correct=args.disallow_correct)
    return ElectraPretrainingModel(discriminator_config, generator_config, objective, dtype=compute_policy(args))


def build_optimizer(args: argparse.Namespace, variables: list) -> keras.optimizers.Optimizer:
    schedule = optimization.WarmupPolynomialDecay(
        args.learning_rate, args.num_warmup_steps, args.num_train_steps, args.end_lr, args.lr_decay_power)
    optimizer = optimization.create_optimizer(
        args.optimizer, schedule, weight_decay_rate=args.weight_decay_rate, beta_1=args.opt_beta_1,
        beta_2=args.opt_beta_2, epsilon=1e-6, skip_adaptive=args.skip_adaptive)
    optimizer.build(variables)
    return optimizer


class PretrainingMetrics:
    """Running means of SPEC section 4's metrics between two log lines (discriminator AUC included)."""

    NAMES = ("total_loss", "generator_loss", "discriminator_loss", "masked_lm_accuracy", "sampled_accuracy",
             "discriminator_accuracy", "discriminator_precision", "discriminator_recall")

    def __init__(self) -> None:
        self.means = {name: keras.metrics.Mean(name=name) for name in self.NAMES}
        self.auc = keras.metrics.AUC(num_thresholds=200, name="discriminator_auc")

    @tf.function
    def update(self, outputs: dict[str, tf.Tensor]) -> None:
        weights, mask = outputs["masked_weights"], outputs["input_mask"]
        labels = tf.cast(outputs["discriminator_labels"], tf.float32)
        predicted = tf.cast(outputs["discriminator_probs"] > 0.5, tf.float32)
        for name in ("total_loss", "generator_loss", "discriminator_loss"):
            self.means[name].update_state(outputs[name])
        self.means["masked_lm_accuracy"].update_state(outputs["masked_lm_correct"], weights)
        self.means["sampled_accuracy"].update_state(outputs["sampled_correct"], weights)
        self.means["discriminator_accuracy"].update_state(tf.cast(tf.equal(predicted, labels), tf.float32), mask)
        self.means["discriminator_precision"].update_state(labels, predicted * mask)
        self.means["discriminator_recall"].update_state(predicted, labels * mask)
        self.auc.update_state(labels, outputs["discriminator_probs"], sample_weight=mask)

    def result_and_reset(self) -> dict[str, float]:
        values = {name: float(metric.result()) for name, metric in self.means.items()}
        values["discriminator_auc"] = float(self.auc.result())
        for metric in [*self.means.values(), self.auc]:
            metric.reset_state()
        return values


def build_trainer(args: argparse.Namespace, model: ElectraPretrainingModel,
                  engine: distributed.SingleProcess | None = None) -> optimization.Trainer:
    engine = engine or distributed.SingleProcess()

    def loss_fn(batch: dict[str, tf.Tensor], seed: tf.Tensor, first_row: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], seed, first_row, training=True)

    return optimization.Trainer(
        loss_fn, model.trainable_variables, build_optimizer(args, model.trainable_variables),
        accumulation_steps=args.gradient_accumulation_steps, seed=args.seed, jit_compile=args.xla,
        loss_scale=run_utils.make_loss_scale(args), rank=engine.rank, world_size=engine.size,
        reduce_gradients=run_utils.gradient_averaging(engine, args.fp16_compression))


class CheckpointState:
    """Everything a resumed run needs. The chief (rank 0) saves the model, optimizer, loss
    scale and step with its own input position and dropout RNG state in `checkpoints/ckpt-N`;
    every other rank saves only its input position and dropout RNG state, in
    `checkpoints/rank{r}/ckpt-N`."""

    def __init__(self, model: ElectraPretrainingModel, trainer: optimization.Trainer, iterator: Any,
                 directory: str, keep: int, rank: int = 0):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.rank = rank
        shared = dict(model=model, optimizer=trainer.optimizer, loss_scale=trainer.loss_scale, step=self.step)
        # Keras keeps the dropout RNG states outside what the model checkpoints; saved here so a
        # resumed run draws the same dropout masks.
        local = dict(iterator=iterator, dropout_rng=list(model.non_trainable_variables))
        self.shared = tf.train.Checkpoint(**shared)
        self.checkpoint = tf.train.Checkpoint(**shared, **local) if rank == 0 else tf.train.Checkpoint(
            step=self.step, **local)
        self.directory = directory if rank == 0 else os.path.join(directory, f"rank{rank}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)

    def save(self) -> str:
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        logger.info("Saved checkpoint %s", path)
        return path

    def resume(self, path: str) -> None:
        if self.rank == 0:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        else:
            self.shared.restore(path).expect_partial().assert_existing_objects_matched()
            own = os.path.join(self.directory, os.path.basename(path))
            if not tf.io.gfile.exists(own + ".index"):
                raise FileNotFoundError(f"rank {self.rank} has no input position {own} for checkpoint {path}; "
                                        "resume with the number of processes that wrote it")
            self.checkpoint.restore(own).assert_existing_objects_matched()
        logger.info("Resumed from %s at step %d", path, int(self.step.numpy()))

    def start_phase2(self, path: str) -> None:
        """Weights, optimizer slots and loss scale of phase 1; step and input position start anew."""
        phase1 = tf.train.Checkpoint(model=self.shared.model, optimizer=self.shared.optimizer,
                                     loss_scale=self.shared.loss_scale)
        phase1.restore(path).expect_partial().assert_existing_objects_matched()
        self.shared.optimizer.iterations.assign(0)
        self.step.assign(0)
        logger.info("Phase 2 starts from phase-1 checkpoint %s (optimizer step reset)", path)


def checkpoint_path(spec: str, default_directory: str) -> str:
    """'latest' -> newest checkpoint of the run; a folder -> its newest; else the path itself."""
    directory = default_directory if spec == "latest" else spec
    if spec == "latest" or os.path.isdir(spec):
        path = tf.train.latest_checkpoint(directory)
        if path is None:
            raise FileNotFoundError(f"no checkpoint found in {directory}")
        return path
    if not tf.io.gfile.exists(spec + ".index"):
        raise FileNotFoundError(f"checkpoint not found: {spec} (expected {spec}.index)")
    return spec


def check_run_config_matches(model: ElectraPretrainingModel, checkpoint: str) -> None:
    """Restoring into another model fails inside TensorFlow with a bare shape error; name the cause."""
    saved_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), RUN_CONFIG_FILE)
    if not os.path.isfile(saved_config):
        return
    with open(saved_config, encoding="utf-8") as f:
        saved = json.load(f)
    for part in ("discriminator", "generator"):
        ours = getattr(model, part).config.to_dict()
        theirs = saved.get(part, ours)
        differences = sorted(k for k in ours if not k.endswith("dropout_prob") and theirs.get(k) != ours[k])
        if differences:
            raise ValueError(f"checkpoint {checkpoint} holds a {part} with a different architecture ("
                             + ", ".join(f"{k}: checkpoint {theirs.get(k)}, this run {ours[k]}" for k in differences)
                             + "); check --model_size / --model_config / --generator_hidden_size")


def restore_or_initialise(args: argparse.Namespace, state: CheckpointState, model: ElectraPretrainingModel,
                          checkpoint_dir: str) -> None:
    own_checkpoint = tf.train.latest_checkpoint(checkpoint_dir)
    if args.phase2 and own_checkpoint is None:
        path = checkpoint_path(args.restore_checkpoint, checkpoint_dir)
        check_run_config_matches(model, path)
        state.start_phase2(path)
    elif args.restore_checkpoint:
        path = own_checkpoint if args.phase2 else checkpoint_path(args.restore_checkpoint, checkpoint_dir)
        check_run_config_matches(model, path)
        state.resume(path)
    elif own_checkpoint is not None:
        raise FileExistsError(f"{checkpoint_dir} already holds checkpoints; pass --restore_checkpoint latest "
                              "to resume them or choose another --results_dir")
    elif args.init_checkpoint:
        load_init_checkpoint(model, args.init_checkpoint)


def load_init_checkpoint(model: ElectraPretrainingModel, folder: str) -> None:
    """Start from Hugging Face model folders (weights only: released models carry no optimizer)."""
    for name, part in (("generator", model.generator), ("discriminator", model.discriminator)):
        source = os.path.join(folder, name)
        report = assign_tensors(part, read_tensors(source), source=source)
        logger.info("Initialised the %s from %s%s", name, source,
                    f" (unused: {', '.join(report.unused)})" if report.unused else "")


def save_run_config(args: argparse.Namespace, model: ElectraPretrainingModel) -> None:
    os.makedirs(args.results_dir, exist_ok=True)
    content = {**vars(args), "discriminator": model.discriminator.config.to_dict(),
               "generator": model.generator.config.to_dict(),
               "objective": dataclasses.asdict(model.objective)}
    run_utils.write_json(os.path.join(args.results_dir, RUN_CONFIG_FILE), content, sort_keys=True)


def train(args: argparse.Namespace, engine: distributed.SingleProcess | None = None) -> dict[str, Any]:
    """Run (or continue) the phase; returns the final step and the last logged metrics."""
    engine = engine or distributed.SingleProcess()
    keras.utils.set_random_seed(args.seed + engine.rank)  # rank 0's initial weights are broadcast
    model = build_model(args)
    trainer = build_trainer(args, model, engine)
    dataset = pretrain_utils.pretraining_dataset(args.pretrain_tfrecords, args.train_batch_size,
                                                 args.max_seq_length, seed=args.seed, rank=engine.rank,
                                                 world_size=engine.size, shuffle_buffer=args.shuffle_buffer)
    iterator = iter(dataset)
    checkpoint_dir = os.path.join(args.results_dir, "checkpoints")
    state = CheckpointState(model, trainer, iterator, checkpoint_dir, args.keep_checkpoint_max, engine.rank)
    restore_or_initialise(args, state, model, checkpoint_dir)
    engine.broadcast_from_chief([*model.trainable_variables, *trainer.optimizer.variables,
                                 *trainer.loss_scale.variables])
    if engine.is_chief:
        save_run_config(args, model)
    with run_utils.stop_requests() as stop:
        return training_loop(args, trainer, state, iterator, engine, stop)


def training_loop(args: argparse.Namespace, trainer: optimization.Trainer, state: CheckpointState, iterator: Any,
                  engine: distributed.SingleProcess, stop: run_utils.StopRequest) -> dict[str, Any]:
    """Train to the last step of this run; only the chief logs, every rank saves its own state."""
    start = int(state.step.numpy())
    last = args.num_train_steps if args.steps_this_run is None else min(args.num_train_steps, start + args.steps_this_run)
    metrics = PretrainingMetrics()
    log = MetricsLog(args.log_dir, args.json_summary) if engine.is_chief else None
    sequences_per_step = args.train_batch_size * args.gradient_accumulation_steps
    logged: dict[str, float] = {}
    window_start, window_steps, skipped = time.perf_counter(), 0, 0
    bar = tqdm(total=last, initial=start, desc="pretraining", unit="step", dynamic_ncols=True,
               disable=not engine.is_chief)
    for step in range(start, last):
        outputs, update = trainer.step(iterator, step)
        for micro_outputs in outputs:
            metrics.update(micro_outputs)
        skipped += int(not bool(update["finite"]))
        state.step.assign(step + 1)
        window_steps += 1
        bar.update(1)
        if (step + 1) % args.log_freq == 0 or step + 1 == last:
            elapsed = time.perf_counter() - window_start
            logged = {**metrics.result_and_reset(), "learning_rate": float(trainer.optimizer.learning_rate),
                      "gradient_norm": float(update["gradient_norm"]), "loss_scale": float(trainer.loss_scale.value),
                      "skipped_steps": skipped, "sequences_per_second": window_steps * sequences_per_step / elapsed}
            if log:
                log.write(step + 1, logged)
            bar.set_postfix(loss=f"{logged['total_loss']:.3f}")
            window_start, window_steps = time.perf_counter(), 0
        stopping = engine.agree(stop.signal_name is not None)  # every rank stops at the same step
        if (step + 1) % args.save_checkpoints_steps == 0 or step + 1 == last or stopping:
            state.save()
        if stopping:
            logger.warning("%s received: saved a checkpoint at step %d, exiting", stop.signal_name or "stop", step + 1)
            break
    bar.close()
    if log:
        log.close()
    return {"step": int(state.step.numpy()), **logged}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=run_utils.LOG_FORMAT)
    engine = run_utils.start_engine(args.engine)
    try:
        result = train(args, engine)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        logger.error("%s", error)
        return 1
    logger.info("Finished at step %d", result["step"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
