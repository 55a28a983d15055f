"""Robust HTTP downloads for the data preparation: resume, retries, checksums, progress.

The Wikipedia dump is about 20 GB and its servers drop long connections, so a download must
survive interruptions: bytes go to `<name>.part`, an interrupted transfer resumes with an HTTP
Range request, transient failures are retried with exponential back-off, and the file gets its
final name only once it is complete and (where the source publishes one) its checksum matches.
A file with its final name is therefore always a complete, verified download.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urljoin, urlparse

import requests
from tqdm import tqdm

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Bytes read per write: a broken connection loses at most the chunk being read.
CHUNK_BYTES = 64 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError)


class DownloadError(RuntimeError):
    """A download failed for good (bad URL, HTTP error, retries exhausted)."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not match the checksum the source publishes."""


class IncompleteTransferError(Exception):
    """The server closed the connection before sending every byte (worth a retry)."""


class RetryableHTTPError(Exception):
    """A status such as 503 or 429 that usually goes away."""


RETRYABLE_ERRORS = (*TRANSIENT_ERRORS, RetryableHTTPError, IncompleteTransferError)


@dataclass(frozen=True)
class Checksum:
    """An expected digest: `algorithm` is a `hashlib` name such as "sha1" or "md5"."""

    algorithm: str
    hexdigest: str


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: at most `max_attempts` requests, sleeping
    `backoff_seconds * 2**(k-1)` after the k-th failure (capped at `max_backoff_seconds`)."""

    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 120.0
    timeout_seconds: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.backoff_seconds * 2 ** (failures - 1), self.max_backoff_seconds)


def file_digest(path: Path, algorithm: str, chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks so that multi-GB dumps need no memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_checksum_listing(listing: str, filename: str, algorithm: str) -> Checksum:
    """Find `filename` in a `sha1sum`/`md5sum`-style listing ("<hex>  <name>" per line).

    Wikimedia's `*-latest-*sums.txt` name the dated files (`enwiki-20240601-pages-...`), not
    the `latest` aliases, so a `-latest-` in `filename` also matches an 8-digit date there.
    """
    pattern = re.escape(filename).replace(re.escape("-latest-"), r"-(?:latest|\d{8})-")
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(pattern, parts[1].lstrip("*")):
            return Checksum(algorithm, parts[0].lower())
    raise DownloadError(f"no checksum for {filename} in the published {algorithm} listing")


def check_url_scheme(url: str, allow_http: bool) -> None:
    """Accept HTTPS; plain HTTP only when asked (local test servers)."""
    scheme = urlparse(url).scheme
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    raise DownloadError(f"refusing to download {url}: only https:// URLs are allowed")


def refuse_https_downgrade(response: requests.Response, *args, **kwargs) -> None:
    """Response hook: refuse a redirect that leaves HTTPS, before it is followed (requests
    follows https -> http redirects, which would let anyone on the path alter the download).
    Requests runs a request's hooks on every response of its redirect chain."""
    if response.is_redirect and urlparse(response.url).scheme == "https":
        target = urljoin(response.url, response.headers["location"])
        if urlparse(target).scheme != "https":
            raise DownloadError(f"refusing the redirect from {response.url} to {target}: it "
                                "leaves HTTPS; download from an HTTPS mirror instead")


HTTPS_ONLY = {"response": [refuse_https_downgrade]}


def with_retries(action: Callable[[], T], url: str, retry: RetryPolicy) -> T:
    """Run `action` until it succeeds, sleeping with exponential back-off after each
    transient failure; give up with DownloadError after `retry.max_attempts` tries."""
    attempt = 1
    while True:
        try:
            return action()
        except RETRYABLE_ERRORS as error:
            wait_before_retry(url, error, attempt, retry)
            attempt += 1


def fetch_text(url: str, retry: RetryPolicy = RetryPolicy(), allow_http: bool = False,
               session: requests.Session | None = None) -> str:
    """GET a small text resource (e.g. a checksum listing), with the same retries."""
    check_url_scheme(url, allow_http)
    session = session or requests.Session()

    def get() -> str:
        response = session.get(url, timeout=retry.timeout_seconds, hooks=HTTPS_ONLY)
        raise_for_status(response, url)
        return response.text

    return with_retries(get, url, retry)


def raise_for_status(response: requests.Response, url: str) -> None:
    """Turn an error status into a retryable or a final error."""
    if response.status_code in RETRYABLE_STATUS:
        raise RetryableHTTPError(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise DownloadError(f"HTTP {response.status_code} for {url}")


def wait_before_retry(url: str, error: Exception, attempt: int, retry: RetryPolicy) -> None:
    """Sleep the back-off delay, or give up after the last attempt."""
    if attempt >= retry.max_attempts:
        raise DownloadError(f"giving up on {url} after {attempt} attempts: {error}") from error
    delay = retry.delay(attempt)
    logger.warning("%s: %s; retry %d/%d in %.1f s", url, error, attempt,
                   retry.max_attempts - 1, delay)
    time.sleep(delay)


def partial_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


def content_range_start(response: requests.Response) -> int | None:
    """First byte offset of a 206 answer ("Content-Range: bytes 100-199/200")."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def expected_total_size(response: requests.Response, offset: int) -> int | None:
    """Full size of the resource, from Content-Range or Content-Length."""
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def transfer_once(session: requests.Session, url: str, part: Path, retry: RetryPolicy,
                  show_progress: bool) -> None:
    """One request: append to `part` from where it stops, or restart if the server ignores
    the Range. Returns when the whole resource is in `part`; raises otherwise."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=retry.timeout_seconds,
                     hooks=HTTPS_ONLY) as response:
        if response.status_code == 416 and offset:
            if expected_total_size(response, offset) == offset:
                return  # the previous run received everything but stopped before renaming
            part.unlink()  # more bytes than the resource has: the source changed
            raise IncompleteTransferError("stale partial file (HTTP 416); restarting")
        raise_for_status(response, url)
        if response.status_code != 206 or content_range_start(response) != offset:
            offset = 0  # the server sent the whole resource
        total = expected_total_size(response, offset)
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[:-len(".part")], disable=not show_progress) as bar:
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if total is not None and received < total:
        raise IncompleteTransferError(f"connection closed at byte {received} of {total}")


def checksum_matches(path: Path, checksum: Checksum) -> bool:
    return file_digest(path, checksum.algorithm) == checksum.hexdigest.lower()


def verify_checksum(path: Path, checksum: Checksum, url: str) -> None:
    """Raise ChecksumMismatchError (and delete `path`) if its digest is not the expected one."""
    actual = file_digest(path, checksum.algorithm)
    if actual != checksum.hexdigest.lower():
        path.unlink()
        raise ChecksumMismatchError(
            f"{checksum.algorithm} mismatch for {url}: expected {checksum.hexdigest}, got "
            f"{actual}; the corrupt download was deleted (if the source was updated while "
            "downloading, run again)")


def download_file(url: str, destination: str | os.PathLike, checksum: Checksum | None = None,
                  retry: RetryPolicy = RetryPolicy(), allow_http: bool = False,
                  show_progress: bool = True, session: requests.Session | None = None) -> Path:
    """Download `url` to `destination`, resuming `<destination>.part` and retrying on failure.

    An existing `destination` is reused when it passes `checksum` (or when there is none: a
    file only gets its final name once complete). Returns the destination path.
    """
    check_url_scheme(url, allow_http)
    destination = Path(destination)
    if destination.exists():
        if checksum is None or checksum_matches(destination, checksum):
            logger.info("%s already downloaded", destination)
            return destination
        logger.warning("%s does not match the published %s; downloading it again",
                       destination, checksum.algorithm)
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(destination)
    session = session or requests.Session()
    with_retries(lambda: transfer_once(session, url, part, retry, show_progress), url, retry)
    if checksum is not None:
        verify_checksum(part, checksum, url)
    os.replace(part, destination)
    logger.info("downloaded %s", destination)
    return destination
