"""data/cloze_squad.py: the sample question set the quick start and the SQuAD tests train on."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import cloze  # noqa: E402
import cloze_squad  # noqa: E402
import squad_utils  # noqa: E402

PASSAGE = "It was a fine day. She said that Anne Elliot had gone to Bath with Lady Russell."


def test_each_name_inside_a_sentence_becomes_a_cloze_question_on_its_span():
    starts = [PASSAGE.index(name) for name in ("Anne Elliot", "Bath", "Lady Russell")]
    # "She" opens its sentence: not taken as a name.
    assert cloze_squad.cloze_questions(PASSAGE) == [
        ("She said that _ had gone to Bath with", "Anne Elliot", starts[0]),
        ("Anne Elliot had gone to _ with Lady Russell.", "Bath", starts[1]),
        ("had gone to Bath with _ .", "Lady Russell", starts[2]),
    ]


def test_written_sets_are_valid_squad_and_v2_adds_an_unanswerable_twin(sample_corpus_dir: Path, tmp_path: Path):
    assert cloze_squad.main(["--corpus-dir", str(sample_corpus_dir), "--output-dir", str(tmp_path),
                             "--version", "2.0", "--num-train-questions", "40", "--num-dev-questions", "10"]) == 0
    train = squad_utils.read_squad_file(tmp_path / "train-v2.0.json")
    dev = squad_utils.read_squad_file(tmp_path / "dev-v2.0.json")
    assert len(train.examples) == 80 and len(dev.examples) == 20
    for example in train.examples + dev.examples:
        assert example.is_impossible == example.qas_id.endswith("-none")
        for answer in example.answers:
            assert example.context[answer.start:answer.start + len(answer.text)] == answer.text
    held_out = set(cloze_squad.passages(sample_corpus_dir / "persuasion.txt"))
    assert {e.context for e in dev.examples} <= held_out  # dev from the held-out book, train from the others
    assert not {e.context for e in train.examples} & held_out
    assert json.loads((tmp_path / "dev-v2.0.json").read_text())["version"] == "2.0"
    baselines = json.loads((tmp_path / "baselines-v2.0.json").read_text())
    # half the questions are unanswerable: the passage names no one, so "its first name" is "", right
    assert baselines["first name in the passage"]["exact_match"] >= 50.0


def test_a_missing_book_is_named(sample_corpus_dir: Path, tmp_path: Path, caplog):
    assert cloze_squad.main(["--corpus-dir", str(sample_corpus_dir), "--output-dir", str(tmp_path),
                             "--dev-books", "persuasion,middlemarch"]) == 1
    assert "middlemarch.txt" in caplog.text


def test_baselines_answer_without_reading_and_are_scored_officially():
    def document(*questions: tuple[str, str, str, str]) -> dict:
        return {"data": [{"paragraphs": [{"context": context, "qas": [
            {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}
            for qid, context, question, answer in questions]}]}
    train = document(("t0", PASSAGE, "She said that _ had gone", "Lady Russell"),
                     ("t1", PASSAGE, "gone to Bath with _ .", "Lady Russell"),
                     ("t2", PASSAGE, "to _ with Lady Russell.", "Bath"))
    dev = document(("d0", PASSAGE, "She said that _ had gone to Bath with", "Anne Elliot"),
                   ("d1", PASSAGE, "said that Anne Elliot had gone to _ with Lady", "Bath"))
    assert cloze_squad.first_name(PASSAGE, "") == "Anne Elliot"
    assert cloze_squad.first_name_not_in_question(PASSAGE, "that Anne Elliot had gone to _") == "Bath"
    assert cloze_squad.first_name("It was a fine day.", "") == ""
    scores = cloze_squad.baseline_scores(train, dev, version_2=False)
    # first name: d0 right, d1 wrong; first name not in the question: both right; "Lady Russell": none
    assert scores == {"first name in the passage": {"exact_match": 50.0, "f1": 50.0},
                      "first name in the passage not in the question": {"exact_match": 100.0, "f1": 100.0},
                      "most frequent training answer": {"exact_match": 0.0, "f1": 0.0}}


def test_several_questions_a_passage_blank_different_words_and_the_dev_set_keeps_one(sample_corpus_dir: Path,
                                                                                     tmp_path: Path):
    one_each, several = tmp_path / "one", tmp_path / "several"
    common = ["--corpus-dir", str(sample_corpus_dir), "--blank", "words", "--num-train-questions", "300",
              "--num-dev-questions", "20"]
    assert cloze_squad.main([*common, "--output-dir", str(one_each)]) == 0
    assert cloze_squad.main([*common, "--output-dir", str(several), "--questions-per-passage", "4"]) == 0
    paragraphs = json.loads((several / "train-v1.1.json").read_text())["data"][0]["paragraphs"]
    assert sum(len(p["qas"]) for p in paragraphs) == 300
    assert max(len(p["qas"]) for p in paragraphs) == 4 and len(paragraphs) < 300
    for paragraph in paragraphs:
        starts = [qa["answers"][0]["answer_start"] for qa in paragraph["qas"]]
        assert starts == sorted(set(starts))  # each question blanks another word, in passage order
        for qa in paragraph["qas"]:
            answer = qa["answers"][0]
            assert paragraph["context"][answer["answer_start"]:].startswith(answer["text"])
            assert (qa["question"], answer["text"], answer["answer_start"]) in cloze_squad.cloze_questions(
                paragraph["context"], cloze.LONG_WORD)
    assert len({qa["id"] for p in paragraphs for qa in p["qas"]}) == 300
    # the dev set does not depend on how many training questions a passage gives
    assert (one_each / "dev-v1.1.json").read_text() == (several / "dev-v1.1.json").read_text()


def test_no_questions_a_passage_is_refused_in_one_line_before_anything_is_written(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cloze_squad.main(["--output-dir", str(tmp_path / "out"), "--questions-per-passage", "0"])
    assert exit_info.value.code == 2
    assert "--questions-per-passage must be 1 or more, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_short_training_passages_leave_the_dev_set_as_it_is(sample_corpus_dir: Path, tmp_path: Path):
    common = ["--corpus-dir", str(sample_corpus_dir), "--blank", "words", "--num-train-questions", "300",
              "--num-dev-questions", "20", "--questions-per-passage", "2"]
    assert cloze_squad.main([*common, "--output-dir", str(tmp_path / "named")]) == 0
    assert cloze_squad.main([*common, "--output-dir", str(tmp_path / "short"), "--train-passages", "short"]) == 0
    paragraphs = json.loads((tmp_path / "short" / "train-v1.1.json").read_text())["data"][0]["paragraphs"]
    assert sum(len(p["qas"]) for p in paragraphs) == 300
    contexts = [p["context"] for p in paragraphs]
    assert max(map(len, contexts)) <= 160 < cloze_squad.PASSAGE_CHARS
    # any passage with a question, not only those naming two people
    assert any(len(set(cloze.NAME_SPAN.findall(c))) < 2 for c in contexts)
    for paragraph in paragraphs:
        for qa in paragraph["qas"]:
            answer = qa["answers"][0]
            assert (qa["question"], answer["text"], answer["answer_start"]) in cloze_squad.cloze_questions(
                paragraph["context"], cloze.LONG_WORD)
    named = json.loads((tmp_path / "named" / "train-v1.1.json").read_text())["data"][0]["paragraphs"]
    assert max(len(p["context"]) for p in named) > 160
    assert (tmp_path / "named" / "dev-v1.1.json").read_text() == (tmp_path / "short" / "dev-v1.1.json").read_text()
    assert ((tmp_path / "named" / "baselines-v1.1.json").read_text()
            == (tmp_path / "short" / "baselines-v1.1.json").read_text())
