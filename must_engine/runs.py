"""A run folder: everything one adaptation produced, described by itself.

    RUN/
      run.json              job (images, classes, templates, model), settings, architecture,
                            preprocessing, data summary, status and progress
      images.json           the image list in training order of the dataset (relative paths)
      zero_shot.safetensors the starting model (image tower + text classifier): "before"
      checkpoint.pt         resumable training state (student, teacher, optimiser, step,
                            fairness prior); no RNG state: every random draw is a function
                            of (seed, epoch, step or image), so it is recomputed on resume
      model.safetensors     the adapted classifier (the EMA teacher): "after"
      metrics.jsonl         every event of the run, one JSON object a line
      pseudo_labels.json    per image: the teacher's label and confidence in the last epoch
                            (none for an image that could not be read during training;
                            run.json lists those under data.skipped_in_training)
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from must_engine.io_utils import read_json, write_json
from must_engine.models.source import ModelSpec
from must_engine.settings import MustSettings
from must_engine.version import __version__

RUN_FORMAT = "must-run/1"
RUN_FILE = "run.json"
IMAGES_FILE = "images.json"
ZERO_SHOT_FILE = "zero_shot.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
PSEUDO_FILE = "pseudo_labels.json"


class RunError(ValueError):
    """A run folder that cannot be used, with a sentence saying what to do."""


@dataclass
class TrainJob:
    """What to adapt: a folder of images, class names, prompts and a pretrained model."""

    images: Path
    class_names: list[str]
    model: ModelSpec
    templates: list[str] = field(default_factory=list)  # empty = the default set
    settings: MustSettings | None = None  # None = chosen from the folder and model
    overrides: dict[str, Any] = field(default_factory=dict)  # applied over the defaults
    # more names per class, averaged into its text embedding (must_engine.trust.prompts)
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "images": str(self.images),
            "class_names": list(self.class_names),
            "model": self.model.to_dict(),
            "templates": list(self.templates),
        }
        if self.synonyms:
            data["synonyms"] = {k: list(v) for k, v in self.synonyms.items()}
        return data


@dataclass
class RunInfo:
    """The parsed ``run.json`` of a run folder."""

    path: Path
    data: dict[str, Any]

    def _part(self, *keys: str) -> Any:
        """``data[k1][k2]...``, or a RunError naming what is missing from a damaged file."""
        value: Any = self.data
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise RunError(f"{self.path / RUN_FILE} is damaged (no '{'.'.join(keys)}'); "
                               "start a new run.")
            value = value[key]
        return value

    @property
    def class_names(self) -> list[str]:
        return list(self._part("job", "class_names"))

    @property
    def templates(self) -> list[str]:
        return list(self._part("job", "templates"))

    @property
    def images_root(self) -> Path:
        return Path(self._part("job", "images"))

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self._part("job", "model"))

    @property
    def settings(self) -> MustSettings:
        return MustSettings.from_dict(self._part("settings"))

    @property
    def architecture(self) -> dict[str, Any]:
        return self._part("architecture")

    @property
    def preprocess(self):
        from must_engine.views import Preprocess

        return Preprocess.from_dict(self._part("preprocess"))

    @property
    def status(self) -> str:
        return self.data.get("status", "unknown")

    @property
    def step(self) -> int:
        return int(self.data.get("step", 0))

    @property
    def total_steps(self) -> int:
        return int(self.data.get("total_steps", 0))

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def has_adapted_model(self) -> bool:
        return (self.path / MODEL_FILE).is_file()

    def image_files(self) -> list[str]:
        return list(read_json(self.path / IMAGES_FILE))

    def save(self) -> None:
        self.data["updated"] = now()
        write_json(self.path / RUN_FILE, self.data)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def open_run(path: str | Path) -> RunInfo:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"Run folder {path} was not found.")
    if not (path / RUN_FILE).is_file():
        raise RunError(f"{path} is not a MUST run folder (no {RUN_FILE}); give the folder that "
                       "`must train --out` wrote.")
    try:
        data = read_json(path / RUN_FILE)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path / RUN_FILE} cannot be read ({exc}); the run folder is damaged: "
                       "start a new run.") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path / RUN_FILE} is damaged (not a JSON object); start a new run.")
    fmt = data.get("format", RUN_FORMAT)
    if fmt != RUN_FORMAT:
        newer = isinstance(fmt, str) and fmt.startswith("must-run/")
        raise RunError(f"The run in {path} has format {fmt!r}; this MUST Studio reads "
                       f"{RUN_FORMAT}" + ("; upgrade MUST Studio to open it." if newer else "."))
    return RunInfo(path, data)


def new_run_data(job: TrainJob, settings: MustSettings, *, architecture: dict, preprocess,
                 identity: dict, num_images: int, skipped: list[dict]) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "engine_version": __version__,
        "created": now(),
        "updated": now(),
        "job": job.to_dict(),
        "settings": settings.to_dict(),
        "architecture": architecture,
        "preprocess": preprocess.to_dict(),
        "model_identity": identity,
        "data": {"num_images": num_images, "skipped": skipped},
        "status": "created",
        "step": 0,
        "total_steps": 0,
    }
