"""Fine-tune ELECTRA on SQuAD v1.1 / v2.0, predict answers and evaluate them (SPEC section 7).

Training: AdamW (epsilon 1e-6, no weight decay on LayerNorm weights and biases) with layer-wise
learning-rate decay, linear warm-up then linear decay, gradient clipping to norm 1.0, gradient
accumulation and fp16 loss scaling through `optimization.Trainer`. A checkpoint is saved after
each epoch in OUTPUT_DIR/checkpoints; running the same command again resumes from it (a finished
run goes straight to prediction), and SIGTERM/SIGINT saves one and exits 0. The fine-tuned model
is written as a model folder, OUTPUT_DIR/model (config.json, model.safetensors, vocab.txt).

Several processes (`--engine`, started by scripts/run_squad.sh) fine-tune as one with their
batches together: rank r takes its slice of every global batch, the gradients are averaged once
per optimizer step, and rank 0's weights are broadcast at the start. Only rank 0 writes
checkpoints, logs and the model folder, and then predicts alone while the other ranks exit; a
SIGTERM/SIGINT to any rank stops all of them after the same step.

Prediction writes predictions.json, nbest_predictions.json and, for SQuAD 2.0, null_odds.json;
evaluation writes eval_results.json (the official EM/F1). Training and inference speed, with
true latency percentiles over per-batch times, go to the JSON-lines summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import distributed  # noqa: E402
import optimization  # noqa: E402
import run_utils  # noqa: E402
import squad_utils  # noqa: E402
from configuration import MODEL_SIZES, ElectraConfig  # noqa: E402
from model_folder import (CONFIG_FILE, LoadReport, assign_tensors, read_config, read_qa_head_settings,  # noqa: E402
                          read_tensors, resolve_model_folder, save_model_folder)
from modeling import ElectraForQuestionAnswering  # noqa: E402
from run_utils import RUN_CONFIG_FILE, MetricsLog, compute_policy, write_json  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("run_tf_squad")
REPO_VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocab", "vocab.txt")
VOCAB_FILE = "vocab.txt"
FINAL_MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS_KEPT = 2
TRAIN_FIELDS = ("input_ids", "input_mask", "segment_ids", "p_mask", "start_position", "end_position",
                "is_impossible")
PREDICT_FIELDS = ("input_ids", "input_mask", "segment_ids", "p_mask")
LATENCY_PERCENTILES = (50, 90, 95, 99)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--electra_model", default="google/electra-base-discriminator",
                       help="a model size (small, base, large: random weights), a model folder or a released "
                            "google/electra-* name in the local Hugging Face cache; gives the weights when "
                            "--init_checkpoint is not set, and the architecture when --init_checkpoint has no "
                            "config.json")
    model.add_argument("--init_checkpoint", default=None,
                       help="model folder to start from: a discriminator (e.g. postprocess_pretrained_ckpt.py's "
                            "OUTPUT/discriminator, or OUTPUT itself), a released google/electra-*-discriminator, "
                            "or a fine-tuned QA folder (needed to predict without --do_train)")
    model.add_argument("--joint_head", action=argparse.BooleanOptionalAction, default=True,
                       help="XLNet-style joint start/end head with beam search (else the plain dense(2) head)")
    model.add_argument("--beam_size", type=int, default=5, help="starts, and ends per start, of the joint head's beam")
    model.add_argument("--vocab_file", default=None,
                       help="WordPiece vocab.txt (default: the model folder's, else the repository's)")
    model.add_argument("--do_lower_case", action=argparse.BooleanOptionalAction, default=True,
                       help="lower-case and strip accents (uncased models)")
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default=None,
                      help="folder with train-v1.1.json/dev-v1.1.json (or the v2.0 files); used when "
                           "--train_file/--predict_file are not given")
    data.add_argument("--train_file", default=None, help="SQuAD JSON to train on (default: DATA_DIR/train-vX.json)")
    data.add_argument("--predict_file", default=None, help="SQuAD JSON to predict (default: DATA_DIR/dev-vX.json)")
    data.add_argument("--version_2_with_negative", action=argparse.BooleanOptionalAction, default=False,
                      help="SQuAD 2.0: questions may have no answer")
    data.add_argument("--max_seq_length", type=int, default=384, help="WordPiece tokens per window")
    data.add_argument("--doc_stride", type=int, default=128, help="tokens between the starts of consecutive windows")
    data.add_argument("--max_query_length", type=int, default=64, help="questions are cut to this many tokens")
    data.add_argument("--cache_dir", default=None,
                      help="where featurized data is cached (default: beside each SQuAD file)")
    modes = parser.add_argument_group("modes")
    modes.add_argument("--do_train", action=argparse.BooleanOptionalAction, default=False, help="fine-tune")
    modes.add_argument("--do_predict", action=argparse.BooleanOptionalAction, default=False,
                       help="predict answers for --predict_file")
    modes.add_argument("--do_eval", action=argparse.BooleanOptionalAction, default=False,
                       help="score the predictions with the official EM/F1 (implies --do_predict)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=16, help="sequences per micro-batch")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    optim.add_argument("--learning_rate", type=float, default=4e-4, help="peak learning rate")
    optim.add_argument("--weight_decay_rate", type=float, default=0.01,
                       help="AdamW weight decay (LayerNorm and biases excluded)")
    optim.add_argument("--layerwise_lr_decay", type=float, default=0.8,
                       help="learning-rate factor per layer below the head (0.9 for large)")
    optim.add_argument("--num_train_epochs", type=int, default=2, help="passes over the training windows")
    optim.add_argument("--max_steps", type=int, default=-1,
                       help="optimizer steps of the whole run, schedule included (<= 0: from the epochs)")
    optim.add_argument("--warmup_proportion", type=float, default=0.05, help="fraction of the steps spent warming up")
    optim.add_argument("--seed", type=int, default=42, help="seed of initialisation, dropout and data order")
    decode = parser.add_argument_group("prediction")
    decode.add_argument("--predict_batch_size", type=int, default=128, help="sequences per inference batch")
    decode.add_argument("--n_best_size", type=int, default=20,
                        help="answers kept per question in nbest_predictions.json")
    decode.add_argument("--max_answer_length", type=int, default=30, help="longest answer in tokens")
    decode.add_argument("--null_score_diff_threshold", type=float, default=-5.6,
                        help="SQuAD 2.0: predict no answer when the null odds exceed this")
    speed = parser.add_argument_group("precision, speed, processes and logs")
    run_utils.add_precision_flags(speed, xla_help="XLA-compile the training and inference steps")
    run_utils.add_engine_flags(speed)
    speed.add_argument("--output_dir", required=True, help="checkpoints, model folder, predictions and logs")
    speed.add_argument("--log_freq", type=int, default=50, help="optimizer steps between log lines")
    speed.add_argument("--json-summary", dest="json_summary", default=None,
                       help="JSON-lines metrics file (default: OUTPUT_DIR/logs/metrics.jsonl)")
    speed.add_argument("--verbose_logging", action=argparse.BooleanOptionalAction, default=False,
                       help="log every data problem (e.g. each misaligned answer), not only the counts")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_utils.parse_checked(build_parser(), validate_args, argv)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.do_predict = args.do_predict or args.do_eval
    if not (args.do_train or args.do_predict):
        parser.error("nothing to do: pass --do_train and/or --do_predict/--do_eval")
    run_utils.require_at_least_one(parser, args, ("train_batch_size", "predict_batch_size",
                                                  "gradient_accumulation_steps", "num_train_epochs", "beam_size",
                                                  "n_best_size", "max_answer_length", "log_freq"))
    if not 0.0 <= args.warmup_proportion < 1.0:
        parser.error("--warmup_proportion must be in [0, 1)")
    try:
        squad_utils.FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length).check()
        if args.joint_head:
            squad_utils.check_beam_fits(args.beam_size, args.max_seq_length)
    except ValueError as error:
        parser.error(str(error))
    version = "v2.0" if args.version_2_with_negative else "v1.1"
    for flag, stem, wanted in (("train_file", "train", args.do_train), ("predict_file", "dev", args.do_predict)):
        if wanted and getattr(args, flag) is None:
            if args.data_dir is None:
                parser.error(f"pass --{flag} or --data_dir")
            setattr(args, flag, os.path.join(args.data_dir, f"{stem}-{version}.json"))
    args.log_dir, args.json_summary = run_utils.log_paths(args.output_dir, json_summary=args.json_summary)


# ----------------------------------------------------------------------------- model and data

def model_source(args: argparse.Namespace) -> tuple[ElectraConfig, str | None]:
    """The architecture and the folder whose weights to load (None: random initialisation)."""
    if args.init_checkpoint:
        folder = resolve_model_folder(args.init_checkpoint)
        discriminator = os.path.join(folder, "discriminator")  # postprocess_pretrained_ckpt.py's OUTPUT_DIR
        if not os.path.isfile(os.path.join(folder, CONFIG_FILE)) and os.path.isdir(discriminator):
            folder = discriminator
        if os.path.isfile(os.path.join(folder, CONFIG_FILE)):
            return read_config(folder), folder
        logger.warning("%s has no %s: its architecture is --electra_model %s", folder, CONFIG_FILE, args.electra_model)
        return config_of(args.electra_model), folder
    if args.electra_model in MODEL_SIZES:
        logger.warning("No --init_checkpoint: the %s model starts from random weights", args.electra_model)
        return ElectraConfig.from_size(args.electra_model), None
    folder = resolve_model_folder(args.electra_model)
    return read_config(folder), folder


def config_of(electra_model: str) -> ElectraConfig:
    if electra_model in MODEL_SIZES:
        return ElectraConfig.from_size(electra_model)
    return read_config(resolve_model_folder(electra_model))


def check_head_matches(folder: str, joint_head: bool, version_2: bool) -> None:
    """A fine-tuned folder must hold the head asked for: loading it into another one would
    silently leave that head untrained."""
    settings = read_qa_head_settings(folder)
    if settings is None:
        return
    if settings["joint_head"] != joint_head or (joint_head and settings.get("version_2_with_negative") != version_2):
        raise ValueError(f"{folder} holds a QA model with joint_head={settings['joint_head']}, "
                         f"version_2_with_negative={settings.get('version_2_with_negative')}; asked for "
                         f"joint_head={joint_head}, version_2_with_negative={version_2}")


def load_qa_model(config: ElectraConfig, folder: str | None, joint_head: bool, version_2: bool, beam_size: int,
                  dtype: str | None = None) -> tuple[ElectraForQuestionAnswering, LoadReport | None]:
    """The QA model with the weights of `folder` (random ones without), and what loading reported."""
    model = ElectraForQuestionAnswering(config, joint_head=joint_head, version_2=version_2, beam_size=beam_size,
                                        dtype=dtype)
    if folder is None:
        return model, None
    check_head_matches(folder, joint_head, version_2)
    report = assign_tensors(model, read_tensors(folder), source=folder)
    logger.info("Loaded %s%s%s", folder,
                f"; newly initialised: {', '.join(report.newly_initialised)}" if report.newly_initialised else "",
                f"; unused: {', '.join(report.unused)}" if report.unused else "")
    return model, report


def check_head_is_trained(folder: str | None, report: LoadReport | None, joint_head: bool) -> None:
    """Predicting needs a fine-tuned QA head, not a freshly initialised one."""
    if folder is None or report.newly_initialised:
        raise ValueError(f"predicting without training needs a fine-tuned QA model folder (from run_tf_squad.py); "
                         f"{folder or 'a model without weights'} has no trained {'joint' if joint_head else 'plain'} "
                         "QA head")


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


def load_features(args: argparse.Namespace, tokenizer: WordPieceTokenizer, path: str,
                  is_training: bool) -> tuple[squad_utils.SquadData, squad_utils.SquadFeatures]:
    config = squad_utils.FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length)
    cache_dir = args.cache_dir or os.path.dirname(os.path.abspath(path))
    data, features, _ = squad_utils.load_or_build_features(path, tokenizer, config, is_training, cache_dir)
    return data, features


def train_batches(features: squad_utils.SquadFeatures, batch_size: int, seed: int, first_batch: int,
                  rank: int = 0, world_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches of this rank: each pass over the windows in a fresh order drawn
    from (seed, pass) is cut into global batches of `batch_size x world_size` (the last partial one
    dropped), and rank r takes rows [r x batch_size, (r + 1) x batch_size) of each, so N processes
    see exactly the batches of one process with N times the batch. Starts at global batch
    `first_batch`, so a resumed run sees the batches an uninterrupted one would."""
    global_batch = batch_size * world_size
    batches_per_pass = len(features) // global_batch
    data_pass, offset = divmod(first_batch, batches_per_pass)
    while True:
        order = np.random.default_rng([seed, data_pass]).permutation(len(features))
        for index in range(offset, batches_per_pass):
            first = index * global_batch + rank * batch_size
            rows = order[first:first + batch_size]
            yield {name: getattr(features, name)[rows] for name in TRAIN_FIELDS}
        data_pass, offset = data_pass + 1, 0


def load_training_features(args: argparse.Namespace, tokenizer: WordPieceTokenizer,
                           engine: distributed.SingleProcess) -> squad_utils.SquadFeatures:
    """The chief featurizes and caches first; the other ranks then read its cache (or build their
    own where they do not share its file system) instead of racing it to write one."""
    if engine.is_chief:
        _, features = load_features(args, tokenizer, args.train_file, is_training=True)
    engine.agree(False)  # a barrier: the chief's cache is complete past this point
    if not engine.is_chief:
        _, features = load_features(args, tokenizer, args.train_file, is_training=True)
    return features


# ----------------------------------------------------------------------------- training

class TrainingPlan:
    """Step counts of a fine-tuning run; an optimizer step takes train_batch_size x
    gradient_accumulation_steps sequences on each of `world_size` processes."""

    def __init__(self, args: argparse.Namespace, num_features: int, world_size: int = 1):
        sequences_per_step = args.train_batch_size * args.gradient_accumulation_steps * world_size
        self.steps_per_epoch = num_features // sequences_per_step
        if self.steps_per_epoch < 1:
            raise ValueError(f"{args.train_file} gives {num_features} training windows, fewer than one optimizer "
                             f"step of {sequences_per_step} sequences (train_batch_size x "
                             f"gradient_accumulation_steps x {world_size} processes)")
        self.total_steps = args.max_steps if args.max_steps > 0 else args.num_train_epochs * self.steps_per_epoch
        self.warmup_steps = int(args.warmup_proportion * self.total_steps)
        self.sequences_per_step = sequences_per_step

    def ends_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or step == self.total_steps


def build_trainer(args: argparse.Namespace, model: ElectraForQuestionAnswering, plan: TrainingPlan,
                  engine: distributed.SingleProcess) -> optimization.Trainer:
    variables = model.trainable_variables
    schedule = optimization.WarmupPolynomialDecay(args.learning_rate, plan.warmup_steps, plan.total_steps,
                                                  end_learning_rate=0.0, power=1.0)
    multipliers = optimization.layerwise_lr_multipliers(variables, model.config.num_hidden_layers,
                                                        args.layerwise_lr_decay)
    optimizer = optimization.create_optimizer("adam", schedule, weight_decay_rate=args.weight_decay_rate,
                                              beta_1=0.9, beta_2=0.999, epsilon=1e-6, skip_adaptive=False,
                                              lr_multipliers=multipliers)
    optimizer.build(variables)

    def loss_fn(batch: dict[str, tf.Tensor], seed: tf.Tensor, first_row: tf.Tensor) -> dict[str, tf.Tensor]:
        """Dropout is the only randomness; it draws from the model's checkpointed seed generators."""
        return model.training_losses(batch, training=True)

    return optimization.Trainer(loss_fn, variables, optimizer, accumulation_steps=args.gradient_accumulation_steps,
                                loss_scale=run_utils.make_loss_scale(args), seed=args.seed, jit_compile=args.xla,
                                rank=engine.rank, world_size=engine.size,
                                reduce_gradients=run_utils.gradient_averaging(engine, args.fp16_compression))


class FineTuningCheckpoint:
    """Model, optimizer, loss scale, step and dropout RNG states in OUTPUT_DIR/checkpoints. Only
    the chief saves; every rank resumes from the chief's checkpoint (a shared file system)."""

    def __init__(self, model: ElectraForQuestionAnswering, trainer: optimization.Trainer, directory: str,
                 total_steps: int, rank: int = 0):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.total_steps = tf.Variable(total_steps, dtype=tf.int64, trainable=False, name="total_steps")
        self.rank = rank
        self.dropout_rng = list(model.non_trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=trainer.optimizer, loss_scale=trainer.loss_scale,
                                              step=self.step, total_steps=self.total_steps,
                                              dropout_rng=self.dropout_rng)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=CHECKPOINTS_KEPT)

    def resume_if_any(self) -> bool:
        """Restore the newest checkpoint of this output folder; False when there is none."""
        path = self.manager.latest_checkpoint
        if path is None:
            return False
        planned = int(self.total_steps.numpy())
        own_seeds = [int(state.numpy()[0]) for state in self.dropout_rng]
        self.checkpoint.restore(path).assert_existing_objects_matched()
        if int(self.total_steps.numpy()) != planned:
            raise ValueError(f"{path} belongs to a run of {int(self.total_steps.numpy())} steps, this command plans "
                             f"{planned}; use the same settings to resume or another --output_dir")
        if self.rank > 0:
            self.keep_own_dropout_seeds(own_seeds)
        logger.info("Resumed from %s at step %d", path, int(self.step.numpy()))
        return True

    def keep_own_dropout_seeds(self, own_seeds: list[int]) -> None:
        """A dropout RNG state is [seed, draws]: every rank draws as often as the chief, so the
        chief's counts with this rank's own seeds continue this rank's masks exactly."""
        for state, seed in zip(self.dropout_rng, own_seeds):
            state.assign(tf.constant([seed, int(state.numpy()[1])], dtype=state.dtype))

    def save(self) -> None:
        if self.rank == 0:
            logger.info("Saved checkpoint %s", self.manager.save(checkpoint_number=int(self.step.numpy())))


def train(args: argparse.Namespace, model: ElectraForQuestionAnswering, tokenizer: WordPieceTokenizer,
          log: MetricsLog | None, engine: distributed.SingleProcess) -> dict[str, Any] | None:
    """Fine-tune (or finish fine-tuning); the training summary, or None when a signal stopped it."""
    features = load_training_features(args, tokenizer, engine)
    plan = TrainingPlan(args, len(features), engine.size)
    trainer = build_trainer(args, model, plan, engine)
    state = FineTuningCheckpoint(model, trainer, os.path.join(args.output_dir, CHECKPOINT_DIR), plan.total_steps,
                                 engine.rank)
    state.resume_if_any()
    # Rank 0's initial (or restored) state; the step too, so no rank can start elsewhere.
    engine.broadcast_from_chief([*model.trainable_variables, *trainer.optimizer.variables,
                                 *trainer.loss_scale.variables, state.step])
    start = int(state.step.numpy())
    logger.info("Training: %d windows, %d optimizer steps of %d sequences (%d per epoch, %d processes), %d warm-up",
                len(features), plan.total_steps, plan.sequences_per_step, plan.steps_per_epoch, engine.size,
                plan.warmup_steps)
    batches = train_batches(features, args.train_batch_size, args.seed, start * args.gradient_accumulation_steps,
                            engine.rank, engine.size)
    with run_utils.stop_requests() as stop:
        return training_loop(args, trainer, state, plan, batches, log, stop, engine)


def training_loop(args: argparse.Namespace, trainer: optimization.Trainer, state: FineTuningCheckpoint,
                  plan: TrainingPlan, batches: Iterator[dict[str, np.ndarray]], log: MetricsLog | None,
                  stop: run_utils.StopRequest, engine: distributed.SingleProcess) -> dict[str, Any] | None:
    """Train to the last step; the summary, or None when a signal on any rank stopped every rank
    at the same step (after a checkpoint)."""
    start = int(state.step.numpy())
    window: dict[str, list[float]] = {}
    timed_steps, timed_seconds, skipped = 0, 0.0, 0
    bar = tqdm(total=plan.total_steps, initial=start, desc="fine-tuning", unit="step", dynamic_ncols=True,
               disable=not engine.is_chief)
    stopping = False
    for step in range(start, plan.total_steps):
        step_start = time.perf_counter()
        outputs, update = trainer.step(batches, step)
        for micro_outputs in outputs:
            for name, value in micro_outputs.items():
                window.setdefault(name, []).append(float(value))
        skipped += int(not bool(update["finite"]))
        if step > start:  # the first step of a process traces (and compiles) the graph
            timed_steps, timed_seconds = timed_steps + 1, timed_seconds + time.perf_counter() - step_start
        state.step.assign(step + 1)
        bar.update(1)
        if (step + 1) % args.log_freq == 0 or step + 1 == plan.total_steps:
            values = {name: float(np.mean(v)) for name, v in window.items()}
            values.update(learning_rate=float(trainer.optimizer.learning_rate),
                          gradient_norm=float(update["gradient_norm"]), loss_scale=float(trainer.loss_scale.value),
                          skipped_steps=skipped)
            if log:
                log.write(step + 1, values)
            bar.set_postfix(loss=f"{values['total_loss']:.3f}")
            window = {}
        stopping = engine.agree(stop.signal_name is not None)
        if plan.ends_epoch(step + 1) or stopping:
            state.save()
        if stopping:
            break
    bar.close()
    if stopping:
        cause = f"{stop.signal_name} received" if stop.signal_name else "another rank was stopped"
        logger.warning("%s: saved a checkpoint at step %d, exiting", cause, int(state.step.numpy()))
        return None
    summary: dict[str, Any] = {"train_steps": int(state.step.numpy()), "train_skipped_steps": skipped}
    if timed_steps:
        summary["training_sequences_per_second"] = timed_steps * plan.sequences_per_step / timed_seconds
    return summary


def save_final_model(model: ElectraForQuestionAnswering, folder: str, vocab_file: str) -> None:
    save_model_folder(model, folder)
    shutil.copyfile(vocab_file, os.path.join(folder, VOCAB_FILE))
    logger.info("Saved the fine-tuned model folder %s", folder)


# ----------------------------------------------------------------------------- prediction

def padded_rows(features: squad_utils.SquadFeatures, start: int, batch_size: int) -> dict[str, np.ndarray]:
    """Rows [start, start + batch_size) of the model inputs, zero rows appended to fill the last
    batch, so every batch has one shape (one traced graph, comparable timings)."""
    batch = {}
    for name in PREDICT_FIELDS:
        rows = getattr(features, name)[start:start + batch_size]
        batch[name] = np.concatenate([rows, np.zeros((batch_size - len(rows), *rows.shape[1:]), rows.dtype)])
    return batch


def predict_features(model: ElectraForQuestionAnswering, features: squad_utils.SquadFeatures, batch_size: int,
                     jit_compile: bool = False) -> tuple[dict[str, np.ndarray], list[float]]:
    """The model's outputs for every feature, and the seconds each batch took (inputs to NumPy outputs)."""
    infer = tf.function(lambda batch: model(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                            p_mask=batch["p_mask"], training=False), jit_compile=jit_compile)
    collected: dict[str, list[np.ndarray]] = {}
    batch_seconds = []
    starts = range(0, len(features), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", dynamic_ncols=True):
        batch = padded_rows(features, start, batch_size)
        began = time.perf_counter()
        outputs = {name: value.numpy() for name, value in infer(batch).items()}
        batch_seconds.append(time.perf_counter() - began)
        real = min(batch_size, len(features) - start)
        for name, value in outputs.items():
            collected.setdefault(name, []).append(value[:real])
    return {name: np.concatenate(parts) for name, parts in collected.items()}, batch_seconds


def inference_speed(batch_seconds: Sequence[float], batch_size: int) -> dict[str, float]:
    """Sequences per second and TRUE latency percentiles (numpy.percentile) of the per-batch
    times; the first batch (graph tracing, XLA compilation) is left out when there are others."""
    timed = np.asarray(batch_seconds[1:] if len(batch_seconds) > 1 else batch_seconds)
    speed = {"inference_sequences_per_second": len(timed) * batch_size / float(timed.sum()),
             "inference_batch_latency_ms_mean": 1000.0 * float(timed.mean())}
    for percentile, value in zip(LATENCY_PERCENTILES, np.percentile(timed, LATENCY_PERCENTILES)):
        speed[f"inference_batch_latency_ms_p{percentile}"] = 1000.0 * float(value)
    return speed


def decode_config(args: argparse.Namespace) -> squad_utils.DecodeConfig:
    return squad_utils.DecodeConfig(n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
                                    version_2_with_negative=args.version_2_with_negative,
                                    null_score_diff_threshold=args.null_score_diff_threshold)


def predict(args: argparse.Namespace, model: ElectraForQuestionAnswering,
            tokenizer: WordPieceTokenizer) -> dict[str, Any]:
    """Predict --predict_file, write the prediction files, evaluate on request; returns the
    speed and evaluation numbers."""
    data, features = load_features(args, tokenizer, args.predict_file, is_training=False)
    logger.info("Predicting %d questions (%d windows), batches of %d", len(data.examples), len(features),
                args.predict_batch_size)
    outputs, batch_seconds = predict_features(model, features, args.predict_batch_size, args.xla)
    predictions = squad_utils.decode_head_outputs(data.examples, features, outputs, decode_config(args))
    write_json(os.path.join(args.output_dir, "predictions.json"), predictions.answers)
    write_json(os.path.join(args.output_dir, "nbest_predictions.json"), predictions.nbest)
    if args.version_2_with_negative:
        write_json(os.path.join(args.output_dir, "null_odds.json"), predictions.null_odds)
    summary: dict[str, Any] = inference_speed(batch_seconds, args.predict_batch_size)
    if args.do_eval:
        results = evaluate(args, data, predictions)
        write_json(os.path.join(args.output_dir, "eval_results.json"), results)
        logger.info("Evaluation of %s: %s", args.predict_file, json.dumps(results))
        summary.update(results)
    return summary


def evaluate(args: argparse.Namespace, data: squad_utils.SquadData,
             predictions: squad_utils.Predictions) -> dict[str, float]:
    gold = squad_utils.gold_answers(data.examples)
    if args.version_2_with_negative:
        return squad_utils.evaluate_v2(gold, predictions.answers, na_probs=predictions.null_odds,
                                       na_prob_thresh=args.null_score_diff_threshold)
    return squad_utils.evaluate_v1(gold, predictions.answers)


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace, engine: distributed.SingleProcess | None = None) -> dict[str, Any] | None:
    """Train and/or predict as asked; the summary written to the JSON log (None if stopped by a
    signal). Every rank trains; only the chief (rank 0) writes files and predicts."""
    engine = engine or distributed.SingleProcess()
    keras.utils.set_random_seed(args.seed + engine.rank)  # rank 0's initial weights are broadcast
    config, folder = model_source(args)
    if args.max_seq_length > config.max_position_embeddings:
        raise ValueError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                         f"max_position_embeddings {config.max_position_embeddings}")
    model, report = load_qa_model(config, folder, args.joint_head, args.version_2_with_negative, args.beam_size,
                                  dtype=compute_policy(args))
    if not args.do_train:
        check_head_is_trained(folder, report, args.joint_head)
    vocab_file = vocab_file_for(args, folder)
    tokenizer = WordPieceTokenizer(vocab_file, do_lower_case=args.do_lower_case)
    check_vocab_fits(tokenizer, model.config)
    if not engine.is_chief:
        return train(args, model, tokenizer, None, engine) if args.do_train else {}
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, RUN_CONFIG_FILE), vars(args))
    log = MetricsLog(args.log_dir, args.json_summary)
    summary: dict[str, Any] = {}
    try:
        if args.do_train:
            trained = train(args, model, tokenizer, log, engine)
            if trained is None:
                return None
            summary.update(trained)
            save_final_model(model, os.path.join(args.output_dir, FINAL_MODEL_DIR), vocab_file)
        if args.do_predict:
            summary.update(predict(args, model, tokenizer))
        log.write(summary.get("train_steps", 0), summary)
    finally:
        log.close()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=run_utils.LOG_FORMAT)
    args = parse_args(argv)
    if args.verbose_logging:
        logging.getLogger(squad_utils.__name__).setLevel(logging.DEBUG)
    engine = run_utils.start_engine(args.engine)
    try:
        summary = run(args, engine)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    if summary is not None and engine.is_chief:
        logger.info("Done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
