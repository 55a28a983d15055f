"""GLUE tasks: reading GLUE's TSV files (and a user's own task), features, official metrics and
the files the GLUE server takes as a submission.

Every GLUE task ships as a folder of tab-separated files, `train.tsv`, `dev.tsv` and `test.tsv`
(MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`, `test_matched.tsv`, `test_mismatched.tsv`), each
with its own columns: CoLA's train and dev files have no header line, the others have one. The
columns read here are those BERT and ELECTRA read. A custom task is a folder with the same file
names whose first line names the columns: `text_a`, optionally `text_b`, and `label` (classes) or
`score` (regression); a test file may leave the label out and may give an `index` column.

Metrics are GLUE's: Matthews correlation (CoLA), accuracy, F1 of the positive class (MRPC, QQP),
Pearson and Spearman correlation (STS-B); a task's score is the mean of its metrics.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from safe_io import UserError
from tokenization import WordPieceTokenizer

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.tsv"
SUBMISSION_HEADER = "index\tprediction"
STSB_SCORE_RANGE = (0.0, 5.0)
# Rows tokenized at once: bounds the memory of the tokenizer's encodings on MNLI and QQP.
FEATURIZE_CHUNK = 4096
CUSTOM_COLUMNS = ("text_a", "text_b", "label", "score", "index")


class GlueDataError(UserError):
    """A task file that cannot be read as the task's TSV layout; the message names the file,
    the line and the fix."""


@dataclass(frozen=True)
class TsvLayout:
    """Where a file's fields are: column numbers (negative ones count from the end of a row, as
    MNLI's label, after a varying number of annotator labels), and whether line 1 is a header."""

    has_header: bool
    text_a: int
    text_b: int | None = None
    label: int | None = None  # None: an unlabelled (test) file
    index: int | None = None  # the example id of a test file (None: the row number)

    @property
    def min_columns(self) -> int:
        """Columns a row needs: past the last column counted from the start, one more for each
        counted from the end (MNLI's label must not be its second text)."""
        used = [c for c in (self.text_a, self.text_b, self.label, self.index) if c is not None]
        from_start = max((c + 1 for c in used if c >= 0), default=0)
        from_end = [c for c in used if c < 0]
        return max(from_start + len(from_end), max((-c for c in from_end), default=0))


@dataclass(frozen=True)
class EvalSet:
    """One file to score or predict: its name in results (`mnli-mm`) or the submission (`MNLI-mm`)."""

    name: str
    file: str
    layout: TsvLayout


@dataclass(frozen=True)
class GlueTask:
    """A sentence or sentence-pair task: its classes (None: a regression score), metrics, files."""

    name: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    train: EvalSet
    dev_sets: tuple[EvalSet, ...]
    test_sets: tuple[EvalSet, ...]
    is_pair: bool

    @property
    def is_regression(self) -> bool:
        return self.labels is None


BINARY = ("0", "1")
NLI_LABELS = ("contradiction", "entailment", "neutral")  # BERT's and ELECTRA's order
ENTAILMENT_LABELS = ("entailment", "not_entailment")
# GLUE's diagnostic set: MNLI's layout, predicted by the MNLI model. The GLUE download puts it in
# its own folder beside the tasks' (`diagnostic/diagnostic.tsv`); ELECTRA looks for it in MNLI's.
DIAGNOSTIC = EvalSet("AX", "diagnostic.tsv", TsvLayout(True, 1, 2, None, 0))
DIAGNOSTIC_LOCATIONS = ("diagnostic.tsv", os.path.join("..", "diagnostic", "diagnostic.tsv"), "AX.tsv")


def _glue_task(name: str, submission: str, labels: tuple[str, ...] | None, metrics: tuple[str, ...],
               labelled: TsvLayout, test: TsvLayout) -> GlueTask:
    return GlueTask(name, labels, metrics, EvalSet(name, TRAIN_FILE, labelled),
                    (EvalSet(name, "dev.tsv", labelled),), (EvalSet(submission, "test.tsv", test),),
                    is_pair=labelled.text_b is not None)


def _pair_task(name: str, submission: str, labels: tuple[str, ...]) -> GlueTask:
    """QNLI, RTE, WNLI: index, first text, second text, label."""
    return _glue_task(name, submission, labels, ("accuracy",), TsvLayout(True, 1, 2, -1), TsvLayout(True, 1, 2, None, 0))


def _mnli() -> GlueTask:
    labelled, test = TsvLayout(True, 8, 9, -1), TsvLayout(True, 8, 9, None, 0)
    return GlueTask("mnli", NLI_LABELS, ("accuracy",), EvalSet("mnli", TRAIN_FILE, labelled),
                    (EvalSet("mnli-m", "dev_matched.tsv", labelled), EvalSet("mnli-mm", "dev_mismatched.tsv", labelled)),
                    (EvalSet("MNLI-m", "test_matched.tsv", test), EvalSet("MNLI-mm", "test_mismatched.tsv", test)),
                    is_pair=True)


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": _glue_task("cola", "CoLA", BINARY, ("mcc",), TsvLayout(False, 3, None, 1), TsvLayout(True, 1, None, None, 0)),
    "sst-2": _glue_task("sst-2", "SST-2", BINARY, ("accuracy",), TsvLayout(True, 0, None, 1),
                        TsvLayout(True, 1, None, None, 0)),
    "mrpc": _glue_task("mrpc", "MRPC", BINARY, ("accuracy", "f1"), TsvLayout(True, 3, 4, 0), TsvLayout(True, 3, 4, None, 0)),
    "sts-b": _glue_task("sts-b", "STS-B", None, ("pearson", "spearman"), TsvLayout(True, 7, 8, -1),
                        TsvLayout(True, 7, 8, None, 0)),
    "qqp": _glue_task("qqp", "QQP", BINARY, ("accuracy", "f1"), TsvLayout(True, 3, 4, 5), TsvLayout(True, 1, 2, None, 0)),
    "mnli": _mnli(),
    "qnli": _pair_task("qnli", "QNLI", ENTAILMENT_LABELS),
    "rte": _pair_task("rte", "RTE", ENTAILMENT_LABELS),
    "wnli": _pair_task("wnli", "WNLI", BINARY),
}
TASK_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "sts": "sts-b", "sst": "sst-2"}


@dataclass(frozen=True)
class Example:
    """One row: its id (the test file's index, else the row number), text(s), label or score."""

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


# ----------------------------------------------------------------------------- reading TSV files

def canonical_task_name(name: str) -> str:
    name = name.lower()
    return TASK_ALIASES.get(name, name)


def get_task(name: str, data_dir: str, labels: Sequence[str] | None = None, regression: bool | None = None) -> GlueTask:
    """A GLUE task by name, or else the custom task of DATA_DIR (its train.tsv's header decides
    pair or single and classes or score; `labels`/`regression` fix them when there is no train.tsv,
    e.g. from a fine-tuned model folder)."""
    name = canonical_task_name(name)
    if name in GLUE_TASKS:
        return GLUE_TASKS[name]
    return custom_task(name, data_dir, labels, regression)


def _read_lines(path: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of each non-empty line; GLUE's files use no quoting."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (expected the task's TSV file there; GLUE tasks come from "
                                "data/dataPrep.py --action download --dataset glue)")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line:
                    yield number, line.split("\t")
    except UnicodeDecodeError as error:
        raise GlueDataError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from None


def _parse_label(task: GlueTask, value: str, where: str) -> str | float:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise GlueDataError(f"{where}: score {value!r} is not a number; fix or remove the line") from None
        if not math.isfinite(score):
            raise GlueDataError(f"{where}: score {value!r} is not finite; fix or remove the line")
        return score
    if value not in task.labels:
        raise GlueDataError(f"{where}: label {value!r} is not one of {', '.join(task.labels)}; fix the line "
                            "(or the task name)")
    return value


def read_examples(task: GlueTask, data_dir: str, eval_set: EvalSet) -> list[Example]:
    """The examples of one file of `task` in `data_dir`."""
    path = os.path.join(data_dir, eval_set.file)
    layout = eval_set.layout
    examples = []
    lines = _read_lines(path)
    if layout.has_header:
        next(lines, None)
    for number, fields in lines:
        where = f"{path}, line {number}"
        if len(fields) < layout.min_columns:
            raise GlueDataError(f"{where}: {len(fields)} tab-separated columns, {task.name} needs at least "
                                f"{layout.min_columns}; fix the line (a tab inside a text splits it)")
        guid = fields[layout.index] if layout.index is not None else str(len(examples))
        label = None if layout.label is None else _parse_label(task, fields[layout.label], where)
        text_b = fields[layout.text_b] if layout.text_b is not None else None
        examples.append(Example(guid, fields[layout.text_a], text_b, label))
    if not examples:
        raise GlueDataError(f"{path}: no examples; expected one per line in the {task.name} layout")
    return examples


# ----------------------------------------------------------------------------- custom tasks

def _custom_header(path: str) -> dict[str, int]:
    """Column numbers of a custom task file's header, checked."""
    number, header = next(_read_lines(path), (1, []))
    columns = {name.strip(): i for i, name in enumerate(header)}
    if "text_a" not in columns:
        raise GlueDataError(f"{path}, line {number}: the header names no text_a column; a custom task's first line "
                            f"names its columns ({', '.join(CUSTOM_COLUMNS)}), GLUE tasks are "
                            f"{', '.join(GLUE_TASKS)}")
    return columns


def _target_column(columns: dict[str, int], path: str) -> str:
    """"label" (classes) or "score" (regression): the one column a labelled file must name."""
    targets = [name for name in ("label", "score") if name in columns]
    if len(targets) != 1:
        raise GlueDataError(f"{path}, line 1: the header must name exactly one of label (classes) and score "
                            f"(regression), not {' and '.join(targets) or 'neither'}; fix the header")
    return targets[0]


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _column_values(path: str, column: int) -> set[str]:
    lines = _read_lines(path)
    _, header = next(lines, (1, []))
    values = set()
    for number, fields in lines:
        if len(fields) <= column:
            raise GlueDataError(f"{path}, line {number}: {len(fields)} tab-separated columns, the header names "
                                f"{len(header)}; fix the line")
        values.add(fields[column])
    if not values:
        raise GlueDataError(f"{path}: no examples below the header")
    return values


def custom_task(name: str, data_dir: str, labels: Sequence[str] | None = None,
                regression: bool | None = None) -> GlueTask:
    """A user's task: DATA_DIR/train.tsv, dev.tsv, test.tsv, each with a header line naming its
    columns. train.tsv gives the classes (sorted) or says regression; without it they come from
    `labels`/`regression` (a fine-tuned model folder's)."""
    files = (TRAIN_FILE, "dev.tsv", "test.tsv")
    headers = {file: _custom_header(os.path.join(data_dir, file)) for file in files
               if os.path.isfile(os.path.join(data_dir, file))}
    if TRAIN_FILE in headers:
        train_path = os.path.join(data_dir, TRAIN_FILE)
        target = _target_column(headers[TRAIN_FILE], train_path)
        regression = target == "score"
        labels = None if regression else _sorted_labels(_column_values(train_path, headers[TRAIN_FILE][target]))
    elif regression is None or not headers:
        raise FileNotFoundError(f"{os.path.join(data_dir, TRAIN_FILE)} not found: {name!r} is not a GLUE task "
                                f"({', '.join(GLUE_TASKS)}), and a custom task needs its train.tsv (or, to predict, "
                                "a fine-tuned model folder and a test.tsv)")
    pair = "text_b" in next(iter(headers.values()))

    def file_set(file: str, labelled: bool) -> EvalSet:
        columns = headers.get(file)
        if columns is None:  # a missing file: reading it reports that
            return EvalSet(name, file, TsvLayout(True, 0))
        target = columns[_target_column(columns, os.path.join(data_dir, file))] if labelled else None
        return EvalSet(name, file, TsvLayout(True, columns["text_a"], columns.get("text_b"), target,
                                             columns.get("index")))

    if regression:
        metrics, labels = ("pearson", "spearman"), None
    else:
        labels = tuple(labels)
        metrics = ("accuracy", "f1") if len(labels) == 2 else ("accuracy",)
    return GlueTask(name, labels, metrics, file_set(TRAIN_FILE, True), (file_set("dev.tsv", True),),
                    (file_set("test.tsv", False),), is_pair=pair)


def diagnostic_set(data_dir: str) -> EvalSet | None:
    """GLUE's diagnostic set (AX) if it is beside MNLI's files, else None."""
    for location in DIAGNOSTIC_LOCATIONS:
        if os.path.isfile(os.path.join(data_dir, location)):
            return EvalSet(DIAGNOSTIC.name, location, DIAGNOSTIC.layout)
    return None


# ----------------------------------------------------------------------------- features

@dataclass
class GlueFeatures:
    """Model inputs [N, max_seq_length] (int32) and targets [N]: class ids (int32) or scores
    (float32); unlabelled rows have target 0."""

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    label_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def featurize(examples: Sequence[Example], task: GlueTask, tokenizer: WordPieceTokenizer,
              max_seq_length: int) -> GlueFeatures:
    """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, a pair cut one word piece at a time from its
    longer text as BERT does, padded to max_seq_length."""
    count = len(examples)
    arrays = {name: np.zeros((count, max_seq_length), np.int32) for name in ("input_ids", "input_mask", "segment_ids")}
    arrays["input_ids"][:] = tokenizer.pad_id
    for start in range(0, count, FEATURIZE_CHUNK):
        chunk = examples[start:start + FEATURIZE_CHUNK]
        pairs = [e.text_b or "" for e in chunk] if task.is_pair else None
        batch = tokenizer.encode_batch([e.text_a for e in chunk], pairs, max_length=max_seq_length)
        width = batch["input_ids"].shape[1]
        for name, source in (("input_ids", "input_ids"), ("input_mask", "attention_mask"),
                             ("segment_ids", "token_type_ids")):
            arrays[name][start:start + len(chunk), :width] = batch[source]
    return GlueFeatures(label_ids=label_ids(examples, task), **arrays)


def label_ids(examples: Sequence[Example], task: GlueTask) -> np.ndarray:
    if task.is_regression:
        return np.asarray([e.label if e.label is not None else 0.0 for e in examples], np.float32)
    index = {label: i for i, label in enumerate(task.labels)}
    return np.asarray([index[e.label] if e.label is not None else 0 for e in examples], np.int32)


# ----------------------------------------------------------------------------- metrics

def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_score(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's for MRPC and QQP); 0 when nothing is or is predicted positive."""
    predicted, actual = np.asarray(predictions) == positive, np.asarray(labels) == positive
    true_positives = float(np.sum(predicted & actual))
    denominator = float(np.sum(predicted) + np.sum(actual))
    return 2.0 * true_positives / denominator if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form, from the confusion matrix); 0 when undefined, as
    when every prediction is the same class."""
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    actual, predicted = encoded[:len(labels)], encoded[len(labels):]
    confusion = np.zeros((len(classes), len(classes)), np.float64)
    np.add.at(confusion, (actual, predicted), 1.0)
    true_per_class, predicted_per_class = confusion.sum(axis=1), confusion.sum(axis=0)
    samples, correct = confusion.sum(), np.trace(confusion)
    numerator = correct * samples - np.dot(true_per_class, predicted_per_class)
    denominator = math.sqrt((samples ** 2 - np.dot(predicted_per_class, predicted_per_class))
                            * (samples ** 2 - np.dot(true_per_class, true_per_class)))
    return float(numerator / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either series is constant (no linear relation to measure)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return float(np.dot(dx, dy) / denominator) if denominator else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (Spearman's convention)."""
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(average_ranks(x), average_ranks(y))


METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": f1_score, "mcc": matthews_corrcoef,
                    "pearson": pearson, "spearman": spearman}


def compute_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics and `score`, their mean (a task's GLUE score): class ids or scores."""
    results = {name: METRIC_FUNCTIONS[name](predictions, labels) for name in task.metrics}
    results["score"] = float(np.mean(list(results.values())))
    return results


def predictions_from_logits(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) or, for regression, the scores themselves."""
    logits = np.asarray(logits)
    return logits[:, 0] if task.is_regression else np.argmax(logits, axis=-1)


# ----------------------------------------------------------------------------- submission files

def prediction_strings(task: GlueTask, predictions: np.ndarray) -> list[str]:
    """What the GLUE server reads: the label as the data writes it, or a score clipped to STS-B's
    0-5 range (a custom regression task's score is written as predicted)."""
    if task.is_regression:
        low, high = STSB_SCORE_RANGE if task.name == "sts-b" else (-np.inf, np.inf)
        return [f"{float(np.clip(p, low, high)):.6g}" for p in predictions]
    return [task.labels[int(p)] for p in predictions]


def write_submission(path: str, examples: Sequence[Example], predictions: Sequence[str]) -> None:
    """A GLUE submission file: `index<TAB>prediction` under a header, one line per test example,
    written whole or not at all."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(SUBMISSION_HEADER + "\n")
        for example, prediction in zip(examples, predictions, strict=True):
            f.write(f"{example.guid}\t{prediction}\n")
    os.replace(temporary, path)
