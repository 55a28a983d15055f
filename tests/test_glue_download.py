"""GLUE download through data/dataPrep.py's downloader, against a server on 127.0.0.1: archives
unpacked into task folders that glue_utils reads, MRPC built from the SentEval files and GLUE's dev
ids, checksums enforced, failures leaving earlier results alone."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

import glue_utils
from test_data_prep import FAST_RETRY, FileServer, dataPrep, download_utils

import glue_download  # noqa: E402  (data/ is on sys.path through test_data_prep)
from glue_download import Remote, Source

COLA_FILES = {"CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n",
              "CoLA/dev.tsv": "gj04\t0\t*\tThey drank the pub.\n",
              "CoLA/test.tsv": "index\tsentence\n0\tBill whistled past the house.\n"}
RTE_FILES = {"RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons.\tWeapons found.\tnot_entailment\n",
             "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n",
             "RTE/test.tsv": "index\tsentence1\tsentence2\n0\tMaude.\tShe died.\n"}
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_TRAIN = MRPC_HEADER + "1\t702876\t702977\tAmrozi accused.\tReferring to him.\n0\t2108705\t2108831\tYucaipa.\tIt.\n" \
                           "1\t1330381\t1330521\tThey had.\tThey have.\n"
MRPC_TEST = MRPC_HEADER + "1\t1089874\t1089925\tPCCW 's chief.\tCommon.\n0\t3019446\t3019327\tHe.\tShe.\n"
MRPC_DEV_IDS = "2108705\t2108831\n"
AX = "index\tsentence1\tsentence2\n0\tThe cat sat.\tThe cat did not sit.\n"


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__MACOSX/._junk", "resource fork")
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


SERVED = {"/glue/CoLA.zip": zip_bytes(COLA_FILES), "/glue/RTE.zip": zip_bytes(RTE_FILES),
          "/glue/mrpc_dev_ids.tsv": MRPC_DEV_IDS.encode(), "/glue/AX.tsv": AX.encode(),
          "/senteval/msr_paraphrase_train.txt": MRPC_TRAIN.encode(),
          "/senteval/msr_paraphrase_test.txt": MRPC_TEST.encode()}


def remote(path: str) -> Remote:
    return Remote(path.rsplit("/", 1)[1], hashlib.sha256(SERVED[path]).hexdigest())


@pytest.fixture
def glue_server(monkeypatch: pytest.MonkeyPatch):
    """The server, and the module's published digests replaced by those of the files served."""
    monkeypatch.setitem(glue_download.TASK_ARCHIVES, "CoLA", remote("/glue/CoLA.zip"))
    monkeypatch.setitem(glue_download.TASK_ARCHIVES, "RTE", remote("/glue/RTE.zip"))
    for name, path in (("MRPC_TRAIN", "/senteval/msr_paraphrase_train.txt"),
                       ("MRPC_TEST", "/senteval/msr_paraphrase_test.txt"),
                       ("MRPC_DEV_IDS", "/glue/mrpc_dev_ids.tsv"), ("DIAGNOSTIC", "/glue/AX.tsv")):
        monkeypatch.setattr(glue_download, name, remote(path))
    server = FileServer(dict(SERVED))
    yield server
    server.close()


def local_source(server: FileServer) -> Source:
    import requests

    session = requests.Session()
    session.trust_env = False
    return Source(server.url("/glue/"), server.url("/senteval/"), FAST_RETRY, allow_http=True, session=session)


def test_glue_tasks_land_in_folders_glue_utils_reads(glue_server: FileServer, tmp_path: Path) -> None:
    folders = glue_download.download_glue(tmp_path, ["CoLA", "RTE", "MRPC", "diagnostic"], local_source(glue_server))
    assert [f.name for f in folders] == ["CoLA", "RTE", "MRPC", "diagnostic"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CoLA", "MRPC", "RTE", "archives", "diagnostic"]
    cola = glue_utils.get_task("cola", str(tmp_path / "CoLA"))
    assert [e.label for e in glue_utils.read_examples(cola, str(tmp_path / "CoLA"), cola.dev_sets[0])] == ["0"]
    mrpc_dir = str(tmp_path / "MRPC")
    mrpc = glue_utils.get_task("mrpc", mrpc_dir)
    assert [(e.text_a, e.label) for e in glue_utils.read_examples(mrpc, mrpc_dir, mrpc.train)] == [
        ("Amrozi accused.", "1"), ("They had.", "1")]
    assert [(e.text_a, e.label) for e in glue_utils.read_examples(mrpc, mrpc_dir, mrpc.dev_sets[0])] == [("Yucaipa.", "0")]
    assert [(e.guid, e.text_b) for e in glue_utils.read_examples(mrpc, mrpc_dir, mrpc.test_sets[0])] == [
        ("0", "Common."), ("1", "She.")]
    assert (tmp_path / "MRPC" / "test.tsv").read_text().splitlines()[0] == glue_download.MRPC_TEST_HEADER
    mnli_dir = tmp_path / "MNLI"
    mnli_dir.mkdir()
    assert glue_utils.diagnostic_set(str(mnli_dir)).file.endswith("diagnostic.tsv")


def test_a_complete_task_folder_is_not_downloaded_again(glue_server: FileServer, tmp_path: Path) -> None:
    source = local_source(glue_server)
    glue_download.download_glue(tmp_path, ["RTE"], source)
    requests_before = len(glue_server.requests)
    glue_download.download_glue(tmp_path, ["RTE"], source)
    assert len(glue_server.requests) == requests_before


def test_a_changed_archive_fails_its_checksum_and_leaves_earlier_folders_alone(glue_server: FileServer,
                                                                                tmp_path: Path) -> None:
    source = local_source(glue_server)
    glue_download.download_glue(tmp_path, ["CoLA"], source)
    glue_server.files["/glue/RTE.zip"] = zip_bytes({**RTE_FILES, "RTE/dev.tsv": "tampered\n"})
    with pytest.raises(download_utils.ChecksumMismatchError, match="sha256 mismatch"):
        glue_download.download_glue(tmp_path, ["CoLA", "RTE"], source)
    assert not (tmp_path / "RTE").exists() and not (tmp_path / "archives" / "RTE.zip").exists()
    assert (tmp_path / "CoLA" / "train.tsv").read_text() == COLA_FILES["CoLA/train.tsv"]


def test_an_archive_member_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "RTE.zip"
    archive.write_bytes(zip_bytes({"RTE/../../evil.tsv": "x"}))
    with pytest.raises(download_utils.DownloadError, match="would unpack outside"):
        glue_download.unpack_task(archive, "RTE", tmp_path / "glue" / "RTE")
    assert not (tmp_path / "evil.tsv").exists() and not (tmp_path / "glue" / "RTE").exists()


def test_an_archive_without_the_task_folder_is_reported(tmp_path: Path) -> None:
    archive = tmp_path / "RTE.zip"
    archive.write_bytes(zip_bytes({"other/train.tsv": "x"}))
    with pytest.raises(download_utils.DownloadError, match="holds no RTE/ folder; delete it and download again"):
        glue_download.unpack_task(archive, "RTE", tmp_path / "RTE")


def test_published_digests_are_sha256_and_unknown_tasks_are_one_line_errors(caplog: pytest.LogCaptureFixture,
                                                                            tmp_path: Path) -> None:
    remotes = [*glue_download.TASK_ARCHIVES.values(), glue_download.MRPC_TRAIN, glue_download.MRPC_TEST,
               glue_download.MRPC_DEV_IDS, glue_download.DIAGNOSTIC]
    assert all(len(r.sha256) == 64 and int(r.sha256, 16) >= 0 for r in remotes)
    assert glue_download.task_folders(["cola", "AX", "sst-2"]) == ["CoLA", "diagnostic", "SST-2"]
    assert dataPrep.main(["--action", "download", "--dataset", "glue", "--data-dir", str(tmp_path),
                          "--glue_tasks", "cola,colla"]) == 1
    assert caplog.records[-1].getMessage().startswith("--glue_tasks: unknown colla; choose from CoLA, SST-2")
