"""The teacher's last-epoch pseudo-labels of a run (``RUN/pseudo_labels.json``), by path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from must_engine.runs import PSEUDO_FILE


@dataclass(frozen=True)
class PseudoLabel:
    label: int  # class index; -1 when the image was not drawn in the last epoch
    confidence: float
    passed: bool  # confident enough to be trained on


@dataclass(frozen=True)
class PseudoLabels:
    threshold: float
    step: int
    by_path: dict[str, PseudoLabel]

    def get(self, path: str) -> PseudoLabel | None:
        return self.by_path.get(path)

    @classmethod
    def read(cls, run_dir: str | Path | None) -> PseudoLabels | None:
        """None when there is no run or it has not finished an epoch (or the file is bad:
        the browser works without it)."""
        if run_dir is None:
            return None
        f = Path(run_dir) / PSEUDO_FILE
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            rows = {
                str(r["path"]): PseudoLabel(int(r["label"]), float(r["confidence"]),
                                            bool(r["passed"]))
                for r in data["images"]
            }
            return cls(float(data["threshold"]), int(data.get("step", 0)), rows)
        except (OSError, ValueError, KeyError, TypeError):
            return None
