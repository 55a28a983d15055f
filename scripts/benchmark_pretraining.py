"""Pretraining throughput: this recipe's training step against the same step in Hugging Face
transformers on PyTorch, in one run, on the same random batches.

The PyTorch step is what a user of transformers would write: ElectraForMaskedLM (generator,
embeddings shared with the discriminator) + ElectraForPreTraining, dynamic masking, Gumbel
sampling at the masked positions, loss = gen + 50 x disc, backward, clip, AdamW. Both sides
exclude the input pipeline (batches are in memory). Prints one line per configuration and a
JSON summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmark_pretraining")
CLS_ID, SEP_ID, MASK_ID = 101, 102, 103


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_size", default="small", choices=("small", "base", "large"), help="model size")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per step")
    parser.add_argument("--max_seq_length", type=int, default=128, help="sequence length")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (tracing, compiling)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--configs", default="tf-fp32,tf-fp32-xla,tf-bf16,tf-bf16-xla,torch-fp32,torch-bf16",
                        help="comma-separated configurations to run")
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    return parser.parse_args()


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


def time_steps(run_step: Callable[[int], None], warmup: int, steps: int) -> list[float]:
    for i in range(warmup):
        run_step(i)
    durations = []
    for i in range(steps):
        start = time.perf_counter()
        run_step(warmup + i)
        durations.append(time.perf_counter() - start)
    return durations


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


def tensorflow_step(args: argparse.Namespace, precision: str, xla: bool, batches: list) -> Callable[[int], None]:
    import pretraining

    flags = ["--model_size", args.model_size, "--max_seq_length", str(args.max_seq_length), "--num_train_steps",
             "1000", "--num_warmup_steps", "10", "--xla" if xla else "--no-xla"]
    if precision == "bf16":
        flags += ["--amp", "--amp_dtype", "bfloat16"]
    run_args = pretraining_settings(flags)
    trainer = pretraining.build_trainer(run_args, pretraining.build_model(run_args))

    def step(i: int) -> None:
        _, update = trainer.step(iter([batches[i % len(batches)]]), i)
        update["gradient_norm"].numpy()  # wait for the step to finish

    return step


def torch_step(args: argparse.Namespace, precision: str, batches: list) -> Callable[[int], None]:
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
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, eps=1e-6, weight_decay=0.01)
    generator.train()
    discriminator.train()
    rng = np.random.default_rng(1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
        mask = torch.from_numpy(batch["input_mask"].astype(np.int64))
        segments = torch.from_numpy(batch["segment_ids"].astype(np.int64))
        candidates = (mask == 1) & (ids != CLS_ID) & (ids != SEP_ID)
        chosen = candidates & torch.from_numpy(rng.random(ids.shape) < 0.15)
        masked_ids = torch.where(chosen & torch.from_numpy(rng.random(ids.shape) < 0.85), MASK_ID, ids)
        labels = torch.where(chosen, ids, -100)
        with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
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


def run_config(name: str, args: argparse.Namespace, batches: list) -> dict:
    framework, precision, *rest = name.split("-")
    if framework == "tf":
        step = tensorflow_step(args, precision, xla=bool(rest), batches=batches)
    else:
        step = torch_step(args, precision, batches)
    durations = time_steps(step, args.warmup_steps, args.steps)
    median = statistics.median(durations)
    return {"config": name, "median_step_s": median, "sequences_per_second": args.batch_size / median,
            "step_times_s": durations}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    batches = random_batches(args.batch_size, args.max_seq_length, 4)
    results = []
    for name in args.configs.split(","):
        result = run_config(name, args, batches)
        results.append(result)
        logger.info("%-12s %7.2f sequences/s  (median step %.3f s over %d steps)", name,
                    result["sequences_per_second"], result["median_step_s"], args.steps)
    by_name = {r["config"]: r["sequences_per_second"] for r in results}
    for precision in ("fp32", "bf16"):
        ours = [v for k, v in by_name.items() if k.startswith(f"tf-{precision}")]
        if ours and f"torch-{precision}" in by_name:
            logger.info("%s: best of this recipe / PyTorch transformers = %.2fx", precision,
                        max(ours) / by_name[f"torch-{precision}"])
    summary = {"model_size": args.model_size, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
               "results": results}
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
