"""Unsure images: the best class is weak for both the zero-shot and the adapted classifier.

Such images are shown with a mark, can be filtered and exported apart, and can be left out
of the next run's training (see ``must_engine.trust.user_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnsureRule:
    """An image is unsure when both classifiers' best-class probability is below
    ``max_confidence``."""

    max_confidence: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.max_confidence <= 1:
            raise ValueError("The unsure limit must be a probability in (0, 1].")


def unsure_mask(zero_shot_probs: np.ndarray, adapted_probs: np.ndarray | None,
                rule: UnsureRule = UnsureRule()) -> np.ndarray:
    """Boolean per image. Before training (no adapted probabilities) the zero-shot
    classifier alone decides."""
    weak = np.asarray(zero_shot_probs).max(axis=1) < rule.max_confidence
    if adapted_probs is not None:
        weak &= np.asarray(adapted_probs).max(axis=1) < rule.max_confidence
    return weak


def write_unsure_csv(path, paths: list[str], class_names: list[str], zero_shot_probs: np.ndarray,
                     adapted_probs: np.ndarray | None, mask: np.ndarray) -> int:
    """Write the unsure images (``path``, both best classes and confidences) to a CSV, apart
    from the other exports; returns how many rows were written."""
    import csv
    from pathlib import Path

    from must_engine.io_utils import atomic_write

    final = adapted_probs if adapted_probs is not None else zero_shot_probs
    rows = np.flatnonzero(mask)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "confidence", "zero_shot_label", "zero_shot_confidence"])
            for i in rows:
                a, z = int(final[i].argmax()), int(zero_shot_probs[i].argmax())
                w.writerow([paths[i], class_names[a], f"{final[i, a]:.6f}", class_names[z],
                            f"{zero_shot_probs[i, z]:.6f}"])

    atomic_write(Path(path), write)
    return len(rows)
