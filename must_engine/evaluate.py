"""Top-1 accuracy and confusion matrices of predictions against known labels: a folder laid
out one subfolder per class, or a labels CSV (``path,label``).

Only for measuring: adaptation itself never reads labels.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    unlabelled: int  # rows with no known label
    # rows: true class, columns: predicted class
    confusion_adapted: list[list[int]] = field(default_factory=list)
    confusion_zero_shot: list[list[int]] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.per_class]

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
            lines.append(f"({self.unlabelled} images had no known label and were not counted)")
        return "\n".join(lines)

    def confusion_table(self, *, zero_shot: bool = False) -> str:
        """The confusion matrix as text: one row per true class, one column per prediction."""
        matrix = self.confusion_zero_shot if zero_shot else self.confusion_adapted
        names = self.class_names
        width = max(len("true \\ predicted"), *(len(n) for n in names))
        cols = [max(5, len(n)) for n in names]
        corner = "true \\ predicted"
        head = f"{corner:<{width}}  " + "  ".join(
            f"{n:>{w}}" for n, w in zip(names, cols, strict=True))
        lines = [head]
        for name, row in zip(names, matrix, strict=True):
            lines.append(f"{name:<{width}}  " + "  ".join(
                f"{v:>{w}}" for v, w in zip(row, cols, strict=True)))
        return "\n".join(lines)


def labels_from_folders(paths: list[str], class_names: list[str]) -> list[int | None]:
    """The true class of each relative path from its first folder (None if not a class)."""
    index = {_norm(n): i for i, n in enumerate(class_names)}
    out: list[int | None] = []
    for p in paths:
        parts = Path(p).parts
        out.append(index.get(_norm(parts[0])) if len(parts) > 1 else None)
    return out


def has_class_folders(images: str | Path, class_names: list[str]) -> bool:
    """Whether ``images`` has at least one subfolder named after a class."""
    images = Path(images)
    if not images.is_dir():
        return False
    names = {_norm(c) for c in class_names}
    return any(d.is_dir() and _norm(d.name) in names for d in images.iterdir())


def read_labels_csv(path: str | Path, class_names: list[str]) -> dict[str, int]:
    """``path -> class index`` from a CSV with the columns ``path`` and ``label`` (paths
    relative to the image folder, labels class names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Labels file {path} was not found.")
    index = {_norm(n): i for i, n in enumerate(class_names)}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path} needs the columns 'path' and 'label' (one row per "
                             "image, the label a class name).")
        out: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            label = _norm(row["label"] or "")
            if label not in index:
                raise ValueError(f"{path} line {line} has the label '{row['label']}', which is "
                                 "not one of the classes; fix the label or the class names.")
            out[Path(row["path"]).as_posix()] = index[label]
    return out


def evaluate_labels(class_names: Sequence[str], truth: Sequence[int | None],
                    adapted: Sequence[int], zero_shot: Sequence[int]) -> Evaluation:
    """Accuracy and confusion matrices from class indices (``None`` truth: not counted)."""
    c = len(class_names)
    stats = [ClassAccuracy(n, 0, 0, 0) for n in class_names]
    conf_a = np.zeros((c, c), dtype=np.int64)
    conf_z = np.zeros((c, c), dtype=np.int64)
    unlabelled = 0
    for t, a, z in zip(truth, adapted, zero_shot, strict=True):
        if t is None:
            unlabelled += 1
            continue
        s = stats[t]
        s.count += 1
        s.adapted_correct += int(a == t)
        s.zero_shot_correct += int(z == t)
        conf_a[t, a] += 1
        conf_z[t, z] += 1
    return Evaluation(stats, unlabelled, conf_a.tolist(), conf_z.tolist())


def evaluate_csv(csv_path: str | Path, images: str | Path | None = None, *,
                 labels: str | Path | None = None) -> Evaluation:
    """Evaluate a ``must predict`` CSV against class-named subfolders of ``images`` or
    against a labels CSV."""
    classes, rows = read_predictions_csv(csv_path)
    paths = [r["path"] for r in rows]
    if labels is not None:
        known = read_labels_csv(labels, classes)
        truth: list[int | None] = [known.get(Path(p).as_posix()) for p in paths]
        source = f"{labels}"
    else:
        if images is None:
            raise ValueError("Give the image folder (with one subfolder per class) or "
                             "--labels with a labels CSV.")
        images = Path(images)
        if not images.is_dir():
            raise FileNotFoundError(f"Image folder {images} was not found.")
        if not has_class_folders(images, classes):
            raise ValueError(f"{images} has no subfolder named after a class; `must eval` needs "
                             "one subfolder per class holding that class's images, or --labels.")
        truth = labels_from_folders(paths, classes)
        source = f"a class-named subfolder of {images}"
    index = {_norm(n): i for i, n in enumerate(classes)}
    adapted = [index[_norm(r["label"])] for r in rows]
    zero = [index[_norm(r["zero_shot_label"])] for r in rows]
    result = evaluate_labels(classes, truth, adapted, zero)
    if result.count == 0:
        raise ValueError(f"No row of {csv_path} has a known label in {source}.")
    return result
