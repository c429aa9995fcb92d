"""Cooperative pause / resume / stop for a run driven on another thread.

Python threads cannot be killed, so the trainer checks these flags between steps.
"""

from __future__ import annotations

import threading


class TrainControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused trainer so it can stop

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def pause_requested(self) -> bool:
        return not self._running.is_set()

    def wait_until_resumed(self, poll_seconds: float = 0.1) -> None:
        while not self._running.wait(poll_seconds):
            pass
