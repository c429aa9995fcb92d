"""What a run logged, read back for the app without the engine's heavier modules: its
``RunWarning`` events, so an earlier run shows its warnings again."""

from __future__ import annotations

import json
from pathlib import Path

from must_engine.events import RunWarning

METRICS_FILE = "metrics.jsonl"  # as must_engine.runs names it (that module imports torch)


def read_warnings(run_dir: str | Path) -> list[RunWarning]:
    """The warnings a run logged in its metrics.jsonl, in order."""
    path = Path(run_dir) / METRICS_FILE
    found: list[RunWarning] = []
    if not path.is_file():
        return found
    with path.open(encoding="utf-8") as f:
        for line in f:
            if '"RunWarning"' not in line:
                continue  # most lines are step metrics: skip them unparsed
            try:
                data = json.loads(line)
                data.pop("type", None)
                found.append(RunWarning(**data))
            except (ValueError, TypeError):
                continue  # a line cut short by a crash, or another engine version's
    return found
