"""Stand-in programs for what this machine lacks or what a test must not start (GPU launchers,
a cluster, package installers), and a recording virtual environment in which a launcher's
commands are written to a log instead of run."""
from __future__ import annotations

import hashlib
import os
import shlex
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

# Programs a launcher could start: Python, installers, process launchers, container engines.
PROGRAMS = ("python", "python3", "pip", "pip3", "srun", "sbatch", "mpirun", "horovodrun", "docker", "podman",
            "nvidia-smi", "apt-get", "hf", "git")


class BackgroundServer:
    """Serves `self.server` from a daemon thread for the duration of a `with` block."""

    server: socketserver.BaseServer

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class GetHeadHandler(BaseHTTPRequestHandler):
    """GET and HEAD both answered by `answer(send_body)`, without request logging."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def answer(self, send_body: bool) -> None:
        raise NotImplementedError


def write_program(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def recorder_body(log: Path, status: int) -> str:
    """A program that appends its name, arguments and NVIDIA_TF32_OVERRIDE as one line to `log`."""
    return (f'{{ printf "%q " "$(basename "$0")" "$@"; printf "NVIDIA_TF32_OVERRIDE=%q\\n" '
            f'"${{NVIDIA_TF32_OVERRIDE-unset}}"; }} >> {shlex.quote(str(log))}\nexit {status}\n')


def make_recorders(folder: Path, log: Path, names: tuple[str, ...] = PROGRAMS, status: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_program(folder / name, recorder_body(log, status))
    return folder


def recorded_calls(log: Path) -> list[list[str]]:
    """One list per recorded call: [program, arguments..., "NVIDIA_TF32_OVERRIDE=<value>"]."""
    if not log.exists():
        return []
    return [shlex.split(line) for line in log.read_text().splitlines()]


def recording_venv(folder: Path, repo_root: Path, log: Path) -> Path:
    """A folder scripts/setup_env.sh takes for an up-to-date environment (its bin/python exists and
    the install stamps match requirements.txt), whose `python` only records its arguments."""
    make_recorders(folder / "bin", log, names=("python",))
    for requirements in ("requirements.txt", "requirements-test.txt"):
        digest = hashlib.sha256((repo_root / requirements).read_bytes()).hexdigest()
        (folder / f".installed-{requirements}.sha256").write_text(f"{digest}  -\n")
    return folder


def recording_environment(tmp_path: Path, repo_root: Path, **extra: str) -> tuple[dict[str, str], Path]:
    """Environment in which launchers run normally but every Python, srun, sbatch, mpirun or
    horovodrun they start is recorded in the returned log (and exits 0)."""
    log = tmp_path / "calls.log"
    stand_ins = make_recorders(tmp_path / "stand-ins", log, names=("srun", "sbatch", "mpirun", "horovodrun"))
    make_recorders(stand_ins, log, names=("nvidia-smi",), status=1)  # no GPU: the CPU requirements
    venv = recording_venv(tmp_path / "venv", repo_root, log)
    env = {**os.environ, "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}", "ELECTRA_VENV": str(venv),
           "PYTHON": sys.executable, **extra}
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    return env, log
