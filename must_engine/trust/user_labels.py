"""Labels the user gave (spot-check answers, classes chosen in the inspector) and images
left out of training, saved with the project.

The project keeps them in ``<project stem>_labels.json`` beside the ``.mustproj`` file. When a
run starts, ``write_run_labels`` copies them into the run folder (``user_labels.json``), where
the trainer reads them: each labelled image trains on its label, with its own loss weight,
in place of the teacher's pseudo-label; excluded images are not trained on at all. Every later
run gets the same copy, so a correction stays.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from must_engine.io_utils import read_json, write_json

LABELS_SUFFIX = "_labels.json"
RUN_LABELS_FILE = "user_labels.json"
SOURCES = ("spot-check", "inspector", "labels")
DEFAULT_CORRECTION_WEIGHT = 1.0


class UserLabelsError(ValueError):
    """A labels file that cannot be used, with one sentence saying what to do."""


@dataclass
class UserLabel:
    """The class the user says an image shows (``None``: none of the classes)."""

    label: str | None
    source: str = "inspector"
    time: str = ""


@dataclass
class SpotCheckState:
    """A spot-check in progress for one run: its plan and which images were shown."""

    run: str
    plan: dict[str, Any]
    asked: list[str] = field(default_factory=list)  # in order; skipped ones stay here
    answers: dict[str, str | None] = field(default_factory=dict)  # path -> class name


@dataclass
class UserLabels:
    """All of a project's user labels, its excluded images and the spot-check state."""

    labels: dict[str, UserLabel] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    correction_weight: float = DEFAULT_CORRECTION_WEIGHT
    spot_check: SpotCheckState | None = None

    # ---- editing ---------------------------------------------------------------------------
    def set_label(self, path: str, label: str | None, source: str = "inspector") -> None:
        if source not in SOURCES:
            raise ValueError(f"Unknown label source {source!r}.")
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.labels[path] = UserLabel(label, source, stamp)

    def remove_label(self, path: str) -> None:
        self.labels.pop(path, None)

    def set_excluded(self, paths: list[str] | set[str], excluded: bool = True) -> None:
        current = set(self.excluded)
        current = current | set(paths) if excluded else current - set(paths)
        self.excluded = sorted(current)

    def class_labels(self, class_names: list[str]) -> dict[str, int]:
        """Labelled paths whose label is one of ``class_names``, as class indices."""
        index = {n: i for i, n in enumerate(class_names)}
        return {p: index[u.label] for p, u in self.labels.items()
                if u.label is not None and u.label in index}

    # ---- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "must-user-labels", "version": 1,
            "labels": {p: asdict(u) for p, u in sorted(self.labels.items())},
            "excluded": list(self.excluded),
            "correction_weight": self.correction_weight,
            "spot_check": asdict(self.spot_check) if self.spot_check is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "The labels file") -> UserLabels:
        if not isinstance(data, dict) or data.get("format") != "must-user-labels":
            raise UserLabelsError(f"{where} is not a MUST Studio labels file; move it away and "
                                  "reopen the project.")
        try:
            labels = {str(p): UserLabel(**u) for p, u in data.get("labels", {}).items()}
            spot = data.get("spot_check")
            return cls(labels, [str(p) for p in data.get("excluded", [])],
                       float(data.get("correction_weight", DEFAULT_CORRECTION_WEIGHT)),
                       SpotCheckState(**spot) if spot else None)
        except (TypeError, ValueError, AttributeError) as exc:
            raise UserLabelsError(f"{where} is damaged ({exc}); restore it from a copy or move "
                                  "it away.") from exc

    def save(self, path: str | Path) -> Path:
        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> UserLabels:
        """The labels in ``path``; empty when the file does not exist yet."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise UserLabelsError(f"The labels file {path} cannot be read ({exc}); restore it "
                                  "from a copy or move it away.") from exc
        return cls.from_dict(data, f"The labels file {path}")


def labels_path(project_path: str | Path) -> Path:
    """Where a project keeps its user labels: beside the project file."""
    p = Path(project_path)
    return p.with_name(p.stem + LABELS_SUFFIX)


# ---- the copy a run trains with ------------------------------------------------------------
@dataclass(frozen=True)
class RunLabels:
    """What the trainer needs: fixed class indices by path, their loss weight, and the
    images to leave out of training."""

    fixed: dict[str, int]
    weight: float
    excluded: frozenset[str]


def write_run_labels(run_dir: str | Path, labels: UserLabels, class_names: list[str]) -> Path:
    """Copy the project's labels into a run folder before it trains."""
    path = Path(run_dir) / RUN_LABELS_FILE
    fixed = {p: class_names[i] for p, i in labels.class_labels(class_names).items()}
    # "none of these" answers: no class to train on, so the image is left out.
    none = [p for p, u in labels.labels.items() if u.label is None]
    write_json(path, {"weight": labels.correction_weight, "labels": fixed,
                      "excluded": sorted(set(labels.excluded) | set(none))})
    return path


def read_run_labels(run_dir: str | Path, class_names: list[str]) -> RunLabels:
    """The labels a run trains with (none when the run has no ``user_labels.json``)."""
    path = Path(run_dir) / RUN_LABELS_FILE
    if not path.is_file():
        return RunLabels({}, DEFAULT_CORRECTION_WEIGHT, frozenset())
    try:
        data = read_json(path)
        index = {n: i for i, n in enumerate(class_names)}
        unknown = sorted({n for n in data["labels"].values() if n not in index})
        if unknown:
            raise UserLabelsError(f"{path} names class '{unknown[0]}', which this run does not "
                                  "have; delete the file or fix the label.")
        weight = float(data.get("weight", DEFAULT_CORRECTION_WEIGHT))
        if weight < 0:
            raise UserLabelsError(f"{path} has a negative correction weight; make it 0 or more.")
        return RunLabels({str(p): index[n] for p, n in data["labels"].items()}, weight,
                         frozenset(str(p) for p in data.get("excluded", [])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, UserLabelsError):
            raise
        raise UserLabelsError(f"{path} cannot be read ({exc}); delete it to train without "
                              "corrections.") from exc


def training_files(files: list[str], run_labels: RunLabels) -> list[str]:
    """The run's images minus those left out of training (at least two must remain)."""
    kept = [f for f in files if f not in run_labels.excluded]
    if len(kept) < 2:
        raise UserLabelsError(f"Only {len(kept)} image(s) are left for training after leaving "
                              "out the excluded ones; include more images again.")
    return kept
