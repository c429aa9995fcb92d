"""Top-1 accuracy of a predictions CSV against a folder laid out one subfolder per class.

Only for measuring: adaptation itself never reads labels.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from must_engine.predict import read_predictions_csv


def _norm(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().replace("_", " ").split())


@dataclass
class ClassAccuracy:
    name: str
    count: int
    adapted_correct: int
    zero_shot_correct: int

    @property
    def adapted(self) -> float:
        return self.adapted_correct / self.count if self.count else float("nan")

    @property
    def zero_shot(self) -> float:
        return self.zero_shot_correct / self.count if self.count else float("nan")


@dataclass
class Evaluation:
    per_class: list[ClassAccuracy]
    unlabelled: int  # rows whose folder is not a class name

    @property
    def count(self) -> int:
        return sum(c.count for c in self.per_class)

    @property
    def adapted(self) -> float:
        return sum(c.adapted_correct for c in self.per_class) / max(1, self.count)

    @property
    def zero_shot(self) -> float:
        return sum(c.zero_shot_correct for c in self.per_class) / max(1, self.count)

    def table(self) -> str:
        width = max([len("overall"), *(len(c.name) for c in self.per_class)])
        lines = [f"{'class':<{width}}  {'images':>6}  {'zero-shot':>9}  {'adapted':>8}  change"]
        for c in self.per_class:
            lines.append(f"{c.name:<{width}}  {c.count:>6}  {c.zero_shot:>9.1%}  "
                         f"{c.adapted:>8.1%}  {100 * (c.adapted - c.zero_shot):+.1f}")
        lines.append(f"{'overall':<{width}}  {self.count:>6}  {self.zero_shot:>9.1%}  "
                     f"{self.adapted:>8.1%}  {100 * (self.adapted - self.zero_shot):+.1f}")
        if self.unlabelled:
            lines.append(f"({self.unlabelled} images were not in a class-named subfolder and "
                         "were not counted)")
        return "\n".join(lines)


def labels_from_folders(paths: list[str], class_names: list[str]) -> list[int | None]:
    """The true class of each relative path from its first folder (None if not a class)."""
    index = {_norm(n): i for i, n in enumerate(class_names)}
    out: list[int | None] = []
    for p in paths:
        parts = Path(p).parts
        out.append(index.get(_norm(parts[0])) if len(parts) > 1 else None)
    return out


def evaluate_csv(csv_path: str | Path, images: str | Path) -> Evaluation:
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"Image folder {images} was not found.")
    classes, rows = read_predictions_csv(csv_path)
    folders = {_norm(d.name) for d in images.iterdir() if d.is_dir()}
    if not folders & {_norm(c) for c in classes}:
        raise ValueError(f"{images} has no subfolder named after a class; `must eval` needs one "
                         "subfolder per class holding that class's images.")
    truth = labels_from_folders([r["path"] for r in rows], classes)
    stats = [ClassAccuracy(n, 0, 0, 0) for n in classes]
    unlabelled = 0
    for row, t in zip(rows, truth, strict=True):
        if t is None:
            unlabelled += 1
            continue
        s = stats[t]
        s.count += 1
        s.adapted_correct += _norm(row["label"]) == _norm(classes[t])
        s.zero_shot_correct += _norm(row["zero_shot_label"]) == _norm(classes[t])
    if sum(s.count for s in stats) == 0:
        raise ValueError(f"No row of {csv_path} lies in a class-named subfolder of {images}.")
    return Evaluation(stats, unlabelled)
