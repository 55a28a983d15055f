"""Fine-tune ELECTRA on SQuAD v1.1 / v2.0, predict answers and evaluate them (docs/recipe.md,
SQuAD fine-tuning).

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
import sys
from typing import Any, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import distributed  # noqa: E402
import finetuning  # noqa: E402
import run_utils  # noqa: E402
import squad_finetuning  # noqa: E402
import squad_utils  # noqa: E402
from finetuning import inference_speed, model_source  # noqa: E402
from modeling import ElectraForQuestionAnswering  # noqa: E402
from run_utils import RUN_CONFIG_FILE, MetricsLog, compute_policy, write_json  # noqa: E402
from squad_finetuning import load_qa_model  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("run_tf_squad")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    finetuning.add_model_flags(model, task_model="QA")
    model.add_argument("--joint_head", action=argparse.BooleanOptionalAction, default=True,
                       help="XLNet-style joint start/end head with beam search (else the plain dense(2) head)")
    model.add_argument("--beam_size", type=int, default=5, help="starts, and ends per start, of the joint head's beam")
    finetuning.add_tokenizer_flags(model)
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default=None,
                      help="folder with train-v1.1.json/dev-v1.1.json (or the v2.0 files); used when "
                           "--train_file/--predict_file are not given")
    data.add_argument("--train_file", default=None, help="SQuAD JSON to train on (default: DATA_DIR/train-vX.json)")
    data.add_argument("--predict_file", default=None, help="SQuAD JSON to predict (default: DATA_DIR/dev-vX.json)")
    data.add_argument("--version_2_with_negative", action=argparse.BooleanOptionalAction, default=False,
                      help="SQuAD 2.0: questions may have no answer")
    squad_finetuning.add_feature_flags(data)
    data.add_argument("--cache_dir", default=None,
                      help="where featurized data is cached (default: beside each SQuAD file)")
    modes = parser.add_argument_group("modes")
    modes.add_argument("--do_train", action=argparse.BooleanOptionalAction, default=False, help="fine-tune")
    modes.add_argument("--do_predict", action=argparse.BooleanOptionalAction, default=False,
                       help="predict answers for --predict_file")
    modes.add_argument("--do_eval", action=argparse.BooleanOptionalAction, default=False,
                       help="score the predictions with the official EM/F1 (implies --do_predict)")
    finetuning.add_optimisation_flags(parser.add_argument_group("optimisation"))
    decode = parser.add_argument_group("prediction")
    decode.add_argument("--predict_batch_size", type=int, default=128, help="sequences per inference batch")
    squad_finetuning.add_decode_flags(decode)
    speed = parser.add_argument_group("precision, speed, processes and logs")
    run_utils.add_precision_flags(speed, xla_help="XLA-compile the training and inference steps")
    run_utils.add_engine_flags(speed)
    finetuning.add_output_flags(speed)
    speed.add_argument("--verbose_logging", action=argparse.BooleanOptionalAction, default=False,
                       help="log every data problem (e.g. each misaligned answer), not only the counts")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_utils.parse_checked(build_parser(), validate_args, argv)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.do_predict = args.do_predict or args.do_eval
    if not (args.do_train or args.do_predict):
        parser.error("nothing to do: pass --do_train and/or --do_predict/--do_eval")
    finetuning.check_optimisation_flags(parser, args)
    run_utils.require_at_least_one(parser, args, ("predict_batch_size", "beam_size", "n_best_size",
                                                  "max_answer_length"))
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

def load_features(args: argparse.Namespace, tokenizer: WordPieceTokenizer, path: str,
                  is_training: bool) -> tuple[squad_utils.SquadData, squad_utils.SquadFeatures]:
    config = squad_finetuning.feature_config(args)
    cache_dir = args.cache_dir or os.path.dirname(os.path.abspath(path))
    data, features, _ = squad_utils.load_or_build_features(path, tokenizer, config, is_training, cache_dir)
    return data, features


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

def train_batches(features: squad_utils.SquadFeatures, batch_size: int, seed: int, first_batch: int,
                  rank: int = 0, world_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This rank's endless training batches from global batch `first_batch` on (see
    finetuning.epoch_batches)."""
    return finetuning.epoch_batches(squad_finetuning.training_arrays(features), batch_size, seed, first_batch,
                                    rank, world_size)


def train(args: argparse.Namespace, model: ElectraForQuestionAnswering, tokenizer: WordPieceTokenizer,
          log: MetricsLog | None, engine: distributed.SingleProcess) -> dict[str, Any] | None:
    """Fine-tune (or finish fine-tuning); the training summary, or None when a signal stopped it."""
    features = load_training_features(args, tokenizer, engine)
    return finetuning.fine_tune(
        args, model, len(features),
        lambda first_batch: train_batches(features, args.train_batch_size, args.seed, first_batch, engine.rank,
                                          engine.size),
        engine, log, source=args.train_file, unit="training windows")


# ----------------------------------------------------------------------------- prediction

def predict(args: argparse.Namespace, model: ElectraForQuestionAnswering,
            tokenizer: WordPieceTokenizer) -> dict[str, Any]:
    """Predict --predict_file, write the prediction files, evaluate on request; returns the
    speed and evaluation numbers."""
    data, features = load_features(args, tokenizer, args.predict_file, is_training=False)
    logger.info("Predicting %d questions (%d windows), batches of %d", len(data.examples), len(features),
                args.predict_batch_size)
    outputs, batch_seconds = squad_finetuning.predict_features(model, features, args.predict_batch_size, args.xla)
    predictions = squad_utils.decode_head_outputs(data.examples, features, outputs, squad_finetuning.decode_config(args))
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
        squad_finetuning.check_head_is_trained(folder, report, args.joint_head)
    vocab_file = finetuning.vocab_file_for(args, folder)
    tokenizer = WordPieceTokenizer(vocab_file, do_lower_case=args.do_lower_case)
    finetuning.check_vocab_fits(tokenizer, model.config)
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
            finetuning.save_final_model(model, os.path.join(args.output_dir, finetuning.FINAL_MODEL_DIR), vocab_file)
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
    return run_utils.run_on_engine(run, args, logger)


if __name__ == "__main__":
    sys.exit(main())
