"""Collapse and imbalance watch over the per-epoch pseudo-label counts.

Self-training can drift: a class loses its pseudo-labels epoch after epoch until the
classifier stops predicting it. After each epoch the watch looks at ``EpochSummary`` and
warns (once per class and kind) about

- a class whose share of pseudo-labels is far below the others' (under ``far_below`` of the
  median share of the other classes),
- a class whose share has shrunk ``shrinking_epochs`` epochs in a row and is now under half of
  its best share,
- a class that no image has yet passed the confidence threshold for, after ``never_after``
  epochs (while other classes have confident images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from must_engine.events import EpochSummary, RunWarning

COLLAPSE = "class_collapse"
NEVER_CONFIDENT = "class_never_confident"


@dataclass(frozen=True)
class CollapseWatchSettings:
    far_below: float = 0.2
    shrinking_epochs: int = 3
    never_after: int = 2


def _names(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


@dataclass
class CollapseWatch:
    class_names: list[str]
    settings: CollapseWatchSettings = field(default_factory=CollapseWatchSettings)
    shares: list[np.ndarray] = field(default_factory=list)
    confident_total: np.ndarray | None = None
    warned: set[tuple[str, int]] = field(default_factory=set)

    def update(self, summary: EpochSummary, step: int = -1) -> list[RunWarning]:
        """Take one epoch's summary; the warnings it raises (each class warned once per kind)."""
        counts = np.asarray(summary.pseudo_label_counts, dtype=np.float64)
        confident = np.asarray(summary.confident_counts, dtype=np.int64)
        total = counts.sum()
        self.shares.append(counts / total if total > 0 else np.zeros_like(counts))
        self.confident_total = (confident if self.confident_total is None
                                else self.confident_total + confident)
        s = self.settings
        share = self.shares[-1]
        low = []
        for k in range(len(share)):
            others = np.delete(share, k)
            if total > 0 and len(others) and share[k] < s.far_below * float(np.median(others)):
                low.append(k)
        shrinking = []
        if len(self.shares) > s.shrinking_epochs:
            recent = np.stack(self.shares[-(s.shrinking_epochs + 1):])
            best = np.stack(self.shares).max(axis=0)
            for k in range(len(share)):
                if np.all(np.diff(recent[:, k]) < 0) and share[k] < 0.5 * best[k]:
                    shrinking.append(k)
        never = []
        if len(self.shares) >= s.never_after and self.confident_total.sum() > 0:
            never = [k for k in range(len(share)) if self.confident_total[k] == 0]

        warnings = []
        fresh = self._fresh(COLLAPSE, sorted(set(low) | set(shrinking)))
        if fresh:
            names = [self.class_names[k] for k in fresh]
            what = ("is losing its pseudo-labels epoch after epoch"
                    if any(k in shrinking for k in fresh) else
                    "gets far fewer pseudo-labels than the other classes")
            plural = "es" if len(names) > 1 else ""
            warnings.append(RunWarning(
                COLLAPSE,
                f"Class{plural} {_names(names)} {what} (epoch {summary.epoch + 1}: "
                + ", ".join(f"{share[k]:.1%} of images" for k in fresh) + ").",
                "Rename the class or add a synonym so its prompt fits the pictures; if the "
                "folder really holds few of them, lower the fairness weight (w_fair).",
                names, step))
        fresh = self._fresh(NEVER_CONFIDENT, never)
        if fresh:
            names = [self.class_names[k] for k in fresh]
            warnings.append(RunWarning(
                NEVER_CONFIDENT,
                f"No image of {_names(names)} has passed the confidence threshold "
                f"({summary.epoch + 1} epochs), so "
                f"{'they do' if len(names) > 1 else 'it does'} not take part in self-training.",
                "Lower the threshold, or rename the class so its prompt fits the pictures.",
                names, step))
        return warnings

    def _fresh(self, kind: str, classes: list[int]) -> list[int]:
        fresh = [k for k in classes if (kind, k) not in self.warned]
        self.warned.update((kind, k) for k in fresh)
        return fresh

    def replay(self, metrics_log: str | Path, keep_bytes: int | None = None) -> None:
        """Feed the epoch summaries of a run's log (a resumed run), keeping their warnings
        marked as given. ``keep_bytes``: only the start of the log that the resume keeps (the
        epochs after its checkpoint are trained, summarised and warned about again)."""
        path = Path(metrics_log)
        if not path.is_file():
            return
        with open(path, "rb") as f:
            data = f.read() if keep_bytes is None else f.read(max(0, int(keep_bytes)))
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if data.get("type") == "EpochSummary":
                data.pop("type")
                self.update(EpochSummary(**data))
