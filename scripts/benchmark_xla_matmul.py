"""Matrix products alone, graph mode against XLA, per precision: the shapes of ELECTRA's dense
layers (tokens x hidden times hidden x intermediate, and back).

The pretraining step spends most of its time in these products, so whatever XLA's CPU backend
does with them bounds how close the compiled step can come to the graph-mode step. In graph
mode TensorFlow runs them through oneDNN, which has bfloat16 kernels for CPUs with AVX512-BF16;
this benchmark shows what XLA's own kernels do with the same products. Both run in the same
process, in interleaved rounds, on the same operands.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = logging.getLogger("benchmark_xla_matmul")
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096, help="rows: batch x sequence length (32 x 128)")
    parser.add_argument("--hidden_size", type=int, default=256, help="ELECTRA-small's hidden size")
    parser.add_argument("--intermediate_size", type=int, default=1024, help="ELECTRA-small's feed-forward size")
    parser.add_argument("--precisions", default="fp32,bf16,fp16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every precision and mode")
    args = parser.parse_args(argv)
    args.precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: unknown {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    if min(args.tokens, args.hidden_size, args.intermediate_size, args.repeats, args.rounds) < 1:
        parser.error("--tokens, --hidden_size, --intermediate_size, --repeats and --rounds must be positive")
    return args


def feed_forward_products(args: argparse.Namespace, precision: str, xla: bool) -> Callable[[], None]:
    """Up-projection then down-projection, as in one feed-forward block; returns a timed call."""
    import tensorflow as tf

    dtype = PRECISIONS[precision]
    tokens = tf.cast(tf.random.stateless_normal([args.tokens, args.hidden_size], [1, 2]), dtype)
    up = tf.cast(tf.random.stateless_normal([args.hidden_size, args.intermediate_size], [3, 4]) * 0.05, dtype)
    down = tf.cast(tf.random.stateless_normal([args.intermediate_size, args.hidden_size], [5, 6]) * 0.05, dtype)

    @tf.function(jit_compile=xla)
    def products() -> tf.Tensor:
        return tf.matmul(tf.matmul(tokens, up), down)

    def call() -> None:
        products().numpy()

    call()  # trace and compile
    return call


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)  # one tf.function per mode and precision is intended, not retracing
    flops = 2 * 2 * args.tokens * args.hidden_size * args.intermediate_size
    calls = {(p, xla): feed_forward_products(args, p, xla) for p in args.precisions for xla in (False, True)}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in calls}
    for _ in range(args.rounds):
        for key, call in calls.items():
            for _ in range(args.repeats):
                started = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - started)
    results = []
    for precision in args.precisions:
        graph, xla = (statistics.median(times[(precision, mode)]) for mode in (False, True))
        results.append({"precision": precision, "graph_ms": 1e3 * graph, "xla_ms": 1e3 * xla,
                        "graph_gflops": flops / graph / 1e9, "xla_gflops": flops / xla / 1e9, "xla_over_graph": xla / graph})
        logger.info("%s  graph %6.1f ms (%5.1f GFLOP/s)  XLA %6.1f ms (%5.1f GFLOP/s)  XLA/graph %.2fx", precision,
                    1e3 * graph, flops / graph / 1e9, 1e3 * xla, flops / xla / 1e9, xla / graph)
    print(json.dumps({"tokens": args.tokens, "hidden_size": args.hidden_size,
                      "intermediate_size": args.intermediate_size, "cpu_count": os.cpu_count(), "results": results},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
