"""Fixtures shared by the whole test suite."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The launchers the tests start (they source scripts/setup_env.sh) use the environment the tests
# run in rather than making another one.
if sys.prefix != sys.base_prefix:
    os.environ.setdefault("ELECTRA_VENV", sys.prefix)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (where the library modules live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def vocab_file(repo_root: Path) -> Path:
    """The uncased BERT WordPiece vocabulary shipped with the repository."""
    return repo_root / "vocab" / "vocab.txt"


@pytest.fixture(scope="session")
def sample_corpus_dir(repo_root: Path) -> Path:
    """Jane Austen's six novels, shipped with the repository."""
    return repo_root / "data" / "sample_corpus" / "austen"


def write_sentence_corpus(novels: list[Path], output_file: Path) -> None:
    """One sentence per line, a blank line after each chapter, with the data-preparation code."""
    sys.path.insert(0, str(REPO_ROOT / "data"))
    from sentence_segmentation import default_segmentation_method, load_segmenter, split_paragraph
    from text_formatting import text_documents

    segmenter = load_segmenter(default_segmentation_method())
    with open(output_file, "w", encoding="utf-8") as out:
        for novel in novels:
            for chapter in text_documents(novel.read_text(encoding="utf-8"), "auto"):
                for paragraph in chapter:
                    out.writelines(s + "\n" for s in split_paragraph(segmenter, paragraph))
                out.write("\n")


@pytest.fixture(scope="session")
def austen_tfrecords(tmp_path_factory: pytest.TempPathFactory, sample_corpus_dir: Path,
                     vocab_file: Path) -> dict[str, str]:
    """Pretraining TFRecords (length 128) of five novels for training and of Persuasion,
    held out, for evaluation: {"train": glob, "heldout": glob}."""
    from build_pretraining_dataset import BuildConfig, build_dataset

    root = tmp_path_factory.mktemp("austen")
    novels = sorted(sample_corpus_dir.glob("*.txt"))
    splits = {"train": [n for n in novels if n.stem != "persuasion"],
              "heldout": [n for n in novels if n.stem == "persuasion"]}
    globs = {}
    for split, files in splits.items():
        (root / split / "text").mkdir(parents=True)
        write_sentence_corpus(files, root / split / "text" / "corpus.txt")
        build_dataset(BuildConfig(corpus_dir=str(root / split / "text"), output_dir=str(root / split / "tfrecords"),
                                  vocab_file=str(vocab_file), max_seq_length=128, num_out_files=2))
        globs[split] = str(root / split / "tfrecords" / "pretrain_data.tfrecord-*")
    return globs
