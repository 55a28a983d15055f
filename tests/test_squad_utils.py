"""Tests of SQuAD reading, featurization, the feature cache, answer decoding and EM/F1.

Expected metric values are worked out by hand in the comments, following the official SQuAD
v1.1 and v2.0 evaluation scripts.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import squad_utils as su
from tokenization import WordPieceTokenizer

SMALL = su.FeatureConfig(max_seq_length=64, doc_stride=16, max_query_length=16)


@pytest.fixture(scope="module")
def tokenizer(vocab_file: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer(str(vocab_file))


def squad_json(paragraphs: list[dict], version: str = "1.1") -> dict:
    return {"version": version, "data": [{"title": "test", "paragraphs": paragraphs}]}


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def question(qas_id: str, text: str, answers: list[tuple[str, int]], **extra: object) -> dict:
    return {"id": qas_id, "question": text,
            "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


def answer_at(context: str, text: str, occurrence: int = 0) -> tuple[str, int]:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(text, start + 1)
    return text, start


# ============================================================================= evaluation

@pytest.mark.parametrize("text, expected", [
    ("The  Cat's, hat!", "cats hat"),      # lower, punctuation out, article out, spaces collapsed
    ("an apple a day", "apple day"),
    ("Theater anthem", "theater anthem"),  # articles only as whole words
    ("A.", ""),
    ("« naïve — café »", "« naïve — café »"),  # non-ASCII punctuation: not in string.punctuation
])
def test_normalize_answer_is_the_official_one(text: str, expected: str) -> None:
    assert su.normalize_answer(text) == expected


def test_f1_of_empty_answers_differs_between_v1_and_v2() -> None:
    # "the" and "a" both normalize to "": v1.1 finds no common token (0), v2.0 calls it agreement.
    assert su.f1_v1("the", "a") == 0.0
    assert su.f1_v2("the", "a") == 1.0
    assert su.f1_v2("", "Paris") == 0.0 and su.f1_v2("Paris", "") == 0.0


def test_evaluate_v1_on_a_hand_worked_case() -> None:
    gold = {
        "q1": ["Denver Broncos", "The Denver Broncos"],
        "q2": ["Carolina Panthers"],
        "q3": ["Santa Clara, California", "Levi's Stadium"],
        "q4": ["an apple"],
        "q5": ["February 7"],
    }
    predictions = {
        # "denver broncos" = gold 1 after normalization: EM 1, F1 1.
        "q1": "the Denver Broncos!",
        # [panthers] vs [carolina, panthers]: P 1, R 1/2 -> F1 2/3, EM 0.
        "q2": "Panthers",
        # [levis stadium in santa clara] (5 tokens):
        #   vs [santa clara california]: 2 shared, P 2/5, R 2/3 -> F1 1/2;
        #   vs [levis stadium]:          2 shared, P 2/5, R 1   -> F1 4/7; max 4/7, EM 0.
        "q3": "Levi's Stadium in Santa Clara",
        # an empty prediction: EM 0, F1 0.
        "q4": "",
        # q5 has no prediction: scores 0 but counts in the total.
        "extra": "not a gold question",
    }
    result = su.evaluate_v1(gold, predictions)
    assert set(result) == {"exact_match", "f1"}
    assert result["exact_match"] == pytest.approx(100 * 1 / 5)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 4 / 7) / 5)


V2_GOLD = {
    "a": ["Paris", "the city of Paris"],  # answerable
    "b": ["1990s"],                       # answerable
    "c": [],                              # unanswerable
    "d": [],                              # unanswerable
    "e": ["blue whale"],                  # answerable
}
V2_PREDICTIONS = {"a": "Paris", "b": "the 1990s decade", "c": "", "d": "London", "e": ""}
# raw EM: a 1, b 0 ([1990s decade] != [1990s]), c 1 ("" = ""), d 0, e 0.
# raw F1: a 1, b 2/3 (P 1/2, R 1), c 1 (empty vs empty), d 0 (non-empty vs empty), e 0.
V2_NULL_ODDS = {"a": -3.0, "b": 0.5, "c": 2.0, "d": 1.5, "e": 4.0}


def test_evaluate_v2_without_null_odds_on_a_hand_worked_case() -> None:
    result = su.evaluate_v2(V2_GOLD, V2_PREDICTIONS)
    assert result == pytest.approx({
        "exact": 100 * 2 / 5, "f1": 100 * (1 + 2 / 3 + 1) / 5, "total": 5,
        "HasAns_exact": 100 * 1 / 3, "HasAns_f1": 100 * (1 + 2 / 3) / 3, "HasAns_total": 3,
        "NoAns_exact": 100 * 1 / 2, "NoAns_f1": 100 * 1 / 2, "NoAns_total": 2})


def test_evaluate_v2_with_null_odds_applies_the_threshold_and_finds_the_best_one() -> None:
    result = su.evaluate_v2(V2_GOLD, V2_PREDICTIONS, na_probs=V2_NULL_ODDS)
    # na_prob_thresh 1.0 (the official default): c (2.0), d (1.5) and e (4.0) count as "no
    # answer": c stays 1, d becomes 1, e stays 0. EM a1 b0 c1 d1 e0 = 3/5; F1 1+2/3+1+1+0.
    assert result["exact"] == pytest.approx(100 * 3 / 5)
    assert result["f1"] == pytest.approx(100 * (3 + 2 / 3) / 5)
    assert result["NoAns_exact"] == pytest.approx(100.0)
    # Best threshold: start with all 5 predicted "no answer" -> the 2 unanswerable right (2).
    # Admit in increasing null odds: a(-3.0) +1 -> 3 (best, thresh -3.0); b(0.5) EM +0 -> 3,
    # F1 +2/3 -> 3.67 (best F1, thresh 0.5); d(1.5) non-empty on no-answer -1; c(2.0) +0; e(4.0) +0.
    assert result["best_exact"] == pytest.approx(100 * 3 / 5)
    assert result["best_exact_thresh"] == -3.0
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 5)
    assert result["best_f1_thresh"] == 0.5
    assert list(result)[:3] == ["exact", "f1", "total"]


def test_evaluate_v2_drops_gold_answers_that_normalize_to_nothing() -> None:
    # The official script keeps only golds with a non-empty normalization, else [""]: a gold
    # "The" is then matched by an empty prediction, while the question still counts as HasAns.
    result = su.evaluate_v2({"x": ["The"]}, {"x": ""})
    assert result["exact"] == 100.0 and result["f1"] == 100.0 and result["HasAns_total"] == 1


def test_gold_answers_keep_every_answer_text_of_every_question(tmp_path: Path) -> None:
    context = "Paris is in France."
    path = write_json(tmp_path / "dev.json", squad_json([{"context": context, "qas": [
        question("q1", "Where?", [("France", 12), ("in France", 999)]),
        question("q2", "What?", [], is_impossible=True,
                 plausible_answers=[{"text": "Paris", "answer_start": 0}]),
    ]}], version="v2.0"))
    assert su.gold_answers(su.read_squad_file(path).examples) == {"q1": ["France", "in France"], "q2": []}


# ============================================================================= reading

def test_reads_examples_as_dataclasses(tmp_path: Path) -> None:
    context = "The cat sat on the mat."
    path = write_json(tmp_path / "train.json", squad_json([{"context": context, "qas": [
        question("q1", "Where did the cat sit?", [answer_at(context, "the mat")]),
        question("q2", "Who flew?", [], is_impossible=True),
    ]}], version="v2.0"))
    data = su.read_squad_file(path)
    assert data.version == "v2.0" and data.stats.num_examples == 2 and data.stats.num_impossible == 1
    assert data.examples[0] == su.SquadExample(qas_id="q1", question="Where did the cat sit?",
                                               context=context, answers=(su.Answer("the mat", 15),),
                                               is_impossible=False, title="test")
    assert data.examples[1].is_impossible and data.examples[1].answers == ()


def test_malformed_json_raises_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"data": [{"title": "x", "paragraphs": [}', encoding="utf-8")
    with pytest.raises(su.SquadFormatError, match=re.escape(f"{path}: malformed JSON at line 1")):
        su.read_squad_file(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        su.read_squad_file(tmp_path / "nothere.json")


def test_non_utf8_file_raises_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"data": "café"}'.encode("latin-1"))
    with pytest.raises(su.SquadFormatError, match="not UTF-8"):
        su.read_squad_file(path)


def _valid_document() -> dict:
    context = "Alpha beta gamma."
    return {"version": "1.1", "data": [
        {"title": "one", "paragraphs": [
            {"context": context, "qas": [question("q0", "What?", [("beta", 6)])]}]},
        {"title": "two", "paragraphs": [
            {"context": context, "qas": [question("q1", "What?", [("gamma", 11)])]},
            {"context": context, "qas": [question("q2", "Why?", [("Alpha", 0)]),
                                         question("q3", "How?", [("beta", 6)])]},
        ]},
    ]}


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["data"][1]["paragraphs"][1]["qas"][1].pop("question"),
     'data[1].paragraphs[1].qas[1]: missing "question"'),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="11"),
     'data[1].paragraphs[0].qas[0].answers[0]: "answer_start" should be an integer, got a string'),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=True),
     'data[0].paragraphs[0].qas[0].answers[0]: "answer_start" should be an integer, got a boolean'),
    (lambda d: d["data"][1]["paragraphs"][0].pop("context"), 'data[1].paragraphs[0]: missing "context"'),
    (lambda d: d["data"][0].update(paragraphs={}), 'data[0]: "paragraphs" should be a list, got an object'),
    (lambda d: d["data"][1]["paragraphs"][1]["qas"].__setitem__(0, "q"),
     "data[1].paragraphs[1].qas[0]: expected an object, got a string"),
    (lambda d: d["data"][1]["paragraphs"][1]["qas"][0].update(is_impossible="no"),
     'data[1].paragraphs[1].qas[0]: "is_impossible" should be a boolean, got a string'),
    (lambda d: d["data"][1]["paragraphs"][1]["qas"][1].update(id="q0"),
     "data[1].paragraphs[1].qas[1]: duplicate id 'q0' (first at data[0].paragraphs[0].qas[0])"),
    (lambda d: d.pop("data"), 'top level: missing "data"'),
])
def test_schema_errors_name_the_file_and_the_entry(tmp_path: Path, break_it, message: str) -> None:
    document = _valid_document()
    su.parse_squad_json(json.dumps(document).encode(), "ok.json")  # the unbroken one is valid
    break_it(document)
    path = write_json(tmp_path / "bad.json", document)
    with pytest.raises(su.SquadFormatError) as error:
        su.read_squad_file(path)
    assert str(error.value) == f"{path}: {message}"


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(su.SquadFormatError, match="expected a JSON object .* got a list"):
        su.read_squad_file(path)


# Columns count bytes from 1: the 100th "[" after '{"data": ' (9 bytes) opens level 101 at byte
# 109; on line 2, '{"a": ' (6 bytes) number 98 after the 20 bytes up to the title opens it at 603.
@pytest.mark.parametrize("raw, message", [
    (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "JSON nested deeper than 100 lists and objects at line 1 column 109"),
    (b'{"version": "1.1",\n "data": [{"title": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}]}",
     "JSON nested deeper than 100 lists and objects at line 2 column 603"),
    (b'{"data": [], "version": ' + b"9" * 5000 + b"}",
     "malformed JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"),
    (b'{"data": [}', "malformed JSON at line 1 column 11: Expecting value"),
    ("{\"data\": \"café\"}".encode("utf-16"),
     "not UTF-8 text ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
])
def test_unreadable_json_raises_one_format_error_naming_the_file(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "odd.json"
    path.write_bytes(raw)
    with pytest.raises(su.SquadFormatError) as error:
        su.read_squad_file(path)
    assert str(error.value) == f"{path}: {message}"


def test_brackets_and_escaped_quotes_inside_strings_are_not_nesting(tmp_path: Path) -> None:
    context = 'He wrote "[[[[" and \\"{{{{" ' * 60 + "then stopped."
    path = write_json(tmp_path / "brackets.json", squad_json([{"context": context, "qas": [
        question("q", "What did he write? " + "[{" * 200, [answer_at(context, "stopped")])]}]))
    assert su.read_squad_file(path).examples[0].context == context


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["data"][1]["paragraphs"][1].update(context="Alpha \ud800beta"),
     'data[1].paragraphs[1]: "context" holds the lone surrogate \\ud800 at character 6'),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(question="What\udfff?"),
     'data[1].paragraphs[0].qas[0]: "question" holds the lone surrogate \\udfff at character 4'),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(id="q\udcff"),
     'data[0].paragraphs[0].qas[0]: "id" holds the lone surrogate \\udcff at character 1'),
    (lambda d: d["data"][0].update(title="\ud83d"), 'data[0]: "title" holds the lone surrogate \\ud83d at character 0'),
    (lambda d: d["data"][1]["paragraphs"][1]["qas"][1]["answers"][0].update(text="beta\ud800"),
     'data[1].paragraphs[1].qas[1].answers[0]: "text" holds the lone surrogate \\ud800 at character 4'),
])
def test_lone_surrogates_are_format_errors_naming_the_entry(tmp_path: Path, break_it, message: str) -> None:
    document = _valid_document()
    break_it(document)
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps(document), encoding="ascii")  # escaped: "\ud800", as JSON allows
    with pytest.raises(su.SquadFormatError) as error:
        su.read_squad_file(path)
    assert str(error.value) == (f"{path}: {message}: not valid Unicode (in JSON, an escape \\ud800-\\udbff must be "
                                "followed by one of \\udc00-\\udfff)")


def test_surrogate_pairs_and_astral_characters_are_valid(tmp_path: Path) -> None:
    context = "Smile \U0001F600 and \U0001D518\U0001D52B\U0001D526 math."
    path = tmp_path / "astral.json"
    path.write_text(json.dumps(squad_json([{"context": context, "qas": [
        question("q", "What \U0001F600?", [answer_at(context, "math")])]}])), encoding="ascii")
    assert "\\ud83d\\ude00" in path.read_text()  # written as a surrogate pair
    assert su.read_squad_file(path).examples[0].context == context


def _file_with_bad_inputs(tmp_path: Path) -> Path:
    context = "Mr. Knightley walked to Hartfield in the rain."
    return write_json(tmp_path / "bad_inputs.json", squad_json([
        {"context": context, "qas": [
            question("good", "Who walked?", [answer_at(context, "Mr. Knightley")]),
            # answer_start off by 3: counted; skipped for training, kept for evaluation.
            question("shifted", "Where to?", [("Hartfield", context.index("Hartfield") + 3)]),
            # a second, misaligned answer does not matter for training, which uses the first.
            question("second", "In what?", [answer_at(context, "the rain"), ("rain", 0)]),
            question("long", " ".join(["why"] * 100) + "?", [answer_at(context, "walked")]),
        ]},
        {"context": "  \n ", "qas": [question("empty1", "What?", []), question("empty2", "Who?", [])]},
    ]))


def test_mismatched_answers_and_empty_contexts_are_counted_and_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _file_with_bad_inputs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="squad_utils"):
        data = su.read_squad_file(path)
    assert [e.qas_id for e in data.examples] == ["good", "shifted", "second", "long"]
    assert (data.stats.num_answers, data.stats.num_misaligned_answers) == (5, 2)
    assert data.stats.misaligned_locations == ["data[0].paragraphs[0].qas[1].answers[0]",
                                               "data[0].paragraphs[0].qas[2].answers[1]"]
    assert (data.stats.num_empty_contexts, data.stats.num_questions_in_empty_contexts) == (1, 2)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "2 of 5 answers have an answer_start that does not point at their text" in messages
    assert "data[0].paragraphs[1]: empty context, its 2 questions are skipped" in messages
    # Evaluation keeps every gold text, the misaligned ones included.
    assert su.gold_answers(data.examples)["shifted"] == ["Hartfield"]


def test_featurization_skips_misaligned_for_training_keeps_them_for_evaluation_and_truncates_questions(
        tmp_path: Path, tokenizer: WordPieceTokenizer, caplog: pytest.LogCaptureFixture) -> None:
    data = su.read_squad_file(_file_with_bad_inputs(tmp_path))
    with caplog.at_level(logging.WARNING, logger="squad_utils"):
        train, train_stats = su.featurize_examples(data.examples, tokenizer, SMALL, is_training=True)
    evaluation, eval_stats = su.featurize_examples(data.examples, tokenizer, SMALL, is_training=False)
    assert train_stats.skipped == {"answer_start does not match the answer text": 1}
    assert eval_stats.skipped == {}
    assert sorted(set(train.example_index.tolist())) == [0, 2, 3]
    assert sorted(set(evaluation.example_index.tolist())) == [0, 1, 2, 3]
    # Evaluation keeps the question but has no label for it: its target is [CLS].
    shifted = np.flatnonzero(evaluation.example_index == 1)
    assert (evaluation.start_position[shifted] == 0).all()
    assert (evaluation.is_impossible[shifted] == 1).all()
    assert train_stats.num_truncated_questions == eval_stats.num_truncated_questions == 1
    long_question = np.flatnonzero(train.example_index == 3)
    question_ids = tokenizer.encode_batch_ids([data.examples[3].question])[0]
    assert len(question_ids) > SMALL.max_query_length
    for feature in long_question:
        assert train.context_offset[feature] == SMALL.max_query_length + 2
        np.testing.assert_array_equal(train.input_ids[feature, 1:SMALL.max_query_length + 1],
                                      question_ids[:SMALL.max_query_length])
    start, end = train.start_position[long_question[0]], train.end_position[long_question[0]]
    spans = train.token_to_orig_char_span(long_question[0])
    offset = train.context_offset[long_question[0]]
    assert data.examples[3].context[spans[start - offset, 0]:spans[end - offset, 1]] == "walked"
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "1 questions longer than max_query_length=16 tokens were truncated" in messages
    assert "1 examples skipped: answer_start does not match the answer text" in messages


def test_a_context_without_tokens_is_skipped_and_counted(tokenizer: WordPieceTokenizer) -> None:
    # Passes the reader's check (not whitespace) but the tokenizer drops zero-width spaces.
    example = su.SquadExample(qas_id="z", question="What?", context="\u200b\u200b", answers=())
    features, stats = su.featurize_examples([example], tokenizer, SMALL, is_training=False)
    assert len(features) == 0 and stats.skipped == {"empty context": 1}
    assert features.input_ids.shape == (0, SMALL.max_seq_length)


def test_lengths_that_leave_no_room_for_context_are_rejected(tokenizer: WordPieceTokenizer) -> None:
    with pytest.raises(ValueError, match="leaves no room for context"):
        su.featurize_examples([], tokenizer, su.FeatureConfig(max_seq_length=10, doc_stride=2,
                                                              max_query_length=7), is_training=True)


# ============================================================================= featurization

def test_doc_windows_follow_bert() -> None:
    assert su.doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert su.doc_windows(10, 4, 5) == [(0, 4), (4, 4), (8, 2)]  # the stride is capped by the length
    assert su.doc_windows(3, 4, 2) == [(0, 3)]


def test_max_context_window_by_hand() -> None:
    # Windows 0..3, 3..6, 6..9. Token 3: 0 + 0.04 in both of its windows -> the first wins.
    # Token 4: only window 1 (1.04); token 6: 0.04 in windows 1 and 2 -> window 1; token 7 -> 2.
    windows = [(0, 4), (3, 4), (6, 4)]
    assert su.max_context_windows(windows, 10).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_char_span_to_token_span_uses_overlap() -> None:
    offsets = np.array([[0, 3], [4, 9], [9, 12], [13, 16]])  # "The runn ing dog" style pieces
    assert su.char_span_to_token_span(offsets, 4, 12) == (1, 2)
    assert su.char_span_to_token_span(offsets, 6, 10) == (1, 2)   # inside pieces: the pieces around
    assert su.char_span_to_token_span(offsets, 3, 9) == (1, 1)    # a leading space belongs to no token
    assert su.char_span_to_token_span(offsets, 12, 13) is None    # only a space


ACCENTED_PARAGRAPHS = [
    "Émilie Brontë's café—in Zürich—served crème brûlée, jalapeño piñatas & “naïve” "
    "résumés (c. 1815); ½ price! Zoë said: «Ça va?» São Paulo’s façade, Dvořák's Œuvre… "
    "ﬁne ﬂour.",
    # Decomposed accents (NFD): a combining mark that ends a word is dropped by the normalizer
    # and must still belong to the answer.
    "Cafe\u0301 owners in Ame\u0301lie's town were nai\u0308ve, said the fiance\u0301e; "
    "Jose\u0301 disagreed (politely).",
]


def austen_contexts(sample_corpus_dir: Path, count: int) -> list[str]:
    """Contexts of 1 to 4 consecutive Austen paragraphs, some long enough for many windows."""
    text = (sample_corpus_dir / "emma.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if len(p) > 300]
    rng = np.random.default_rng(1)
    contexts = []
    position = 0
    while len(contexts) < count:
        size = int(rng.integers(1, 5))
        contexts.append("\n\n".join(paragraphs[position:position + size]))
        position += size
    return contexts + ACCENTED_PARAGRAPHS


def random_answers(context: str, rng: np.random.Generator, count: int) -> list[tuple[str, int, bool]]:
    """(text, start, word_aligned): spans of 1 to 8 whitespace-separated words, and every
    fourth a span starting and ending inside words."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", context)]
    answers = []
    for index in range(count):
        first = int(rng.integers(0, len(words)))
        last = min(len(words) - 1, first + int(rng.integers(0, 8)))
        start, end = words[first][0], words[last][1]
        aligned = index % 4 != 3
        if not aligned:
            start = int(rng.integers(start, words[first][1]))
            end = int(rng.integers(max(start, words[last][0]) + 1, end + 1))
        answers.append((context[start:end], start, aligned))
    return answers


@pytest.fixture(scope="module")
def round_trip_data(sample_corpus_dir: Path) -> tuple[list[su.SquadExample], list[bool]]:
    rng = np.random.default_rng(0)
    examples, aligned = [], []
    for c, context in enumerate(austen_contexts(sample_corpus_dir, 40)):
        for q, (text, start, is_aligned) in enumerate(random_answers(context, rng, 6)):
            examples.append(su.SquadExample(qas_id=f"{c}-{q}", question=f"Question {q} about {text[:30]}?",
                                            context=context, answers=(su.Answer(text, start),)))
            aligned.append(is_aligned)
    return examples, aligned


@pytest.mark.parametrize("config", [SMALL, su.FeatureConfig()], ids=["64-16-16", "384-128-64"])
def test_gold_answers_map_back_to_their_text(config: su.FeatureConfig, tokenizer: WordPieceTokenizer,
                                             round_trip_data) -> None:
    examples, aligned = round_trip_data
    features, stats = su.featurize_examples(examples, tokenizer, config, is_training=True)
    assert stats.skipped == {} and stats.num_examples == len(examples)
    windows_with_answer = np.zeros(len(examples), int)
    for feature in range(len(features)):
        example = examples[features.example_index[feature]]
        start, end = int(features.start_position[feature]), int(features.end_position[feature])
        if features.is_impossible[feature]:
            assert start == end == features.cls_index[feature] == 0
            continue
        windows_with_answer[features.example_index[feature]] += 1
        offset = int(features.context_offset[feature])
        assert offset <= start <= end < offset + features.num_context_tokens(feature)
        spans = features.token_to_orig_char_span(feature)
        recovered = example.context[spans[start - offset, 0]:spans[end - offset, 1]]
        answer = example.answers[0]
        if aligned[features.example_index[feature]]:
            # A span of whole words starts and ends on token boundaries: exact text back.
            assert recovered == answer.text
        else:
            # An answer cut inside words can only come back as the whole word pieces around it:
            # the smallest token span that contains it (so its normalized text differs).
            assert spans[start - offset, 0] <= answer.start < spans[start - offset, 1]
            assert spans[end - offset, 0] < answer.end <= spans[end - offset, 1]
            assert answer.text in recovered
    # Answers of at most 8 words fit in the overlap of consecutive windows.
    assert (windows_with_answer >= 1).all()
    assert stats.num_windows_without_answer == int((features.is_impossible == 1).sum())
    assert stats.num_windows_without_answer > 0  # the small config has many windows per context


@pytest.mark.parametrize("config", [SMALL, su.FeatureConfig()], ids=["64-16-16", "384-128-64"])
def test_windows_cover_the_context_and_each_token_is_max_context_once(
        config: su.FeatureConfig, tokenizer: WordPieceTokenizer, round_trip_data) -> None:
    examples, _ = round_trip_data
    features, _ = su.featurize_examples(examples, tokenizer, config, is_training=False)
    assert features.example_index.tolist() == sorted(features.example_index.tolist())
    for example_index, example in enumerate(examples):
        encoding = tokenizer.encode(example.context, add_special_tokens=False)
        all_spans = [tuple(s) for s in encoding.offsets]
        windows = np.flatnonzero(features.example_index == example_index)
        covered, max_context = set(), []
        for feature in windows:
            spans = [tuple(s) for s in features.token_to_orig_char_span(feature).tolist()]
            covered.update(spans)
            max_context += [s for s, is_max in zip(spans, features.token_is_max_context(feature)) if is_max]
        starts = [s for s, _ in all_spans]
        assert sorted(covered) == sorted(set((s, e) for s, e in max_context))
        # In window order, the max-context tokens are every context token exactly once.
        assert [s for s, _ in max_context] == starts
    assert len(set(features.example_index.tolist())) == len(examples)


def windows_by_tokens_reference(windows: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """The previous max_context_windows, kept as the reference: a windows x tokens matrix of
    BERT's scores, argmax over the windows (the first wins ties)."""
    positions = np.arange(num_tokens)
    scores = np.full((len(windows), num_tokens), -np.inf)
    for index, (start, length) in enumerate(windows):
        inside = positions[start:start + length]
        scores[index, start:start + length] = (np.minimum(inside - start, start + length - 1 - inside)
                                               + 0.01 * length)
    return scores.argmax(axis=0)


def austen_words(sample_corpus_dir: Path, count: int) -> str:
    """The first `count` words of the six novels, one long context."""
    words: list[str] = []
    for novel in sorted(sample_corpus_dir.glob("*.txt")):
        words += novel.read_text(encoding="utf-8").split()
        if len(words) >= count:
            break
    return " ".join(words[:count])


def test_max_context_windows_match_the_windows_by_tokens_reference(
        tokenizer: WordPieceTokenizer, round_trip_data, sample_corpus_dir: Path) -> None:
    examples, _ = round_trip_data
    paragraphs = [len(ids) for ids in tokenizer.encode_batch_ids(sorted({e.context for e in examples}))]
    long_context = len(tokenizer.encode_batch_ids([austen_words(sample_corpus_dir, 10_000)])[0])
    layouts = [(config.max_seq_length - query - su.SPECIAL_TOKENS_IN_FEATURE, config.doc_stride)
               for config in (SMALL, su.FeatureConfig(), DECODE_CONFIG) for query in (0, 5, config.max_query_length)]
    rng = np.random.default_rng(3)
    odd_layouts = [(int(room), int(rng.integers(1, room + 8))) for room in rng.integers(1, 60, size=12)]
    cases = ([(n, layout) for n in paragraphs + [1, 2, 7, 100] for layout in layouts + odd_layouts]
             + [(long_context, layout) for layout in layouts[3:6]])  # the default lengths
    for num_tokens, (room, stride) in cases:
        windows = su.doc_windows(num_tokens, room, stride)
        np.testing.assert_array_equal(su.max_context_windows(windows, num_tokens),
                                      windows_by_tokens_reference(windows, num_tokens),
                                      err_msg=f"{num_tokens} tokens, room {room}, stride {stride}")


def test_max_context_windows_memory_is_linear_in_the_context(tokenizer: WordPieceTokenizer,
                                                             sample_corpus_dir: Path) -> None:
    num_tokens = len(tokenizer.encode_batch_ids([austen_words(sample_corpus_dir, 40_000)])[0])
    windows = su.doc_windows(num_tokens, 384 - 64 - su.SPECIAL_TOKENS_IN_FEATURE, 128)
    tracemalloc.start()
    try:
        su.max_context_windows(windows, num_tokens)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    matrix = len(windows) * num_tokens * 8
    print(f"{num_tokens} tokens, {len(windows)} windows: peak {peak / 2**20:.1f} MB; a windows x tokens "
          f"matrix of float64 scores would take {matrix / 2**20:.0f} MB")
    # The answer and the best score so far, 8 bytes each per token, and one window's temporaries.
    assert peak < 3 * 8 * num_tokens


def test_feature_layout_and_masks(tokenizer: WordPieceTokenizer, round_trip_data) -> None:
    examples, _ = round_trip_data
    features, _ = su.featurize_examples(examples[:60], tokenizer, SMALL, is_training=True)
    length = SMALL.max_seq_length
    encodings = {}
    for feature in range(len(features)):
        example = examples[features.example_index[feature]]
        query = tokenizer.encode_batch_ids([example.question])[0][:SMALL.max_query_length]
        offset, n = int(features.context_offset[feature]), features.num_context_tokens(feature)
        assert offset == len(query) + 2 and offset + n + 1 <= length
        if example.context not in encodings:
            encodings[example.context] = tokenizer.encode(example.context, add_special_tokens=False)
        encoding = encodings[example.context]
        starts = [s for s, _ in encoding.offsets]
        first = starts.index(int(features.token_to_orig_char_span(feature)[0, 0]))
        context_ids = encoding.input_ids[first:first + n]
        padding = length - offset - n - 1
        expected = {
            "input_ids": [tokenizer.cls_id, *query, tokenizer.sep_id, *context_ids, tokenizer.sep_id]
                         + [tokenizer.pad_id] * padding,
            "input_mask": [1] * (offset + n + 1) + [0] * padding,
            "segment_ids": [0] * offset + [1] * (n + 1) + [0] * padding,
            # [CLS] 0 (the null answer), question and [SEP] 1, context 0, [SEP] and padding 1.
            "p_mask": [0] + [1] * (offset - 1) + [0] * n + [1] * (padding + 1),
        }
        for name, values in expected.items():
            np.testing.assert_array_equal(getattr(features, name)[feature], values, err_msg=name)
    for name in ("input_ids", "input_mask", "segment_ids", "p_mask", "start_position", "cls_index"):
        assert getattr(features, name).dtype == np.int32


# ============================================================================= decoding

WORDS = ("red blue green cat dog bird fish tree house car road city river lake sun moon star "
         "book door chair table bread milk water fire stone gold iron king queen").split()
DECODE_CONFIG = su.FeatureConfig(max_seq_length=24, doc_stride=6, max_query_length=6)


class Window:
    """Positions of context tokens in the features of one constructed example."""

    def __init__(self, features: su.SquadFeatures, tokenizer: WordPieceTokenizer, context: str):
        self.features = features
        self.starts = [s for s, _ in tokenizer.encode(context, add_special_tokens=False).offsets]

    def position(self, feature: int, token: int) -> int:
        first_token = self.starts.index(int(self.features.token_to_orig_char_span(feature)[0, 0]))
        assert first_token <= token < first_token + self.features.num_context_tokens(feature)
        return int(self.features.context_offset[feature]) + token - first_token

    def is_max(self, feature: int, token: int) -> bool:
        index = self.position(feature, token) - int(self.features.context_offset[feature])
        return bool(self.features.token_is_max_context(feature)[index])


@pytest.fixture(scope="module")
def word_example(tokenizer: WordPieceTokenizer):
    """30 one-token words, question "what color ?" (3 tokens): windows of 18 context tokens
    starting at tokens 0, 6 and 12."""
    context = " ".join(WORDS)
    example = su.SquadExample(qas_id="w", question="what color ?", context=context, answers=())
    features, _ = su.featurize_examples([example], tokenizer, DECODE_CONFIG, is_training=False)
    assert tokenizer.tokenize(context) == list(WORDS) and len(features) == 3
    return [example], features, Window(features, tokenizer, context)


def text_of(first: int, last: int) -> str:
    return " ".join(WORDS[first:last + 1])


def plain_logits(features: su.SquadFeatures, starts: dict, ends: dict) -> su.PlainHeadOutputs:
    """Logits -1000 everywhere except {(feature, position): value}, so that any span using a
    filler logit scores below every span built from the given values."""
    start_logits = np.full(features.input_ids.shape, -1000.0)
    end_logits = np.full(features.input_ids.shape, -1000.0)
    for (feature, position), value in starts.items():
        start_logits[feature, position] = value
    for (feature, position), value in ends.items():
        end_logits[feature, position] = value
    return su.PlainHeadOutputs(start_logits, end_logits)


def test_plain_head_picks_the_best_span_and_cuts_it_from_the_context(word_example) -> None:
    examples, features, window = word_example
    outputs = plain_logits(features, {(0, window.position(0, 2)): 5.0, (0, window.position(0, 3)): 1.0},
                           {(0, window.position(0, 4)): 4.0})
    predictions = su.decode_plain_head(examples, features, outputs, su.DecodeConfig())
    assert predictions.answers == {"w": text_of(2, 4)} and predictions.null_odds == {}
    best = predictions.nbest["w"][0]
    assert best["text"] == "green cat dog" and best["answer_start"] == len("red blue ")
    assert (best["start_logit"], best["end_logit"]) == (5.0, 4.0)
    assert predictions.nbest["w"][1]["text"] == text_of(3, 4)  # 1 + 4
    assert sum(e["probability"] for e in predictions.nbest["w"]) == pytest.approx(1.0)
    assert len(predictions.nbest["w"]) == 20


def test_plain_head_rejects_end_before_start_too_long_outside_context_not_max_context(
        word_example) -> None:
    examples, features, window = word_example
    assert not window.is_max(1, 6) and window.is_max(0, 6)  # token 6: 6 tokens left in window 0
    starts = {
        (0, 1): 50.0,                        # a question position: outside the context
        (0, window.position(0, 9)): 40.0,    # its best end (token 5) is before it
        (1, window.position(1, 6)): 30.0,    # token 6 is not max-context in window 1
        (0, window.position(0, 10)): 20.0,   # with the end at token 12 (rejected: too long)...
        (0, window.position(0, 11)): 3.0,    # ...or at token 12 (valid, 3 tokens)
    }
    ends = {(0, window.position(0, 5)): 40.0, (1, window.position(1, 7)): 30.0,
            (0, window.position(0, 12)): 2.0, (0, 23): 45.0}  # 23: the final [SEP]
    config = su.DecodeConfig(max_answer_length=2)
    predictions = su.decode_plain_head(examples, features, plain_logits(features, starts, ends), config)
    # Every pair scoring above 3 + 2 breaks one rule: (question, *) 50+, (9, 5) 80, (9, [SEP]) 85,
    # (9, 12) 42 and (10, 12) 22 too long, (6, 7) in window 1 60.
    assert predictions.answers["w"] == text_of(11, 12)
    assert max(e["score"] for e in predictions.nbest["w"]) == 5.0
    assert all(e["text"] in examples[0].context for e in predictions.nbest["w"])
    # With a longer limit the 3-token span wins.
    longer = su.decode_plain_head(examples, features, plain_logits(features, starts, ends),
                                  su.DecodeConfig(max_answer_length=3))
    assert longer.answers["w"] == text_of(10, 12)


def test_plain_head_merges_windows(word_example) -> None:
    examples, features, window = word_example
    assert window.is_max(2, 27)
    outputs = plain_logits(features, {(0, window.position(0, 0)): 2.0, (2, window.position(2, 27)): 6.0},
                           {(0, window.position(0, 1)): 2.0, (2, window.position(2, 29)): 6.0})
    predictions = su.decode_plain_head(examples, features, outputs, su.DecodeConfig())
    assert predictions.answers["w"] == "iron king queen"
    assert [e["text"] for e in predictions.nbest["w"][:2]] == ["iron king queen", "red blue"]


def test_plain_head_v2_null_odds_are_the_min_null_score_minus_the_best_span(word_example) -> None:
    examples, features, window = word_example
    # Best span 3 + 2 = 5. Null scores start[CLS] + end[CLS] per window: 1, -1.5 (min), 2.
    outputs = plain_logits(
        features, {(0, window.position(0, 4)): 3.0, (0, 0): 0.5, (1, 0): -1.0, (2, 0): 1.0},
        {(0, window.position(0, 5)): 2.0, (0, 0): 0.5, (1, 0): -0.5, (2, 0): 1.0})
    # null_odds = -1.5 - 5 = -6.5: not above -5.6, the span is predicted.
    predictions = su.decode_plain_head(examples, features, outputs,
                                       su.DecodeConfig(version_2_with_negative=True))
    assert predictions.null_odds == {"w": pytest.approx(-6.5)}
    assert predictions.answers["w"] == "dog bird"
    # The three outputs are written as JSON files: plain Python numbers, no NumPy scalars.
    json.dumps([predictions.answers, predictions.nbest, predictions.null_odds], allow_nan=False)
    assert all(type(v) is float for e in predictions.nbest["w"] for k, v in e.items()
               if k not in ("text", "answer_start"))
    # Above the threshold, "no answer"; the n-best list still holds the spans.
    config = su.DecodeConfig(version_2_with_negative=True, null_score_diff_threshold=-7.0)
    predictions = su.decode_plain_head(examples, features, outputs, config)
    assert predictions.answers["w"] == "" and predictions.nbest["w"][0]["text"] == "dog bird"


def joint_outputs(features: su.SquadFeatures, beams: dict, cls_logits=None,
                  k: int = 3) -> su.JointHeadOutputs:
    """beams: {feature: [(start, start_log_prob, [(end, end_log_prob), ...k]), ...k]}; the
    rest are CLS with log-prob -50."""
    n = len(features)
    start_index, start_lp = np.zeros((n, k), np.int32), np.full((n, k), -50.0)
    end_index, end_lp = np.zeros((n, k, k), np.int32), np.full((n, k, k), -50.0)
    for feature, beam in beams.items():
        for i, (start, log_prob, ends) in enumerate(beam):
            start_index[feature, i], start_lp[feature, i] = start, log_prob
            for j, (end, end_log_prob) in enumerate(ends):
                end_index[feature, i, j], end_lp[feature, i, j] = end, end_log_prob
    return su.JointHeadOutputs(start_lp, start_index, end_lp, end_index,
                               None if cls_logits is None else np.asarray(cls_logits, np.float32))


def test_joint_head_picks_the_best_valid_span_of_its_beam(word_example) -> None:
    examples, features, window = word_example
    p = window.position
    beams = {0: [
        (p(0, 8), -0.1, [(p(0, 5), -0.01),       # end before start
                         (p(0, 16), -0.02),      # 9 tokens > max_answer_length 4
                         (23, -0.03)]),          # the final [SEP]: outside the context
        (1, -0.2, [(p(0, 2), -0.01), (p(0, 3), -0.1), (0, -1.0)]),  # start in the question
        (p(0, 2), -1.5, [(p(0, 4), -0.5), (p(0, 2), -0.7), (p(0, 3), -2.0)]),
    ], 1: [
        (p(1, 6), -0.05, [(p(1, 7), -0.05), (p(1, 8), -0.1), (p(1, 9), -0.2)]),  # not max-context
    ]}
    predictions = su.decode_joint_head(examples, features, joint_outputs(features, beams),
                                       su.DecodeConfig(max_answer_length=4))
    assert predictions.answers["w"] == "green cat dog"
    nbest = predictions.nbest["w"]
    assert [e["text"] for e in nbest] == ["green cat dog", "green", "green cat"]
    assert (nbest[0]["start_log_prob"], nbest[0]["end_log_prob"]) == (-1.5, -0.5)
    assert [e["probability"] for e in nbest] == pytest.approx(
        np.exp([-2.0, -2.2, -3.5]) / np.exp([-2.0, -2.2, -3.5]).sum())


def test_joint_head_merges_windows_and_keeps_distinct_texts(word_example) -> None:
    examples, features, window = word_example
    p = window.position
    beams = {0: [(p(0, 0), -1.0, [(p(0, 1), -1.0)])],                 # "red blue", -2
             1: [(p(1, 12), -0.5, [(p(1, 13), -0.5), (p(1, 14), -2.0)])],  # "river lake", -1
             2: [(p(2, 27), -0.2, [(p(2, 29), -0.3)])]}               # "iron king queen", -0.5
    predictions = su.decode_joint_head(examples, features, joint_outputs(features, beams),
                                       su.DecodeConfig(n_best_size=3))
    assert predictions.answers["w"] == "iron king queen"
    # "river lake sun" (-2.5) is fourth: cut by n_best_size.
    assert [e["text"] for e in predictions.nbest["w"]] == ["iron king queen", "river lake", "red blue"]


@pytest.mark.parametrize("cls_logits, expected", [
    ([-7.0, -6.0, -8.0], "iron king queen"),  # min -8.0 <= -5.6: answerable
    ([-5.0, -3.0, -4.0], ""),                 # min -5.0 >  -5.6: "no answer"
])
def test_joint_head_v2_predicts_no_answer_when_the_null_score_exceeds_the_threshold(
        word_example, cls_logits: list[float], expected: str) -> None:
    # cls_logits are trained with label 1 = unanswerable: larger means "no answer".
    examples, features, window = word_example
    beams = {2: [(window.position(2, 27), -0.2, [(window.position(2, 29), -0.3)])]}
    predictions = su.decode_joint_head(examples, features, joint_outputs(features, beams, cls_logits),
                                       su.DecodeConfig(version_2_with_negative=True))
    assert predictions.answers["w"] == expected
    assert predictions.null_odds["w"] == pytest.approx(min(cls_logits))
    assert predictions.nbest["w"][0]["text"] == "iron king queen"


def test_nbest_keeps_each_text_once_with_its_best_score(tokenizer: WordPieceTokenizer) -> None:
    context = "the cat saw the cat"
    example = su.SquadExample(qas_id="d", question="Who?", context=context, answers=())
    features, _ = su.featurize_examples([example], tokenizer, SMALL, is_training=False)
    o = int(features.context_offset[0])  # tokens: the cat saw the cat
    beams = {0: [(o + 3, -0.5, [(o + 4, -0.5), (o + 3, -3.0)]),  # "the cat" (2nd) -1, "the" -3.5
                 (o + 0, -1.0, [(o + 1, -1.0), (o + 2, -2.0)])]}  # "the cat" (1st) -2, "... saw" -3
    predictions = su.decode_joint_head([example], features, joint_outputs(features, beams, k=2),
                                       su.DecodeConfig())
    nbest = predictions.nbest["d"]
    assert [(e["text"], e["answer_start"], e["score"]) for e in nbest] == [
        ("the cat", 12, -1.0), ("the cat saw", 0, -3.0), ("the", 12, -3.5)]
    assert [e["probability"] for e in nbest] == pytest.approx(
        np.exp([-1.0, -3.0, -3.5]) / np.exp([-1.0, -3.0, -3.5]).sum())


def test_joint_head_v2_without_cls_logits_is_an_error(word_example) -> None:
    examples, features, _ = word_example
    with pytest.raises(ValueError, match="cls_logits"):
        su.decode_joint_head(examples, features, joint_outputs(features, {}),
                             su.DecodeConfig(version_2_with_negative=True))


def test_no_valid_span_gives_an_empty_prediction(word_example) -> None:
    examples, features, _ = word_example
    predictions = su.decode_joint_head(examples, features, joint_outputs(features, {}), su.DecodeConfig())
    assert predictions.answers == {"w": ""} and predictions.nbest == {"w": []}


def test_answers_ending_in_a_combining_mark_keep_it(tokenizer: WordPieceTokenizer) -> None:
    # "Cafe" + U+0301 and "nai" + U+0308 + "ve": lower-casing strips the marks, so the raw token
    # offsets end before a final mark; the mark belongs to the answer all the same.
    context = ACCENTED_PARAGRAPHS[1]
    texts = ["Cafe\u0301", "Ame\u0301lie's town", "nai\u0308ve", "fiance\u0301e", "Jose\u0301"]
    examples = [su.SquadExample(qas_id=str(i), question="Which?", context=context,
                                answers=(su.Answer(*answer_at(context, text)),))
                for i, text in enumerate(texts)]
    features, stats = su.featurize_examples(examples, tokenizer, SMALL, is_training=True)
    assert len(features) == len(texts) and stats.skipped == {}
    for feature, text in enumerate(texts):
        spans = features.token_to_orig_char_span(feature)
        offset = features.context_offset[feature]
        first, last = features.start_position[feature] - offset, features.end_position[feature] - offset
        assert context[spans[first, 0]:spans[last, 1]] == text


def test_answers_are_cut_from_the_original_text_not_joined_word_pieces(
        tokenizer: WordPieceTokenizer) -> None:
    context = "They met at Zürich's café-bar, naïvely (or so they said)."
    example = su.SquadExample(qas_id="z", question="Where?", context=context, answers=())
    features, _ = su.featurize_examples([example], tokenizer, SMALL, is_training=False)
    encoding = tokenizer.encode(context, add_special_tokens=False)
    first, last = encoding.tokens.index("zurich"), encoding.tokens.index("bar")
    offset = int(features.context_offset[0])
    outputs = plain_logits(features, {(0, offset + first): 5.0}, {(0, offset + last): 5.0})
    predictions = su.decode_plain_head([example], features, outputs, su.DecodeConfig())
    # Joined WordPieces would give "zurich ' s cafe - bar".
    assert predictions.answers["z"] == "Zürich's café-bar"


def test_outputs_for_other_features_are_rejected(word_example) -> None:
    examples, features, _ = word_example
    outputs = su.PlainHeadOutputs(np.zeros((2, 24)), np.zeros((2, 24)))
    with pytest.raises(ValueError, match="outputs for 2 features but 3 features"):
        su.decode_plain_head(examples, features, outputs, su.DecodeConfig())


# ============================================================================= feature cache

@pytest.fixture
def squad_file(tmp_path: Path, sample_corpus_dir: Path) -> Path:
    rng = np.random.default_rng(2)
    paragraphs = []
    for c, context in enumerate(austen_contexts(sample_corpus_dir, 4)):
        answers = random_answers(context, rng, 3)
        paragraphs.append({"context": context, "qas": [
            question(f"{c}-{q}", f"What about {text[:20]}?", [(text, start)])
            for q, (text, start, _) in enumerate(answers)]})
    return write_json(tmp_path / "train-v1.1.json", squad_json(paragraphs))


@pytest.fixture
def featurize_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of featurize_examples made by the cache."""
    calls: list[int] = []
    original = su.featurize_examples

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(su, "featurize_examples", counting)
    return calls


def assert_same_features(a: su.SquadFeatures, b: su.SquadFeatures) -> None:
    for name in a.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_cache_hit_returns_the_same_features_without_featurizing(
        tmp_path: Path, squad_file: Path, tokenizer: WordPieceTokenizer,
        featurize_calls: list[int]) -> None:
    cache = tmp_path / "cache"
    data, built, built_stats = su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    assert len(featurize_calls) == 1 and len(built) > len(data.examples)
    assert sorted(p.name for p in cache.iterdir()) == ["train-v1.1.train.features.json",
                                                       "train-v1.1.train.features.npz"]
    _, loaded, loaded_stats = su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    assert len(featurize_calls) == 1
    assert_same_features(built, loaded)
    assert loaded_stats == built_stats
    # Evaluation features are cached separately.
    su.load_or_build_features(squad_file, tokenizer, SMALL, False, cache)
    assert len(featurize_calls) == 2


def test_cache_is_rebuilt_when_the_vocab_a_length_or_the_input_changes(
        tmp_path: Path, squad_file: Path, vocab_file: Path, featurize_calls: list[int]) -> None:
    cache = tmp_path / "cache"
    su.load_or_build_features(squad_file, WordPieceTokenizer(str(vocab_file)), SMALL, True, cache)
    # Same ids, other bytes: one extra token at the end of a copy of the vocab.
    other_vocab = tmp_path / "vocab.txt"
    shutil.copy(vocab_file, other_vocab)
    with open(other_vocab, "a", encoding="utf-8") as f:
        f.write("[extra]\n")
    su.load_or_build_features(squad_file, WordPieceTokenizer(str(other_vocab)), SMALL, True, cache)
    assert len(featurize_calls) == 2
    tokenizer = WordPieceTokenizer(str(vocab_file))
    su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    assert len(featurize_calls) == 3
    wider = su.FeatureConfig(max_seq_length=64, doc_stride=24, max_query_length=16)
    _, features, _ = su.load_or_build_features(squad_file, tokenizer, wider, True, cache)
    assert len(featurize_calls) == 4
    assert_same_features(features, su.featurize_examples(su.read_squad_file(squad_file).examples,
                                                         tokenizer, wider, True)[0])
    assert len(featurize_calls) == 5  # the direct call counts too
    squad_file.write_text(squad_file.read_text(encoding="utf-8").replace("What about", "What of"),
                          encoding="utf-8")
    su.load_or_build_features(squad_file, tokenizer, wider, True, cache)
    assert len(featurize_calls) == 6
    su.load_or_build_features(squad_file, tokenizer, wider, True, cache)
    assert len(featurize_calls) == 6


@pytest.mark.parametrize("damage", [
    lambda npz, meta: npz.write_bytes(npz.read_bytes()[:200]),
    lambda npz, meta: npz.write_bytes(b"\x00" * 100),
    lambda npz, meta: meta.write_text("{not json", encoding="utf-8"),
    lambda npz, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "stats": {"bogus": 1}})),
    lambda npz, meta: npz.unlink(),
], ids=["truncated-npz", "garbage-npz", "garbage-json", "bad-stats", "missing-npz"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, squad_file: Path, tokenizer: WordPieceTokenizer,
                                  featurize_calls: list[int], damage,
                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    _, built, _ = su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    npz, meta = cache / "train-v1.1.train.features.npz", cache / "train-v1.1.train.features.json"
    damage(npz, meta)
    with caplog.at_level(logging.WARNING, logger="squad_utils"):
        _, rebuilt, _ = su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    assert len(featurize_calls) == 2 and "rebuilding" in caplog.text
    assert_same_features(built, rebuilt)
    _, again, _ = su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    assert len(featurize_calls) == 2  # the rebuilt cache is good


def test_arrays_left_by_another_build_are_not_trusted(
        tmp_path: Path, squad_file: Path, tokenizer: WordPieceTokenizer,
        featurize_calls: list[int]) -> None:
    # A crash between the two renames can leave the arrays of one build beside the metadata of
    # another: the recorded SHA-256 of the arrays catches it.
    cache = tmp_path / "cache"
    npz = cache / "train-v1.1.train.features.npz"
    su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    other_arrays = npz.read_bytes()
    wider = su.FeatureConfig(max_seq_length=64, doc_stride=24, max_query_length=16)
    _, expected, _ = su.load_or_build_features(squad_file, tokenizer, wider, True, cache)
    npz.write_bytes(other_arrays)
    _, features, _ = su.load_or_build_features(squad_file, tokenizer, wider, True, cache)
    assert len(featurize_calls) == 3
    assert_same_features(expected, features)


def test_cache_holds_only_plain_arrays_and_json(tmp_path: Path, squad_file: Path,
                                                tokenizer: WordPieceTokenizer, repo_root: Path) -> None:
    cache = tmp_path / "cache"
    su.load_or_build_features(squad_file, tokenizer, SMALL, True, cache)
    with np.load(cache / "train-v1.1.train.features.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype == np.int32 for name in arrays.files)
    meta = json.loads((cache / "train-v1.1.train.features.json").read_text(encoding="utf-8"))
    assert set(meta) == {"key", "npz_sha256", "num_features", "stats"}
    source = (repo_root / "squad_utils.py").read_text(encoding="utf-8")
    assert not re.search(r"import (c?pickle|joblib|shelve|dill)|pickle\.|allow_pickle=True", source)
