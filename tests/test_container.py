"""The container journey for real: the image is built from the repository's Dockerfile (CPU
variant) on a Debian base made on this machine (scripts/docker/make_base_image.sh, debootstrap),
with Podman, and the reduced quick start runs inside it through scripts/docker/launch.sh.

No image registry is reachable here, hence the local base; pip inside the build reaches the
package registry. Podman, runc and debootstrap are installed with apt-get when missing (root
only; otherwise the test says why it skips). The base image and the build's layers stay in
Podman's storage, so a second run on the same machine skips debootstrap and the unchanged
layers; from nothing the test takes about 10-13 minutes on 2 cores (debootstrap 2-4, build 4,
quick start 4-5).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/electra-tf2-test:cpu"
PACKAGES = ("podman", "runc", "debootstrap")
STAGES = ("data", "squad_data", "pretrain", "postprocess", "finetune", "inference")
# Podman lowers its own limit on processes to this when it starts, and a container may not get
# more than podman has unless podman may raise limits (CAP_SYS_RESOURCE).
PODMAN_OWN_NPROC = 32768
log = logging.getLogger(__name__)


def run(command: list[str], timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


def install_missing_tools() -> None:
    missing = [name for name in PACKAGES if shutil.which(name) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} missing; installing them needs root and apt-get")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*apt, "update"], [*apt, "install", "--no-install-recommends", *missing]):
        result = run(command, timeout=900, env=env)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"


def limit_flags() -> list[str]:
    """--ulimit flags no higher than this process's hard limits (podman cannot raise them
    without CAP_SYS_RESOURCE, and its defaults, 1048576 files and processes, are higher)."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], PODMAN_OWN_NPROC)
    files = 1048576 if files == resource.RLIM_INFINITY else files
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"]


def working_podman_flags(base_image: str) -> dict[str, str]:
    """The CONTAINER_ENGINE_FLAGS / CONTAINER_RUN_FLAGS this machine needs, found by starting
    the base image: podman's default runtime first, then runc (crun fails where cgroups are in
    hybrid mode); the engine's default limits first, then limit_flags()."""
    errors = []
    for global_flags, run_flags in itertools.product([[], ["--runtime", "runc"]], [[], limit_flags()]):
        result = run(["podman", *global_flags, "run", "--rm", *run_flags, base_image, "true"], timeout=120)
        if result.returncode == 0:
            log.info("podman flags: %s run %s", global_flags, run_flags)
            return {"CONTAINER_ENGINE_FLAGS": " ".join(global_flags), "CONTAINER_RUN_FLAGS": " ".join(run_flags)}
        errors.append(f"podman {' '.join(global_flags)} run {' '.join(run_flags)}: {result.stderr.strip()[-300:]}")
    pytest.fail("podman cannot start a container here:\n" + "\n".join(errors))


def image_id(env: dict[str, str]) -> str | None:
    result = run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], timeout=60, env=env)
    return result.stdout.strip() if result.returncode == 0 else None


def build_flags() -> list[str]:
    """Build on this machine: chroot isolation (no runtime needed for RUN), the host's network
    and host name (which resolves, as Horovod's Gloo needs), and the host's CA certificates
    mounted (not copied) for pip, as a TLS-inspecting proxy between the build and the registry
    needs."""
    flags = ["--isolation", "chroot", "--network", "host", "--uts", "host"]
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        flags += ["--volume", f"{bundle}:{bundle}:ro"]
    return flags


@pytest.fixture(scope="module")
def engine_env() -> dict[str, str]:
    """The environment for scripts/docker/*.sh: podman, with the flags this machine needs, and
    the image built from the local base."""
    install_missing_tools()
    env = {**os.environ, "CONTAINER_ENGINE": "podman", "IMAGE": IMAGE}
    made = run(["bash", "scripts/docker/make_base_image.sh"], timeout=1200, env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    base_image = made.stdout.strip()
    env.update(working_podman_flags(base_image))
    previous = image_id(env)
    built = run(["bash", "scripts/docker/build.sh", *build_flags(), "--build-arg", f"BASE_IMAGE={base_image}",
                 "--build-arg", "ACCELERATOR=cpu", "--build-arg", "WITH_HOROVOD=false"], timeout=2400, env=env)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    if previous and previous != image_id(env):  # the build's predecessor, now untagged
        run(["podman", "rmi", previous], timeout=120, env=env)
    return env


@pytest.fixture(scope="module")
def quickstart_run(engine_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reduced quick start through launch.sh, after printing which Python the launchers'
    environment set-up gives. ELECTRA_VENV points into the mounted results folder: a venv made
    in the container would appear there."""
    results = tmp_path_factory.mktemp("container_results")
    env = {**engine_env, "RESULTS_DIR": str(results)}
    env["CONTAINER_RUN_FLAGS"] += " -e ELECTRA_VENV=/workspace/electra/results/venv"
    script = ('source scripts/setup_env.sh && command -v python && '
              'python -c "import sys, tensorflow as tf; print(\'tensorflow\', tf.__version__, sys.prefix)" && '
              'bash scripts/quickstart.sh --reduced')
    process = run(["bash", "scripts/docker/launch.sh", "bash", "-c", script], timeout=1800, env=env)
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-3000:]
    return {"results": results, "stdout": process.stdout}


def test_the_launchers_use_the_images_python_and_make_no_venv(quickstart_run: dict):
    lines = quickstart_run["stdout"].splitlines()
    assert lines[:2] == ["/opt/venv/bin/python", "tensorflow 2.21.0 /opt/venv"]
    assert not (quickstart_run["results"] / "venv").exists()
    assert "Creating virtual environment" not in quickstart_run["stdout"]


def test_the_quick_start_finishes_and_its_results_are_in_the_mounted_folder(quickstart_run: dict):
    results = quickstart_run["results"] / "quickstart"
    assert [stage for stage in STAGES if not (results / f".done-{stage}").exists()] == []
    assert quickstart_run["stdout"].rstrip().endswith("everything is in /workspace/electra/results/quickstart")
    logged = [json.loads(line) for line in (results / "pretraining/phase1/logs/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "total_loss" in m] == [3, 6, 9, 12]
    evaluation = json.loads((results / "squad" / "eval_results.json").read_text())
    assert 0 <= evaluation["exact_match"] <= evaluation["f1"] <= 100
    assert (results / "postprocessed" / "discriminator" / "model.safetensors").stat().st_size > 0
    assert (results / "inference.txt").read_text().startswith("answer: ")
