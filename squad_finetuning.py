"""SQuAD on top of finetuning.py: what run_tf_squad.py, run_inference.py and
scripts/benchmark_squad.py share. The QA model from a model folder (with the head asked for),
batched prediction, and the SQuAD flags with their defaults from squad_utils' FeatureConfig and
DecodeConfig.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import finetuning
import squad_utils
from configuration import ElectraConfig
from model_folder import LoadReport, read_qa_head_settings
from modeling import ElectraForQuestionAnswering

logger = logging.getLogger(__name__)

TRAIN_FIELDS = ("input_ids", "input_mask", "segment_ids", "p_mask", "start_position", "end_position",
                "is_impossible")
PREDICT_FIELDS = ("input_ids", "input_mask", "segment_ids", "p_mask")
FEATURE_DEFAULTS = squad_utils.FeatureConfig()
DECODE_DEFAULTS = squad_utils.DecodeConfig()


# ----------------------------------------------------------------------------- flags

def add_feature_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--max_seq_length", type=int, default=FEATURE_DEFAULTS.max_seq_length,
                       help="WordPiece tokens per window")
    group.add_argument("--doc_stride", type=int, default=FEATURE_DEFAULTS.doc_stride,
                       help="tokens between the starts of consecutive windows")
    group.add_argument("--max_query_length", type=int, default=FEATURE_DEFAULTS.max_query_length,
                       help="questions are cut to this many tokens")


def add_decode_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--n_best_size", type=int, default=DECODE_DEFAULTS.n_best_size,
                       help="candidate answers kept per question (run_tf_squad.py writes them to nbest_predictions.json)")
    group.add_argument("--max_answer_length", type=int, default=DECODE_DEFAULTS.max_answer_length,
                       help="longest answer in tokens")
    group.add_argument("--null_score_diff_threshold", type=float, default=DECODE_DEFAULTS.null_score_diff_threshold,
                       help="SQuAD 2.0: predict no answer when the null odds exceed this")


def feature_config(args: argparse.Namespace) -> squad_utils.FeatureConfig:
    return squad_utils.FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length)


def decode_config(args: argparse.Namespace) -> squad_utils.DecodeConfig:
    return squad_utils.DecodeConfig(n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
                                    version_2_with_negative=args.version_2_with_negative,
                                    null_score_diff_threshold=args.null_score_diff_threshold)


# ----------------------------------------------------------------------------- the QA model

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
    return model, finetuning.load_task_weights(model, folder)


def check_head_is_trained(folder: str | None, report: LoadReport | None, joint_head: bool) -> None:
    """Predicting needs a fine-tuned QA head, not a freshly initialised one."""
    if folder is None or report.newly_initialised:
        raise ValueError(f"predicting without training needs a fine-tuned QA model folder (from run_tf_squad.py); "
                         f"{folder or 'a model without weights'} has no trained {'joint' if joint_head else 'plain'} "
                         "QA head")


# ----------------------------------------------------------------------------- prediction

def training_arrays(features: squad_utils.SquadFeatures) -> dict[str, np.ndarray]:
    """What the QA model's training losses read of each window."""
    return {name: getattr(features, name) for name in TRAIN_FIELDS}


def predict_features(model: ElectraForQuestionAnswering, features: squad_utils.SquadFeatures, batch_size: int,
                     jit_compile: bool = False) -> tuple[dict[str, np.ndarray], list[float]]:
    """The model's outputs for every feature, and the seconds each batch took (inputs to NumPy outputs)."""
    infer = tf.function(lambda batch: model(batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                            p_mask=batch["p_mask"], training=False), jit_compile=jit_compile)
    inputs = {name: getattr(features, name) for name in PREDICT_FIELDS}
    collected: dict[str, list[np.ndarray]] = {}
    batch_seconds = []
    starts = range(0, len(features), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", dynamic_ncols=True):
        batch = finetuning.padded_rows(inputs, start, batch_size)
        began = time.perf_counter()
        outputs = {name: value.numpy() for name, value in infer(batch).items()}
        batch_seconds.append(time.perf_counter() - began)
        real = min(batch_size, len(features) - start)
        for name, value in outputs.items():
            collected.setdefault(name, []).append(value[:real])
    return {name: np.concatenate(parts) for name, parts in collected.items()}, batch_seconds
