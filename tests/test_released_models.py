"""Released models by name (google/electra-*), through huggingface_hub and without network: a cache
laid out as the hub lays it out and found through HF_HUB_CACHE or HF_HOME, downloads from a
stand-in hub on 127.0.0.1 (HF_ENDPOINT), the command the error message names, and one clear line
when the model is neither cached nor downloadable."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file

from configuration import ElectraConfig
from hub_server import LocalHub
from model_folder import save_model_folder
from modeling import ElectraDiscriminator, ElectraGenerator

# Each case starts Python processes that import TensorFlow (about 10 s each here).
pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ElectraConfig(vocab_size=120, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=32)
NAME = "google/electra-small-discriminator"
HF_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "XDG_CACHE_HOME",
                "HF_HUB_DISABLE_TELEMETRY")


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny stand-ins of a released pair as the hub holds them (plus files not to download)."""
    root = tmp_path_factory.mktemp("released")
    folders = {"discriminator": root / "discriminator", "generator": root / "generator"}
    discriminator = ElectraDiscriminator(TINY)
    # Released pairs were trained with one embedding block, as the pretraining model here has.
    generator = ElectraGenerator(TINY.generator_config(hidden_fraction=0.5),
                                 embeddings=discriminator.electra.embeddings)
    save_model_folder(discriminator, str(folders["discriminator"]))
    save_model_folder(generator, str(folders["generator"]))
    for folder in folders.values():
        (folder / "vocab.txt").write_text("".join(f"token{i}\n" for i in range(TINY.vocab_size)))
        (folder / "tf_model.h5").write_bytes(b"not wanted")
        (folder / "README.md").write_text("a model card")
    return folders


def python(code: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def hub_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without the user's Hugging Face settings, plus `settings`
    (HF_ENDPOINT defaults to a closed port: a test reaches no real network)."""
    env = {k: v for k, v in os.environ.items() if k not in HF_VARIABLES}
    return {**env, "HOME": str(tmp_path / "home"), "HF_ENDPOINT": "http://127.0.0.1:9", "TF_CPP_MIN_LOG_LEVEL": "3",
            **settings}


RESOLVE = "from model_folder import resolve_model_folder; print(resolve_model_folder({name!r}))"


def lay_out_like_the_hub(cache: Path, name: str, source: Path, files: tuple[str, ...]) -> Path:
    """blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main = <commit>: the
    layout huggingface_hub writes."""
    repo = cache / ("models--" + name.replace("/", "--"))
    commit = hashlib.sha1(name.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in files:
        content = (source / file).read_bytes()
        etag = hashlib.sha256(content).hexdigest()
        (repo / "blobs" / etag).write_bytes(content)
        (repo / "snapshots" / commit / file).symlink_to(Path("..", "..", "blobs", etag))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_a_cached_model_is_found_through_the_cache_variables_with_no_request(variable: str, released: dict,
                                                                              tmp_path: Path):
    cache = tmp_path / "hub-cache"
    snapshot = lay_out_like_the_hub(cache, NAME, released["discriminator"], ("config.json", "model.safetensors"))
    setting = str(cache) if variable == "HF_HUB_CACHE" else str(tmp_path)  # HF_HOME: its hub/ folder
    if variable == "HF_HOME":
        cache.rename(tmp_path / "hub")
        snapshot = tmp_path / "hub" / snapshot.relative_to(cache)
    with LocalHub({}) as hub:
        result = python(RESOLVE.format(name=NAME) + "\nfrom model_folder import load_model_folder\n"
                        f"model, _ = load_model_folder({NAME!r}); print(model.config.hidden_size)",
                        hub_environment(tmp_path, **{variable: setting, "HF_ENDPOINT": hub.url}))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(snapshot), str(TINY.hidden_size)]
        assert hub.requests == []  # a cached model costs no network access


def test_a_missing_model_is_downloaded_into_hf_hub_cache_from_hf_endpoint(released: dict, tmp_path: Path):
    cache = tmp_path / "cache"
    with LocalHub({NAME: released["discriminator"]}) as hub:
        env = hub_environment(tmp_path, HF_HUB_CACHE=str(cache), HF_ENDPOINT=hub.url)
        result = python(RESOLVE.format(name=NAME), env)
        assert result.returncode == 0, result.stderr
        snapshot = Path(result.stdout.split()[-1])
        assert snapshot.parent.parent == cache / "models--google--electra-small-discriminator"
        assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
        for name in ("config.json", "model.safetensors", "vocab.txt"):
            assert (snapshot / name).read_bytes() == (released["discriminator"] / name).read_bytes()
        served = [path.rsplit("/", 1)[-1] for method, path in hub.requests if method == "GET" and "/resolve/" in path]
        assert sorted(served) == ["config.json", "model.safetensors", "vocab.txt"]  # not the TF or card files
        hub.requests.clear()
        again = python(RESOLVE.format(name=NAME), env)
        assert again.returncode == 0 and again.stdout.split()[-1] == str(snapshot)
        assert hub.requests == []


def test_a_model_with_only_pytorch_weights_downloads_those(released: dict, tmp_path: Path):
    """Repositories from before safetensors hold pytorch_model.bin (read with PyTorch)."""
    folder = tmp_path / "old-style"
    folder.mkdir()
    (folder / "config.json").write_bytes((released["discriminator"] / "config.json").read_bytes())
    tensors = load_file(released["discriminator"] / "model.safetensors")
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, folder / "pytorch_model.bin")
    with LocalHub({NAME: folder}) as hub:
        env = hub_environment(tmp_path, HF_HUB_CACHE=str(tmp_path / "cache"), HF_ENDPOINT=hub.url)
        result = python(RESOLVE.format(name=NAME) + "\nfrom model_folder import read_tensors\n"
                        f"print(len(read_tensors(resolve_model_folder({NAME!r}))))", env)
    assert result.returncode == 0, result.stderr
    snapshot, count = result.stdout.split()[-2:]
    assert sorted(p.name for p in Path(snapshot).iterdir()) == ["config.json", "pytorch_model.bin"]
    assert int(count) == len(tensors)


def run_program(program: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / program), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("program, args, situation", [
    ("run_tf_squad.py", ["--electra_model", "google/electra-base-discriminator", "--do_predict",
                         "--predict_file", "unused.json", "--output_dir", "OUT"], "offline"),
    ("run_inference.py", ["--init_checkpoint", "google/electra-base-discriminator", "--question", "Who?",
                          "--context", "Anne."], "unreachable"),
])
def test_neither_cached_nor_downloadable_is_one_clear_line(program: str, args: list[str], situation: str,
                                                          tmp_path: Path):
    settings = {"HF_HUB_CACHE": str(tmp_path / "cache")}
    if situation == "offline":
        settings["HF_HUB_OFFLINE"] = "1"
    args = [str(tmp_path / a) if a in ("unused.json", "OUT") else a for a in args]
    result = run_program(program, args, hub_environment(tmp_path, **settings))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    reason = "HF_HUB_OFFLINE is set" if situation == "offline" else "the Hub could not be reached"
    assert (f"google/electra-base-discriminator is not in the Hugging Face cache ({tmp_path / 'cache'}) and was "
            f"not downloaded ({reason}") in errors[0]
    assert ("run `hf download google/electra-base-discriminator config.json vocab.txt model.safetensors`"
            in errors[0])
    assert not (tmp_path / "OUT").exists()


def test_the_command_the_message_names_fills_the_cache(released: dict, tmp_path: Path):
    """`hf download NAME config.json vocab.txt model.safetensors`, as the message says, then the
    model is found offline."""
    hf = Path(sys.executable).parent / "hf"
    cache = tmp_path / "cache"
    with LocalHub({NAME: released["discriminator"]}) as hub:
        env = hub_environment(tmp_path, HF_HUB_CACHE=str(cache), HF_ENDPOINT=hub.url)
        download = subprocess.run([str(hf), "download", NAME, "config.json", "vocab.txt", "model.safetensors"],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert download.returncode == 0, download.stdout + download.stderr
    found = python(RESOLVE.format(name=NAME), {**env, "HF_HUB_OFFLINE": "1"})
    assert found.returncode == 0, found.stderr
    assert (Path(found.stdout.split()[-1]) / "model.safetensors").read_bytes() == (
        released["discriminator"] / "model.safetensors").read_bytes()


def test_pretraining_starts_from_a_released_pair_by_name(released: dict, tmp_path: Path):
    """run_pretraining.py --init_checkpoint google/electra-small: both released models are fetched
    and every weight of the pretraining model comes from them."""
    config_file = tmp_path / "config.json"
    config_file.write_text((released["discriminator"] / "config.json").read_text())
    code = f"""
import json, numpy as np, run_pretraining
from model_folder import read_tensors, hf_parameters
args = run_pretraining.parse_args(["--model_config", {str(config_file)!r}, "--generator_hidden_size", "0.5",
                                    "--max_seq_length", "32",
                                    "--pretrain_tfrecords", "unused", "--init_checkpoint", "google/electra-small"])
model = run_pretraining.build_model(args)
run_pretraining.load_init_checkpoint(model, args.init_checkpoint)
folders = {{"discriminator": {str(released["discriminator"])!r}, "generator": {str(released["generator"])!r}}}
for part, folder in folders.items():
    expected = read_tensors(folder)
    for name, param in hf_parameters(getattr(model, part)).items():
        value = param.variable.numpy()
        np.testing.assert_array_equal(value.T if param.transpose else value, expected[name])
print("same weights")
"""
    with LocalHub({"google/electra-small-discriminator": released["discriminator"],
                   "google/electra-small-generator": released["generator"]}) as hub:
        result = python(code, hub_environment(tmp_path, HF_HUB_CACHE=str(tmp_path / "cache"), HF_ENDPOINT=hub.url))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["same", "weights"]
    assert {path.split("/")[2] for _, path in hub.requests if "/resolve/" in path} == {
        "electra-small-discriminator", "electra-small-generator"}
