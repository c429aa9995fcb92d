"""Record Python garbage collections that take long: each holds the GIL for its whole pass,
so every thread, the GUI's included, waits. Shared by the GUI benchmarks."""

from __future__ import annotations

import gc
import time


class SlowCollections:
    """While installed, keeps (start time, generation, milliseconds) of every collection
    longer than ``threshold_ms``; times are ``time.perf_counter()`` seconds."""

    def __init__(self, threshold_ms: float = 20.0) -> None:
        self.threshold_ms = threshold_ms
        self.seen: list[tuple[float, int, float]] = []
        self._start = 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif (took := (time.perf_counter() - self._start) * 1000) > self.threshold_ms:
            self.seen.append((self._start, info["generation"], took))

    def install(self) -> SlowCollections:
        gc.callbacks.append(self._on_gc)
        return self
