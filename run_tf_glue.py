"""Fine-tune ELECTRA on a GLUE task (or your own task in GLUE's layout), evaluate it with GLUE's
metrics and write test-set predictions in GLUE's submission format.

Tasks: cola sst-2 mrpc sts-b qqp mnli qnli rte wnli, read from the folder GLUE ships for each
(--data_dir: train.tsv, dev.tsv, test.tsv; MNLI's dev_matched/dev_mismatched/test_matched/
test_mismatched), or any other --task_name for a custom task whose TSV files name their columns
in a header line (text_a, optional text_b, label or score). The head is ELECTRA's: dense -> gelu
-> dropout -> dense on [CLS], a softmax over the classes or one regression score (STS-B).

Training is SQuAD's (run_tf_squad.py): AdamW with layer-wise learning-rate decay, linear warm-up
then linear decay, gradient clipping, accumulation, mixed precision, XLA, several processes with
Horovod or tf.distribute, checkpoints in OUTPUT_DIR/checkpoints to resume from, SIGTERM/SIGINT
saving one. The fine-tuned model is written as a Hugging Face folder, OUTPUT_DIR/model.

--do_eval writes eval_results.json (each dev set's metrics: MNLI has mnli-m and mnli-mm);
--do_predict writes OUTPUT_DIR/submission/<Task>.tsv, the files the GLUE server takes (MNLI:
MNLI-m.tsv, MNLI-mm.tsv and AX.tsv when the diagnostic set is found).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import distributed  # noqa: E402
import finetuning  # noqa: E402
import glue_finetuning  # noqa: E402
import glue_utils  # noqa: E402
import run_utils  # noqa: E402
from glue_finetuning import load_classifier, predict_logits, task_for  # noqa: E402
from modeling import ElectraForSequenceClassification  # noqa: E402
from run_utils import RUN_CONFIG_FILE, MetricsLog, compute_policy, write_json  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

logger = logging.getLogger("run_tf_glue")
EVAL_RESULTS_FILE = "eval_results.json"
SUBMISSION_DIR = "submission"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    finetuning.add_model_flags(model, task_model="classifier")
    finetuning.add_tokenizer_flags(model)
    data = parser.add_argument_group("data")
    data.add_argument("--task_name", required=True,
                      help=f"a GLUE task ({' '.join(glue_utils.GLUE_TASKS)}), or any other name for your own task "
                           "in --data_dir (TSV files whose header names text_a, text_b, label or score)")
    data.add_argument("--data_dir", required=True,
                      help="the task's folder: train.tsv, dev.tsv, test.tsv as GLUE ships them (MNLI: dev_matched, "
                           "dev_mismatched, test_matched, test_mismatched)")
    glue_finetuning.add_sequence_flags(data)
    modes = parser.add_argument_group("modes")
    modes.add_argument("--do_train", action=argparse.BooleanOptionalAction, default=False, help="fine-tune on train.tsv")
    modes.add_argument("--do_eval", action=argparse.BooleanOptionalAction, default=False,
                       help="score the dev set(s) with GLUE's metrics into eval_results.json")
    modes.add_argument("--do_predict", action=argparse.BooleanOptionalAction, default=False,
                       help="predict the test set(s) into OUTPUT_DIR/submission/ in GLUE's submission format")
    finetuning.add_optimisation_flags(parser.add_argument_group("optimisation"), glue_finetuning.GLUE_DEFAULTS)
    predict = parser.add_argument_group("prediction")
    predict.add_argument("--predict_batch_size", type=int, default=glue_finetuning.PREDICT_BATCH_SIZE,
                         help="sequences per inference batch")
    speed = parser.add_argument_group("precision, speed, processes and logs")
    run_utils.add_precision_flags(speed, xla_help="XLA-compile the training and inference steps")
    run_utils.add_engine_flags(speed)
    finetuning.add_output_flags(speed)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_utils.parse_checked(build_parser(), validate_args, argv)


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not (args.do_train or args.do_eval or args.do_predict):
        parser.error("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    finetuning.check_optimisation_flags(parser, args)
    run_utils.require_at_least_one(parser, args, ("predict_batch_size", "max_seq_length"))
    args.log_dir, args.json_summary = run_utils.log_paths(args.output_dir, json_summary=args.json_summary)


# ----------------------------------------------------------------------------- data

def load_features(args: argparse.Namespace, task: glue_utils.GlueTask, eval_set: glue_utils.EvalSet,
                  tokenizer: WordPieceTokenizer) -> tuple[list[glue_utils.Example], glue_utils.GlueFeatures]:
    examples = glue_utils.read_examples(task, args.data_dir, eval_set)
    return examples, glue_utils.featurize(examples, task, tokenizer, args.max_seq_length)


def train(args: argparse.Namespace, model: ElectraForSequenceClassification, task: glue_utils.GlueTask,
          tokenizer: WordPieceTokenizer, log: MetricsLog | None,
          engine: distributed.SingleProcess) -> dict[str, Any] | None:
    """Fine-tune (or finish fine-tuning); the training summary, or None when a signal stopped it.
    Every rank reads and featurizes train.tsv itself (the same rows in the same order)."""
    _, features = load_features(args, task, task.train, tokenizer)
    arrays = glue_finetuning.training_arrays(features)
    return finetuning.fine_tune(
        args, model, len(features),
        lambda first: finetuning.epoch_batches(arrays, args.train_batch_size, args.seed, first, engine.rank,
                                               engine.size),
        engine, log, source=os.path.join(args.data_dir, task.train.file))


# ----------------------------------------------------------------------------- evaluation and prediction

def evaluate(args: argparse.Namespace, model: ElectraForSequenceClassification, task: glue_utils.GlueTask,
             tokenizer: WordPieceTokenizer) -> dict[str, Any]:
    """GLUE's metrics on each dev set, written to eval_results.json; returns them flattened with
    the inference speed, for the metrics log."""
    results, summary = {}, {}
    for eval_set in task.dev_sets:
        _, features = load_features(args, task, eval_set, tokenizer)
        logits, batch_seconds = predict_logits(model, features, args.predict_batch_size, args.xla)
        predictions = glue_utils.predictions_from_logits(task, logits)
        results[eval_set.name] = {**glue_utils.compute_metrics(task, predictions, features.label_ids),
                                  "num_examples": len(features)}
        logger.info("Evaluation of %s: %s", os.path.join(args.data_dir, eval_set.file), json.dumps(results[eval_set.name]))
        summary.update({f"eval_{eval_set.name}_{name}": value for name, value in results[eval_set.name].items()})
        summary.update(finetuning.inference_speed(batch_seconds, args.predict_batch_size))
    write_json(os.path.join(args.output_dir, EVAL_RESULTS_FILE), results)
    return summary


def test_sets(task: glue_utils.GlueTask, data_dir: str) -> list[glue_utils.EvalSet]:
    """The task's test files, and GLUE's diagnostic set with MNLI when it is there."""
    sets = list(task.test_sets)
    diagnostic = glue_utils.diagnostic_set(data_dir) if task.name == "mnli" else None
    if diagnostic is not None:
        sets.append(diagnostic)
    elif task.name == "mnli":
        logger.warning("No diagnostic set (AX) beside %s: AX.tsv is not written", data_dir)
    return sets


def predict(args: argparse.Namespace, model: ElectraForSequenceClassification, task: glue_utils.GlueTask,
            tokenizer: WordPieceTokenizer) -> dict[str, Any]:
    """Write OUTPUT_DIR/submission/<Name>.tsv for each test set; returns the files written."""
    folder = os.path.join(args.output_dir, SUBMISSION_DIR)
    os.makedirs(folder, exist_ok=True)
    written = {}
    for test_set in test_sets(task, args.data_dir):
        examples, features = load_features(args, task, test_set, tokenizer)
        logits, _ = predict_logits(model, features, args.predict_batch_size, args.xla)
        path = os.path.join(folder, f"{test_set.name}.tsv")
        predictions = glue_utils.prediction_strings(task, glue_utils.predictions_from_logits(task, logits))
        glue_utils.write_submission(path, examples, predictions)
        logger.info("Wrote %s (%d predictions)", path, len(examples))
        written[f"predictions_{test_set.name}"] = len(examples)
    return written


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace, engine: distributed.SingleProcess | None = None) -> dict[str, Any] | None:
    """Train, evaluate and/or predict as asked; the summary written to the JSON log (None if stopped
    by a signal). Every rank trains; only the chief (rank 0) writes files, evaluates and predicts."""
    engine = engine or distributed.SingleProcess()
    keras.utils.set_random_seed(args.seed + engine.rank)  # rank 0's initial weights are broadcast
    config, folder = finetuning.model_source(args)
    if args.max_seq_length > config.max_position_embeddings:
        raise ValueError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                         f"max_position_embeddings {config.max_position_embeddings}")
    task = task_for(args.task_name, args.data_dir, folder)
    model, report = load_classifier(config, folder, task.labels, task.name, dtype=compute_policy(args))
    if not args.do_train:
        glue_finetuning.check_head_is_trained(folder, report)
    vocab_file = finetuning.vocab_file_for(args, folder)
    tokenizer = WordPieceTokenizer(vocab_file, do_lower_case=args.do_lower_case)
    finetuning.check_vocab_fits(tokenizer, model.config)
    if not engine.is_chief:
        return train(args, model, task, tokenizer, None, engine) if args.do_train else {}
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, RUN_CONFIG_FILE), vars(args))
    log = MetricsLog(args.log_dir, args.json_summary)
    summary: dict[str, Any] = {}
    try:
        if args.do_train:
            trained = train(args, model, task, tokenizer, log, engine)
            if trained is None:
                return None
            summary.update(trained)
            finetuning.save_final_model(model, os.path.join(args.output_dir, finetuning.FINAL_MODEL_DIR), vocab_file)
        if args.do_eval:
            summary.update(evaluate(args, model, task, tokenizer))
        if args.do_predict:
            summary.update(predict(args, model, task, tokenizer))
        log.write(summary.get("train_steps", 0), summary)
    finally:
        log.close()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=run_utils.LOG_FORMAT)
    args = parse_args(argv)
    return run_utils.run_on_engine(run, args, logger)


if __name__ == "__main__":
    sys.exit(main())
