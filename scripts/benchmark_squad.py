"""Throughput of SQuAD fine-tuning and inference with run_tf_squad.py, and the same inference in
transformers' PyTorch ElectraForQuestionAnswering, on this machine. Prints numbers, asserts nothing.

The data is a synthetic SQuAD v1.1 file cut from the shipped Austen sample: one question on each
context of about 5 x max_seq_length characters (two windows). Every window costs the same: shapes
are fixed at max_seq_length, padding included. The model is a
base-width ELECTRA (hidden 768, 12 heads; --num_hidden_layers layers) with random weights and
the plain start/end head, so that transformers can run the very model run_tf_squad.py saved.
Both sides predict the same windows in batches of --predict_batch_size; sequences per second
and latency percentiles come from the same per-batch timing (first batch, which traces or warms
up, left out).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import squad_utils  # noqa: E402
from configuration import ElectraConfig  # noqa: E402
from finetuning import inference_speed, padded_rows  # noqa: E402
from model_folder import save_model_folder  # noqa: E402
from modeling import ElectraDiscriminator  # noqa: E402
from squad_finetuning import PREDICT_FIELDS  # noqa: E402
from tokenization import WordPieceTokenizer  # noqa: E402

SAMPLE_BOOK = REPO / "data" / "sample_corpus" / "austen" / "emma.txt"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work_dir", default=None,
                        help="folder for data, model and outputs (default: a temporary one)")
    parser.add_argument("--num_hidden_layers", type=int, default=12, help="encoder layers of the base-width model")
    parser.add_argument("--max_seq_length", type=int, default=384, help="tokens per window")
    parser.add_argument("--train_batch_size", type=int, default=8, help="training sequences per step")
    parser.add_argument("--train_steps", type=int, default=6, help="optimizer steps timed (the first one is left out)")
    parser.add_argument("--predict_batch_size", type=int, default=8, help="sequences per inference batch")
    parser.add_argument("--predict_questions", type=int, default=32,
                        help="questions predicted: about two windows each, in batches of --predict_batch_size, all "
                             "timed but the first batch")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="pass --amp to run_tf_squad.py")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="pass --xla to run_tf_squad.py")
    return parser


def long_contexts(count: int, chars: int) -> list[str]:
    """`count` passages of about `chars` characters of consecutive paragraphs."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", SAMPLE_BOOK.read_text(encoding="utf-8"))]
    contexts, current = [], ""
    for paragraph in filter(None, paragraphs):
        current = f"{current} {paragraph}".strip()
        if len(current) >= chars:
            contexts.append(current[:chars])
            current = ""
            if len(contexts) == count:
                break
    return contexts


def write_squad_file(path: Path, num_questions: int, max_seq_length: int) -> None:
    """One question per context; the answer is the word after the question's six words."""
    paragraphs = []
    for index, context in enumerate(long_contexts(num_questions, chars=5 * max_seq_length)):
        words = list(re.finditer(r"\S+", context))
        answer = words[len(words) // 3]
        question = " ".join(w.group(0) for w in words[len(words) // 3 - 6:len(words) // 3]) + " what?"
        paragraphs.append({"context": context, "qas": [{"id": f"q{index}", "question": question, "answers": [
            {"text": answer.group(0), "answer_start": answer.start()}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "benchmark", "paragraphs": paragraphs}]}))


def run_tf_squad(args: argparse.Namespace, work: Path, model_folder: Path) -> dict:
    """Fine-tune for --train_steps steps and predict; the run's summary (last JSON-summary line)."""
    output = work / "squad_output"
    command = [sys.executable, str(REPO / "run_tf_squad.py"), "--init_checkpoint", str(model_folder),
               "--no-joint_head", "--do_train", "--do_predict", "--train_file", str(work / "train.json"),
               "--predict_file", str(work / "dev.json"), "--output_dir", str(output),
               "--max_seq_length", str(args.max_seq_length), "--max_steps", str(args.train_steps),
               "--train_batch_size", str(args.train_batch_size), "--predict_batch_size", str(args.predict_batch_size),
               "--log_freq", "1", "--amp" if args.amp else "--no-amp", "--xla" if args.xla else "--no-xla"]
    subprocess.run(command, check=True)
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def torch_inference(args: argparse.Namespace, work: Path, fine_tuned: Path) -> dict:
    """transformers' ElectraForQuestionAnswering on the same windows, batches and timing."""
    tokenizer = WordPieceTokenizer(str(fine_tuned / "vocab.txt"))
    config = squad_utils.FeatureConfig(max_seq_length=args.max_seq_length)
    _, features, _ = squad_utils.load_or_build_features(work / "dev.json", tokenizer, config, False, work / "cache")
    model = transformers.ElectraForQuestionAnswering.from_pretrained(fine_tuned).eval()
    seconds = []
    with torch.inference_mode():
        inputs = {name: getattr(features, name) for name in PREDICT_FIELDS}
        for start in range(0, len(features), args.predict_batch_size):
            batch = padded_rows(inputs, start, args.predict_batch_size)
            began = time.perf_counter()
            model(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                  attention_mask=torch.from_numpy(batch["input_mask"]).long(),
                  token_type_ids=torch.from_numpy(batch["segment_ids"]).long())  # eager: done on return
            seconds.append(time.perf_counter() - began)
    return {**inference_speed(seconds, args.predict_batch_size), "torch_threads": torch.get_num_threads()}


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work_dir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        write_squad_file(work / "train.json", args.train_batch_size * args.train_steps, args.max_seq_length)
        write_squad_file(work / "dev.json", args.predict_questions, args.max_seq_length)
        config = ElectraConfig.from_size("base", num_hidden_layers=args.num_hidden_layers)
        save_model_folder(ElectraDiscriminator(config), str(work / "base_width_discriminator"))
        ours = run_tf_squad(args, work, work / "base_width_discriminator")
        theirs = torch_inference(args, work, work / "squad_output" / "model")
    print(f"\nbase-width ELECTRA, {args.num_hidden_layers} layers, sequence length {args.max_seq_length}, CPU")
    print(f"run_tf_squad.py training:  {ours['training_sequences_per_second']:.2f} sequences/s "
          f"(batch {args.train_batch_size}, {'amp' if args.amp else 'fp32'}{', XLA' if args.xla else ''})")
    for name, numbers in (("run_tf_squad.py inference", ours), ("transformers PyTorch inference", theirs)):
        print(f"{name}: {numbers['inference_sequences_per_second']:.2f} sequences/s, batch latency ms "
              + ", ".join(f"p{p} {numbers[f'inference_batch_latency_ms_p{p}']:.0f}" for p in (50, 90, 95, 99)))
    ratio = ours["inference_sequences_per_second"] / theirs["inference_sequences_per_second"]
    print(f"inference speed ratio (ours / transformers): {ratio:.2f}x (target >= 1.0x); "
          f"torch threads {theirs['torch_threads']}")


if __name__ == "__main__":
    main()
