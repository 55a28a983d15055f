"""Fault injection for checkpoints: the ways a checkpoint's files get damaged (a full disk, a
killed copy, a bad sector), and a reader of every tensor to compare runs with."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_SUFFIX = ".data-00000-of-00001"


def truncate(path: Path) -> None:
    """Keep the first half of the file (a copy or write cut short)."""
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])


def flip_bytes(path: Path) -> None:
    """Invert 8 bytes in the middle of the file (a bad sector): its size stays the same."""
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 8] = bytes(b ^ 0xFF for b in content[middle:middle + 8])
    path.write_bytes(bytes(content))


def delete(path: Path) -> None:
    path.unlink()


# name -> (the file of checkpoint PREFIX it damages, how)
DAMAGES = {
    "truncated index": (".index", truncate),
    "flipped data bytes": (DATA_SUFFIX, flip_bytes),
    "truncated data": (DATA_SUFFIX, truncate),
    "deleted data": (DATA_SUFFIX, delete),
    "deleted index": (".index", delete),
}


def damage(prefix: Path, kind: str) -> Path:
    """Damage checkpoint PREFIX (e.g. .../ckpt-8) as DAMAGES[kind] says; returns the damaged file."""
    suffix, how = DAMAGES[kind]
    target = prefix.parent / (prefix.name + suffix)
    how(target)
    return target


def files_of(prefix: Path) -> dict[str, bytes]:
    """The bytes of each file of checkpoint PREFIX (its .index and .data shards)."""
    return {p.name: p.read_bytes() for p in sorted(prefix.parent.glob(prefix.name + ".*"))}


def checkpoint_tensors(prefix: Path, skip: tuple[str, ...] = ("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
                       ) -> dict[str, np.ndarray]:
    """Every tensor of checkpoint PREFIX but those whose names start with `skip`."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if not name.startswith(skip)}


def assert_same_tensors(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray], atol: float = 1e-6) -> None:
    assert ours.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, atol=atol, err_msg=name)
