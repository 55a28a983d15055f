"""Trains the tiny ELECTRA for a few steps on fixed batches and saves rank 0's weights.

Run under a launcher (2 processes, per-rank batch b) or alone (batch 2b): rank r trains on rows
[r*b, (r+1)*b) of each global batch, so both runs see the same examples. Ranks start from
different random weights: only the broadcast from rank 0 makes them agree. It also saves the
engine's mean of PROBE (the same on every rank) with and without fp16 compression.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import distributed  # noqa: E402
import run_pretraining  # noqa: E402

GLOBAL_BATCH = 8
# Values float16 cannot hold exactly (the last one is float16-subnormal); every rank sends the
# same, so the exact mean is PROBE and the compressed one PROBE rounded to float16.
PROBE = np.array([1 / 3, 0.1, 1e-5, 1000.3], np.float32)


def global_batches(steps: int, seq_length: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(steps):
        ids = rng.integers(1000, 30000, size=(GLOBAL_BATCH, seq_length)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        # The same padding in each half: every rank then averages its losses over as many tokens
        # as the other, and the mean of the ranks' means is the one-process mean.
        mask[::GLOBAL_BATCH // 2, seq_length // 2:] = 0
        batches.append({"input_ids": ids * mask, "input_mask": mask, "segment_ids": np.zeros_like(ids)})
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="discriminator config.json (dropout 0)")
    parser.add_argument("--engine", default="auto", help="distributed engine")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("--fp16_compression", action="store_true", help="all-reduce gradients as float16")
    parser.add_argument("--output", required=True,
                        help="npz of rank 0's final trainable weights and the global gradient norm of each step")
    options = parser.parse_args()
    distributed.prepare_environment(os.environ)
    engine = distributed.create_engine(options.engine, os.environ)
    per_rank = GLOBAL_BATCH // engine.size
    args = run_pretraining.parse_args([
        "--model_config", options.config, "--generator_hidden_size", "1.0", "--pretrain_tfrecords", "unused",
        "--num_warmup_steps", "1", "--num_train_steps", "10", "--learning_rate", "1e-4",
        "--train_batch_size", str(per_rank), *(["--fp16_compression"] if options.fp16_compression else [])])
    keras.utils.set_random_seed(100 + engine.rank)
    model = run_pretraining.build_model(args)
    trainer = run_pretraining.build_trainer(args, model, engine)
    engine.broadcast_from_chief([*model.trainable_variables, *trainer.optimizer.variables])
    rows = slice(engine.rank * per_rank, (engine.rank + 1) * per_rank)
    local = iter([{k: v[rows] for k, v in batch.items()} for batch in global_batches(options.steps)])
    gradient_norms = [float(trainer.step(local, step)[1]["gradient_norm"]) for step in range(options.steps)]
    probes = {f"probe_{name}": engine.all_reduce_mean([tf.constant(PROBE)], compressed)[0].numpy()
              for name, compressed in (("exact", False), ("fp16", True))}
    if engine.is_chief:
        np.savez(options.output, gradient_norms=np.array(gradient_norms), **probes,
                 **{f"weight_{i}": v.numpy() for i, v in enumerate(model.trainable_variables)})


if __name__ == "__main__":
    main()
