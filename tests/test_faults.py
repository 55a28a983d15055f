"""Faults and bad input: removals stay inside the folder a script owns, a failed rebuild keeps the
previous dataset, bad input gives one line naming the file and the fix (never a traceback), a
vocabulary that does not fit the corpus is caught, downloads never leave HTTPS, and a damaged
newest checkpoint is passed over for the previous one (set aside, never deleted)."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import trustme

import build_pretraining_dataset as bpd
import damage
import safe_io
import tokenization

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "vocab" / "vocab.txt"
REMOVE_WITHIN = REPO / "scripts" / "lib" / "remove_within.sh"
sys.path.insert(0, str(REPO / "data"))
import download_utils  # noqa: E402
from damaged_tfrecords import damage_record  # noqa: E402

TIMEOUT = 600


def one_line_error(process: subprocess.CompletedProcess) -> str:
    """The program failed with exit 1 and exactly one ERROR line, no traceback; returns it."""
    assert process.returncode == 1, process.stdout[-2000:] + process.stderr[-2000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    errors = [line for line in process.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, process.stderr[-3000:]
    return errors[0]


def run_program(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- removals (item 1)

def bash_remove_within(root: Path, *paths: str, cwd: Path) -> subprocess.CompletedProcess:
    script = f'set -euo pipefail; source "{REMOVE_WITHIN}"; remove_within "$@"'
    return subprocess.run(["bash", "-c", script, "remove_within", str(root), *paths], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """runs/my results/{squad_data,keep.txt}, a sibling runs/my/keep.txt, and a folder outside
    both that a link inside the results points to."""
    results = tmp_path / "runs" / "my results"
    (results / "squad_data").mkdir(parents=True)
    (results / "squad_data" / "train.json").write_text("old")
    (results / "keep.txt").write_text("keep")
    (tmp_path / "runs" / "my").mkdir()
    (tmp_path / "runs" / "my" / "keep.txt").write_text("sibling")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("outside")
    (results / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return results


def test_bash_remove_within_removes_a_path_with_spaces_and_nothing_else(runs: Path, tmp_path: Path):
    result = bash_remove_within(runs, str(runs / "squad_data"), str(runs / "link"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (runs / "squad_data").exists() and not (runs / "link").exists()
    assert (runs / "keep.txt").exists() and (tmp_path / "runs" / "my" / "keep.txt").read_text() == "sibling"
    assert (tmp_path / "outside" / "keep.txt").read_text() == "outside"  # the link went, not its target


@pytest.mark.parametrize("path", ["{results}/../my", "{results}/link/keep.txt", "{results}", "{results}/.",
                                  "/", "{tmp}/runs/my"])
def test_bash_remove_within_refuses_what_is_outside_and_removes_nothing(runs: Path, tmp_path: Path, path: str):
    before = tree_bytes(tmp_path)
    result = bash_remove_within(runs, str(runs / "squad_data"), path.format(results=runs, tmp=tmp_path),
                                cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: refusing to remove")
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_bytes(tmp_path) == before  # every path is checked before any is removed


def test_python_remove_within_refuses_what_is_outside(runs: Path, tmp_path: Path):
    for path in (runs / ".." / "my", runs / "link" / "keep.txt", runs, tmp_path / "runs" / "my"):
        with pytest.raises(safe_io.UserError, match="refusing to remove"):
            safe_io.remove_within(runs, path)
    safe_io.remove_within(runs, runs / "squad_data", runs / "link")
    assert sorted(p.name for p in runs.iterdir()) == ["keep.txt"]
    assert (tmp_path / "outside" / "keep.txt").exists() and (tmp_path / "runs" / "my" / "keep.txt").exists()


def test_quickstart_stage_in_a_results_folder_with_spaces_leaves_its_siblings(runs: Path, tmp_path: Path):
    """`--results "runs/my results" --stage squad_data` used to remove runs/my and ./results/squad_data."""
    (runs / ".done-data").touch()
    for sibling in (tmp_path / "results" / "squad_data", tmp_path / "runs" / "my"):
        sibling.mkdir(parents=True, exist_ok=True)
        (sibling / "keep.txt").write_text("sibling")
    process = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), "--reduced", "--results",
                              "runs/my results", "--stage", "squad_data"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=TIMEOUT)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    for sibling in (tmp_path / "results" / "squad_data", tmp_path / "runs" / "my"):
        assert (sibling / "keep.txt").read_text() == "sibling"
    assert (tmp_path / "outside" / "keep.txt").exists() and (runs / "keep.txt").exists()
    assert sorted(p.name for p in (runs / "squad_data").iterdir()) == ["baselines-v1.1.json", "dev-v1.1.json",
                                                                      "train-v1.1.json"]


# ----------------------------------------------------------------------------- rebuilds (item 2, 7)

def build_command(corpus: Path, output: Path, vocab: Path = VOCAB) -> list[str]:
    return ["build_pretraining_dataset.py", "--corpus-dir", str(corpus), "--output-dir", str(output),
            "--vocab-file", str(vocab), "--num-out-files", "2", "--max-seq-length", "32"]


def build_small_dataset(folder: Path) -> dict[str, Path]:
    """FOLDER/corpus (the start of Persuasion) and FOLDER/dataset, its TFRecords of length 32."""
    corpus, output = folder / "corpus", folder / "dataset"
    corpus.mkdir()
    text = (REPO / "data" / "sample_corpus" / "austen" / "persuasion.txt").read_text(encoding="utf-8")
    (corpus / "a.txt").write_text("\n".join(" ".join(text[i:i + 300].split()) for i in range(0, 60_000, 300)),
                                  encoding="utf-8")
    assert bpd.main(build_command(corpus, output)[1:]) == 0
    return {"corpus": corpus, "output": output}


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Path]:
    """A corpus and the complete dataset built from it, with a file of the user's beside it."""
    dataset = build_small_dataset(tmp_path)
    (dataset["output"] / "notes.txt").write_text("the user's own file")
    return dataset


def test_a_failed_rebuild_leaves_the_previous_dataset_byte_identical(built: dict[str, Path], tmp_path: Path):
    before = tree_bytes(built["output"])
    assert len(before) == 4  # two TFRecord files, the summary, the user's file
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for name in ("a.txt", "b.txt"):
        (unreadable / name).write_bytes(bytes(range(256)) * 4)  # NUL bytes, not UTF-8
    error = one_line_error(run_program(*build_command(unreadable, built["output"])))
    assert "no example could be built" in error and str(unreadable / "a.txt") in error
    assert tree_bytes(built["output"]) == before


def test_a_rebuild_replaces_the_previous_outputs_and_keeps_the_users_files(built: dict[str, Path]):
    old = tree_bytes(built["output"])
    assert bpd.main([*build_command(built["corpus"], built["output"])[1:], "--num-out-files", "3"]) == 0
    new = tree_bytes(built["output"])
    assert sorted(new) == ["build_summary.json", "notes.txt", *(f"pretrain_data.tfrecord-{i}-of-3" for i in range(3))]
    assert new["notes.txt"] == old["notes.txt"]


def special_tokens_vocab(tmp_path: Path) -> Path:
    vocab = tmp_path / "special_vocab.txt"
    vocab.write_text("\n".join(tokenization.SPECIAL_TOKENS) + "\n", encoding="utf-8")
    return vocab


def test_a_vocab_of_only_special_tokens_fails_and_keeps_the_previous_dataset(built: dict[str, Path],
                                                                           tmp_path: Path):
    before = tree_bytes(built["output"])
    vocab = special_tokens_vocab(tmp_path)
    error = one_line_error(run_program(*build_command(built["corpus"], built["output"], vocab)))
    assert "100% of the" in error and "tokens are [UNK]" in error and str(vocab) in error
    assert tree_bytes(built["output"]) == before


def test_many_unknown_tokens_give_a_warning_and_the_count_in_the_summary(tmp_path: Path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Per line: 6 words WordPiece knows, and 1 emoji it maps to [UNK]: 1/7 unknown.
    (corpus / "a.txt").write_text("the cat sat on the mat \U0001F600\n" * 400, encoding="utf-8")
    assert bpd.main(build_command(corpus, tmp_path / "out")[1:]) == 0
    summary = json.loads((tmp_path / "out" / bpd.SUMMARY_NAME).read_text())
    assert (summary["unknown_tokens"], summary["tokens"]) == (400, 2800)
    assert "14.3% of the 2800 tokens are [UNK]" in caplog.text


# ----------------------------------------------------------------------------- one-line errors (item 6)

def test_a_vocab_that_is_not_utf8_is_named_with_its_line(tmp_path: Path, built: dict[str, Path]):
    vocab = tmp_path / "latin1_vocab.txt"
    vocab.write_bytes("\n".join([*tokenization.SPECIAL_TOKENS, "caf\u00e9"]).encode("latin-1") + b"\n")
    error = one_line_error(run_program(*build_command(built["corpus"], tmp_path / "out", vocab)))
    assert f"vocab file {vocab}: line 6 is not UTF-8" in error
    with pytest.raises(safe_io.UserError, match="line 6 is not UTF-8"):
        tokenization.WordPieceTokenizer(str(vocab))


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in, for root too (root writes through permission bits)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir(mode=0o500)
        return folder
    return Path("/sys")  # sysfs: no file can be created at its top, even by root


@pytest.mark.parametrize("case", ["a file", "in a file", "unwritable"])
@pytest.mark.parametrize("program", ["build_pretraining_dataset.py", "postprocess_pretrained_ckpt.py"])
def test_an_output_dir_that_is_not_a_writable_folder_is_one_line(program: str, case: str, tmp_path: Path,
                                                                 built: dict[str, Path]):
    (tmp_path / "file").write_text("a file")
    output = {"a file": tmp_path / "file", "in a file": tmp_path / "file" / "out",
              "unwritable": unwritable_folder(tmp_path)}[case]
    if program == "build_pretraining_dataset.py":
        command = build_command(built["corpus"], output)
        flag = "--output-dir"
    else:
        command = [program, "--pretrained_checkpoint", str(tmp_path / "checkpoints"), "--output_dir", str(output)]
        flag = "--output_dir"
    error = one_line_error(run_program(*command))
    expected = "is a file, not a folder" if case == "a file" else "is not a writable folder"
    assert f"{flag} {output} {expected}" in error
    assert (tmp_path / "file").read_text() == "a file"


# ----------------------------------------------------------------------------- downloads (item 12)

class RedirectServer:
    """A server on 127.0.0.1 (HTTPS when given an SSL context) that answers /moved with a
    redirect to `target` and /file with b"payload"; it records the paths it was asked for."""

    def __init__(self, context: ssl.SSLContext | None = None):
        self.target = ""
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", server.target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", "7")
                    self.end_headers()
                    self.wfile.write(b"payload")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if context is not None else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedirectServer, RedirectServer, requests.Session]]:
    """An HTTPS server (certificate of a test CA) and a plain HTTP one, and a session that
    trusts the CA and ignores proxy settings."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    secure, plain = RedirectServer(context), RedirectServer()
    session = requests.Session()
    session.trust_env = False
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    session.verify = str(tmp_path / "ca.pem")
    yield secure, plain, session
    secure.close()
    plain.close()


def test_a_redirect_from_https_to_http_is_refused_before_it_is_followed(servers, tmp_path: Path):
    secure, plain, session = servers
    secure.target = plain.url("/file")
    retry = download_utils.RetryPolicy(max_attempts=1)
    with pytest.raises(download_utils.DownloadError, match="refusing the redirect .* it leaves HTTPS"):
        download_utils.download_file(secure.url("/moved"), tmp_path / "file", retry=retry, show_progress=False,
                                     session=session)
    with pytest.raises(download_utils.DownloadError, match="leaves HTTPS"):
        download_utils.fetch_text(secure.url("/moved"), retry, session=session)
    assert plain.requests == [] and list(tmp_path.glob("file*")) == []


def test_a_redirect_that_stays_on_https_is_followed(servers, tmp_path: Path):
    secure, _, session = servers
    secure.target = secure.url("/file")
    path = download_utils.download_file(secure.url("/moved"), tmp_path / "file", show_progress=False,
                                        session=session)
    assert path.read_bytes() == b"payload" and secure.requests == ["/moved", "/file"]


# ----------------------------------------------------------------------------- pretraining runs (items 6, 13)

TINY_CONFIG = {"vocab_size": 30522, "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 1, "intermediate_size": 128, "max_position_embeddings": 128}


def pretraining_command(tmp_path: Path, tfrecords: str, results: Path, *extra: str,
                        max_position_embeddings: int = 128) -> list[str]:
    config = tmp_path / f"config_{max_position_embeddings}.json"
    config.write_text(json.dumps({**TINY_CONFIG, "max_position_embeddings": max_position_embeddings}))
    return ["run_pretraining.py", "--model_config", str(config), "--generator_hidden_size", "1.0",
            "--pretrain_tfrecords", tfrecords, "--train_batch_size", "4", "--learning_rate", "1e-3",
            "--num_warmup_steps", "2", "--shuffle_buffer", "100", "--results_dir", str(results), *extra]


def test_tfrecords_of_another_length_are_one_line_before_training(built: dict[str, Path], tmp_path: Path):
    """The dataset of `built` has length 32; a run of length 128 used to die with a 40-line traceback."""
    tfrecords = str(built["output"] / "pretrain_data.tfrecord-*")
    error = one_line_error(run_program(*pretraining_command(tmp_path, tfrecords, tmp_path / "run",
                                                            "--max_seq_length", "128")))
    assert (f"{built['output']}/pretrain_data.tfrecord-0-of-2: its records hold input_ids of length 32, but "
            "--max_seq_length is 128: pass --max_seq_length 32, or rebuild the TFRecords with "
            "build_pretraining_dataset.py --max-seq-length 128") in error


def test_max_position_embeddings_below_the_sequence_length_is_one_line(built: dict[str, Path], tmp_path: Path):
    tfrecords = str(built["output"] / "pretrain_data.tfrecord-*")
    error = one_line_error(run_program(*pretraining_command(tmp_path, tfrecords, tmp_path / "run",
                                                            "--max_seq_length", "32", max_position_embeddings=16)))
    assert (f"max_position_embeddings in {tmp_path / 'config_16.json'} is 16, below --max_seq_length 32: raise it "
            "or pass a smaller --max_seq_length") in error


def metrics_records(results: Path) -> dict[int, dict]:
    lines = (results / "logs" / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def checkpoint_tensors(path: Path) -> dict[str, object]:
    import tensorflow as tf

    return {name: tf.train.load_checkpoint(str(path)).get_tensor(name) for name, _ in tf.train.list_variables(str(path))
            if not name.startswith(("iterator", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def stop_with_sigterm_at_progress(command: list[str], step: int, total: int) -> int:
    """Start a run, SIGTERM it once its progress bar shows `step` of `total` steps done; the step
    it stopped at (the handler runs between steps, so `step` or a later one)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: process.stderr.read1(4096), b"")))
    reader.start()
    deadline = time.monotonic() + TIMEOUT
    shown = re.compile(rb"\b(\d+)/%d \[" % total)
    while time.monotonic() < deadline and process.poll() is None:
        if any(int(n) >= step for n in shown.findall(b"".join(chunks))):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    process.wait(timeout=TIMEOUT)
    reader.join()
    stderr = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0 and "SIGTERM received" in stderr, stderr[-3000:]
    return int(stderr.split("saved a checkpoint at step ")[1].split(",")[0])


@pytest.mark.slow
def test_a_run_resumed_after_sigterm_mid_window_logs_what_the_readme_says(austen_tfrecords, tmp_path: Path):
    """What is identical after SIGTERM and resume (README, "Resuming"): the weights, and every
    window of --log_freq steps that ran wholly after the resume; the first window after a stop
    mid-window averages only the steps since the resume, and the stopped run logs no partial
    window."""
    import numpy as np

    steps = ("--num_train_steps", "16", "--log_freq", "4", "--save_checkpoints_steps", "100")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    one_run = run_program(*pretraining_command(tmp_path, austen_tfrecords["train"], straight, *steps))
    assert one_run.returncode == 0, one_run.stderr[-3000:]
    for _ in range(3):  # until the stop lands mid-window (the bar may show a step late)
        stopped_at = stop_with_sigterm_at_progress(
            [sys.executable, *pretraining_command(tmp_path, austen_tfrecords["train"], interrupted, *steps)],
            step=5, total=16)
        if stopped_at % 4:
            break
        shutil.rmtree(interrupted)
    assert 4 < stopped_at < 8, stopped_at
    assert list(metrics_records(interrupted)) == [4]  # no window ends at the stop
    resumed = run_program(*pretraining_command(tmp_path, austen_tfrecords["train"], interrupted, *steps,
                                               "--restore_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    final_straight = checkpoint_tensors(straight / "checkpoints" / "ckpt-16")
    final_resumed = checkpoint_tensors(interrupted / "checkpoints" / "ckpt-16")
    assert final_straight.keys() == final_resumed.keys() and len(final_straight) > 50
    for name, value in final_straight.items():
        np.testing.assert_allclose(final_resumed[name], value, atol=1e-6, err_msg=name)
    logged, expected = metrics_records(interrupted), metrics_records(straight)
    assert list(logged) == list(expected) == [4, 8, 12, 16]
    timing = ("sequences_per_second", "skipped_steps")  # a measurement; a count of this invocation's steps
    for step, record in logged.items():
        whole_window = step - 4 >= stopped_at or step == 4
        for name, value in record.items():
            if name in timing:
                continue
            if whole_window or name in ("learning_rate", "gradient_norm", "loss_scale", "step"):
                assert value == pytest.approx(expected[step][name], rel=1e-5, abs=1e-6), (step, name)
    # The stop was mid-window: the first window after the resume covers only the steps since it.
    assert logged[8]["total_loss"] != pytest.approx(expected[8]["total_loss"], rel=1e-5)


# ----------------------------------------------------------------------------- divergence (item 5)

@pytest.mark.slow
def test_a_diverging_pretraining_run_stops_with_one_line_and_keeps_the_good_checkpoint(built: dict[str, Path],
                                                                                     tmp_path: Path):
    """Two good steps, then the run resumed with --learning_rate 1e6: after a few applied steps
    every step is skipped, and the 21st in a row stops it before the checkpoint of its last step
    (40), so the good checkpoint stays byte-identical. (A checkpoint due amid skipped steps waits:
    tests/test_training.py. One due after the applied steps with huge but finite weights would be
    written: nothing tells those weights from good ones.)"""
    import run_pretraining

    tfrecords = str(built["output"] / "pretrain_data.tfrecord-*")
    results = tmp_path / "run"
    steps = ("--max_seq_length", "32", "--num_train_steps", "40", "--save_checkpoints_steps", "100")
    good = pretraining_command(tmp_path, tfrecords, results, *steps, "--steps_this_run", "2")
    assert run_pretraining.main(good[1:]) == 0
    before = tree_bytes(results / "checkpoints")
    assert sorted(before) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    diverging = run_program(*pretraining_command(tmp_path, tfrecords, results, *steps, "--learning_rate", "1e6",
                                                 "--restore_checkpoint", "latest"))
    error = one_line_error(diverging)
    assert re.search(r"step (\d+): 4 optimizer steps in a row were skipped \(steps \d+-\1: gradients not finite; "
                     r"the last finite loss \S+ at step \d+\), more than --max_consecutive_skipped_steps 3: the run "
                     r"has diverged. Stopped without saving a checkpoint", error), error
    assert f"the newest checkpoint, {results / 'checkpoints' / 'ckpt-2'}, is kept. Fix: lower --learning_rate" in error
    assert "Finished" not in diverging.stderr
    assert tree_bytes(results / "checkpoints") == before


def test_postprocess_refuses_a_checkpoint_whose_weights_are_not_finite(built: dict[str, Path], tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture):
    """A real run's checkpoint with one weight made NaN by hand and written back under the name
    the program reads it by (`model`); the program's own save now refuses such weights."""
    import numpy as np
    import tensorflow as tf

    import postprocess_pretrained_ckpt
    import run_pretraining

    results = tmp_path / "run"
    command = pretraining_command(tmp_path, str(built["output"] / "pretrain_data.tfrecord-*"), results,
                                  "--max_seq_length", "32", "--num_train_steps", "3", "--steps_this_run", "1")
    assert run_pretraining.main(command[1:]) == 0
    model = postprocess_pretrained_ckpt.restore_pretraining_model(str(results / "checkpoints" / "ckpt-1"))
    kernel = model.generator.electra.encoder_layers[1].intermediate.kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[3, 5]], [float("nan")]))
    size = int(np.prod(kernel.shape))
    poisoned = str(results / "checkpoints" / "ckpt-2")
    tf.train.Checkpoint(model=model).write(poisoned)
    caplog.clear()
    output = tmp_path / "exported"
    with caplog.at_level(logging.ERROR):
        assert postprocess_pretrained_ckpt.main(["--pretrained_checkpoint", poisoned, "--output_dir", str(output)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{poisoned} (generator): tensor electra.encoder.layer.1.intermediate.dense.weight has 1 of {size} "
                      "values that are NaN or infinite: the run that trained it diverged; refusing to write a model "
                      "folder of it (export an earlier checkpoint, or train again with a lower --learning_rate)"]
    assert not output.exists()  # the discriminator, checked first and finite, was not written either


# ----------------------------------------------------------------------------- unreadable records (issue 12)

BAD_RECORD_RUN = ("--max_seq_length", "32", "--num_train_steps", "30", "--save_checkpoints_steps", "8",
                  "--log_freq", "4")
DAMAGED_RECORD = 90  # of the 100 in file 1 of `built`: the run meets it at step 20 of 30
BAD_RECORD_FIX = ("rebuild that file (the same build_pretraining_dataset.py command writes the same files) or copy "
                  "it again, then resume with --restore_checkpoint latest; or resume with --skip_bad_records")


def bad_record_run(tmp_path: Path, built: dict[str, Path], results: Path, *extra: str) -> subprocess.CompletedProcess:
    tfrecords = str(built["output"] / "pretrain_data.tfrecord-*")
    return run_program(*pretraining_command(tmp_path, tfrecords, results, *BAD_RECORD_RUN, *extra))


def stopped_at(error: str, where: str, results: Path) -> int:
    """The step of the checkpoint a run stopped by a bad record names in its one-line error."""
    match = re.search(r" ERROR run_pretraining: (.*): saved a checkpoint at step (\d+) in (.*?); (.*)$", error)
    assert match and match.group(1) == where and match.group(3) == str(results / "checkpoints"), error
    assert match.group(4).startswith(BAD_RECORD_FIX), error
    return int(match.group(2))


@pytest.mark.slow
def test_a_corrupt_record_stops_the_run_with_a_checkpoint_that_resumes_once_the_file_is_fixed(
        built: dict[str, Path], tmp_path: Path):
    """It used to die with a traceback naming no file ("corrupted record at 18570"), losing the
    steps since the last checkpoint."""
    bad_file = built["output"] / "pretrain_data.tfrecord-1-of-2"
    intact = bad_file.read_bytes()
    start = damage_record(bad_file, DAMAGED_RECORD, "data flipped")
    results = tmp_path / "run"
    error = one_line_error(bad_record_run(tmp_path, built, results))
    step = stopped_at(error, f"{bad_file}: record {DAMAGED_RECORD} (at byte {start}) is corrupt (its data does not "
                             "match its checksum)", results)
    assert 16 < step < 24  # past the plan's last checkpoint: its steps are kept
    assert (results / "checkpoints" / f"ckpt-{step}.index").exists()

    # Removing the bad file instead: the input position belongs to the two files.
    one_file = str(built["output"] / "pretrain_data.tfrecord-0-of-2")
    without_it = run_program(*pretraining_command(tmp_path, one_file, results, *BAD_RECORD_RUN,
                                                  "--restore_checkpoint", "latest"))
    assert (f"checkpoint {results / 'checkpoints' / f'ckpt-{step}'} holds an input position for other input files "
            "than this run reads (") in one_line_error(without_it)

    bad_file.write_bytes(intact)
    resumed = bad_record_run(tmp_path, built, results, "--restore_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {results / 'checkpoints' / f'ckpt-{step}'} at step {step}" in resumed.stderr
    assert "Finished at step 30" in resumed.stderr and "skipping" not in resumed.stderr


@pytest.mark.slow
def test_a_cut_file_is_skipped_with_a_warning_and_a_stopped_run_resumes_as_if_it_had_skipped(
        built: dict[str, Path], tmp_path: Path):
    """--skip_bad_records skips where the run stops without it: a run stopped by the bad record and
    resumed with the flag ends with the weights of one that skipped it from the start (the flag
    leaves the input pipeline and its checkpoint as they are)."""
    import numpy as np

    bad_file = built["output"] / "pretrain_data.tfrecord-1-of-2"
    start = damage_record(bad_file, DAMAGED_RECORD, "data cut")
    where = f"{bad_file}: record {DAMAGED_RECORD} (at byte {start}) is cut short (the file ends inside it)"
    skipping = bad_record_run(tmp_path, built, tmp_path / "skipping", "--skip_bad_records")
    assert skipping.returncode == 0 and "Traceback" not in skipping.stderr, skipping.stderr[-3000:]
    warnings = [line for line in skipping.stderr.splitlines() if " WARNING pretraining: " in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"skipping {where}, and the rest of that file this epoch (--skip_bad_records)"), warnings

    stopped = tmp_path / "stopped"
    step = stopped_at(one_line_error(bad_record_run(tmp_path, built, stopped)), where, stopped)
    resumed = bad_record_run(tmp_path, built, stopped, "--restore_checkpoint", "latest", "--skip_bad_records")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stderr and "skipping" not in resumed.stderr  # it was skipped at the stop

    expected = checkpoint_tensors(tmp_path / "skipping" / "checkpoints" / "ckpt-30")
    final = checkpoint_tensors(stopped / "checkpoints" / "ckpt-30")
    assert final.keys() == expected.keys() and len(expected) > 50
    for name, value in expected.items():
        np.testing.assert_allclose(final[name], value, atol=1e-6, err_msg=name)


def test_staged_outputs_repair_what_a_run_killed_during_its_switch_left(tmp_path: Path):
    """A kill between the renames of the switch leaves old entries in .previous, some new ones in
    place and the rest staged: the next run puts the old ones back. A kill after the last rename
    leaves only .previous: the next run deletes it and keeps the new outputs."""
    output = tmp_path / "out"
    (output / safe_io.PREVIOUS_NAME).mkdir(parents=True)
    (output / safe_io.STAGING_NAME).mkdir()
    (output / safe_io.PREVIOUS_NAME / "data-0").write_text("old 0")
    (output / safe_io.PREVIOUS_NAME / "done").write_text("old mark")
    (output / "data-0").write_text("new 0")  # moved in before the kill
    (output / safe_io.STAGING_NAME / "done").write_text("new mark")  # still to move
    (output / "notes.txt").write_text("not owned")
    owned = {"data-0", "done"}.__contains__
    with pytest.raises(RuntimeError, match="this run fails too"):
        with safe_io.staged_outputs(output, owned, "done"):
            raise RuntimeError("this run fails too")
    assert tree_bytes(output) == {"data-0": b"old 0", "done": b"old mark", "notes.txt": b"not owned"}

    (output / safe_io.PREVIOUS_NAME).mkdir()
    (output / safe_io.PREVIOUS_NAME / "data-0").write_text("older")
    with safe_io.staged_outputs(output, owned, "done") as staging:
        (staging / "data-0").write_text("newest")
        (staging / "done").write_text("newest mark")
    assert tree_bytes(output) == {"data-0": b"newest", "done": b"newest mark", "notes.txt": b"not owned"}


def test_a_failed_formatting_keeps_the_previous_formatted_text_and_shards(tmp_path: Path):
    """A rerun of text_formatting that meets a file that is not UTF-8 halfway used to leave a
    truncated formatted file."""
    import dataPrep

    data_dir, good, bad = tmp_path / "data", tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "a.txt").write_text("One document of two sentences. Here is the second.\n\nAnother one.\n")
    (bad / "a.txt").write_text("A readable first file.\n")
    (bad / "b.txt").write_bytes(b"caf\xe9 au lait\n")

    def data_prep(action: str, *extra: str) -> int:
        return dataPrep.main(["--action", action, "--dataset", "custom", "--data-dir", str(data_dir),
                              "--n_processes", "1", "--n_training_shards", "1", "--n_test_shards", "0",
                              "--fraction_test_set", "0", *extra])

    assert data_prep("text_formatting", "--input_files", str(good)) == 0
    assert data_prep("sharding") == 0
    before = tree_bytes(data_dir)
    assert data_prep("text_formatting", "--input_files", str(bad)) == 1
    assert tree_bytes(data_dir) == before


# ----------------------------------------------------------------------------- damaged checkpoints (issue 12, item 4)

DAMAGE_RUN_STEPS = ("--max_seq_length", "32", "--num_train_steps", "8", "--save_checkpoints_steps", "4",
                    "--log_freq", "4")


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pretraining run of 8 steps with checkpoints at steps 4 and 8, to copy and damage:
    {"folder": where the config files go, "tfrecords": glob, "results": the run's results}."""
    folder = tmp_path_factory.mktemp("two_checkpoints")
    tfrecords = str(build_small_dataset(folder)["output"] / "pretrain_data.tfrecord-*")
    results = folder / "results"
    process = run_program(*pretraining_command(folder, tfrecords, results, *DAMAGE_RUN_STEPS))
    assert process.returncode == 0, process.stderr[-3000:]
    assert sorted(p.name for p in (results / "checkpoints").glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    return {"folder": folder, "tfrecords": Path(tfrecords), "results": results}


def copied_run(two_checkpoints: dict[str, Path], tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(two_checkpoints["results"], results)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated index", "flipped data bytes", "deleted data"])
def test_latest_resumes_the_previous_checkpoint_when_the_newest_is_damaged(kind: str, two_checkpoints, tmp_path: Path):
    """The resumed run warns naming the damaged file, trains steps 5-8 again and ends with the
    weights of the uninterrupted run; the damaged checkpoint is kept, set aside."""
    results = copied_run(two_checkpoints, tmp_path)
    checkpoints = results / "checkpoints"
    bad_file = damage.damage(checkpoints / "ckpt-8", kind)
    damaged = damage.files_of(checkpoints / "ckpt-8")
    resumed = run_program(*pretraining_command(two_checkpoints["folder"], str(two_checkpoints["tfrecords"]), results,
                                               *DAMAGE_RUN_STEPS, "--restore_checkpoint", "latest"))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert f"WARNING training: checkpoint {checkpoints / 'ckpt-8'} is unreadable: {bad_file} (" in resumed.stderr
    assert f"Resumed from {checkpoints / 'ckpt-4'} at step 4" in resumed.stderr
    assert "Finished at step 8" in resumed.stderr
    uninterrupted = checkpoint_tensors(two_checkpoints["results"] / "checkpoints" / "ckpt-8")
    assert len(uninterrupted) > 50
    damage.assert_same_tensors(checkpoint_tensors(checkpoints / "ckpt-8"), uninterrupted)
    aside = list(checkpoints.glob("unreadable-*"))
    assert len(aside) == 1 and damage.files_of(aside[0] / "ckpt-8") == damaged


@pytest.mark.slow
def test_latest_with_every_checkpoint_damaged_is_one_line_naming_the_files(two_checkpoints, tmp_path: Path):
    results = copied_run(two_checkpoints, tmp_path)
    checkpoints = results / "checkpoints"
    bad_files = [damage.damage(checkpoints / "ckpt-8", "truncated index"),
                 damage.damage(checkpoints / "ckpt-4", "truncated data")]
    before = tree_bytes(results)
    error = one_line_error(run_program(*pretraining_command(
        two_checkpoints["folder"], str(two_checkpoints["tfrecords"]), results, *DAMAGE_RUN_STEPS,
        "--restore_checkpoint", "latest")))
    assert f"no checkpoint in {checkpoints} reads fully: {bad_files[0]} (" in error
    assert f"; {bad_files[1]} (" in error
    assert tree_bytes(results) == before


@pytest.mark.slow
def test_postprocess_passes_over_a_damaged_newest_checkpoint_and_names_a_damaged_explicit_one(
        two_checkpoints, tmp_path: Path):
    results = copied_run(two_checkpoints, tmp_path)
    checkpoints = results / "checkpoints"
    bad_file = damage.damage(checkpoints / "ckpt-8", "flipped data bytes")
    before = tree_bytes(results)
    from_folder = run_program("postprocess_pretrained_ckpt.py", "--pretrained_checkpoint", str(checkpoints),
                              "--output_dir", str(tmp_path / "from_folder"))
    assert from_folder.returncode == 0, from_folder.stderr[-3000:]
    assert f"WARNING training: checkpoint {checkpoints / 'ckpt-8'} is unreadable: {bad_file} (" in from_folder.stderr
    assert f"Wrote the discriminator of {checkpoints / 'ckpt-4'}" in from_folder.stderr
    error = one_line_error(run_program("postprocess_pretrained_ckpt.py", "--pretrained_checkpoint",
                                       str(checkpoints / "ckpt-8"), "--output_dir", str(tmp_path / "explicit")))
    assert f"checkpoint {checkpoints / 'ckpt-8'} is unreadable: {bad_file} (" in error
    assert not (tmp_path / "explicit").exists()
    assert tree_bytes(results) == before  # converting moves nothing
