"""Real damage to TFRecord files, as a disk, a copy or an interrupted transfer does it, for the
tests of unreadable records (a flipped bit, a file cut short)."""
from __future__ import annotations

import struct
from pathlib import Path

from tfrecord_format import FOOTER_BYTES, HEADER_BYTES, read_length

DAMAGES = ("data flipped", "checksum flipped", "length flipped", "data cut", "header cut")


def record_starts(path: Path) -> list[int]:
    """Where each record of a TFRecord file starts, following its headers."""
    starts, position = [], 0
    with open(path, "rb") as file:
        while (length := read_length(file, position)) is not None:
            starts.append(position)
            position += HEADER_BYTES + length + FOOTER_BYTES
    return starts


def damage_record(path: Path, record: int, how: str) -> int:
    """Damage record `record` of a TFRecord file as `how` (one of DAMAGES) says; returns where
    the record starts."""
    data = bytearray(path.read_bytes())
    start = record_starts(path)[record]
    length = struct.unpack("<Q", data[start:start + 8])[0]
    if how == "data flipped":
        data[start + HEADER_BYTES + 5] ^= 0x10
    elif how == "checksum flipped":
        data[start + HEADER_BYTES + length] ^= 0x01
    elif how == "length flipped":
        data[start + 1] ^= 0x01
    elif how == "data cut":
        del data[start + HEADER_BYTES + 5:]
    elif how == "header cut":
        del data[start + 5:]
    else:
        raise ValueError(f"unknown damage {how!r}; expected one of {DAMAGES}")
    path.write_bytes(bytes(data))
    return start
