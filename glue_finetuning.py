"""GLUE on top of finetuning.py: what run_tf_glue.py and run_glue_inference.py share. The GLUE
flags with their defaults (Google ELECTRA's GLUE settings), the task a run reads, the classifier
from a model folder (with the labels the task has), and batched logits.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import finetuning
import glue_utils
from configuration import ElectraConfig
from model_folder import LoadReport, read_classifier_labels
from modeling import ElectraForSequenceClassification

logger = logging.getLogger(__name__)

# Google ELECTRA's GLUE fine-tuning: batch 32, 3 epochs, 10% warm-up; 1e-4 is its base-size rate.
GLUE_DEFAULTS = finetuning.FineTuningConfig(train_batch_size=32, learning_rate=1e-4, num_train_epochs=3,
                                            warmup_proportion=0.1)
MAX_SEQ_LENGTH = 128
PREDICT_BATCH_SIZE = 128
INPUT_FIELDS = ("input_ids", "input_mask", "segment_ids")
TRAIN_FIELDS = (*INPUT_FIELDS, "label_ids")


def add_sequence_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--max_seq_length", type=int, default=MAX_SEQ_LENGTH,
                       help="WordPiece tokens per example, [CLS] and [SEP] included; longer texts are cut "
                            "(a pair from its longer text)")


# ----------------------------------------------------------------------------- the task and the model

def task_for(task_name: str, data_dir: str, folder: str | None) -> glue_utils.GlueTask:
    """The task; a custom task without train.tsv takes its classes from the fine-tuned folder."""
    holds_classifier, labels = read_classifier_labels(folder) if folder else (False, None)
    if holds_classifier:
        return glue_utils.get_task(task_name, data_dir, labels=labels, regression=labels is None)
    return glue_utils.get_task(task_name, data_dir)


def _describe(labels: tuple[str, ...] | None) -> str:
    return "a regression score" if labels is None else f"the classes {', '.join(labels)}"


def check_head_fits(folder: str, labels: tuple[str, ...] | None, task_name: str) -> None:
    """A fine-tuned folder's classes must be the task's: another task's head would give wrong
    answers under the right names."""
    holds_classifier, saved = read_classifier_labels(folder)
    if holds_classifier and saved != labels:
        raise ValueError(f"{folder} holds a classifier of {_describe(saved)}, but {task_name} has "
                         f"{_describe(labels)}; start from a discriminator folder (or the task's own fine-tuned one)")


def load_classifier(config: ElectraConfig, folder: str | None, labels: tuple[str, ...] | None, task_name: str,
                    dtype: str | None = None) -> tuple[ElectraForSequenceClassification, LoadReport | None]:
    """A classifier of `labels` (None: regression) with the weights of `folder` (random ones
    without), and what loading reported."""
    model = ElectraForSequenceClassification(config, labels=labels, dtype=dtype)
    if folder is None:
        return model, None
    check_head_fits(folder, labels, task_name)
    return model, finetuning.load_task_weights(model, folder)


def check_head_is_trained(folder: str | None, report: LoadReport | None) -> None:
    """Evaluating or predicting needs a fine-tuned classifier, not a freshly initialised head."""
    if folder is None or report.newly_initialised:
        raise ValueError(f"evaluating or predicting without training needs a fine-tuned classifier folder (from "
                         f"run_tf_glue.py); {folder or 'a model without weights'} has no trained classifier head")


# ----------------------------------------------------------------------------- features and logits

def training_arrays(features: glue_utils.GlueFeatures) -> dict[str, np.ndarray]:
    return {name: getattr(features, name) for name in TRAIN_FIELDS}


def predict_logits(model: ElectraForSequenceClassification, features: glue_utils.GlueFeatures, batch_size: int,
                   jit_compile: bool = False) -> tuple[np.ndarray, list[float]]:
    """float32 logits [N, num_labels] of every example, and the seconds each batch took."""
    infer = tf.function(lambda batch: model(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                            training=False)["logits"], jit_compile=jit_compile)
    inputs = {name: getattr(features, name) for name in INPUT_FIELDS}
    logits, batch_seconds = [], []
    for start in tqdm(range(0, len(features), batch_size), desc="predicting", unit="batch", dynamic_ncols=True):
        batch = finetuning.padded_rows(inputs, start, batch_size)
        began = time.perf_counter()
        values = infer(batch).numpy()
        batch_seconds.append(time.perf_counter() - began)
        logits.append(values[:min(batch_size, len(features) - start)])
    return np.concatenate(logits), batch_seconds
