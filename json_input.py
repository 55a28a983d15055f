"""JSON from files a user hands over (SQuAD files, model `config.json`), read so that every
malformed file ends in one `JsonInputError` saying what is wrong and where.

Python's `json` parser recurses once per nesting level, so a file of a million `[` would end in a
`RecursionError` (or worse, with a raised recursion limit); the nesting is therefore measured
first, without recursion, and refused beyond `MAX_NESTING` levels (SQuAD files nest 9, a
`config.json` 2). Numbers too long for Python's int conversion and other parser refusals become
the same error.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from safe_io import UserError

MAX_NESTING = 100
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_NESTING_STEP = np.zeros(256, dtype=np.int8)  # +1 for each byte that opens a list or object, -1 closes
_NESTING_STEP[[ord("["), ord("{")]] = 1
_NESTING_STEP[[ord("]"), ord("}")]] = -1


class JsonInputError(UserError):
    """A file that is not UTF-8 JSON within the nesting bound; the message has no file name
    (callers prefix theirs)."""


def parse_json_bytes(raw: bytes, max_nesting: int = MAX_NESTING) -> Any:
    """The JSON value of UTF-8 bytes (a leading byte-order mark allowed)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise JsonInputError(f"not UTF-8 text ({error})") from None
    check_nesting(raw, max_nesting)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonInputError(f"malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except ValueError as error:  # an integer of more than 4300 digits (its advice to raise the limit left out)
        raise JsonInputError(f"malformed JSON: {str(error).split(';')[0]}") from None


def check_nesting(raw: bytes, max_nesting: int) -> None:
    """Refuse JSON nested deeper than `max_nesting` lists and objects, in time linear in the
    size and without recursion. Brackets inside strings do not count: a quote opens or closes
    a string unless an odd number of backslashes precede it. (Where that reading of an invalid
    file differs from the parser's, the parser has already stopped earlier in the file.)"""
    data = np.frombuffer(raw, dtype=np.uint8)
    steps = _NESTING_STEP[data]
    brackets = np.flatnonzero(steps)
    if len(brackets) == 0:
        return
    quotes = _unescaped_quotes(data)
    brackets = brackets[np.searchsorted(quotes, brackets) % 2 == 0]  # an even number of quotes before
    too_deep = np.flatnonzero(np.cumsum(steps[brackets], dtype=np.int64) > max_nesting)
    if len(too_deep):
        position = int(brackets[too_deep[0]])
        line = raw.count(b"\n", 0, position) + 1
        column = position - raw.rfind(b"\n", 0, position)
        raise JsonInputError(f"JSON nested deeper than {max_nesting} lists and objects at line {line} "
                             f"column {column}")


def _unescaped_quotes(data: np.ndarray) -> np.ndarray:
    """Positions of the quotes not preceded by an odd run of backslashes, in order."""
    quotes = np.flatnonzero(data == _QUOTE)
    backslashes = np.flatnonzero(data == _BACKSLASH)
    if len(backslashes) == 0 or len(quotes) == 0:
        return quotes
    run_breaks = np.flatnonzero(np.diff(backslashes) != 1)
    run_ends = np.append(backslashes[run_breaks], backslashes[-1])
    run_lengths = np.diff(np.concatenate([[-1], run_breaks, [len(backslashes) - 1]]))
    run = np.minimum(np.searchsorted(run_ends, quotes - 1), len(run_ends) - 1)
    escaped = (run_ends[run] == quotes - 1) & (run_lengths[run] % 2 == 1)
    return quotes[~escaped]
