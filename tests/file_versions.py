"""Replace an image under the same name the ways that fool a cache keyed on size and
modification time: through a new file (os.replace, as editors and sync tools do) or
rewritten in place, each with the old length and the old modification time put back."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pad_to_same_size(a: Path, b: Path) -> None:
    """JPEG decoders ignore bytes after the end marker: make both files the same length."""
    n = max(a.stat().st_size, b.stat().st_size)
    for p in (a, b):
        with open(p, "ab") as f:
            f.write(b"\0" * (n - p.stat().st_size))


def _put_back_time(path: Path, before: os.stat_result) -> None:
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    # The change time is the file system clock's; on a coarse one, wait for its next tick
    # (utime sets it again) so the change is visible at all, as any later edit would be.
    for _ in range(400):
        if os.stat(path).st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.005)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def replace_through_new_file(path: Path, replacement: Path) -> None:
    """``replacement`` (of the same length) renamed onto ``path``: a new inode."""
    before = os.stat(path)
    os.replace(replacement, path)
    _put_back_time(path, before)


def rewrite_in_place(path: Path, data: bytes) -> None:
    """``data`` (of the same length) written into ``path`` itself: the same inode."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    _put_back_time(path, before)
    assert os.stat(path).st_ino == before.st_ino
