"""One trainer per run folder: an OS lock on ``RUN/.must-lock`` held while a run trains.

The lock is the kernel's (``flock`` on POSIX, ``msvcrt.locking`` on Windows), so it dies
with its process: a lock left by a crashed or killed process is simply free, and the next
run takes it over. The file also records who holds it, for the refusal message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from must_engine.runs import RunError, now

LOCK_FILE = ".must-lock"
_WINDOWS_LOCK_OFFSET = 1 << 20  # lock a byte past the holder record so others can read it


class RunLockedError(RunError):
    """Another process is training this run folder."""


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def lock_holder(run_dir: Path) -> dict:
    """What the lock file says about its last holder ({} if nothing readable)."""
    try:
        data = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    where = f" on {holder['host']}" if holder.get("host") else ""
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"process {holder['pid']}{where}{since}"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the block; raise ``RunLockedError`` at once if another
    process holds it. A folder this call created, left holding only the lock, is removed."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"Cannot create the run folder {run_dir} ({exc.strerror or exc}); "
                       "choose another --out.") from exc
    path = run_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunError(f"Cannot write in the run folder {run_dir} ({exc.strerror or exc}); "
                           "check its permissions or choose another --out.") from exc
        if not _try_lock(fd):
            os.close(fd)
            raise RunLockedError(f"The run in {run_dir} is being trained by "
                                 f"{_describe(lock_holder(run_dir))}; wait for it to finish or "
                                 "stop it first.")
        # The file may have been removed and re-created between our open and our lock (by a
        # holder cleaning up a folder it created): then our lock guards nothing; try again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            break
        _unlock(fd)
        os.close(fd)
    try:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode("utf-8"))
    except OSError:
        pass  # the lock holds without the record; only the message would be vaguer
    try:
        yield path
    finally:
        if created and sorted(os.listdir(run_dir)) == [LOCK_FILE]:
            with contextlib.suppress(OSError):
                path.unlink()
                run_dir.rmdir()
        _unlock(fd)
        os.close(fd)
