"""What the training programs (run_pretraining.py, run_tf_squad.py) share: their common flags and
checks, the compute dtype and loss scale, the training step built from them, the multi-process
engine they start, the metrics log, stopping on SIGTERM/SIGINT, and JSON files.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf

import distributed
import optimization
import training

logger = logging.getLogger(__name__)
RUN_CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.jsonl"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------------------- flags

def add_precision_flags(group: argparse._ArgumentGroup, xla_help: str) -> None:
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                       help="mixed precision (fp32 master weights, --amp_dtype compute)")
    group.add_argument("--amp_dtype", choices=("float16", "bfloat16"), default="float16",
                       help="compute dtype with --amp; float16 uses dynamic loss scaling")
    group.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False, help=xla_help)


def add_engine_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--fp16_compression", action=argparse.BooleanOptionalAction, default=False,
                       help="send gradients as float16 in the multi-process all-reduce (no effect on one process)")
    group.add_argument("--engine", choices=distributed.ENGINE_NAMES, default="auto",
                       help="multi-process engine; auto: horovod under horovodrun/mpirun, tf_distribute with "
                            "TF_CONFIG or a multi-task srun, else one process")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (argparse names the flag when it is not)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_divergence_flags(group: argparse._ArgumentGroup) -> None:
    """Every training program's: when a run counts as diverged (training.SkippedSteps)."""
    group.add_argument("--max_consecutive_skipped_steps", type=non_negative_int,
                       default=None,
                       help="stop with an error, saving no checkpoint, once more optimizer steps than this in a row "
                            "are skipped for non-finite gradients (the run has diverged; 0: at the first). Default: "
                            f"{training.MAX_CONSECUTIVE_SKIPPED_STEPS_LOSS_SCALED} with --amp float16, whose loss "
                            "scale skips up to 15 in a row at the start while it comes down from 2^15; "
                            f"{training.MAX_CONSECUTIVE_SKIPPED_STEPS_UNSCALED} otherwise, where no skipped step is "
                            "normal")


def parse_checked(parser: argparse.ArgumentParser,
                  check: Callable[[argparse.ArgumentParser, argparse.Namespace], None],
                  argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, then let `check` reject combinations argparse cannot see (it calls parser.error)."""
    args = parser.parse_args(argv)
    check(parser, args)
    return args


def require_at_least_one(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> None:
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")


def log_paths(run_dir: str, log_dir: str | None = None, json_summary: str | None = None) -> tuple[str, str]:
    """The log folder (default RUN_DIR/logs) and the JSON-lines metrics file (default in it)."""
    log_dir = log_dir or os.path.join(run_dir, "logs")
    return log_dir, json_summary or os.path.join(log_dir, METRICS_FILE)


# ----------------------------------------------------------------------------- precision and processes

def compute_policy(args: argparse.Namespace) -> str:
    return f"mixed_{args.amp_dtype}" if args.amp else "float32"


def make_loss_scale(args: argparse.Namespace) -> optimization.NoLossScale:
    """Dynamic loss scaling for float16, none otherwise."""
    return optimization.make_loss_scale(args.amp_dtype if args.amp else "float32")


def start_engine(name: str) -> distributed.SingleProcess:
    """The multi-process engine of this process (from the launcher's environment); ranks other
    than the chief then log only problems."""
    distributed.prepare_environment(os.environ)
    engine = distributed.create_engine(name, os.environ)
    if not engine.is_chief:
        logging.getLogger().setLevel(logging.WARNING)
    return engine


def run_on_engine(run: Callable[[argparse.Namespace, distributed.SingleProcess], dict | None],
                  args: argparse.Namespace, logger: logging.Logger) -> int:
    """A fine-tuning program's main: start the engine, run, and turn a user's error into one
    logged line and exit status 1; the chief logs the summary. Returns the exit status."""
    engine = start_engine(args.engine)
    try:
        summary = run(args, engine)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 1
    if summary is not None and engine.is_chief:
        logger.info("Done: %s", json.dumps(summary))
    return 0


def gradient_averaging(engine: distributed.SingleProcess,
                       fp16_compression: bool) -> Callable[[list[tf.Tensor]], list[tf.Tensor]] | None:
    """The Trainer's `reduce_gradients`: the mean over processes (None for one process)."""
    if engine.size == 1:
        return None
    return lambda gradients: engine.all_reduce_mean(gradients, fp16_compression)


def make_trainer(args: argparse.Namespace, loss_fn: Callable[..., dict[str, tf.Tensor]], variables: list,
                 optimizer: Any, engine: distributed.SingleProcess | None = None) -> optimization.Trainer:
    """The training step of `loss_fn(batch, seed, first_row)` over `variables`, as the precision,
    speed and engine flags ask (--gradient_accumulation_steps, --seed, --xla, --amp, --amp_dtype,
    --fp16_compression); `optimizer` must be built for `variables`."""
    engine = engine or distributed.SingleProcess()
    return optimization.Trainer(
        loss_fn, variables, optimizer, accumulation_steps=args.gradient_accumulation_steps, seed=args.seed,
        jit_compile=args.xla, loss_scale=make_loss_scale(args), rank=engine.rank, world_size=engine.size,
        reduce_gradients=gradient_averaging(engine, args.fp16_compression))


# ----------------------------------------------------------------------------- logs, signals, files

class MetricsLog(training.LoopHook):
    """Human-readable lines, a JSON-lines file and TensorBoard summaries, one entry per log step
    (given to the training loop, it writes each log line)."""

    def __init__(self, log_dir: str, json_summary: str):
        os.makedirs(log_dir, exist_ok=True)
        os.makedirs(os.path.dirname(os.path.abspath(json_summary)), exist_ok=True)
        self.json_file = open(json_summary, "a", encoding="utf-8")
        self.writer = tf.summary.create_file_writer(log_dir)

    def write(self, step: int, values: dict[str, float]) -> None:
        record = {"step": step, **values}
        self.json_file.write(json.dumps(record) + "\n")
        self.json_file.flush()
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        logger.info("step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self.write(step, values)

    def close(self) -> None:
        self.json_file.close()
        self.writer.close()


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps, so the run saves and exits."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGTERM/SIGINT become a stop request while training; the previous handlers come back after,
    so a caller in the same process (a test, a notebook) gets its own handling back."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield StopRequest()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def write_json(path: str, content: Any, sort_keys: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False, sort_keys=sort_keys)
        f.write("\n")
