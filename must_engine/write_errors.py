"""Turn an operating-system error met while writing (a read-only drive, no permission, a
full disk) into one sentence that names the user's own path, not the temporary name it
happened on (``[Errno 30] Read-only file system: '.../.classifier.gt325gij.part'``).

Files are written under temporary names beside their destination and renamed at the end
(io_utils.atomic_write, export.common.staged_file): an error counts as the destination's
when it happened on the destination, on a temporary name made from it, inside it, or on
one of the folders that lead to it. Any other error (reading an image, say) passes through.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

_WHY = {
    errno.EROFS: "the drive is read-only",
    errno.EACCES: "you do not have permission to write there",
    errno.EPERM: "you do not have permission to write there",
    errno.ENOSPC: "the drive is full",
    errno.EDQUOT: "your disk quota is used up",
    errno.ENAMETOOLONG: "a name is too long for this drive",
}


def concerns(exc: OSError, target: Path) -> bool:
    """Whether ``exc`` happened while writing ``target`` (see the module docstring)."""
    target = Path(os.path.abspath(target))
    for name in (exc.filename, exc.filename2):
        if not name:
            continue
        path = Path(os.path.abspath(os.fsdecode(name)))
        if path == target or target.is_relative_to(path):
            return True  # the destination itself, or a folder that leads to it
        if path.is_relative_to(target.parent) and path != target.parent:
            first = path.relative_to(target.parent).parts[0]
            if first.startswith((target.name, "." + target.name)):
                return True  # a temporary or companion name beside it, or inside it
    return False


def write_error_message(exc: OSError, action: str, advice: str) -> str:
    """'<action>: <why>; <advice>.' -- e.g. 'Cannot write the export /media/cd/out: the
    drive is read-only; choose another place for it.'"""
    why = _WHY.get(exc.errno or -1) or (exc.strerror or str(exc)).rstrip(".").lower()
    return f"{action}: {why}; {advice}."


@contextlib.contextmanager
def write_errors_as(error_type: type[Exception], target: str | os.PathLike, action: str,
                    advice: str) -> Iterator[None]:
    """Re-raise an OSError about writing ``target`` as ``error_type`` with one sentence."""
    try:
        yield
    except OSError as exc:
        if concerns(exc, Path(target)):
            raise error_type(write_error_message(exc, action, advice)) from exc
        raise
