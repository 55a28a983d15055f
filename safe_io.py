"""Errors a user can act on, and outputs that survive a failed run.

Two rules every program follows. Bad input gives ONE line naming the file (and field or record)
and the fix: library code raises `UserError` where it knows all three, and each program's `main`
logs its message, without a traceback, and exits 1. A failing job never deletes or overwrites
what a previous good run produced: outputs are built in a staging folder beside their final
place (`staged_outputs`) and replace the previous ones only once complete; removals stay inside
the folder a program owns (`remove_within`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

STAGING_NAME = ".incomplete"
PREVIOUS_NAME = ".previous"


class UserError(ValueError):
    """Bad input the user can fix; the message is one line naming the file, the field and the fix.

    A ValueError, so programs that report ValueErrors in one line report these too.
    """


def check_output_dir(path: str | os.PathLike, flag: str) -> None:
    """A UserError naming `flag` unless `path` is, or can be made, a folder a file can be written
    in; creates nothing, so a program can check its output first and create it only once its
    inputs have passed their checks. Checked by writing (in `path`, or in its nearest existing
    parent), not with os.access, which answers yes to root on a folder root cannot write to."""
    folder = Path(path)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if existing == folder and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder: give a folder path (or move the file away)")
    if not existing.is_dir():
        raise UserError(f"{flag} {folder} is not a writable folder ({existing} is a file): give a folder "
                        "you can write to")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"{flag} {folder} is not a writable folder ({error.strerror}): give a "
                        "folder you can write to") from None


def writable_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create the folder `path` (given with `flag`) if needed, after `check_output_dir`."""
    check_output_dir(path, flag)
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {folder} is not a writable folder ({error.strerror}): give a "
                        "folder you can write to") from None
    return folder


def remove_within(root: str | os.PathLike, *paths: str | os.PathLike) -> None:
    """Remove each of `paths` (file, folder or symbolic link, which is removed, not followed),
    refusing with a UserError any that is not strictly inside the folder `root` once `..` and
    the links of its parent folders are resolved. Every path is checked before any is removed."""
    resolved_root = Path(root).resolve()
    targets = []
    for path in map(Path, paths):
        target = path.parent.resolve() / path.name
        if path.name in ("", ".", "..") or resolved_root not in target.parents:
            raise UserError(f"refusing to remove {path}: it is not inside {root}")
        targets.append(target)
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _owns_everything(name: str) -> bool:
    return True


@contextlib.contextmanager
def staged_outputs(output_dir: str | os.PathLike,
                   owns: Callable[[str], bool] = _owns_everything,
                   completion_mark: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder, OUTPUT_DIR/.incomplete, to write a run's outputs in.

    When the block succeeds, the entries of OUTPUT_DIR that `owns` (a name -> bool; by default
    all) are replaced by the staging folder's entries, `completion_mark` moved last; when it
    fails, OUTPUT_DIR is left as it was. Only renames happen in the switch (inside OUTPUT_DIR,
    hence one file system, and no write to its parent folder, which may not be the user's);
    the previous entries go to OUTPUT_DIR/.previous first and are deleted last. What a killed
    run left is cleaned up on the next run, the previous outputs restored if it was killed in
    the middle of the switch.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging, previous = output_dir / STAGING_NAME, output_dir / PREVIOUS_NAME
    if previous.exists():
        _finish_interrupted_switch(staging, output_dir, previous, owns)
    if staging.exists():
        logger.warning("removing stale temporaries of an interrupted run: %s", staging)
        remove_within(output_dir, staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        remove_within(output_dir, staging)
        raise
    _switch(staging, output_dir, previous, owns, completion_mark)  # if it fails, the next run repairs
    remove_within(output_dir, staging, previous)


def _owned_entries(output_dir: Path, owns: Callable[[str], bool]) -> list[Path]:
    return [p for p in output_dir.iterdir() if p.name not in (STAGING_NAME, PREVIOUS_NAME) and owns(p.name)]


def _finish_interrupted_switch(staging: Path, output_dir: Path, previous: Path,
                               owns: Callable[[str], bool]) -> None:
    """A run was killed during its switch. If staged entries were still to move, the outputs
    in place are a mix: put the previous ones back. Otherwise the switch was complete."""
    if staging.exists() and any(staging.iterdir()):
        logger.warning("restoring the outputs of %s that a run killed while replacing them had "
                       "moved to %s", output_dir, previous)
        remove_within(output_dir, *_owned_entries(output_dir, owns))
        for path in previous.iterdir():
            os.replace(path, output_dir / path.name)
    remove_within(output_dir, previous)


def _switch(staging: Path, output_dir: Path, previous: Path, owns: Callable[[str], bool],
            completion_mark: str | None) -> None:
    """Move the owned entries of `output_dir` to `previous` (the completion mark first), then
    the staged ones in (the mark last)."""
    previous.mkdir()
    for path in sorted(_owned_entries(output_dir, owns), key=lambda p: p.name != completion_mark):
        os.replace(path, previous / path.name)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == completion_mark):
        os.replace(path, output_dir / path.name)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside the file `path` to write to: it replaces `path` when the
    block succeeds and is removed when it fails, so `path` is the previous file or the new one,
    never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        yield Path(temp_name)
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
