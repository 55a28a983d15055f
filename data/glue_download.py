"""Download GLUE's nine tasks and its diagnostic set into the folder layout run_tf_glue.py reads.

GLUE distributes each task as a zip archive of TSV files (one folder per task inside), except
MRPC, whose sentences GLUE may not redistribute: its train and test files come from the SentEval
mirror of Microsoft's corpus and GLUE publishes the ids of the pairs that form its dev set; the
train/dev/test files are built from them here the way GLUE's own download script builds them.

GLUE publishes no checksums. The SHA-256 digests and sizes below are the ones Hugging Face's
`datasets` library recorded for these exact URLs when it added GLUE; a download that does not
match them is deleted and reported (if the host ever changes a file, that is where it shows).

Result: <glue_dir>/{CoLA,SST-2,MRPC,STS-B,QQP,MNLI,QNLI,RTE,WNLI}/*.tsv and
<glue_dir>/diagnostic/diagnostic.tsv; the downloads themselves stay in <glue_dir>/archives/.
"""
from __future__ import annotations

import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from download_utils import Checksum, DownloadError, RetryPolicy, download_file

logger = logging.getLogger(__name__)

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
SENTEVAL_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
ARCHIVE_DIR = "archives"
DIAGNOSTIC_DIR = "diagnostic"
DIAGNOSTIC_FILE = "diagnostic.tsv"


@dataclass(frozen=True)
class Remote:
    """One file to download: its name at the base URL and its SHA-256."""

    name: str
    sha256: str

    @property
    def checksum(self) -> Checksum:
        return Checksum("sha256", self.sha256)


# Task folder -> its archive (which unpacks into that folder).
TASK_ARCHIVES = {
    "CoLA": Remote("CoLA.zip", "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"),
    "SST-2": Remote("SST-2.zip", "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"),
    "STS-B": Remote("STS-B.zip", "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85"),
    "QQP": Remote("QQP-clean.zip", "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"),
    "MNLI": Remote("MNLI.zip", "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633"),
    "QNLI": Remote("QNLIv2.zip", "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5"),
    "RTE": Remote("RTE.zip", "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee"),
    "WNLI": Remote("WNLI.zip", "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46"),
}
MRPC_TRAIN = Remote("msr_paraphrase_train.txt", "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89")
MRPC_TEST = Remote("msr_paraphrase_test.txt", "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784")
MRPC_DEV_IDS = Remote("mrpc_dev_ids.tsv", "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7")
DIAGNOSTIC = Remote("AX.tsv", "0e13510b1bb14436ff7e2ee82338f0efb0133ecf2e73507a697dc210db3f05fd")
GLUE_TASK_FOLDERS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", DIAGNOSTIC_DIR)
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"


@dataclass(frozen=True)
class Source:
    """Where the files are (the tests point these at a local server) and how to fetch them."""

    glue_base_url: str = GLUE_BASE_URL
    senteval_base_url: str = SENTEVAL_BASE_URL
    retry: RetryPolicy = RetryPolicy()
    allow_http: bool = False
    session: requests.Session | None = None

    def fetch(self, base_url: str, remote: Remote, destination: Path) -> Path:
        return download_file(base_url + remote.name, destination, remote.checksum, self.retry, self.allow_http,
                             session=self.session)


def task_folders(names: list[str] | None) -> list[str]:
    """GLUE's folder names for `names` (case-insensitive, `AX` for the diagnostic set); all without."""
    if not names or names == ["all"]:
        return list(GLUE_TASK_FOLDERS)
    by_lower = {folder.lower(): folder for folder in GLUE_TASK_FOLDERS} | {"ax": DIAGNOSTIC_DIR}
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise ValueError(f"--glue_tasks: unknown {', '.join(unknown)}; choose from {', '.join(GLUE_TASK_FOLDERS)} "
                         "(or all)")
    return [by_lower[n.lower()] for n in names]


def download_glue(glue_dir: Path, folders: list[str], source: Source = Source()) -> list[Path]:
    """Download and unpack the given task folders into `glue_dir`; a folder already complete
    (a previous run's) is kept as it is. Returns the task folders."""
    archives = glue_dir / ARCHIVE_DIR
    done = []
    for folder in folders:
        target = glue_dir / folder
        if (target / ("test.tsv" if folder != DIAGNOSTIC_DIR else DIAGNOSTIC_FILE)).is_file():
            logger.info("%s already in place", target)
        elif folder == "MRPC":
            build_mrpc(target, *(source.fetch(base, remote, archives / remote.name) for base, remote in (
                (source.senteval_base_url, MRPC_TRAIN), (source.senteval_base_url, MRPC_TEST),
                (source.glue_base_url, MRPC_DEV_IDS))))
        elif folder == DIAGNOSTIC_DIR:
            tsv = source.fetch(source.glue_base_url, DIAGNOSTIC, archives / DIAGNOSTIC.name)
            _publish(target, lambda staging: shutil.copyfile(tsv, staging / DIAGNOSTIC_FILE))
        else:
            remote = TASK_ARCHIVES[folder]
            unpack_task(source.fetch(source.glue_base_url, remote, archives / remote.name), folder, target)
        done.append(target)
    return done


def _publish(target: Path, fill: Callable[[Path], object]) -> None:
    """Fill a staging folder beside `target`, then move it into place: a task folder appears
    whole or not at all, and a failed run leaves no half-written one."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def unpack_task(archive: Path, folder: str, target: Path) -> None:
    """Unpack the `folder/` of a task's zip archive into `target`, refusing paths that leave it."""
    with zipfile.ZipFile(archive) as zip_file:
        members = [m for m in zip_file.infolist() if m.filename.startswith(folder + "/") and not m.is_dir()]
        if not members:
            raise DownloadError(f"{archive} holds no {folder}/ folder; delete it and download again")

        def fill(staging: Path) -> None:
            for member in members:
                relative = Path(member.filename).relative_to(folder)
                if relative.is_absolute() or ".." in relative.parts:
                    raise DownloadError(f"{archive}: member {member.filename} would unpack outside {target}")
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zip_file.open(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)

        _publish(target, fill)
    logger.info("unpacked %s into %s", archive.name, target)


def _read_rows(path: Path) -> list[list[str]]:
    """Tab-separated rows of a SentEval MRPC file (UTF-8 with a byte-order mark), header included."""
    with open(path, encoding="utf-8-sig") as f:
        return [line.rstrip("\r\n").split("\t") for line in f if line.strip()]


def build_mrpc(target: Path, train_file: Path, test_file: Path, dev_ids_file: Path) -> None:
    """GLUE's MRPC: the pairs listed in the dev ids leave the train file for dev.tsv; the test file
    gets an index column instead of its labels."""
    dev_ids = {tuple(row[:2]) for row in _read_rows(dev_ids_file)}
    header, *train_rows = _read_rows(train_file)
    _, *test_rows = _read_rows(test_file)
    for path, rows in ((train_file, train_rows), (test_file, test_rows)):
        short = next((i for i, row in enumerate(rows, start=2) if len(row) != 5), None)
        if short is not None:
            raise DownloadError(f"{path}, line {short}: expected 5 tab-separated columns; delete the file and "
                                "download again")

    def fill(staging: Path) -> None:
        with open(staging / "train.tsv", "w", encoding="utf-8") as train, \
                open(staging / "dev.tsv", "w", encoding="utf-8") as dev:
            for out in (train, dev):
                out.write("\t".join(header) + "\n")
            for row in train_rows:
                (dev if tuple(row[1:3]) in dev_ids else train).write("\t".join(row) + "\n")
        with open(staging / "test.tsv", "w", encoding="utf-8") as test:
            test.write(MRPC_TEST_HEADER + "\n")
            for index, row in enumerate(test_rows):
                test.write("\t".join([str(index), *row[1:]]) + "\n")

    _publish(target, fill)
    logger.info("built %s from the SentEval files and GLUE's dev ids", target)
