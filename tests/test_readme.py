"""The README's commands and code work as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from configuration import ElectraConfig
from model_folder import save_model_folder
from modeling import ElectraDiscriminator


def readme_python_blocks(repo_root: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.S)


def test_readme_test_command_is_what_ci_runs(repo_root: Path):
    ci_commands = [line for line in (repo_root / ".ci" / "run").read_text().splitlines()
                   if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == ["bash scripts/test.sh"]
    assert "```bash\nbash scripts/test.sh\n```" in (repo_root / "README.md").read_text()


def test_readme_model_folder_example_runs(repo_root: Path, tmp_path: Path):
    """Run the example against a local folder in place of the released model name."""
    folder = tmp_path / "discriminator"
    save_model_folder(ElectraDiscriminator(ElectraConfig.from_size("small", num_hidden_layers=2)), str(folder))
    example = next(block for block in readme_python_blocks(repo_root) if "load_model_folder" in block)
    assert '"google/electra-small-discriminator"' in example
    script = example.replace('"google/electra-small-discriminator"', repr(str(folder)))
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "shape=(1, 8)" in result.stdout  # [CLS] the chef ate the meal . [SEP]


PROGRAMS = ("build_pretraining_dataset.py", "data/dataPrep.py", "data/cloze_squad.py", "run_pretraining.py",
            "postprocess_pretrained_ckpt.py", "run_tf_squad.py", "run_inference.py", "run_tf_glue.py",
            "run_glue_inference.py", "data/austen_glue_tasks.py",
            "scripts/benchmark_pretraining.py", "scripts/benchmark_squad.py", "scripts/benchmark_data.py")


def test_readme_documents_every_flag_of_every_program(repo_root: Path):
    readme = (repo_root / "README.md").read_text()
    for program in PROGRAMS:
        source = (repo_root / program).read_text()
        flags = re.findall(r"add_argument\(\s*((?:\"--[\w-]+\",\s*)+)", source)
        names = [name for group in flags for name in re.findall(r"--[\w-]+", group)]
        assert names, program
        section = readme[readme.index(f"<code>{program}</code>"):]
        section = section[:section.index("</details>")]
        missing = [name for name in names if f"`{name}`" not in section]
        assert not missing, f"{program}: {missing} not in the README's flag list"
