"""docs/flags.md is what scripts/gen_flag_docs.py makes from the programs' parsers now, it covers
every program in the repository, and it shows no path of the machine it was made on."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_flag_docs", REPO_ROOT / "scripts" / "gen_flag_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_flag_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def committed() -> str:
    return (REPO_ROOT / "docs" / "flags.md").read_text(encoding="utf-8")


def test_committed_flag_reference_equals_a_fresh_generation(generator, committed: str):
    assert committed == generator.generate(), "docs/flags.md is out of date: run python scripts/gen_flag_docs.py"


def command_line_programs() -> list[str]:
    """Every Python file that parses command-line flags and runs as a program."""
    candidates = [*REPO_ROOT.glob("*.py"), *REPO_ROOT.glob("data/*.py"), *REPO_ROOT.glob("scripts/*.py")]
    return sorted(str(p.relative_to(REPO_ROOT)) for p in candidates
                  if "ArgumentParser(" in (text := p.read_text(encoding="utf-8")) and '__name__ == "__main__"' in text)


def test_every_program_is_in_the_reference(generator, committed: str):
    assert sorted(generator.PROGRAMS) == command_line_programs(), \
        "add the program to PROGRAMS in scripts/gen_flag_docs.py"
    for program in generator.PROGRAMS:
        assert f"<summary><code>{program}</code>" in committed


def test_every_flag_in_a_programs_source_is_listed(generator, committed: str):
    """Read independently of the generator: every `add_argument("--flag"` of the source."""
    for program in generator.PROGRAMS:
        source = (REPO_ROOT / program).read_text(encoding="utf-8")
        names = [name for group in re.findall(r"add_argument\(\s*((?:\"--[\w-]+\",\s*)+)", source)
                 for name in re.findall(r"--[\w-]+", group)]
        assert names, program
        section = committed[committed.index(f"<code>{program}</code>"):]
        section = section[:section.index("</details>")]
        missing = [name for name in names if f"`{name}`" not in section]
        assert not missing, f"{program}: {missing} not in docs/flags.md"


def test_no_path_of_the_generating_machine(committed: str):
    assert str(REPO_ROOT) not in committed
    assert not re.search(r"`/(work|root|home|tmp)/", committed)


def test_no_program_shows_a_path_of_this_checkout_in_its_help(generator):
    """Defaults inside the repository are described, not printed as this machine's paths."""
    shown = [program for program in generator.PROGRAMS
             if str(REPO_ROOT) in generator.program_parser(program).format_help()]
    assert shown == []
