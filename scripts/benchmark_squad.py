"""Throughput of SQuAD fine-tuning and inference with run_tf_squad.py, and the same fine-tuning
and inference in transformers' PyTorch ElectraForQuestionAnswering at the same precision, on this
machine. Prints numbers, asserts nothing.

The data is a synthetic SQuAD v1.1 file cut from the shipped Austen sample: one question on each
context of about 5 x max_seq_length characters (two windows). Every window costs the same: shapes
are fixed at max_seq_length, padding included. The model is a
base-width ELECTRA (hidden 768, 12 heads; --num_hidden_layers layers) with random weights and
the plain start/end head, so that transformers can run the very model run_tf_squad.py saved.
Both sides train on the same windows in the same batches (AdamW, the first step left out of the
timing: it traces the graph, or warms PyTorch up) and predict the same windows in batches of
--predict_batch_size; sequences per second and latency percentiles come from the same per-batch
timing (first batch, which traces or warms up, left out). With --amp, PyTorch runs under
torch.autocast with --amp_dtype, as run_tf_squad.py runs Keras' mixed policy of that dtype.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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
                        help="mixed precision on both sides: --amp to run_tf_squad.py, torch.autocast in PyTorch")
    parser.add_argument("--amp_dtype", choices=("float16", "bfloat16"), default="bfloat16",
                        help="compute dtype with --amp (bfloat16: the CPU's fast half precision)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="pass --xla to run_tf_squad.py")
    add_serving_flags(parser)
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
               "--log_freq", "1", "--amp" if args.amp else "--no-amp", "--amp_dtype", args.amp_dtype,
               "--xla" if args.xla else "--no-xla"]
    subprocess.run(command, check=True)
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def squad_features(args: argparse.Namespace, work: Path, fine_tuned: Path, name: str,
                   is_training: bool) -> squad_utils.SquadFeatures:
    """The windows run_tf_squad.py made of work/NAME.json with the vocabulary of its model
    folder (its feature cache is not shared)."""
    tokenizer = WordPieceTokenizer(str(fine_tuned / "vocab.txt"))
    config = squad_utils.FeatureConfig(max_seq_length=args.max_seq_length)
    _, features, _ = squad_utils.load_or_build_features(work / f"{name}.json", tokenizer, config, is_training,
                                                        work / f"cache_{name}")
    return features


def torch_precision(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """PyTorch's counterpart of run_tf_squad.py's --amp: autocast to the same compute dtype."""
    if not args.amp:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, args.amp_dtype))


def torch_model_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.from_numpy(batch["input_ids"]).long(),
            "attention_mask": torch.from_numpy(batch["input_mask"]).long(),
            "token_type_ids": torch.from_numpy(batch["segment_ids"]).long()}


def torch_training(args: argparse.Namespace, work: Path, model_folder: Path, fine_tuned: Path) -> dict:
    """transformers' ElectraForQuestionAnswering fine-tuned from the same random model on the
    same windows and batches with AdamW: training sequences per second, the first step left out."""
    features = squad_features(args, work, fine_tuned, "train", is_training=True)
    arrays = {name: getattr(features, name) for name in
              ("input_ids", "input_mask", "segment_ids", "start_position", "end_position")}
    model = transformers.ElectraForQuestionAnswering.from_pretrained(model_folder).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    seconds = []
    for step in range(args.train_steps):
        batch = padded_rows(arrays, (step * args.train_batch_size) % len(features), args.train_batch_size)
        began = time.perf_counter()
        with torch_precision(args):
            loss = model(**torch_model_inputs(batch), start_positions=torch.from_numpy(batch["start_position"]).long(),
                         end_positions=torch.from_numpy(batch["end_position"]).long()).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds.append(time.perf_counter() - began)
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return {"training_sequences_per_second": len(timed) * args.train_batch_size / sum(timed)}


def torch_inference(args: argparse.Namespace, work: Path, fine_tuned: Path) -> dict:
    """transformers' ElectraForQuestionAnswering on the same windows, batches and timing."""
    features = squad_features(args, work, fine_tuned, "dev", is_training=False)
    model = transformers.ElectraForQuestionAnswering.from_pretrained(fine_tuned).eval()
    seconds = []
    with torch.inference_mode(), torch_precision(args):
        inputs = {name: getattr(features, name) for name in PREDICT_FIELDS}
        for start in range(0, len(features), args.predict_batch_size):
            batch = padded_rows(inputs, start, args.predict_batch_size)
            began = time.perf_counter()
            model(**torch_model_inputs(batch))  # eager: done on return
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
        fine_tuned = work / "squad_output" / "model"
        theirs = {**torch_training(args, work, work / "base_width_discriminator", fine_tuned),
                  **torch_inference(args, work, fine_tuned)}
        serving = serving_benchmark(args, work, fine_tuned)
    precision = args.amp_dtype if args.amp else "fp32"
    print(f"\nbase-width ELECTRA, {args.num_hidden_layers} layers, sequence length {args.max_seq_length}, CPU, "
          f"{precision}")
    for name, numbers in (("run_tf_squad.py training", ours), ("transformers PyTorch training", theirs)):
        print(f"{name}: {numbers['training_sequences_per_second']:.2f} sequences/s (batch {args.train_batch_size}"
              f"{', XLA' if args.xla and numbers is ours else ''})")
    print(f"training speed ratio (ours / transformers): "
          f"{ours['training_sequences_per_second'] / theirs['training_sequences_per_second']:.2f}x")
    for name, numbers in (("run_tf_squad.py inference", ours), ("transformers PyTorch inference", theirs)):
        print(f"{name}: {numbers['inference_sequences_per_second']:.2f} sequences/s, batch latency ms "
              + ", ".join(f"p{p} {numbers[f'inference_batch_latency_ms_p{p}']:.0f}" for p in (50, 90, 95, 99)))
    ratio = ours["inference_sequences_per_second"] / theirs["inference_sequences_per_second"]
    print(f"inference speed ratio (ours / transformers): {ratio:.2f}x (target >= 1.0x); "
          f"torch threads {theirs['torch_threads']}")
    print_serving_benchmark(args, serving)


# ============================================================================= serving: SavedModel vs run_inference.py
# vs transformers (question answering from raw text, tokenization and decoding included)

def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving (export_saved_model.py's SavedModel)")
    group.add_argument("--serving_questions", type=int, default=16,
                       help="questions answered one at a time for the batch-1 latency (the first left out)")
    group.add_argument("--serving_batch_size", type=int, default=32,
                       help="questions per call for the throughput at a large batch")
    group.add_argument("--run_inference_questions", type=int, default=3,
                       help="questions answered by run_inference.py, one process each")


def questions_of(path: Path) -> list[tuple[str, str]]:
    return [(e.question, e.context) for e in squad_utils.read_squad_file(path).examples]


def timed_calls(answer, batches: list[list[tuple[str, str]]]) -> list[float]:
    """Seconds of each call of `answer` (questions -> answers), one call per batch."""
    seconds = []
    for batch in batches:
        began = time.perf_counter()
        answer(batch)
        seconds.append(time.perf_counter() - began)
    return seconds


def speed_summary(batches: list[list[tuple[str, str]]], seconds: list[float]) -> dict:
    """Median latency of the calls and questions per second, the first call (tracing,
    warm-up) left out."""
    timed = seconds[1:] if len(seconds) > 1 else seconds
    questions = sum(len(b) for b in batches[len(batches) - len(timed):])
    return {"latency_ms_p50": 1000.0 * float(np.median(timed)), "questions_per_second": questions / sum(timed)}


def saved_model_answerer(saved_model: Path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SavedModel's tokenizer ops)

    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return lambda batch: signature(question=tf.constant([q for q, _ in batch]),
                                   context=tf.constant([c for _, c in batch]))["answer"].numpy()


def transformers_answerer(args: argparse.Namespace, folder: Path):
    """What transformers' question-answering pipeline did (transformers 5 has none): the fast
    tokenizer's overflowing windows (overlapping by doc_stride tokens, as the pipeline's
    default), ElectraForQuestionAnswering, and the best start <= end pair of context tokens, at
    most max_answer_length apart, over all windows of a question; --amp as in `torch_precision`."""
    max_seq_length = args.max_seq_length
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    model = transformers.ElectraForQuestionAnswering.from_pretrained(folder).eval()
    defaults = squad_utils.FeatureConfig(max_seq_length=max_seq_length)

    def answer(batch: list[tuple[str, str]]) -> list[str]:
        encoded = tokenizer([q for q, _ in batch], [c for _, c in batch], truncation="only_second",
                            max_length=max_seq_length, stride=defaults.doc_stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                            return_tensors="pt")
        with torch.inference_mode(), torch_precision(args):
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                           token_type_ids=encoded["token_type_ids"])
        best: dict[int, tuple[float, str]] = {}
        for window, question in enumerate(encoded["overflow_to_sample_mapping"].tolist()):
            context = batch[question][1]
            is_context = torch.tensor([s == 1 for s in encoded.sequence_ids(window)])
            start = logits.start_logits[window].float().masked_fill(~is_context, -1e4).log_softmax(-1)
            end = logits.end_logits[window].float().masked_fill(~is_context, -1e4).log_softmax(-1)
            scores = (start[:, None] + end[None, :]).triu().tril(squad_utils.DecodeConfig().max_answer_length - 1)
            first, last = divmod(int(scores.argmax()), scores.shape[1])
            offsets = encoded["offset_mapping"][window]
            candidate = (float(scores[first, last]), context[int(offsets[first][0]):int(offsets[last][1])])
            if question not in best or candidate[0] > best[question][0]:
                best[question] = candidate
        return [best[q][1] for q in range(len(batch))]

    return answer


def run_inference_latency(args: argparse.Namespace, fine_tuned: Path, questions: list[tuple[str, str]]) -> dict:
    """run_inference.py answers one question per process: its latency is a whole run."""
    seconds = []
    for question, context in questions[:args.run_inference_questions]:
        began = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "run_inference.py"), "--init_checkpoint", str(fine_tuned),
                        "--question", question, "--context", context, "--max_seq_length", str(args.max_seq_length)],
                       check=True, capture_output=True)
        seconds.append(time.perf_counter() - began)
    return {"latency_ms_p50": 1000.0 * float(np.median(seconds)), "questions_per_second": len(seconds) / sum(seconds)}


def serving_benchmark(args: argparse.Namespace, work: Path, fine_tuned: Path) -> dict[str, dict]:
    """Batch-1 latency and large-batch throughput of the SavedModel and transformers on the
    same dev questions; run_inference.py's latency per run."""
    saved_model = work / "saved_model" / "1"
    subprocess.run([sys.executable, str(REPO / "export_saved_model.py"), "--init_checkpoint", str(fine_tuned),
                    "--output_dir", str(saved_model), "--overwrite", "--max_seq_length", str(args.max_seq_length),
                    "--amp" if args.amp else "--no-amp", "--amp_dtype", args.amp_dtype,
                    "--xla" if args.xla else "--no-xla"],
                   check=True, capture_output=True)
    questions = questions_of(work / "dev.json")
    singles = [[q] for q in questions[:args.serving_questions]]
    large = [questions[i:i + args.serving_batch_size] for i in range(0, len(questions), args.serving_batch_size)]
    large = large[:1] + large  # the first call (tracing) is left out of the timing
    results = {}
    for name, answerer in (("SavedModel", saved_model_answerer(saved_model)),
                           ("transformers", transformers_answerer(args, fine_tuned))):
        results[name] = {"batch 1": speed_summary(singles, timed_calls(answerer, singles)),
                         f"batch {args.serving_batch_size}": speed_summary(large, timed_calls(answerer, large))}
    results["run_inference.py"] = {"batch 1": run_inference_latency(args, fine_tuned, questions)}
    return results


def print_serving_benchmark(args: argparse.Namespace, results: dict[str, dict]) -> None:
    print(f"\nquestion answering from raw text (about two windows per question), CPU, "
          f"{'amp' if args.amp else 'fp32'}{', XLA' if args.xla else ''}:")
    for name, rows in results.items():
        for batch, numbers in rows.items():
            print(f"{name:>18} {batch:>9}: latency p50 {numbers['latency_ms_p50']:8.1f} ms, "
                  f"{numbers['questions_per_second']:7.2f} questions/s")


if __name__ == "__main__":
    main()
