"""The run's event log (``metrics.jsonl``): one JSON object a line, each line handed to the
OS as it is written, so a killed process loses at most the line being written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO


def open_event_log(path: Path, keep_bytes: int | None) -> TextIO:
    """Open the log for appending after cutting it to ``keep_bytes`` (None: keep it all): a
    resumed run repeats the steps after its checkpoint, and their rows must not appear
    twice. A partial last line (a kill mid-write) is dropped with them."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if keep_bytes is not None and os.path.getsize(path) > keep_bytes:
            os.truncate(path, max(0, int(keep_bytes)))
    return open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - caller closes
