"""Every journey of the README runs as written: its bash blocks (marked `<!-- journey: NAME -->`)
are run unchanged, in a copy of the repository, with stand-ins only for what this machine lacks:

- GPUs: `horovodrun` asked for 8 processes runs one, and EXTRA_ARGS / EXTRA_SQUAD_ARGS (the
  launchers' own settings) make the model tiny and the runs a few steps long;
- a cluster: `sbatch` runs the batch script at once, here, honouring `--dependency=afterok:ID`,
  and `srun` runs its command as one task;
- the Internet: Wikipedia and SQuAD come from a stand-in HTTPS Internet on 127.0.0.1 (through
  HTTPS_PROXY), Google's ELECTRA from a stand-in Hugging Face Hub (HF_ENDPOINT), both tiny.
Sizes the data launcher takes from the environment (shards) are made small too."""
from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configuration import ElectraConfig
from hub_server import LocalHub
from model_folder import save_model_folder
from modeling import ElectraDiscriminator
from network_stand_in import StandInInternet
from stand_ins import write_program
from test_data_prep import wiki_dump_xml

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900
# A model small enough for a CPU, with the positions phase 2 and SQuAD need.
TINY = ElectraConfig(vocab_size=30522, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=1, intermediate_size=128, max_position_embeddings=512)
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/{split}-v{version}.json"
WIKI_LATEST = "https://dumps.wikimedia.org/enwiki/latest/"


def journey_blocks(name: str) -> list[str]:
    """The bash blocks the README marks as journey NAME."""
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(rf"<!-- journey: {name} -->\n```bash\n(.*?)```", readme, flags=re.S)
    assert blocks, f"no journey {name} in the README"
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


# ----------------------------------------------------------------------------- stand-ins

HOROVODRUN = """# horovodrun on a machine without GPUs: the request is logged, the command runs as one process.
echo "horovodrun $*" >> {log}
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in -np|-H|--hosts|-p) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""
SBATCH = """# sbatch without a cluster: the job runs at once, here (its output in slurm-ID.out, as Slurm
# writes it), after its --dependency=afterok:ID is checked against the jobs run before.
parsable=0 nodes=1 per_node=1 dependency=""
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in
    --parsable) parsable=1; shift ;;
    -N) nodes=$2; shift 2 ;;
    --ntasks-per-node=*) per_node=${{1#*=}}; shift ;;
    --dependency=*) dependency=${{1#*=}}; shift ;;
    *) shift ;;
  esac
done
mkdir -p {jobs}
id=$(( $(ls {jobs} | wc -l) + 1 ))
if [[ -n "$dependency" && "$(cat {jobs}/${{dependency#afterok:}} 2>/dev/null)" != 0 ]]; then
  echo "sbatch: job $id's dependency $dependency is never satisfied" >&2; exit 1
fi
echo "sbatch job $id: nodes=$nodes tasks_per_node=$per_node dependency=$dependency $*" >> {log}
SLURM_JOB_ID=$id SLURM_NNODES=$nodes SLURM_NTASKS=$((nodes * per_node)) SLURM_SUBMIT_DIR="$PWD" \\
  bash "$@" > "slurm-$id.out" 2>&1
echo $? > {jobs}/$id
if (( parsable )); then echo "$id"; else echo "Submitted batch job $id"; fi
"""
SRUN = """# srun without a cluster: the request is logged, the command runs as one task.
echo "srun $*" >> {log}
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in -N|-n|--nodes|--ntasks) shift 2 ;; *) shift ;; esac
done
SLURM_NTASKS=1 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NNODES=1 exec "$@"
"""


def mirror_environment(folder: Path, workspace: Path, horovodrun: str) -> Path:
    """An environment scripts/setup_env.sh takes as up to date (its install stamps match the
    workspace's requirements) whose interpreter and packages are this test run's, with the
    stand-in `horovodrun` as its own (setup_env.sh puts the environment first on PATH)."""
    real = Path(sys.prefix)
    folder.mkdir()
    (folder / "bin").mkdir()
    for entry in (real / "bin").iterdir():
        if entry.name != "horovodrun":
            (folder / "bin" / entry.name).symlink_to(entry)
    write_program(folder / "bin" / "horovodrun", horovodrun)
    (folder / "lib").symlink_to(real / "lib")
    shutil.copy(real / "pyvenv.cfg", folder / "pyvenv.cfg")
    for requirements in ("requirements.txt", "requirements-test.txt"):
        digest = hashlib.sha256((workspace / requirements).read_bytes()).hexdigest()
        (folder / f".installed-{requirements}.sha256").write_text(f"{digest}  -\n")
    return folder


def copy_repository(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, destination / name)
    return destination


def wikipedia_files(sample_corpus_dir: Path) -> dict[str, bytes]:
    """Wikimedia's dump and SHA-1 listing, the dump holding Persuasion's chapters as articles."""
    sys.path.insert(0, str(REPO_ROOT / "data"))
    from text_formatting import text_documents

    chapters = text_documents((sample_corpus_dir / "persuasion.txt").read_text(encoding="utf-8"), "chapter")
    pages = [(f"Chapter {i}", 0, "\n\n".join(paragraphs)) for i, paragraphs in enumerate(chapters, 1)]
    dump = bz2.compress(wiki_dump_xml(pages).encode("utf-8"))
    listing = f"{hashlib.sha1(dump).hexdigest()}  enwiki-20261201-pages-articles.xml.bz2\n"
    return {WIKI_LATEST + "enwiki-latest-pages-articles.xml.bz2": dump,
            WIKI_LATEST + "enwiki-latest-sha1sums.txt": listing.encode()}


def squad_files(folder: Path) -> dict[str, bytes]:
    """Small SQuAD v1.1 and v2.0 files (cloze questions from the sample novels)."""
    files = {}
    for version in ("1.1", "2.0"):
        subprocess.run([sys.executable, str(REPO_ROOT / "data" / "cloze_squad.py"), "--output-dir",
                        str(folder / version), "--version", version, "--num-train-questions", "40",
                        "--num-dev-questions", "10"], check=True, capture_output=True, timeout=300)
        for split in ("train", "dev"):
            files[SQUAD_URL.format(split=split, version=version)] = (
                folder / version / f"{split}-v{version}.json").read_bytes()
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sample_corpus_dir: Path):
    """The repository's copy, its environment, the stand-ins, and how to run a journey there."""
    root = tmp_path_factory.mktemp("journeys")
    workspace = copy_repository(root / "electra")
    log = root / "stand-ins.log"
    venv = mirror_environment(root / "venv", workspace, HOROVODRUN.format(log=log))
    stand_ins = root / "stand-ins"
    stand_ins.mkdir()
    write_program(stand_ins / "sbatch", SBATCH.format(log=log, jobs=root / "jobs"))
    write_program(stand_ins / "srun", SRUN.format(log=log))
    config = root / "tiny_config.json"
    TINY.save_json(str(config), architectures=["ElectraForPreTraining"])
    released = root / "released" / "electra-base-discriminator"
    save_model_folder(ElectraDiscriminator(TINY), str(released))
    shutil.copy(REPO_ROOT / "vocab" / "vocab.txt", released / "vocab.txt")
    files = {**wikipedia_files(sample_corpus_dir), **squad_files(root / "squad")}
    with StandInInternet(files, root) as internet, LocalHub({"google/electra-base-discriminator": released}) as hub:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_", "SLURM_")) and k not in ("ENGINE", "EXTRA_ARGS", "VIRTUAL_ENV")}
        env = {**base, **internet.environment(), "PATH": f"{stand_ins}{os.pathsep}{base['PATH']}",
               "ELECTRA_VENV": str(venv), "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(root / "hf-cache"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "N_PROCESSES": "2"}
        env.pop("PYTHON", None)
        yield {"workspace": workspace, "env": env, "log": log, "config": config, "internet": internet,
               "hub": hub, "jobs": root / "jobs"}


def run_block(world: dict, block: str, **settings: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=world["workspace"],
                            env={**world["env"], **settings}, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{block}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def tiny_pretraining(world: dict) -> str:
    """EXTRA_ARGS for run_pretraining.sh and run.sub: the tiny model, two steps, one checkpoint kept."""
    return (f"--model_config {world['config']} --train_batch_size 4 --gradient_accumulation_steps 1 "
            "--num_train_steps 2 --num_warmup_steps 1 --save_checkpoints_steps 2 --keep_checkpoint_max 1 "
            "--log_freq 1 --no-xla")


TINY_SQUAD = "--max_steps 2 --no-xla --predict_batch_size 16"


def stand_in_calls(world: dict, program: str) -> list[str]:
    lines = world["log"].read_text().splitlines() if world["log"].exists() else []
    return [line for line in lines if line.startswith(program + " ")]


# ----------------------------------------------------------------------------- the journeys

def test_try_it_on_a_cpu(world: dict):
    """Journey 1, with the quick start's own size settings made smaller."""
    [block] = journey_blocks("cpu")
    result = run_block(world, block, PRETRAIN_STEPS="10", FINETUNE_EPOCHS="1", NUM_TRAIN_QUESTIONS="32",
                       NUM_DEV_QUESTIONS="8")
    results = world["workspace"] / "results" / "quickstart"
    assert result.stdout.rstrip().endswith(f"everything is in {results}")
    assert {"exact_match", "f1"} <= json.loads((results / "squad" / "eval_results.json").read_text()).keys()
    assert (results / "squad" / "model" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def wikipedia(world: dict) -> Path:
    """Journey 2's first command: Wikipedia (and SQuAD) to TFRecords, from the stand-in Internet."""
    [block, *_] = journey_blocks("node")
    data_command = commands(block)[0]
    assert data_command == "bash data/create_datasets_from_start.sh wiki_only"
    run_block(world, data_command, N_TRAINING_SHARDS="4", N_TEST_SHARDS="2")
    served = set(world["internet"].requests)
    assert {WIKI_LATEST + "enwiki-latest-pages-articles.xml.bz2", SQUAD_URL.format(split="dev", version="1.1")} <= served
    return world["workspace"] / "data"


def test_pretrain_on_one_8_gpu_node(world: dict, wikipedia: Path):
    """Journey 2: the data (fixture above), both phases on '8 GPUs', every checkpoint on SQuAD."""
    for length in (128, 512):
        assert len(list((wikipedia / f"tfrecord_lower_case_1_seq_len_{length}_random_seed_12345" / "wikicorpus_en"
                         / "train").glob("pretrain_data.tfrecord-*"))) == 4
    [block] = journey_blocks("node")
    rest = "\n".join(commands(block)[1:])
    run_block(world, rest, EXTRA_ARGS=tiny_pretraining(world), EXTRA_SQUAD_ARGS=TINY_SQUAD, ENGINE="horovod")
    results = world["workspace"] / "results" / "electra_lamb_pretraining"
    for phase in ("phase1", "phase2"):
        assert (results / phase / "checkpoints" / "ckpt-2.index").exists()
        assert json.loads((results / phase / "run_config.json").read_text())["max_seq_length"] == (
            128 if phase == "phase1" else 512)
    assert (results / "postprocessed" / "ckpt-2" / "discriminator" / "model.safetensors").exists()
    assert {"exact_match", "f1"} <= json.loads((results / "squad" / "ckpt-2" / "eval_results.json").read_text()).keys()
    # The recipe asked for 8 processes each time: phase 1, phase 2, fine-tuning.
    assert [call.split()[3] for call in stand_in_calls(world, "horovodrun")][-3:] == ["8", "8", "8"]


def test_the_container_journey_runs_the_node_journey_in_the_container():
    """Journey 2 in the container: build the image, then the bare-metal commands through launch.sh."""
    [node] = journey_blocks("node")
    [container] = journey_blocks("container")
    lines = commands(container)
    assert lines[0] == "bash scripts/docker/build.sh"
    assert [line.removeprefix("bash scripts/docker/launch.sh ") for line in lines[1:]] == commands(node)
    assert all(line.startswith("bash scripts/docker/launch.sh ") for line in lines[1:])
    assert (REPO_ROOT / "scripts" / "docker" / "build.sh").is_file() and (REPO_ROOT / "scripts" / "docker" /
                                                                        "launch.sh").is_file()


def test_a_slurm_cluster_phases_chained(world: dict, wikipedia: Path):
    """Journey 3: the environment made on a GPU node, phase 1, then phase 2 after it (afterok)."""
    [block] = journey_blocks("slurm")
    run_block(world, block, EXTRA_ARGS=tiny_pretraining(world))
    results = world["workspace"] / "results" / "slurm"
    assert (results / "phase1" / "checkpoints" / "ckpt-2.index").exists()
    assert (results / "phase2" / "checkpoints" / "ckpt-2.index").exists()
    jobs = stand_in_calls(world, "sbatch")[-2:]
    assert re.match(r"sbatch job (\d+): nodes=48 tasks_per_node=8 dependency= run.sub$", jobs[0]), jobs
    first = jobs[0].split()[2].rstrip(":")
    assert jobs[1].endswith(f"nodes=48 tasks_per_node=8 dependency=afterok:{first} run.sub"), jobs
    assert [(world["jobs"] / job.split()[2].rstrip(":")).read_text().strip() for job in jobs] == ["0", "0"]
    phase2_log = (world["workspace"] / f"slurm-{int(first) + 1}.out").read_text()
    assert "Phase 2 on 48 node(s), 384 task(s)" in phase2_log
    assert "Phase 2 starts from phase-1 checkpoint" in phase2_log
    assert "srun -N 1 --gpus-per-node=1 bash scripts/setup_env.sh" in stand_in_calls(world, "srun")


@pytest.fixture(scope="module")
def fine_tuned(world: dict) -> subprocess.CompletedProcess:
    """Journey 4, run once: SQuAD and Google's ELECTRA-base from the stand-ins, on '8 GPUs'."""
    [block] = journey_blocks("squad")
    world["hub"].requests.clear()
    return run_block(world, block, EXTRA_SQUAD_ARGS=TINY_SQUAD, ENGINE="horovod")


def test_fine_tune_and_evaluate_a_released_model_on_squad(world: dict, fine_tuned: subprocess.CompletedProcess):
    results = world["workspace"] / "results"
    evaluation = json.loads((results / "eval_results.json").read_text())
    assert {"exact_match", "f1"} <= evaluation.keys()
    assert len(json.loads((results / "predictions.json").read_text())) == 10
    assert (results / "model" / "model.safetensors").exists() and (results / "logfile.txt").exists()
    fetched = {path.rsplit("/", 1)[-1] for method, path in world["hub"].requests
               if method == "GET" and "/google/electra-base-discriminator/resolve/" in path}
    assert fetched == {"config.json", "vocab.txt", "model.safetensors"}
    assert (Path(world["env"]["HF_HUB_CACHE"]) / "models--google--electra-base-discriminator").is_dir()


def test_answer_one_question(world: dict, fine_tuned: subprocess.CompletedProcess):
    [block] = journey_blocks("answer")
    result = run_block(world, block)
    answer, score = result.stdout.strip().splitlines()[-2:]
    assert answer.startswith("answer: ") and score.startswith("score: "), result.stdout
    context = re.search(r'--context "([^"]+)"', block).group(1)
    text = answer.removeprefix("answer: ")
    assert text == "(no answer)" or text in context  # cut from the context as written
