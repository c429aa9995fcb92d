"""Cooperative pause / resume / stop for a run driven on another thread or in another process.

Python threads cannot be killed, so the trainer checks these flags between steps. A run
started elsewhere (the app's torchrun child, a cluster job) is steered through its control
file: another program writes ``pause``, ``run`` or ``stop`` into ``<run>/control``, and the
trainer's first process reads it between steps (and shares what it read with the others).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from must_engine.io_utils import atomic_write

CONTROL_FILE = "control"
REQUESTS = ("pause", "run", "stop")
POLL_SECONDS = 0.2  # how often the control file is looked at, at most


def write_request(run_dir: str | Path, request: str) -> Path:
    """Ask the run training in ``run_dir`` to pause, run on, or stop (with a checkpoint)."""
    if request not in REQUESTS:
        raise ValueError(f"Unknown request '{request}'; write one of {', '.join(REQUESTS)}.")
    path = Path(run_dir) / CONTROL_FILE
    # renamed into place whole: the trainer never reads half a word
    atomic_write(path, lambda p: p.write_text(request + "\n", encoding="utf-8"))
    return path


class TrainControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._file: Path | None = None
        self._file_state: tuple[int, int] | None = None
        self._next_poll = 0.0

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused trainer so it can stop

    @property
    def stop_requested(self) -> bool:
        self._poll()
        return self._stop.is_set()

    @property
    def pause_requested(self) -> bool:
        self._poll()
        return not self._running.is_set()

    def wait_until_resumed(self, poll_seconds: float = 0.1) -> None:
        while not self._running.wait(poll_seconds):
            self._poll()

    # ---- the run's control file -------------------------------------------------------------
    def watch(self, path: Path) -> None:
        """Obey requests written to ``path`` from now on; one left from before is dropped."""
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        self._file, self._file_state, self._next_poll = path, None, 0.0

    def unwatch(self) -> None:
        """Stop reading the file, and remove it: the run it steered has ended."""
        path, self._file = self._file, None
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _poll(self) -> None:
        if self._file is None or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + POLL_SECONDS
        try:
            st = self._file.stat()
            state = (st.st_mtime_ns, st.st_size)
            if state == self._file_state:
                return
            request = self._file.read_text(encoding="utf-8").strip().lower()
        except (OSError, UnicodeDecodeError):
            return  # absent (nothing asked) or being replaced: look again next time
        self._file_state = state
        if request == "stop":
            self.stop()
        elif request == "pause":
            self.pause()
        elif request == "run":
            self.resume()
