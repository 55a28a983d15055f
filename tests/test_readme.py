"""The README and docs/: the test command is CI's, the Python example runs, every link leads
somewhere in the repository, and no document cites one outside it or a path of the machine it
was written on. (The journeys' commands run in tests/test_journeys.py, the flag reference is
checked in tests/test_flag_docs.py.)"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from configuration import ElectraConfig
from model_folder import save_model_folder
from modeling import ElectraDiscriminator

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def python_blocks(document: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S)


def test_readme_test_command_is_what_ci_runs(repo_root: Path):
    ci_commands = [line for line in (repo_root / ".ci" / "run").read_text().splitlines()
                   if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == ["bash scripts/test.sh"]
    assert "```bash\nbash scripts/test.sh\n```" in (repo_root / "README.md").read_text()


def test_model_folder_example_runs(repo_root: Path, tmp_path: Path):
    """Run docs/model-folders.md's example against a local folder in place of the released name."""
    folder = tmp_path / "discriminator"
    save_model_folder(ElectraDiscriminator(ElectraConfig.from_size("small", num_hidden_layers=2)), str(folder))
    example = next(block for block in python_blocks(repo_root / "docs" / "model-folders.md")
                   if "load_model_folder" in block)
    assert '"google/electra-small-discriminator"' in example
    script = example.replace('"google/electra-small-discriminator"', repr(str(folder)))
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "shape=(1, 8)" in result.stdout  # [CLS] the chef ate the meal . [SEP]


def anchors(document: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", document.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_leads_to_a_file_and_heading_of_the_repository(document: Path):
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.is_file() and linked.is_relative_to(REPO_ROOT), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{document.name}: no heading for {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_documents_cite_nothing_outside_the_repository_and_no_machine_path(document: Path):
    text = document.read_text()
    assert not re.search(r"\bSPEC\b", text), "a document outside the repository is cited"
    assert not re.search(r"(?<![\w.])/(work|root|home/\w+)/", text), "a path of the writing machine"


def test_code_cites_no_document_outside_the_repository():
    sources = [p for p in REPO_ROOT.rglob("*") if p.suffix in (".py", ".sh", ".sub") and ".venv" not in p.parts
               and "results" not in p.parts]
    cited = [str(p.relative_to(REPO_ROOT)) for p in sources if re.search(r"\bSPEC section", p.read_text())]
    assert cited == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    assert [p.name for p in DOCUMENTS[1:] if f"](docs/{p.name})" not in readme] == []
