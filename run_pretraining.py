"""Pretrain ELECTRA (generator + discriminator, replaced-token detection) from TFRecords.

One optimizer step = `--gradient_accumulation_steps` micro-batches of `--train_batch_size`
sequences; the averaged gradient is unscaled (fp16), checked for inf/NaN (a bad step is skipped),
clipped to global norm 1.0 and applied by LAMB or AdamW. Checkpoints hold the model, the
optimizer, the loss scale, the step and the input position, so `--restore_checkpoint latest`
continues a run as if it had never stopped; SIGTERM/SIGINT (e.g. Slurm pre-emption) saves one
and exits 0. A TFRecord record the reader rejects (corrupt, or cut short) stops every process with
a checkpoint at the last completed step and an error naming its file and record (exit 1), or is
skipped with a warning under --skip_bad_records.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import distributed  # noqa: E402
import pretrain_utils  # noqa: E402
import pretraining  # noqa: E402
import run_utils  # noqa: E402
import training  # noqa: E402
from model_folder import assign_tensors, read_tensors, resolve_pretraining_folders  # noqa: E402
from modeling import ElectraPretrainingModel  # noqa: E402
from pretraining import PretrainingMetrics, RecordBatchSource, build_model, build_trainer  # noqa: E402
from run_utils import RUN_CONFIG_FILE, MetricsLog  # noqa: E402

logger = logging.getLogger("run_pretraining")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model and objective")
    model.add_argument("--model_name", default="electra_pretraining", help="name of the run, used in logs")
    pretraining.add_model_flags(model)
    data = parser.add_argument_group("data")
    data.add_argument("--pretrain_tfrecords", required=True, help="comma-separated glob(s) of pretraining TFRecords")
    data.add_argument("--train_batch_size", type=int, default=176, help="sequences per micro-batch per process")
    data.add_argument("--shuffle_buffer", type=int, default=10000, help="records in the shuffle buffer")
    data.add_argument("--skip_bad_records", action=argparse.BooleanOptionalAction, default=False,
                      help="on a corrupt or cut-short TFRecord record, warn (naming the file and record) and skip "
                           "from it to the end of its file for that epoch; without, the run saves a checkpoint at "
                           "the last completed step and stops with an error naming them")
    pretraining.add_optimizer_flags(parser.add_argument_group("optimisation"))
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
                      help="'latest' (the newest checkpoint in RESULTS_DIR/checkpoints that reads fully) or a "
                           "checkpoint path or folder (its newest that reads fully) to resume from; with --phase2, "
                           "the phase-1 checkpoint to start from")
    ckpt.add_argument("--phase2", action=argparse.BooleanOptionalAction, default=False,
                      help="start from --restore_checkpoint's weights and optimizer slots with the step reset "
                           "(a phase-2 run that has its own checkpoints resumes them instead)")
    ckpt.add_argument("--init_checkpoint", default=None,
                      help="folder with discriminator/ and generator/ model folders (Hugging Face layout, e.g. "
                           "from postprocess_pretrained_ckpt.py) to start from, or google/electra-small, -base or "
                           "-large: Google's released pair, downloaded into the Hugging Face cache if missing")
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


def check_run_config_matches(model: ElectraPretrainingModel, checkpoint: str) -> None:
    """Restoring into another model fails inside TensorFlow with a bare shape error; name the cause."""
    saved_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), RUN_CONFIG_FILE)
    if not os.path.isfile(saved_config):
        return
    with open(saved_config, encoding="utf-8") as f:
        saved = json.load(f)
    saved_objective = saved.get("objective", {}).get("kind", "electra")
    if saved_objective != model.objective.kind:
        raise ValueError(f"checkpoint {checkpoint} was written with --objective {saved_objective}, this run has "
                         f"--objective {model.objective.kind}: pass --objective {saved_objective} to continue it")
    for part in ("discriminator", "generator"):
        ours = getattr(model, part).config.to_dict()
        theirs = saved.get(part, ours)
        differences = sorted(k for k in ours if not k.endswith("dropout_prob") and theirs.get(k) != ours[k])
        if differences:
            raise ValueError(f"checkpoint {checkpoint} holds a {part} with a different architecture ("
                             + ", ".join(f"{k}: checkpoint {theirs.get(k)}, this run {ours[k]}" for k in differences)
                             + "); check --model_size / --model_config / --generator_hidden_size")


def restore_or_initialise(args: argparse.Namespace, state: training.TrainingCheckpoint,
                          model: ElectraPretrainingModel, checkpoint_dir: str) -> None:
    """Resume this run's checkpoint, start phase 2 from phase 1's, or start afresh (from
    --init_checkpoint or random weights); never over checkpoints this run already holds, even
    unreadable ones. Checkpoints are chosen by `TrainingCheckpoint.choose`: 'latest' is the
    newest one that reads fully."""
    holds_checkpoints = bool(training.checkpoint_candidates(checkpoint_dir))
    if args.phase2 and not holds_checkpoints:
        path = state.choose(args.restore_checkpoint)
        check_run_config_matches(model, path)
        state.start_from(path)
        logger.info("Phase 2 starts from phase-1 checkpoint %s (optimizer step reset)", path)
    elif args.restore_checkpoint:
        path = state.choose("latest" if args.phase2 else args.restore_checkpoint)
        check_run_config_matches(model, path)
        state.resume(path)
    elif holds_checkpoints:
        raise FileExistsError(f"{checkpoint_dir} already holds checkpoints; pass --restore_checkpoint latest "
                              "to resume them or choose another --results_dir")
    elif args.init_checkpoint:
        load_init_checkpoint(model, args.init_checkpoint)


def load_init_checkpoint(model: ElectraPretrainingModel, name_or_path: str) -> None:
    """Start from Hugging Face model folders (weights only: released models carry no optimizer)."""
    folders = resolve_pretraining_folders(name_or_path)
    for name, part in (("generator", model.generator), ("discriminator", model.discriminator)):
        source = folders[name]
        report = assign_tensors(part, read_tensors(source), source=source)
        logger.info("Initialised the %s from %s%s", name, source,
                    f" (unused: {', '.join(report.unused)})" if report.unused else "")


def save_run_config(args: argparse.Namespace, model: ElectraPretrainingModel) -> None:
    os.makedirs(args.results_dir, exist_ok=True)
    content = {**vars(args), "discriminator": model.discriminator.config.to_dict(),
               "generator": model.generator.config.to_dict(),
               "objective": dataclasses.asdict(model.objective)}
    run_utils.write_json(os.path.join(args.results_dir, RUN_CONFIG_FILE), content, sort_keys=True)


def batch_source(args: argparse.Namespace, iterator: Any, engine: distributed.SingleProcess) -> RecordBatchSource:
    """The loop's batches; a bad record is named among the files this process reads."""
    files = pretrain_utils.files_of_rank(pretrain_utils.list_pretraining_files(args.pretrain_tfrecords), engine.rank,
                                         engine.size)
    return RecordBatchSource(iterator, files=files, skip_bad_records=args.skip_bad_records)


def train(args: argparse.Namespace, engine: distributed.SingleProcess | None = None) -> dict[str, Any]:
    """Run (or continue) the phase; returns the final step and the last logged metrics (and
    `stopped_by`, the cause, when a signal stopped it early)."""
    engine = engine or distributed.SingleProcess()
    keras.utils.set_random_seed(args.seed + engine.rank)  # rank 0's initial weights are broadcast
    model = build_model(args)
    trainer = build_trainer(args, model, engine)
    dataset = pretrain_utils.pretraining_dataset(args.pretrain_tfrecords, args.train_batch_size,
                                                 args.max_seq_length, seed=args.seed, rank=engine.rank,
                                                 world_size=engine.size, shuffle_buffer=args.shuffle_buffer)
    iterator = iter(dataset)
    checkpoint_dir = os.path.join(args.results_dir, "checkpoints")
    state = training.TrainingCheckpoint(checkpoint_dir, model, trainer, args.keep_checkpoint_max, engine,
                                        input_state=iterator)
    restore_or_initialise(args, state, model, checkpoint_dir)
    engine.broadcast_from_chief([*model.trainable_variables, *trainer.optimizer.variables,
                                 *trainer.loss_scale.variables])
    if engine.is_chief:
        save_run_config(args, model)
    start = int(state.step.numpy())
    plan = training.TrainingPlan(
        last_step=args.num_train_steps if args.steps_this_run is None else min(args.num_train_steps,
                                                                             start + args.steps_this_run),
        log_every=args.log_freq, checkpoint_every=args.save_checkpoints_steps,
        sequences_per_step=args.train_batch_size * args.gradient_accumulation_steps, description="pretraining",
        max_consecutive_skipped_steps=args.max_consecutive_skipped_steps)
    log = MetricsLog(args.log_dir, args.json_summary) if engine.is_chief else None
    try:
        with run_utils.stop_requests() as stop:
            result = training.run_training_loop(trainer, batch_source(args, iterator, engine), plan, state, engine,
                                                stop, metrics=PretrainingMetrics(model.objective),
                                                hooks=[log] if log else [])
    finally:
        if log:
            log.close()
    return {"step": result.step, **result.logged, **({"stopped_by": result.stopped_by} if result.stopped_by else {})}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=run_utils.LOG_FORMAT)
    engine = run_utils.start_engine(args.engine)
    try:
        result = train(args, engine)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        logger.error("%s", error)
        return 1
    if "stopped_by" not in result:
        logger.info("Finished at step %d", result["step"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
