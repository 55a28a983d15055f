"""Turn raw sources into the recipe's common format: one article (document) per line.

Every source (Wikipedia, BookCorpus, the user's own text) ends up as a text file with one
document per line, which the sharding step splits into sentences. Within a line, paragraphs are
separated by a tab (PARAGRAPH_SEPARATOR; all other whitespace is collapsed to single spaces):
tools that ignore it still see one document per line, and the segmenter gets every paragraph
end as a sentence end.
"""
from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from safe_io import staged_file

logger = logging.getLogger(__name__)

PARAGRAPH_SEPARATOR = "\t"
BOUNDARY_DESCRIPTIONS = {"blank_line": "documents separated by blank lines",
                         "chapter": "one document per chapter", "file": "one document per file"}
DOCUMENT_BOUNDARIES = ("auto", *BOUNDARY_DESCRIPTIONS)
CHAPTER_HEADING = re.compile(r"(chapter|volume|book|part)\s+(\d+|[ivxlcdm]+)\.?", re.IGNORECASE)
BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")


def normalize_whitespace(text: str) -> str:
    """Unwrap lines and collapse every run of whitespace (tabs included) to one space."""
    return " ".join(text.split())


def format_article(paragraphs: Iterable[str]) -> str | None:
    """One output line for a document, or None if it holds no text."""
    kept = [p for p in map(normalize_whitespace, paragraphs) if p]
    return PARAGRAPH_SEPARATOR.join(kept) if kept else None


def article_paragraphs(article_line: str) -> list[str]:
    """Inverse of format_article: the paragraphs of one formatted line."""
    return [p for p in article_line.rstrip("\n").split(PARAGRAPH_SEPARATOR) if p.strip()]


def wikiextractor_articles(extracted_dir: str | Path) -> Iterator[str]:
    """Formatted articles from WikiExtractor's `--json` output (files under `extracted_dir`).

    The title is a separate JSON field and is left out; the text is still HTML-escaped
    (`&amp;`, `&quot;`), so it is unescaped; paragraphs are its lines; empty articles (pages
    whose content was all templates, tables or lists) are dropped.
    """
    files = sorted(p for p in Path(extracted_dir).rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no WikiExtractor output under {extracted_dir}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError) as error:
                    raise ValueError(f"{path}:{line_number}: expected a WikiExtractor --json "
                                     f"record with a 'text' field ({error})") from error
                article = format_article(html.unescape(text).split("\n"))
                if article:
                    yield article


def text_blocks(text: str) -> list[str]:
    """Blank-line separated blocks of `text`, each unwrapped to one line."""
    return [b for b in map(normalize_whitespace, BLANK_LINES.split(text)) if b]


def is_chapter_heading(line: str) -> bool:
    return CHAPTER_HEADING.fullmatch(line.strip()) is not None


def split_chapters(text: str) -> list[str]:
    """The text of each chapter: heading lines ("CHAPTER IV", "Chapter 12", "VOLUME II")
    separate chapters and are dropped, as is the front matter before the first heading."""
    chapters: list[list[str]] = []
    for line in text.split("\n"):
        if is_chapter_heading(line):
            chapters.append([])
        elif chapters:
            chapters[-1].append(line)
    return ["\n".join(lines) for lines in chapters]


def resolve_document_boundary(text: str, boundary: str) -> str:
    """`auto` means `chapter` for a text with at least two chapter-heading lines (a book),
    `blank_line` otherwise."""
    if boundary != "auto":
        return boundary
    headings = sum(1 for line in text.split("\n") if is_chapter_heading(line))
    return "chapter" if headings >= 2 else "blank_line"


def text_documents(text: str, boundary: str) -> list[list[str]]:
    """Split a plain-text file into documents, each a list of unwrapped paragraphs.

    boundary: `blank_line` (each blank-line separated block is a document), `chapter` (each
    chapter is a document whose paragraphs are its blank-line separated blocks), `file` (the
    whole file is one document), or `auto` (see resolve_document_boundary). Documents without
    text are left out.
    """
    boundary = resolve_document_boundary(text, boundary)
    if boundary == "blank_line":
        documents = [[block] for block in text_blocks(text)]
    elif boundary == "chapter":
        documents = [text_blocks(chapter) for chapter in split_chapters(text)]
    elif boundary == "file":
        documents = [text_blocks(text)]
    else:
        raise ValueError(f"unknown document boundary {boundary!r}; expected one of "
                         f"{DOCUMENT_BOUNDARIES}")
    return [document for document in documents if document]


def list_text_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files named in `inputs`, with each folder replaced by its *.txt files (recursive,
    sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(item.rglob("*.txt")))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} is neither a file nor a folder")
    if not files:
        raise FileNotFoundError(f"no .txt files in {', '.join(map(str, inputs))}")
    return files


def text_file_articles(files: Iterable[Path], boundary: str) -> Iterator[str]:
    """Formatted documents of plain-text files (UTF-8), split according to `boundary`."""
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text ({error})") from error
        file_boundary = resolve_document_boundary(text, boundary)
        logger.info("%s: %s", path, BOUNDARY_DESCRIPTIONS[file_boundary])
        for document in text_documents(text, file_boundary):
            article = format_article(document)
            if article:
                yield article


def write_articles(articles: Iterable[str], output_file: str | Path) -> int:
    """Write one formatted article per line; returns how many were written. The file replaces
    an earlier one only once complete (a bad input file met midway leaves the old one)."""
    count = 0
    with staged_file(output_file) as staging, open(staging, "w", encoding="utf-8") as out:
        for article in articles:
            out.write(article + "\n")
            count += 1
    return count
