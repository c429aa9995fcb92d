"""Images whose class changed between the zero-shot and the adapted classifier, grouped by
(from, to) pair, largest group first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChangeGroup:
    """``count`` images went from class ``source`` (zero-shot) to ``target`` (adapted);
    ``indices`` are their rows in the predictions, most confident adapted first."""

    source: int
    target: int
    indices: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.indices)


def changed_groups(zero_shot_labels: np.ndarray, adapted_labels: np.ndarray,
                   adapted_confidences: np.ndarray | None = None) -> list[ChangeGroup]:
    """Groups of changed predictions, by count (then by class indices, for a stable order)."""
    before = np.asarray(zero_shot_labels, dtype=np.int64)
    after = np.asarray(adapted_labels, dtype=np.int64)
    if before.shape != after.shape:
        raise ValueError("Zero-shot and adapted labels must cover the same images.")
    conf = (np.zeros(len(after)) if adapted_confidences is None
            else np.asarray(adapted_confidences, dtype=np.float64))
    changed = np.flatnonzero(before != after)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in changed:
        groups.setdefault((int(before[i]), int(after[i])), []).append(int(i))
    out = [ChangeGroup(s, t, tuple(sorted(idx, key=lambda i: (-conf[i], i))))
           for (s, t), idx in groups.items()]
    out.sort(key=lambda g: (-g.count, g.source, g.target))
    return out
