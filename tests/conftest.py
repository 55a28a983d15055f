"""Fixtures shared by the whole test suite."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (where the library modules live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def vocab_file(repo_root: Path) -> Path:
    """The uncased BERT WordPiece vocabulary shipped with the repository."""
    return repo_root / "vocab" / "vocab.txt"
