"""Throughput and memory of build_pretraining_dataset.py on the shipped sample corpus.

Prints numbers and asserts nothing. The sample books are paragraphs wrapped at ~70 columns, so
they are first turned into one sentence per line: the wrapped lines of each paragraph are
joined and split naively after . ! or ? followed by white space; a blank line goes before
every "CHAPTER" heading, so documents are chapters. The 10x corpus is the same files copied
10 times under other names.

Every build runs as its own subprocess with RAYON_NUM_THREADS=1 (one tokenizer thread per
process), so a run with P processes uses at most P cores. CPU time (user + system of the whole
process tree, from wait4) gives tokens per CPU-second; a run on a 2-line corpus measures the
fixed start-up cost (interpreter, imports, vocabulary, creating the output files), which is
subtracted for the steady-state per-core figure. Memory: the peak of the summed RSS of the
process tree and the largest single process, both sampled from /proc every 100 ms (wait4's
maxrss would count the benchmark's own memory, copied by the fork that starts the build).

The builds run in --repeats rounds, each round running every build once, so a slow spell of
the machine (other jobs only ever add time, and this VM's speed drifts by a third from minute to
minute) touches all builds alike. The speed-up over the pure-Python path is computed per round
from two builds run back to back, and its median over the rounds is the headline; the ratios of
least and of median times are printed too. The throughput figures use each build's least wall
and CPU time (and its most memory).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = REPO / "data" / "sample_corpus" / "austen"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class RunResult:
    """What a build cost and produced: one run, or repeated runs combined (see combine)."""

    wall_seconds: float
    cpu_seconds: float
    peak_tree_rss_mb: float
    peak_process_rss_mb: float
    tokens: int
    sentences: int
    max_wall_seconds: float
    median_wall_seconds: float


def combine(runs: list[RunResult]) -> RunResult:
    """Repeated runs of one build as one result: least time, most memory, slowest and median
    wall."""
    walls = sorted(r.wall_seconds for r in runs)
    return RunResult(walls[0], min(r.cpu_seconds for r in runs),
                     max(r.peak_tree_rss_mb for r in runs),
                     max(r.peak_process_rss_mb for r in runs), runs[0].tokens, runs[0].sentences,
                     walls[-1], statistics.median(walls))


def split_book(text: str) -> list[str]:
    """One sentence per line, a blank line before each chapter (see the module docstring)."""
    lines: list[str] = []
    for wrapped in re.split(r"\n\s*\n", text):
        paragraph = " ".join(wrapped.split())
        if not paragraph:
            continue
        if paragraph.startswith("CHAPTER") and lines:
            lines.append("")
        lines += re.split(r"(?<=[.!?])\s+", paragraph)
    return lines


def typeset(text: str) -> str:
    """The text as typeset books and Wikipedia print it: curly quotes and apostrophes, em
    dashes (the sample has straight ones), so that most lines are no longer ASCII."""
    text = re.sub(r'(^|(?<=\s))"', "\u201c", text).replace('"', "\u201d")
    return re.sub(r"(^|(?<=\s))'", "\u2018", text).replace("'", "\u2019").replace("--", "\u2014")


def prepare_corpus(target_dir: Path, copies: int,
                   transform: Callable[[str], str] = lambda text: text) -> None:
    """Write the sample books, sentence-split and transformed, `copies` times into
    `target_dir`."""
    target_dir.mkdir(parents=True)
    for book in sorted(SAMPLE_CORPUS.glob("*.txt")):
        text = transform("\n".join(split_book(book.read_text(encoding="utf-8"))) + "\n")
        for copy in range(copies):
            (target_dir / f"{book.stem}-{copy}.txt").write_text(text, encoding="utf-8")


def prepare_tiny_corpus(target_dir: Path, num_files: int) -> None:
    """A corpus that costs nothing to process: what remains is the start-up cost."""
    target_dir.mkdir(parents=True)
    for index in range(num_files):
        (target_dir / f"tiny-{index}.txt").write_text("A short sentence.\nAnother one.\n")


def tree_rss_bytes(root_pid: int) -> tuple[int, int]:
    """Summed resident memory of `root_pid` and all its descendants, and the largest of them,
    from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    sizes = [0]
    for pid in tree:
        try:
            sizes.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE)
        except (OSError, ValueError, IndexError):
            continue
    return sum(sizes), max(sizes)


def run_build(corpus_dir: Path, output_dir: Path, processes: int, backend: str,
              num_out_files: int) -> RunResult:
    """Run the program once as a subprocess and measure it."""
    command = [sys.executable, str(REPO / "build_pretraining_dataset.py"),
               "--corpus-dir", str(corpus_dir), "--output-dir", str(output_dir),
               "--vocab-file", str(REPO / "vocab" / "vocab.txt"),
               "--num-processes", str(processes), "--num-out-files", str(num_out_files),
               "--tokenizer-backend", backend]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = [0, 0]
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.1):
            peak[:] = map(max, peak, tree_rss_bytes(process.pid))

    sampler = threading.Thread(target=sample_memory)
    sampler.start()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"build failed ({' '.join(command)}):\n{stderr.decode(errors='replace')}")
    summary = json.loads((output_dir / "build_summary.json").read_text())
    return RunResult(wall, usage.ru_utime + usage.ru_stime, peak[0] / 2**20, peak[1] / 2**20,
                     summary["tokens"], summary["sentences"], wall, wall)


def tokenizer_throughput(corpus_dir: Path, backend: str) -> float:
    """Tokens per CPU-second of the tokenizer alone (this process, one Rust thread), batches
    of 1024 sentences as in the build: the ceiling of the end-to-end figure. Backends: those
    of the build, and "rust-pipeline", the Rust pipeline without the fast path."""
    sys.path.insert(0, str(REPO))
    # Imported once RAYON_NUM_THREADS is set.
    import build_pretraining_dataset  # noqa: PLC0415
    import tokenization  # noqa: PLC0415

    vocab_file = str(REPO / "vocab" / "vocab.txt")
    if backend == "rust-pipeline":
        pipeline = tokenization.WordPieceTokenizer(vocab_file)._tokenizer

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in pipeline.encode_batch(texts, add_special_tokens=False)]
    else:
        encode = build_pretraining_dataset.load_encoder(vocab_file, True, backend).encode_batch
    sentences = [line for path in sorted(corpus_dir.glob("*.txt"))
                 for line in path.read_text(encoding="utf-8").splitlines() if line]
    start, tokens = time.process_time(), 0
    for begin in range(0, len(sentences), 1024):
        tokens += sum(map(len, encode(sentences[begin:begin + 1024])))
    return tokens / (time.process_time() - start)


def report_throughput(name: str, run: RunResult, startup: RunResult, processes: int) -> None:
    steady_cpu = max(run.cpu_seconds - startup.cpu_seconds, 1e-9)
    wall_range = f"{run.wall_seconds:.1f}-{run.max_wall_seconds:.1f}"
    print(f"{name:<22} {processes:>2}  {wall_range:>11} {run.median_wall_seconds:6.1f} "
          f"{run.cpu_seconds:7.1f} "
          f"{run.tokens / run.wall_seconds:>11,.0f} {run.sentences / run.wall_seconds:>10,.0f} "
          f"{run.tokens / run.cpu_seconds:>11,.0f} {run.tokens / steady_cpu:>11,.0f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where corpora and outputs go (default: a temporary directory, "
                             "removed at the end)")
    parser.add_argument("--num-out-files", type=int, default=1000,
                        help="output files per build (default: %(default)s, the recipe's)")
    parser.add_argument("--large-copies", type=int, default=10,
                        help="the large corpus is the sample this many times "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds, each running every build once; the least time counts, "
                             "the median is shown too (default: %(default)s)")
    parser.add_argument("--pure-python-large", action="store_true",
                        help="also build the large corpus with the pure-Python WordPiece, where "
                             "start-up weighs less (about 2 minutes per build here)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # One tokenizer thread per process, here and in every build subprocess (see above).
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="benchmark_data_"))
    try:
        run_benchmark(work_dir, args.num_out_files, args.large_copies, args.repeats,
                      args.pure_python_large)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def run_benchmark(work_dir: Path, num_out_files: int, large_copies: int, repeats: int,
                  pure_python_large: bool) -> None:
    small, large = work_dir / "corpus_1x", work_dir / f"corpus_{large_copies}x"
    prepare_corpus(small, 1)
    prepare_corpus(large, large_copies)
    for processes in (1, 2):
        prepare_tiny_corpus(work_dir / f"tiny_{processes}", processes)
    print(f"cores: {os.cpu_count()}, load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; RAYON_NUM_THREADS=1 per process; "
          f"{num_out_files} output files per build, {repeats} rounds of every build")

    typeset_corpus = work_dir / "corpus_typeset"
    prepare_corpus(typeset_corpus, 1, typeset)
    for corpus, backends in ((small, ("rust", "python")),
                             (typeset_corpus, ("rust", "rust-pipeline"))):
        for backend in backends:
            print(f"tokenizer alone, {corpus.name}, {backend}: "
                  f"{tokenizer_throughput(corpus, backend):,.0f} tokens per CPU-second")
    # Insertion order is run order: each rust build runs just before its pure-Python
    # counterpart, so the two see the machine in the same state.
    large_name = f"{large_copies}x"
    compared = [("1x", small)] + ([(large_name, large)] if pure_python_large else [])
    builds = {("start-up", "rust", p): work_dir / f"tiny_{p}" for p in (1, 2)}
    builds.update({(name, backend, p): corpus for name, corpus in compared for p in (1, 2)
                   for backend in ("rust", "python")})
    if not pure_python_large:
        builds.update({(large_name, "rust", p): large for p in (1, 2)})
    samples: dict[tuple[str, str, int], list[RunResult]] = {key: [] for key in builds}
    for _ in range(repeats):
        for (name, backend, p), corpus in builds.items():
            output = work_dir / f"out_{corpus.name}_{p}_{backend}"
            samples[(name, backend, p)].append(run_build(corpus, output, p, backend,
                                                         num_out_files))
            shutil.rmtree(output)
    runs = {key: combine(results) for key, results in samples.items()}
    round_speedups = {(name, p): sorted(
        python.wall_seconds / rust.wall_seconds
        for rust, python in zip(samples[(name, "rust", p)], samples[(name, "python", p)]))
        for name, _ in compared for p in (1, 2)}
    startup = {p: runs.pop(("start-up", "rust", p)) for p in (1, 2)}
    sample = runs[("1x", "rust", 1)]
    print(f"sample corpus, sentence-split: {sample.sentences:,} sentences, "
          f"{sample.tokens:,} WordPiece tokens")
    for p in (1, 2):
        print(f"start-up cost with {p} process(es) (2-line corpus): "
              f"{startup[p].wall_seconds:.1f} s wall, {startup[p].cpu_seconds:.1f} s CPU")
    print()
    print(f"{'build':<22} {'P':>2}  {'wall s':>11} {'median':>6} {'CPU s':>7} {'tokens/s':>11} "
          f"{'sent/s':>10} {'tok/CPU-s':>11} {'steady':>11}")
    for (name, backend, p), run in runs.items():
        report_throughput(f"{name} {backend}", run, startup[p], p)
    print("(wall s: least-most over the runs; median: median wall s; tokens/s and sent/s: end to end, least wall "
          "clock; tok/CPU-s: per core, least CPU time of the whole tree; steady: per core, "
          "start-up CPU subtracted)")
    print()
    for (name, p), speedups in round_speedups.items():
        rust, python = runs[(name, "rust", p)], runs[(name, "python", p)]
        print(f"{name} corpus, rust vs pure-Python WordPiece, {p} process(es), end to end: "
              f"{statistics.median(speedups):.1f}x (median of the rounds' speed-ups, each from "
              f"back-to-back builds; {speedups[0]:.1f}-{speedups[-1]:.1f}x), "
              f"{python.wall_seconds / rust.wall_seconds:.1f}x from least wall times, "
              f"{python.median_wall_seconds / rust.median_wall_seconds:.1f}x from medians; "
              f"{python.cpu_seconds / rust.cpu_seconds:.1f}x per CPU-second")
    print()
    for p in (1, 2):
        one, many = runs[("1x", "rust", p)], runs[(large_name, "rust", p)]
        print(f"peak memory, {p} process(es): 1x tree {one.peak_tree_rss_mb:.0f} MB "
              f"(largest process {one.peak_process_rss_mb:.0f} MB), {large_copies}x tree "
              f"{many.peak_tree_rss_mb:.0f} MB (largest process "
              f"{many.peak_process_rss_mb:.0f} MB): ratio "
              f"{many.peak_tree_rss_mb / one.peak_tree_rss_mb:.2f} (tree), "
              f"{many.peak_process_rss_mb / one.peak_process_rss_mb:.2f} (largest process)")


if __name__ == "__main__":
    main()
