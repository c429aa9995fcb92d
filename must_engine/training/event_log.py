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
        _drop_partial_line(path)
    return open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - caller closes


def _drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (a kill mid-write past the kept length, which a
    checkpoint records before its own line is written), so the next line starts clean."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def checkpoint_log_bytes(checkpoint: Path) -> int | None:
    """Where the event log ended with the checkpoint's line, as the checkpoint recorded it
    (None: no readable checkpoint, or one made before it recorded this). ``run.json``'s copy
    is written after the checkpoint and may lag it."""
    import torch  # only the launcher of a several-process run needs it here

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the trainer reports an unreadable checkpoint
        return None
    value = state.get("metrics_bytes") if isinstance(state, dict) else None
    return int(value) if value is not None else None
