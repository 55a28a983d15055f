"""The XLA-compiled steps hold no loop.

XLA compiles a `tf.map_fn` over the rows of a batch (or any `tf.while_loop`) into an HLO
`while`, which runs the rows one after the other: on this CPU it made the pretraining step 7x
slower than graph mode. These tests lower each compiled step to HLO and look for one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import optimization
import run_pretraining
from configuration import ElectraConfig
from modeling import ElectraForQuestionAnswering

WHILE_LOOP = re.compile(r"\bwhile\(")
TINY = {"vocab_size": 30522, "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 1, "intermediate_size": 128, "max_position_embeddings": 128}
BATCH, LENGTH = 4, 32


def hlo(function: tf.types.experimental.PolymorphicFunction, *args: object) -> str:
    """The HLO XLA compiles `function` (a tf.function with jit_compile=True) to for `args`."""
    return function.experimental_get_compiler_ir(*args)(stage="hlo")


def pretraining_batch() -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(BATCH, LENGTH)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    mask[0, LENGTH // 2:] = 0
    return {"input_ids": tf.constant(ids * mask), "input_mask": tf.constant(mask),
            "segment_ids": tf.zeros_like(tf.constant(ids))}


def test_a_loop_over_rows_is_seen():
    """The check has the power to fail: a per-row map_fn compiles to one while loop."""
    per_row = tf.function(lambda x: tf.map_fn(lambda row: row * 2.0, x), jit_compile=True)
    assert len(WHILE_LOOP.findall(hlo(per_row, tf.ones([3, 2])))) == 1


@pytest.mark.parametrize("precision, accumulation", [("fp32", 1), ("fp16", 1), ("bf16", 2)])
def test_pretraining_step_has_no_loop(precision: str, accumulation: int, tmp_path: Path):
    """Masking, sampling, generator, discriminator, gradients and the LAMB update, compiled."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(TINY))
    flags = ["--model_config", str(config_file), "--pretrain_tfrecords", "unused", "--max_seq_length", str(LENGTH),
             "--train_batch_size", str(BATCH), "--gradient_accumulation_steps", str(accumulation), "--xla"]
    if precision != "fp32":
        flags += ["--amp", "--amp_dtype", {"fp16": "float16", "bf16": "bfloat16"}[precision]]
    args = run_pretraining.parse_args(flags)
    trainer = run_pretraining.build_trainer(args, run_pretraining.build_model(args))
    step_args = (pretraining_batch(), tf.constant([12345, 3], tf.int64), tf.constant(1))
    if accumulation == 1:
        modules = [hlo(trainer.whole_step, *step_args)]
    else:
        modules = [hlo(trainer.micro_step, *step_args), hlo(trainer.apply_step, trainer.accumulator.mean())]
    for module in modules:
        assert not WHILE_LOOP.findall(module)
    assert "sort" in modules[0], "the masking (top_k) should be in the compiled step"


@pytest.mark.parametrize("joint_head", [True, False])
def test_squad_fine_tuning_and_inference_have_no_loop(joint_head: bool):
    """The fine-tuning step (AdamW with layer-wise decay) and the inference call run_tf_squad.py
    compiles with --xla: beam search over starts and ends for the joint head."""
    model = ElectraForQuestionAnswering(ElectraConfig(**TINY), joint_head=joint_head, version_2=True, beam_size=3)
    variables = model.trainable_variables
    optimizer = optimization.create_optimizer(
        "adam", 1e-4, weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6, skip_adaptive=False,
        lr_multipliers=optimization.layerwise_lr_multipliers(variables, TINY["num_hidden_layers"], 0.8))
    optimizer.build(variables)
    trainer = optimization.Trainer(lambda batch, seed, first_row: model.training_losses(batch), variables, optimizer,
                                   jit_compile=True)
    batch = pretraining_batch()
    p_mask = tf.concat([tf.ones([BATCH, 8], tf.int32), tf.zeros([BATCH, LENGTH - 8], tf.int32)], axis=1)
    training_batch = {**batch, "p_mask": p_mask, "start_position": tf.fill([BATCH], 9),
                      "end_position": tf.fill([BATCH], 11), "is_impossible": tf.zeros([BATCH], tf.int32)}
    infer = tf.function(lambda b: model(b["input_ids"], b["input_mask"], b["segment_ids"], p_mask=b["p_mask"]),
                        jit_compile=True)
    for module in (hlo(trainer.whole_step, training_batch, tf.constant([0, 0], tf.int64), tf.constant(0)),
                   hlo(infer, {**batch, "p_mask": p_mask})):
        assert not WHILE_LOOP.findall(module)
