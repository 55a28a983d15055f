"""Pretraining throughput: this recipe's training step against the same step written with
keras-hub's ElectraBackbone (TensorFlow) and with Hugging Face transformers (PyTorch), in one
run, on the same random batches.

Every implementation does the whole step: dynamic masking, the generator at the masked
positions, a sample from its softmax, the discriminator on every token, loss = gen + 50 x disc,
gradients, clipping and the optimizer update (this recipe: LAMB; the peers: AdamW). The input
pipeline is left out (batches are in memory). The configurations are measured in interleaved
rounds, so a change of load on a shared machine touches all of them; each line gives the median
step, the spread (least and most) and the load average, and each of this recipe's lines its
ratio to every peer at the same precision (keras-hub in the same compile mode).

keras-hub is optional: install it apart from the test environment (its tensorflow-text
dependency pulls the full `tensorflow` wheel on top of `tensorflow-cpu`), e.g.
`pip install --no-deps --target .keras-hub keras-hub==0.32.0`, and pass `--keras_hub_path .keras-hub`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmark_pretraining")
CLS_ID, SEP_ID, MASK_ID = 101, 102, 103
IMPLEMENTATIONS = {"tf": "this recipe", "keras_hub": "keras-hub", "torch": "transformers (PyTorch)"}
KERAS_DTYPES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
DEFAULT_CONFIGS = ("tf-fp32,tf-fp32-xla,tf-bf16,tf-bf16-xla,keras_hub-fp32,keras_hub-fp32-xla,keras_hub-bf16,"
                   "keras_hub-bf16-xla,torch-fp32,torch-bf16")
LEARNING_RATE = 1e-4


@dataclasses.dataclass(frozen=True)
class Config:
    """One configuration: implementation, precision, XLA or not (`tf-bf16-xla`)."""

    implementation: str
    precision: str
    xla: bool

    @classmethod
    def parse(cls, name: str) -> "Config":
        parts = name.split("-")
        config = cls(parts[0], parts[1] if len(parts) > 1 else "", parts[2:] == ["xla"])
        if (len(parts) not in (2, 3) or config.name != name or config.implementation not in IMPLEMENTATIONS
                or config.precision not in KERAS_DTYPES
                or (config.implementation == "torch" and (config.xla or config.precision == "fp16"))):
            raise ValueError(f"unknown configuration {name!r}: expected tf|keras_hub-fp32|bf16|fp16[-xla] or "
                             "torch-fp32|bf16")
        return config

    @property
    def name(self) -> str:
        return f"{self.implementation}-{self.precision}{'-xla' if self.xla else ''}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_size", default="small", choices=("small", "base", "large"), help="model size")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per step")
    parser.add_argument("--max_seq_length", type=int, default=128, help="sequence length")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (tracing, compiling)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds over all configurations; each round starts a configuration with one untimed step")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated configurations: tf (this recipe), keras_hub or torch, then fp32, bf16 or "
                             "fp16 (TensorFlow only), then -xla for an XLA-compiled step (TensorFlow only)")
    parser.add_argument("--keras_hub_path", default=None,
                        help="folder holding the keras_hub package (pip install --no-deps --target FOLDER "
                             "keras-hub==0.32.0); default: the environment's own keras_hub")
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    try:
        args.configs = [Config.parse(name) for name in args.configs.split(",") if name]
    except ValueError as error:
        parser.error(str(error))
    if min(args.batch_size, args.max_seq_length, args.steps, args.rounds) < 1 or args.warmup_steps < 0:
        parser.error("--batch_size, --max_seq_length, --steps and --rounds must be positive, --warmup_steps >= 0")
    return args


def random_batches(batch_size: int, seq_length: int, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Batches shaped like pretraining data: [CLS] A [SEP] B [SEP], some padding."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        ids = rng.integers(1000, 30522, size=(batch_size, seq_length)).astype(np.int32)
        lengths = rng.integers(seq_length // 2, seq_length + 1, size=batch_size)
        mask = (np.arange(seq_length)[None, :] < lengths[:, None]).astype(np.int32)
        ids[:, 0] = CLS_ID
        ids[np.arange(batch_size), lengths - 1] = SEP_ID
        segments = ((np.arange(seq_length)[None, :] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int32)
        batches.append({"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments})
    return batches


# ----------------------------------------------------------------------------- this recipe


def pretraining_settings(flags: list[str]) -> argparse.Namespace:
    """run_pretraining.py's model, optimizer, precision and engine settings: its defaults, then `flags`."""
    import pretraining
    import run_utils

    parser = argparse.ArgumentParser()
    pretraining.add_model_flags(parser)
    pretraining.add_optimizer_flags(parser)
    run_utils.add_precision_flags(parser, xla_help="XLA-compile the training step")
    run_utils.add_engine_flags(parser)
    return parser.parse_args(flags)


def recipe_step(args: argparse.Namespace, config: Config, batches: list) -> Callable[[int], None]:
    """run_pretraining's own Trainer step (LAMB, the recipe's defaults)."""
    import pretraining

    flags = ["--model_size", args.model_size, "--max_seq_length", str(args.max_seq_length), "--num_train_steps",
             "1000", "--num_warmup_steps", "10", "--xla" if config.xla else "--no-xla"]
    if config.precision != "fp32":
        flags += ["--amp", "--amp_dtype", "bfloat16" if config.precision == "bf16" else "float16"]
    run_args = pretraining_settings(flags)
    trainer = pretraining.build_trainer(run_args, pretraining.build_model(run_args))

    def step(i: int) -> None:
        _, update = trainer.step(iter([batches[i % len(batches)]]), i)
        update["gradient_norm"].numpy()  # wait for the step to finish

    return step


# ----------------------------------------------------------------------------- keras-hub

def import_keras_hub(path: str | None) -> Any:
    if path:
        sys.path.insert(0, os.path.abspath(path))
    try:
        return importlib.import_module("keras_hub")
    except ImportError as error:
        raise SystemExit(f"keras-hub is not installed{f' in {path}' if path else ''} ({error}); install it with "
                         "`pip install --no-deps --target .keras-hub keras-hub==0.32.0` and pass "
                         "--keras_hub_path .keras-hub, or leave keras_hub-* out of --configs") from None


class KerasHubElectra:
    """ELECTRA pretraining as a keras-hub user writes it: two ElectraBackbones (keras-hub cannot
    share one embedding block between them, so the generator has its own token embeddings),
    keras-hub's MaskedLMHead tied to the generator's embeddings at the masked positions, a
    dense-gelu-dense discriminator head, stateless masking and `stateless_categorical` sampling."""

    def __init__(self, keras_hub: Any, args: argparse.Namespace, dtype: str):
        import keras

        from configuration import ElectraConfig

        discriminator = ElectraConfig.from_size(args.model_size)
        self.vocab_size = discriminator.vocab_size
        self.max_predictions = int(0.155 * args.max_seq_length)
        self.generator = self._backbone(keras_hub, discriminator.generator_config(), dtype)
        self.discriminator = self._backbone(keras_hub, discriminator, dtype)
        self.lm_head = keras_hub.layers.MaskedLMHead(token_embedding=self.generator.token_embedding,
                                                     intermediate_activation="gelu", dtype=dtype)
        self.detector = keras.Sequential([keras.layers.Dense(discriminator.hidden_size, activation="gelu", dtype=dtype),
                                          keras.layers.Dense(1, dtype=dtype)])

    @staticmethod
    def _backbone(keras_hub: Any, config: Any, dtype: str) -> Any:
        return keras_hub.models.ElectraBackbone(
            vocab_size=config.vocab_size, num_layers=config.num_hidden_layers, num_heads=config.num_attention_heads,
            hidden_dim=config.hidden_size, embedding_dim=config.embedding_size,
            intermediate_dim=config.intermediate_size, dropout=config.hidden_dropout_prob,
            max_sequence_length=config.max_position_embeddings, dtype=dtype)

    @property
    def variables(self) -> list:
        return [*self.generator.trainable_variables, *self.discriminator.trainable_variables,
                *self.lm_head.trainable_variables, *self.detector.trainable_variables]

    def loss(self, batch: dict[str, Any], seed: Any) -> Any:
        import tensorflow as tf

        ids, mask, segments = batch["input_ids"], batch["input_mask"], batch["segment_ids"]
        position_seed, token_seed, sample_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        candidates = (mask == 1) & (ids != CLS_ID) & (ids != SEP_ID)
        scores = tf.where(candidates, tf.random.stateless_uniform(tf.shape(ids), position_seed), -1.0)
        top_scores, positions = tf.math.top_k(scores, self.max_predictions)
        wanted = tf.round(tf.reduce_sum(tf.cast(mask, tf.float32), -1, keepdims=True) * 0.15)
        weights = tf.cast((top_scores >= 0.0) & (tf.range(self.max_predictions, dtype=tf.float32) < wanted), tf.float32)
        targets = tf.gather(ids, positions, batch_dims=1)
        hits = tf.one_hot(positions, tf.shape(ids)[1], dtype=tf.int32) * tf.cast(weights[..., None], tf.int32)
        gets_mask = tf.cast(tf.random.stateless_uniform(tf.shape(positions), token_seed) < 0.85, tf.int32)
        masked_ids = tf.where(tf.reduce_max(hits * gets_mask[..., None], axis=1) > 0, MASK_ID, ids)

        hidden = self.generator({"token_ids": masked_ids, "segment_ids": segments, "padding_mask": mask},
                                training=True)["sequence_output"]
        logits = tf.cast(self.lm_head(hidden, mask_positions=positions), tf.float32)
        per_slot = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        generator_loss = tf.reduce_sum(per_slot * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        sampled = tf.random.stateless_categorical(tf.reshape(tf.stop_gradient(logits), [-1, self.vocab_size]), 1,
                                                  sample_seed, dtype=tf.int32)
        sampled = tf.reshape(sampled, tf.shape(positions))
        replaced = tf.reduce_max(hits, axis=1) > 0
        fake_ids = tf.where(replaced, tf.reduce_max(hits * sampled[..., None], axis=1), ids)
        labels = tf.cast(fake_ids != ids, tf.float32)

        hidden = self.discriminator({"token_ids": fake_ids, "segment_ids": segments, "padding_mask": mask},
                                    training=True)["sequence_output"]
        detector_logits = tf.cast(self.detector(hidden)[..., 0], tf.float32)
        real = tf.cast(mask, tf.float32)
        per_token = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=detector_logits)
        return generator_loss + 50.0 * tf.reduce_sum(per_token * real) / tf.reduce_sum(real)


def keras_hub_step(args: argparse.Namespace, config: Config, batches: list) -> Callable[[int], None]:
    import keras
    import tensorflow as tf

    model = KerasHubElectra(import_keras_hub(args.keras_hub_path), args, KERAS_DTYPES[config.precision])
    model.loss({k: tf.constant(v) for k, v in batches[0].items()}, tf.constant([0, 0]))  # builds every layer
    optimizer = keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=0.01, epsilon=1e-6,
                                       global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if config.precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    variables = model.variables
    optimizer.build(variables)

    @tf.function(jit_compile=config.xla)
    def train_step(batch: dict[str, tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = model.loss(batch, seed)
            scaled = optimizer.scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    tensors = [{k: tf.constant(v) for k, v in batch.items()} for batch in batches]

    def step(i: int) -> None:
        train_step(tensors[i % len(tensors)], tf.constant([1, i])).numpy()

    return step


# ----------------------------------------------------------------------------- transformers

def torch_step(args: argparse.Namespace, config: Config, batches: list) -> Callable[[int], None]:
    import torch
    import transformers

    from configuration import ElectraConfig

    discriminator_config = ElectraConfig.from_size(args.model_size)
    generator_config = discriminator_config.generator_config()
    discriminator = transformers.ElectraForPreTraining(transformers.ElectraConfig(**discriminator_config.to_dict()))
    generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**generator_config.to_dict()))
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.tie_weights()
    parameters = list({id(p): p for p in [*discriminator.parameters(), *generator.parameters()]}.values())
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, eps=1e-6, weight_decay=0.01)
    generator.train()
    discriminator.train()
    rng = np.random.default_rng(1)
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
        mask = torch.from_numpy(batch["input_mask"].astype(np.int64))
        segments = torch.from_numpy(batch["segment_ids"].astype(np.int64))
        candidates = (mask == 1) & (ids != CLS_ID) & (ids != SEP_ID)
        chosen = candidates & torch.from_numpy(rng.random(ids.shape) < 0.15)
        masked_ids = torch.where(chosen & torch.from_numpy(rng.random(ids.shape) < 0.85), MASK_ID, ids)
        labels = torch.where(chosen, ids, -100)
        with torch.autocast("cpu", dtype=dtype, enabled=config.precision == "bf16"):
            generated = generator(input_ids=masked_ids, attention_mask=mask, token_type_ids=segments, labels=labels)
            with torch.no_grad():
                logits = generated.logits[chosen].float()
                gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-9)))
                sampled = (logits + gumbel).argmax(-1)
            fake_ids = ids.clone()
            fake_ids[chosen] = sampled
            replaced = (fake_ids != ids).long()
            judged = discriminator(input_ids=fake_ids, attention_mask=mask, token_type_ids=segments, labels=replaced)
            loss = generated.loss.float() + 50.0 * judged.loss.float()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


STEP_BUILDERS = {"tf": recipe_step, "keras_hub": keras_hub_step, "torch": torch_step}


# ----------------------------------------------------------------------------- measuring and reporting

def load_average() -> float:
    """The 1-minute load average (runnable processes; this machine's cores: os.cpu_count())."""
    with open("/proc/loadavg", encoding="utf-8") as f:
        return float(f.read().split()[0])


def measure(args: argparse.Namespace, batches: list) -> dict[Config, dict[str, list[float]]]:
    """Warm every configuration up, then time them in interleaved rounds."""
    steps: dict[Config, Callable[[int], None]] = {}
    for config in args.configs:
        started = time.perf_counter()
        steps[config] = STEP_BUILDERS[config.implementation](args, config, batches)
        for i in range(args.warmup_steps):
            steps[config](i)
        logger.info("%-18s built and warmed up in %.0f s", config.name, time.perf_counter() - started)
    timings = {config: {"step_s": [], "load": []} for config in args.configs}
    counter = args.warmup_steps
    for round_index in range(args.rounds):
        for config, step in steps.items():
            step(counter)  # untimed: the previous configuration's threads may still be winding down
            counter += 1
            timings[config]["load"].append(load_average())
            for _ in range(args.steps):
                started = time.perf_counter()
                step(counter)
                timings[config]["step_s"].append(time.perf_counter() - started)
                counter += 1
            timings[config]["load"].append(load_average())
        logger.info("round %d of %d done", round_index + 1, args.rounds)
    return timings


def summarize(args: argparse.Namespace, timings: dict[Config, dict[str, list[float]]]) -> list[dict[str, Any]]:
    medians = {config: statistics.median(t["step_s"]) for config, t in timings.items()}
    rows = []
    for config, timing in timings.items():
        row = {"config": config.name, "implementation": IMPLEMENTATIONS[config.implementation],
               "median_step_s": medians[config], "least_step_s": min(timing["step_s"]),
               "most_step_s": max(timing["step_s"]), "sequences_per_second": args.batch_size / medians[config],
               "load_average": [min(timing["load"]), max(timing["load"])], "step_times_s": timing["step_s"]}
        graph = dataclasses.replace(config, xla=False)
        if config.xla and graph in medians:
            row["xla_over_graph"] = medians[config] / medians[graph]
        if config.implementation == "tf":
            for peer in ("keras_hub", "torch"):
                other = dataclasses.replace(config, implementation=peer, xla=config.xla and peer != "torch")
                if other in medians:
                    row[f"speedup_over_{peer}"] = medians[other] / medians[config]
        rows.append(row)
    return rows


def log_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        extras = [f"XLA/graph {row['xla_over_graph']:.2f}x" if "xla_over_graph" in row else "",
                  *(f"{row[f'speedup_over_{peer}']:.2f}x {IMPLEMENTATIONS[peer]}" for peer in ("keras_hub", "torch")
                    if f"speedup_over_{peer}" in row)]
        logger.info("%-18s median %6.3f s/step (%5.3f-%5.3f)  %6.2f sequences/s  load %.1f-%.1f  %s", row["config"],
                    row["median_step_s"], row["least_step_s"], row["most_step_s"], row["sequences_per_second"],
                    *row["load_average"], "  ".join(e for e in extras if e))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    if any(config.implementation == "keras_hub" for config in args.configs):
        import_keras_hub(args.keras_hub_path)  # fail before minutes of building the others
    logger.info("%s, batch %d, sequence %d, %d CPU cores; speed-up = peer's median step / this recipe's",
                args.model_size, args.batch_size, args.max_seq_length, os.cpu_count())
    rows = summarize(args, measure(args, random_batches(args.batch_size, args.max_seq_length, 4)))
    log_rows(rows)
    summary = {"model_size": args.model_size, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
               "cpu_count": os.cpu_count(), "results": rows}
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
