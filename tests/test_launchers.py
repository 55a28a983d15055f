"""The bash launchers as a person uses them: --help with no side effect, one set of spellings for
precision and booleans (anything else is one clear error), the environment set up the same way,
finetune_ckpts_on_squad.sh finding run_pretraining.sh's checkpoints, run.sub outside Slurm."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from stand_ins import make_recorders, recorded_calls, recording_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
# (scripts/docker/engine.sh, like scripts/lib/*.sh, is sourced by the others.)
LAUNCHERS = sorted(str(p.relative_to(REPO_ROOT)) for p in [
    *REPO_ROOT.glob("scripts/*.sh"), *REPO_ROOT.glob("scripts/slurm/*.sh"),
    *(REPO_ROOT / "scripts" / "docker" / name for name in ("build.sh", "launch.sh", "make_base_image.sh")),
    REPO_ROOT / "data" / "create_datasets_from_start.sh", REPO_ROOT / "run.sub"])


def run(launcher: str, *args: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / launcher), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def repository_files() -> str:
    """Every untracked or ignored path of the checkout (what a side effect would add)."""
    return subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True).stdout


def declared(launcher: str) -> list[str]:
    """Positional arguments and environment variables the launcher declares with scripts/lib/args.sh."""
    return re.findall(r"^electra_(?:arg|env) (\w+) ", (REPO_ROOT / launcher).read_text(), flags=re.M)


@pytest.mark.parametrize("option", ["--help", "-h"])
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_help_prints_usage_and_example_and_starts_nothing(launcher: str, option: str, tmp_path: Path):
    log = tmp_path / "started.log"
    stand_ins = make_recorders(tmp_path / "bin", log, status=97)
    venv = tmp_path / "venv"
    env = {**os.environ, "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}", "ELECTRA_VENV": str(venv)}
    env.pop("PYTHON", None)
    before = repository_files()
    result = run(launcher, option, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert recorded_calls(log) == [], f"{launcher} {option} started a program"
    assert not venv.exists() and not Path(f"{venv}.setup-lock").exists(), "the environment was set up"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"], "files were written"
    assert repository_files() == before
    assert "Usage:" in result.stdout and "Example" in result.stdout, result.stdout
    for name in declared(launcher):
        assert re.search(rf"^\s+(\d+ +)?{name} +default ", result.stdout, flags=re.M), (launcher, name)


def test_help_anywhere_among_the_arguments(tmp_path: Path):
    log = tmp_path / "started.log"
    env = {**os.environ, "PATH": f"{make_recorders(tmp_path / 'bin', log, status=97)}{os.pathsep}{os.environ['PATH']}"}
    result = run("scripts/run_pretraining.sh", "176", "6e-3", "--help", env=env)
    assert result.returncode == 0 and "train_batch_size_p1" in result.stdout
    assert recorded_calls(log) == []


def program_calls(log: Path, program: str) -> list[list[str]]:
    return [call for call in recorded_calls(log) if any(arg.endswith(program) for arg in call)]


PRECISIONS = {"amp": ["--amp", "--amp_dtype", "float16"], "AMP": ["--amp", "--amp_dtype", "float16"],
              "bf16": ["--amp", "--amp_dtype", "bfloat16"], "tf32": ["--no-amp"], "fp32": ["--no-amp"]}
TRUE_SPELLINGS = ("true", "yes", "1", "TRUE")
FALSE_SPELLINGS = ("false", "no", "0")


def flags_after(call: list[str], flag: str) -> list[str]:
    index = call.index(flag)
    return call[index:index + 3]


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_run_pretraining_sh_precision_spellings(precision: str, tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT, PHASES="1")
    result = run("scripts/run_pretraining.sh", "8", "1e-3", precision, "1", "no_xla", "1", "2", "1", "false", "lamb",
                 "true", "2", "1", "job", "", "", "", "", "", "small", "DATA1", "DATA2", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    [call] = program_calls(log, "run_pretraining.py")
    expected = PRECISIONS[precision]
    assert call[call.index(expected[0]):call.index(expected[0]) + len(expected)] == expected
    assert call[-1] == f"NVIDIA_TF32_OVERRIDE={'0' if precision == 'fp32' else 'unset'}"
    assert "--no-xla" in call and "--gradient_accumulation_steps" in call


@pytest.mark.parametrize("spelling", ["xla", "no_xla", *TRUE_SPELLINGS, *FALSE_SPELLINGS])
def test_run_pretraining_sh_xla_and_resume_spellings(spelling: str, tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT, PHASES="1")
    resume = spelling if spelling not in ("xla", "no_xla") else "false"
    result = run("scripts/run_pretraining.sh", "8", "1e-3", "fp32", "1", spelling, "1", "2", "1", resume, *[""] * 13,
                 str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    [call] = program_calls(log, "run_pretraining.py")
    on = spelling in ("xla", *TRUE_SPELLINGS)
    assert ("--xla" if on else "--no-xla") in call
    assert ("--restore_checkpoint" in call) == (resume in TRUE_SPELLINGS)


@pytest.mark.parametrize("launcher, args, extra_env, message", [
    ("scripts/run_pretraining.sh", ["8", "1e-3", "fp16"], {}, "precision must be amp, bf16, tf32 or fp32, not 'fp16'"),
    ("scripts/run_pretraining.sh", ["8", "1e-3", "amp", "1", "on"], {},
     "xla must be xla/no_xla, true/false, yes/no or 1/0, not 'on'"),
    ("scripts/run_pretraining.sh", ["8", "1e-3", "amp", "1", "xla", "1", "2", "1", "maybe"], {},
     "resume_training must be true/false, yes/no or 1/0, not 'maybe'"),
    ("scripts/run_pretraining.sh", [], {"PHASES": "3"}, "PHASES must be \"1 2\", 1 or 2, not '3'"),
    ("scripts/run_pretraining.sh", [""] * 25, {}, "run_pretraining.sh takes at most 24 arguments, got 25"),
    ("scripts/run_squad.sh", ["m", "1", "8", "8", "1e-4", "float16"], {},
     "precision must be amp, bf16, tf32 or fp32, not 'float16'"),
    ("scripts/run_squad.sh", ["m", "1", "8", "8", "1e-4", "amp", "1", "1", "1.1", "d", "r", "None", "train",
                              "interactive", "c", "-1", "v", "xla_please"], {},
     "xla must be true/false, yes/no or 1/0, not 'xla_please'"),
    ("scripts/run_squad.sh", ["m", "1", "8", "8", "1e-4", "amp", "1", "1", "3.0"], {},
     "squad_version must be 1.1 or 2.0, not '3.0'"),
    ("run.sub", [], {"XLA": "sometimes"}, "XLA must be xla/no_xla, true/false, yes/no or 1/0, not 'sometimes'"),
    ("run.sub", [], {"RESUME": "y"}, "RESUME must be true/false, yes/no or 1/0, not 'y'"),
    ("run.sub", [], {"PRECISION": "fp16"}, "PRECISION must be amp, bf16, tf32 or fp32, not 'fp16'"),
    ("run.sub", [], {"skip_adaptive": "sure"}, "skip_adaptive must be true/false, yes/no or 1/0, not 'sure'"),
    ("run.sub", [], {"SLURM_JOB_ID": "7", "PHASE": "3"}, "PHASE must be 1 or 2, not '3'"),
    ("scripts/finetune_ckpts_on_squad.sh", ["results/x", "dgxa100_8gpu_ampp"], {},
     "unknown preset 'dgxa100_8gpu_ampp' (one of: dgxa100_8gpu_amp dgxa100_8gpu_tf32"),
    ("scripts/quickstart.sh", ["--results"], {}, "--results needs a value (see --help)"),
    ("scripts/quickstart.sh", ["--results", "--reduced"], {}, "--results needs a value (see --help)"),
    ("scripts/quickstart.sh", ["--stage", "pretrainn"], {}, "unknown stage 'pretrainn'"),
    ("data/create_datasets_from_start.sh", ["--wiki"], {}, "unknown option '--wiki' (see --help)"),
])
def test_bad_spellings_are_one_line_errors_and_start_nothing(launcher: str, args: list[str], extra_env: dict,
                                                            message: str, tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT, **extra_env)
    result = run(launcher, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr, \
        result.stderr
    assert recorded_calls(log) == []


@pytest.mark.parametrize("precision, xla, expected", [
    ("amp", "", ["--amp", "--amp_dtype", "float16", "--xla"]),  # the recipe: XLA on with amp
    ("bf16", "", ["--amp", "--amp_dtype", "bfloat16", "--no-xla"]),
    ("tf32", "yes", ["--no-amp", "--xla"]),
    ("fp32", "0", ["--no-amp", "--no-xla"]),
])
def test_run_squad_sh_precision_and_xla(precision: str, xla: str, expected: list[str], tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT, EXTRA_SQUAD_ARGS="--max_steps 3")
    result = run("scripts/run_squad.sh", "small", "1", "8", "8", "1e-4", precision, "1", "1", "1.1", "squad",
                 str(tmp_path / "out"), "None", "train", "interactive", "cache", "-1", "vocab.txt", xla,
                 "--log_freq", "1", env=env)
    assert result.returncode == 0, result.stderr
    [call] = program_calls(log, "run_tf_squad.py")
    precision_flags = [flag for flag in call if flag in ("--amp", "--no-amp", "--xla", "--no-xla", "--amp_dtype",
                                                       "float16", "bfloat16")]
    assert precision_flags == expected
    assert call[:2] == ["python", str(REPO_ROOT / "run_tf_squad.py")]
    assert call[-5:-1] == ["--max_steps", "3", "--log_freq", "1"]  # EXTRA_SQUAD_ARGS, then the arguments


@pytest.mark.parametrize("xla, resume, skip_adaptive", [("true", "yes", "1"), ("no", "0", "false"),
                                                       ("xla", "true", "no"), ("no_xla", "no", "yes")])
def test_run_sub_accepts_every_boolean_spelling(xla: str, resume: str, skip_adaptive: str, tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT, SLURM_JOB_ID="7", XLA=xla, RESUME=resume,
                                     skip_adaptive=skip_adaptive, PRECISION="bf16")
    result = run("run.sub", env=env)
    assert result.returncode == 0, result.stderr
    [call] = [c for c in recorded_calls(log) if c[0] == "srun"]
    assert call[:3] == ["srun", "-l", str(tmp_path / "venv" / "bin" / "python")]
    assert ("--xla" in call) == (xla in ("true", "xla")) and ("--no-xla" in call) == (xla in ("no", "no_xla"))
    assert ("--restore_checkpoint" in call) == (resume in ("yes", "true"))
    assert ("--skip_adaptive" in call) == (skip_adaptive in ("1", "yes"))
    assert flags_after(call, "--amp") == ["--amp", "--amp_dtype", "bfloat16"]


def test_run_sub_outside_slurm_says_so(tmp_path: Path):
    env, log = recording_environment(tmp_path, REPO_ROOT)
    env.pop("SLURM_JOB_ID", None)
    env.pop("SLURM_NNODES", None)
    result = run("run.sub", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: run.sub is a Slurm batch script and this is not a Slurm job")
    assert "sbatch" in result.stderr and result.stderr.count("\n") == 1
    assert recorded_calls(log) == []


def pretraining_results(root: Path, phases: dict[str, list[int]]) -> Path:
    """A results folder laid out as scripts/run_pretraining.sh leaves it (checkpoint index files)."""
    for phase, steps in phases.items():
        checkpoints = root / phase / "checkpoints"
        checkpoints.mkdir(parents=True)
        for step in steps:
            (checkpoints / f"ckpt-{step}.index").touch()
            (checkpoints / f"ckpt-{step}.data-00000-of-00001").touch()
    return root


@pytest.mark.parametrize("phases, used", [
    ({"phase1": [500, 1000], "phase2": [100, 930]}, ("phase2", [100, 930])),
    ({"phase1": [500, 1000]}, ("phase1", [500, 1000])),
    ({".": [3]}, (".", [3])),  # one phase's own results folder
])
def test_finetune_ckpts_finds_the_checkpoints_run_pretraining_writes(phases: dict, used: tuple, tmp_path: Path):
    results = pretraining_results(tmp_path / "run", phases)
    env, log = recording_environment(tmp_path, REPO_ROOT)
    result = run("scripts/finetune_ckpts_on_squad.sh", str(results), "dgxa100_1gpu_amp", "train", env=env)
    assert result.returncode == 0, result.stderr
    phase, steps = used
    checkpoint_dir = results / phase / "checkpoints"
    postprocessed = [call[call.index("--pretrained_checkpoint") + 1]
                     for call in program_calls(log, "postprocess_pretrained_ckpt.py")]
    assert postprocessed == [str(checkpoint_dir / f"ckpt-{step}") for step in steps]
    fine_tuned = program_calls(log, "run_tf_squad.py")
    assert [call[call.index("--electra_model") + 1] for call in fine_tuned] == [
        str(results / "postprocessed" / f"ckpt-{step}" / "discriminator") for step in steps]
    assert [call[call.index("--output_dir") + 1] for call in fine_tuned] == [
        str(results / "squad" / f"ckpt-{step}") for step in steps]
    assert all("--do_train" in call and "--do_eval" not in call for call in fine_tuned)  # mode "train" passed on


@pytest.mark.parametrize("launcher, args, program", [
    ("scripts/benchmark_data.sh", ["--repeats", "1"], "scripts/benchmark_data.py"),
    ("scripts/benchmark_pretraining.sh", ["--steps", "1"], "scripts/benchmark_pretraining.py"),
    ("scripts/benchmark_squad.sh", ["--train_steps", "1"], "scripts/benchmark_squad.py"),
    ("data/create_datasets_from_start.sh", ["data/sample_corpus/austen"], "data/dataPrep.py"),
])
def test_launchers_run_their_programs_in_the_environment_setup_env_makes(launcher: str, args: list[str],
                                                                         program: str, tmp_path: Path):
    """`python` is the environment's only after scripts/setup_env.sh put it first on PATH: a
    recorded call proves the launcher set the environment up (run_pretraining.sh, run_squad.sh,
    finetune_ckpts_on_squad.sh and run.sub are recorded the same way above)."""
    env, log = recording_environment(tmp_path, REPO_ROOT, DATA_DIR=str(tmp_path / "data"))
    result = run(launcher, *args, env=env)
    assert result.returncode == 0, result.stderr
    calls = program_calls(log, program.rsplit("/", 1)[-1])
    assert calls and all(call[0] == "python" for call in calls)
    assert calls[0][1] == str(REPO_ROOT / program) and args[-1] in calls[0]
