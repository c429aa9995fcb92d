"""Small file helpers: atomic writes so an interrupted save never leaves a half file.

A staged write goes to a hidden ``.<name>.<pid>-<random>.part`` beside the target and is
renamed into place only when complete. The final file gets the mode a plain ``open()`` would
have given it (``mkstemp`` makes owner-only files), a full disk becomes one ``DiskFullError``
naming the file, and parts left by a killed process are removed by the next write (those of
older versions, named without a pid, once a day old).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PART_SUFFIX = ".part"
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing; nothing was left half-written."""

    def __init__(self, path: Path):
        super().__init__(errno.ENOSPC, f"There is not enough free disk space to write {path}; "
                         "free some space and try again", str(path))

    def __str__(self) -> str:
        return f"{self.strerror}."


def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` or anything it was raised from is a full-disk or quota error."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@contextlib.contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into one ``DiskFullError`` naming it."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:  # not an error that already says what to do
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


# ---- CSV cells ---------------------------------------------------------------------------
# A spreadsheet runs a cell starting with one of these as a formula (file names can).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: formula-like cells get a leading quote
    (OWASP's advice for CSV injection); ``from_spreadsheet_safe`` undoes it."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def from_spreadsheet_safe(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_STARTS) else text


# ---- modes ---------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc):
    ``os.umask`` can only be read by setting it, which races with other threads."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_file_mode(existing: Path | None = None) -> int:
    """The mode ``open(path, "w")`` would give: an existing file keeps its own."""
    if existing is not None:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(os.stat(existing).st_mode)
    return 0o666 & ~current_umask()


def plain_folder_mode() -> int:
    """The mode ``mkdir`` would give."""
    return 0o777 & ~current_umask()


# ---- staged names and what killed processes left --------------------------------------------
def part_prefix(name: str) -> str:
    """Prefix of this process's staged parts of ``name``."""
    return f".{name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe: never delete what might be in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, owned by someone else
    return True


# Parts staged before the writer's pid went into the name (".<name>.<8 random>.part", from
# tempfile.mkstemp/mkdtemp) name no process to ask whether it is still writing: they are
# removed only once nothing in them has changed for a day, far longer than any write takes.
UNNAMED_WRITER_AGE_S = 24 * 3600
_MKSTEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _writer_pid(entry: str, head: str) -> int | None:
    """The pid in a staged name ``<head><pid>-<random>.part``; None for a name without one."""
    middle = entry[len(head):-len(PART_SUFFIX)]
    pid_text, dash, rest = middle.partition("-")
    return int(pid_text) if dash and pid_text.isdigit() and rest else None


def _is_unnamed_part(entry: str, head: str) -> bool:
    """``<head><8 mkstemp characters>.part``: the staged names written before pids were."""
    middle = entry[len(head):-len(PART_SUFFIX)]
    return len(middle) == 8 and set(middle) <= _MKSTEMP_CHARS


def _newest_change(path: Path) -> float:
    """The latest modification time of ``path`` and, for a folder, of anything in it."""
    newest = os.lstat(path).st_mtime
    if stat.S_ISDIR(os.lstat(path).st_mode):
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def _is_stale(path: Path, pid: int | None, now: float) -> bool:
    if pid is not None and os.name == "posix":
        return not _pid_alive(pid)
    # No pid in the name, or no safe liveness probe (Windows): only what has not been
    # written to for a day, so a live writer (of any version) is never cut short.
    try:
        return now - _newest_change(path) >= UNNAMED_WRITER_AGE_S
    except OSError:
        return False


def remove_stale_parts(folder: Path, name: str) -> list[Path]:
    """Delete the staged parts of ``name`` that nothing is writing any more: ``.<name>.<pid>-*
    .part`` whose process is gone, and parts without a pid (older versions) or on systems
    that cannot ask about a pid once untouched for a day. Only plain files and real folders
    with exactly these names are touched, never links."""
    import time

    removed: list[Path] = []
    head = f".{name}."
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not (entry.startswith(head) and entry.endswith(PART_SUFFIX)):
            continue
        pid = _writer_pid(entry, head)
        if pid is None and not _is_unnamed_part(entry, head):
            continue  # not a name this program stages under: the user's, left alone
        path = Path(folder) / entry
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or not _is_stale(path, pid, now):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(mode):
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed.append(path)
    return removed


def make_part_file(path: Path) -> Path:
    """An empty staged file beside ``path`` (stale parts of it cleaned first)."""
    remove_stale_parts(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=part_prefix(path.name), suffix=PART_SUFFIX,
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def make_part_folder(path: Path) -> Path:
    remove_stale_parts(path.parent, path.name)
    return Path(tempfile.mkdtemp(prefix=part_prefix(path.name), suffix=PART_SUFFIX,
                                 dir=path.parent))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = make_part_file(path)
        try:
            write(tmp_path)
            os.chmod(tmp_path, plain_file_mode(path if path.exists() else None))
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable)
    atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
