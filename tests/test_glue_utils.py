"""GLUE data: every task's TSV layout (lines as GLUE ships them), custom tasks, one-line errors for
malformed files, features with BERT's pair truncation, the official metrics against scikit-learn
and SciPy, and the submission files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

import glue_utils
from glue_utils import GlueDataError, get_task, read_examples
from tokenization import WordPieceTokenizer

# One train/dev line and one test line per task, in GLUE's own columns (header lines included).
MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2")
GLUE_FILES = {
    "cola": ({"train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
                           "gj04\t0\t*\tThey drank the pub.\n"},
             {"test.tsv": "index\tsentence\n0\tBill whistled past the house.\n"},
             [("0", "Our friends won't buy this analysis.", None, "1"), ("1", "They drank the pub.", None, "0")],
             ("0", "Bill whistled past the house.", None)),
    "sst-2": ({"train.tsv": "sentence\tlabel\nhide new secretions \t0\n"},
              {"test.tsv": "index\tsentence\n7\tuneasy mishmash of styles\n"},
              [("0", "hide new secretions ", None, "0")], ("7", "uneasy mishmash of styles", None)),
    "mrpc": ({"train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused.\tHe said.\n"},
             {"test.tsv": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1089874\t1089925\tPCCW 's chief.\tCommon.\n"},
             [("0", "Amrozi accused.", "He said.", "1")], ("0", "PCCW 's chief.", "Common.")),
    "sts-b": ({"train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                            "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\tAn air plane "
                            "is taking off.\t5.000\n"},
              {"test.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n"
                           "3\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl.\tA boy.\n"},
              [("0", "A plane takes off.", "An air plane is taking off.", 5.0)], ("3", "A girl.", "A boy.")),
    "qqp": ({"train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow?\tWhy?\t0\n"},
            {"test.tsv": "id\tquestion1\tquestion2\n0\tWould the idea?\tHow is it?\n"},
            [("0", "How?", "Why?", "0")], ("0", "Would the idea?", "How is it?")),
    "mnli": ({"train.tsv": f"{MNLI_HEADER}\tlabel1\tgold_label\n0\t31193\t31193n\tgovernment\t(a)\t(b)\t(A)\t(B)\t"
                           "Conceptually cream skimming.\tProduct and geography.\tneutral\tneutral\n",
              "dev_matched.tsv": f"{MNLI_HEADER}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t63735\t63735n\t"
                                 "slate\t(a)\t(b)\t(A)\t(B)\tThe new rights.\tEveryone.\tneutral\tentailment\tneutral\t"
                                 "neutral\tneutral\tneutral\n"},
             {"test_matched.tsv": f"{MNLI_HEADER}\n0\t31493\t31493\ttravel\t(a)\t(b)\t(A)\t(B)\tHierbas.\tA name.\n"},
             [("0", "Conceptually cream skimming.", "Product and geography.", "neutral")],
             ("0", "Hierbas.", "A name.")),
    "qnli": ({"train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen?\tIn 1983.\tnot_entailment\n"},
             {"test.tsv": "index\tquestion\tsentence\n0\tWhat?\tThis.\n"},
             [("0", "When?", "In 1983.", "not_entailment")], ("0", "What?", "This.")),
    "rte": ({"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons.\tWeapons found.\tnot_entailment\n"},
            {"test.tsv": "index\tsentence1\tsentence2\n0\tMaude.\tShe died.\n"},
            [("0", "No weapons.", "Weapons found.", "not_entailment")], ("0", "Maude.", "She died.")),
    "wnli": ({"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tI stuck the pin.\t1\n"},
             {"test.tsv": "index\tsentence1\tsentence2\n0\tMaude.\tShe.\n"},
             [("0", "I stuck a pin.", "I stuck the pin.", "1")], ("0", "Maude.", "She.")),
}


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def as_tuples(examples) -> list[tuple]:
    return [(e.guid, e.text_a, e.text_b, e.label) for e in examples]


@pytest.mark.parametrize("name", sorted(GLUE_FILES))
def test_every_glue_task_reads_its_own_layout(name: str, tmp_path: Path) -> None:
    labelled, test, expected, expected_test = GLUE_FILES[name]
    folder = write_files(tmp_path, {**labelled, **test})
    task = get_task(name, str(folder))
    assert as_tuples(read_examples(task, str(folder), task.train)) == expected
    assert as_tuples(read_examples(task, str(folder), task.test_sets[0])) == [(*expected_test, None)]


def test_mnli_dev_files_have_more_annotator_columns_and_the_gold_label_last(tmp_path: Path) -> None:
    labelled, _, _, _ = GLUE_FILES["mnli"]
    folder = write_files(tmp_path, labelled)
    task = get_task("mnli", str(folder))
    assert [s.name for s in task.dev_sets] == ["mnli-m", "mnli-mm"]
    assert [s.name for s in task.test_sets] == ["MNLI-m", "MNLI-mm"]
    assert as_tuples(read_examples(task, str(folder), task.dev_sets[0])) == [
        ("0", "The new rights.", "Everyone.", "neutral")]


def test_diagnostic_set_is_found_where_the_glue_download_puts_it(tmp_path: Path) -> None:
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    assert glue_utils.diagnostic_set(str(mnli)) is None
    write_files(tmp_path / "diagnostic", {"diagnostic.tsv": "index\tsentence1\tsentence2\n0\tThe cat sat.\tThe cat did not sit.\n"})
    found = glue_utils.diagnostic_set(str(mnli))
    assert found.name == "AX"
    examples = read_examples(get_task("mnli", str(mnli)), str(mnli), found)
    assert as_tuples(examples) == [("0", "The cat sat.", "The cat did not sit.", None)]


def test_task_names_are_case_insensitive_with_the_usual_aliases(tmp_path: Path) -> None:
    assert get_task("SST2", str(tmp_path)).name == "sst-2"
    assert get_task("STS-B", str(tmp_path)).is_regression


# ----------------------------------------------------------------------------- malformed files

def error_of(task_name: str, files: dict[str, str], tmp_path: Path, which: str = "train") -> str:
    folder = write_files(tmp_path, files)
    with pytest.raises(GlueDataError) as error:
        task = get_task(task_name, str(folder))
        read_examples(task, str(folder), task.train if which == "train" else task.test_sets[0])
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_row_with_too_few_columns_names_the_file_and_line(tmp_path: Path) -> None:
    message = error_of("rte", {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly one\n"},
                       tmp_path)
    assert message.startswith(f"{tmp_path / 'train.tsv'}, line 3: 2 tab-separated columns, rte needs at least 4")


def test_mnli_row_missing_its_label_is_not_read_as_its_second_text(tmp_path: Path) -> None:
    row = "0\t1\t1n\tfiction\t(a)\t(b)\t(A)\t(B)\tPremise.\tHypothesis."
    message = error_of("mnli", {"train.tsv": f"{MNLI_HEADER}\tgold_label\n{row}\n"}, tmp_path)
    assert "line 2: 10 tab-separated columns, mnli needs at least 11" in message


def test_an_unknown_label_names_the_labels_the_task_has(tmp_path: Path) -> None:
    message = error_of("qnli", {"train.tsv": "index\tquestion\tsentence\tlabel\n0\tq\ts\tentails\n"}, tmp_path)
    assert message == (f"{tmp_path / 'train.tsv'}, line 2: label 'entails' is not one of entailment, not_entailment; "
                       "fix the line (or the task name)")


def test_a_score_that_is_not_a_number_is_reported(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    message = error_of("sts-b", {"train.tsv": header + "0\tg\tf\ty\to\ts\ts\tA.\tB.\tfive\n"}, tmp_path)
    assert "line 2: score 'five' is not a number" in message


def test_a_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    folder = write_files(tmp_path, {})
    (folder / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    task = get_task("sst-2", str(folder))
    with pytest.raises(GlueDataError, match="train.tsv: not UTF-8 text .*; save it as UTF-8"):
        read_examples(task, str(folder), task.train)


def test_a_missing_file_says_where_glue_comes_from(tmp_path: Path) -> None:
    task = get_task("cola", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dev.tsv not found .*dataPrep.py --action download --dataset glue"):
        read_examples(task, str(tmp_path), task.dev_sets[0])


# ----------------------------------------------------------------------------- custom tasks

def test_custom_task_reads_columns_by_header_name_in_any_order(tmp_path: Path) -> None:
    folder = write_files(tmp_path, {
        "train.tsv": "label\ttext_b\ttext_a\nyes\tB one\tA one\nno\tB two\tA two\nmaybe\tB3\tA3\n",
        "dev.tsv": "text_a\ttext_b\tlabel\nA\tB\tno\n",
        "test.tsv": "index\ttext_a\ttext_b\nq7\tA\tB\n"})
    task = get_task("my-task", str(folder))
    assert task.labels == ("maybe", "no", "yes") and task.is_pair and task.metrics == ("accuracy",)
    assert as_tuples(read_examples(task, str(folder), task.train))[0] == ("0", "A one", "B one", "yes")
    assert as_tuples(read_examples(task, str(folder), task.dev_sets[0])) == [("0", "A", "B", "no")]
    assert as_tuples(read_examples(task, str(folder), task.test_sets[0])) == [("q7", "A", "B", None)]


def test_custom_task_with_a_score_is_a_regression_and_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    regression = get_task("similar", str(write_files(tmp_path / "r", {"train.tsv": "text_a\tscore\nx\t0.5\n"})))
    assert regression.is_regression and regression.metrics == ("pearson", "spearman") and not regression.is_pair
    classes = get_task("numbers", str(write_files(tmp_path / "c", {"train.tsv": "text_a\tlabel\nx\t10\ny\t2\n"})))
    assert classes.labels == ("2", "10") and classes.metrics == ("accuracy", "f1")


def test_custom_task_header_problems_are_one_line_each(tmp_path: Path) -> None:
    no_text = error_of("mine", {"train.tsv": "sentence\tlabel\nx\t1\n"}, tmp_path / "a")
    assert "line 1: the header names no text_a column" in no_text and "cola, sst-2" in no_text
    both = error_of("mine", {"train.tsv": "text_a\tlabel\tscore\nx\t1\t2\n"}, tmp_path / "b")
    assert "must name exactly one of label (classes) and score (regression), not label and score" in both


def test_custom_task_without_train_file_takes_labels_from_the_model(tmp_path: Path) -> None:
    folder = write_files(tmp_path, {"test.tsv": "text_a\nsome text\n"})
    with pytest.raises(FileNotFoundError, match="a custom task needs its train.tsv"):
        get_task("mine", str(folder))
    task = get_task("mine", str(folder), labels=("neg", "pos"), regression=False)
    assert task.labels == ("neg", "pos")
    assert as_tuples(read_examples(task, str(folder), task.test_sets[0])) == [("0", "some text", None, None)]


# ----------------------------------------------------------------------------- features

def bert_truncate_pair(first: list, second: list, budget: int) -> tuple[list, list]:
    """BERT's _truncate_seq_pair: pop from the longer list (the second on ties) until it fits."""
    first, second = list(first), list(second)
    while len(first) + len(second) > budget:
        (first if len(first) > len(second) else second).pop()
    return first, second


def test_features_truncate_pairs_as_bert_and_pad_to_the_length(vocab_file: Path) -> None:
    tokenizer = WordPieceTokenizer(str(vocab_file))
    texts = [("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
              "must be in want of a wife.", "However little known the feelings or views of such a man may be."),
             ("Short one.", "A much longer second sentence that has to lose most of its word pieces here."),
             ("Equal length.", "Same length.")]
    examples = [glue_utils.Example(str(i), a, b, "1") for i, (a, b) in enumerate(texts)]
    task = glue_utils.GLUE_TASKS["mrpc"]
    for max_length in (12, 13, 64):
        features = glue_utils.featurize(examples, task, tokenizer, max_length)
        assert features.input_ids.shape == (3, max_length) and features.label_ids.tolist() == [1, 1, 1]
        for row, (a, b) in enumerate(texts):
            first, second = bert_truncate_pair(tokenizer.tokenize(a), tokenizer.tokenize(b), max_length - 3)
            tokens = ["[CLS]", *first, "[SEP]", *second, "[SEP]"]
            length = len(tokens)
            assert tokenizer.convert_ids_to_tokens(features.input_ids[row, :length]) == tokens
            assert features.input_ids[row, length:].tolist() == [tokenizer.pad_id] * (max_length - length)
            assert features.input_mask[row].tolist() == [1] * length + [0] * (max_length - length)
            assert features.segment_ids[row].tolist() == [0] * (len(first) + 2) + [1] * (len(second) + 1) + [0] * (
                max_length - length)


def test_features_of_single_sentences_and_scores(vocab_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = WordPieceTokenizer(str(vocab_file))
    monkeypatch.setattr(glue_utils, "FEATURIZE_CHUNK", 2)  # rows of several chunks land in their places
    sentences = ["one", "two words", "three more words", "four"]
    examples = [glue_utils.Example(str(i), s, None, float(i) / 2) for i, s in enumerate(sentences)]
    single_sentence_scores = dataclasses.replace(glue_utils.GLUE_TASKS["sts-b"], is_pair=False)
    features = glue_utils.featurize(examples, single_sentence_scores, tokenizer, 8)
    assert features.label_ids.dtype == np.float32 and features.label_ids.tolist() == [0.0, 0.5, 1.0, 1.5]
    for row, sentence in enumerate(sentences):
        tokens = ["[CLS]", *tokenizer.tokenize(sentence), "[SEP]"]
        assert tokenizer.convert_ids_to_tokens(features.input_ids[row, :len(tokens)]) == tokens
        assert features.segment_ids[row].sum() == 0


# ----------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("seed", range(8))
def test_classification_metrics_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size, classes = int(rng.integers(5, 400)), int(rng.integers(2, 5))
    labels = rng.integers(0, classes, size)
    predictions = np.where(rng.random(size) < 0.6, labels, rng.integers(0, classes, size))
    assert glue_utils.accuracy(predictions, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
    assert glue_utils.matthews_corrcoef(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12)
    binary_labels, binary_predictions = labels % 2, predictions % 2
    assert glue_utils.f1_score(binary_predictions, binary_labels) == pytest.approx(
        sklearn.metrics.f1_score(binary_labels, binary_predictions), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_correlations_equal_scipy_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(3, 500))
    gold = np.round(rng.uniform(0, 5, size), 1 if seed % 2 else 6)  # odd seeds: many tied scores
    predicted = gold + rng.normal(0, 1.5, size)
    assert glue_utils.pearson(predicted, gold) == pytest.approx(scipy.stats.pearsonr(predicted, gold)[0], abs=1e-12)
    assert glue_utils.spearman(predicted, gold) == pytest.approx(scipy.stats.spearmanr(predicted, gold)[0], abs=1e-12)


def test_degenerate_metric_cases_are_zero_as_documented() -> None:
    labels = np.array([0, 1, 1, 0])
    constant = np.zeros(4, int)
    assert glue_utils.matthews_corrcoef(constant, labels) == 0.0 == sklearn.metrics.matthews_corrcoef(labels, constant)
    assert glue_utils.f1_score(constant, constant) == 0.0
    assert glue_utils.pearson(np.ones(4), np.arange(4)) == 0.0
    assert glue_utils.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_task_metrics_and_score_by_hand() -> None:
    mrpc = glue_utils.GLUE_TASKS["mrpc"]
    # 3 of 4 right; positives: predicted {0, 1}, actual {0, 2}: precision 1/2, recall 1/2.
    results = glue_utils.compute_metrics(mrpc, np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert results == {"accuracy": 0.5, "f1": 0.5, "score": 0.5}
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert glue_utils.predictions_from_logits(glue_utils.GLUE_TASKS["mnli"], logits).tolist() == [1, 0]
    assert glue_utils.predictions_from_logits(glue_utils.GLUE_TASKS["sts-b"], np.array([[4.5], [1.0]])).tolist() == [4.5, 1.0]


# ----------------------------------------------------------------------------- submission

def test_submission_files_hold_index_and_label_as_the_glue_server_reads_them(tmp_path: Path) -> None:
    examples = [glue_utils.Example(i, "t", None, None) for i in ("0", "1", "2")]
    mnli, stsb = glue_utils.GLUE_TASKS["mnli"], glue_utils.GLUE_TASKS["sts-b"]
    path = tmp_path / "MNLI-m.tsv"
    glue_utils.write_submission(str(path), examples, glue_utils.prediction_strings(mnli, np.array([1, 2, 0])))
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tneutral\n2\tcontradiction\n"
    scores = glue_utils.prediction_strings(stsb, np.array([5.7, -0.2, 3.25]))
    assert scores == ["5", "0", "3.25"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNLI-m.tsv"]
