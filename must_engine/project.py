"""A MUST Studio project: one JSON file (``*.mustproj``) that remembers what the user chose
(folder, classes, prompts, model, settings, device) and what came of it (runs, predictions),
so the app reopens where the user left it.

Paths inside the project folder are stored relative to the project file, so a project and
its runs can be moved or copied together. Runs live by default in ``<stem>_runs/`` beside the
project file. No Qt here: the command line may read projects too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from must_engine.io_utils import write_json
from must_engine.settings import PRESET_NAMES, MustSettings
from must_engine.write_errors import write_errors_as

if TYPE_CHECKING:  # the model module imports torch; keep opening a project light
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob

PROJECT_SUFFIX = ".mustproj"
PROJECT_FORMAT = "must-project"
PROJECT_VERSION = 1
RUN_PREFIX = "run-"
PREDICTIONS_FILE = "predictions.npz"  # the app's cache of a run's Predictions


class ProjectError(ValueError):
    """A project file that cannot be used, with one sentence saying what to do."""


@dataclass
class Project:
    """Everything the app needs to reopen a project. Paths are held absolute in memory;
    ``save`` writes them relative to the project file where they lie beside it."""

    name: str = "Untitled"
    image_folder: str = ""
    class_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)  # empty = the engine's default set
    template_set: str = ""  # name of the shipped set the templates came from, "" = custom
    model: str = ""  # open_clip model name, "hf-hub:..." or "local-dir:..."
    pretrained: str = ""  # pretrained tag or checkpoint file
    preset: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # MustSettings fields the user set
    device: str = "auto"
    runs: list[str] = field(default_factory=list)
    current_run: str = ""
    predictions: str = ""  # Predictions.save_npz cache of the current run
    synonyms: dict[str, list[str]] = field(default_factory=dict)  # more names per class
    version: int = PROJECT_VERSION
    path: Path | None = field(default=None, repr=False, compare=False)  # where it lives

    # ---- derived paths ---------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        if self.path is None:
            raise ProjectError("The project has not been saved yet; save it to a file first.")
        return self.path.parent

    def runs_dir(self) -> Path:
        """``<project stem>_runs`` beside the project file."""
        if self.path is None:
            raise ProjectError("Save the project to a file before training, so its runs have "
                               "a place to live.")
        return self.path.with_name(self.path.stem + "_runs")

    def new_run_dir(self) -> Path:
        """The first free ``run-NNN`` folder under ``runs_dir()`` (not created)."""
        root = self.runs_dir()
        taken = {Path(r).name for r in self.runs}
        n = 1
        while True:
            candidate = root / f"{RUN_PREFIX}{n:03d}"
            if candidate.name not in taken and not candidate.exists():
                return candidate
            n += 1

    def run_dirs(self) -> list[Path]:
        return [Path(r) for r in self.runs]

    def current_run_dir(self) -> Path | None:
        return Path(self.current_run) if self.current_run else None

    def predictions_path(self) -> Path | None:
        return Path(self.predictions) if self.predictions else None

    def add_run(self, run_dir: str | Path, *, make_current: bool = True) -> None:
        text = str(Path(run_dir).absolute())
        if text not in self.runs:
            self.runs.append(text)
        if make_current:
            if text != self.current_run:
                self.predictions = ""  # the cached predictions belong to the previous run
            self.current_run = text

    # ---- what the engine needs -------------------------------------------------------------
    def model_spec(self) -> ModelSpec:
        from must_engine.models.source import ModelSpec

        return ModelSpec.parse(self.model, self.pretrained or None)

    def job_overrides(self) -> dict[str, Any]:
        """Overrides as ``TrainJob.overrides`` takes them (the preset rides along)."""
        return {**self.overrides, "preset": self.preset}

    def train_job(self) -> TrainJob:
        from must_engine.runs import TrainJob

        return TrainJob(images=Path(self.image_folder), class_names=list(self.class_names),
                        model=self.model_spec(), templates=list(self.templates),
                        overrides=self.job_overrides(),
                        synonyms={n: list(s) for n, s in self.synonyms.items()
                                  if n in self.class_names and s})

    # ---- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        base = self.path.parent if self.path is not None else None
        data["image_folder"] = _portable(self.image_folder, base)
        data["runs"] = [_portable(r, base) for r in self.runs]
        data["current_run"] = _portable(self.current_run, base)
        data["predictions"] = _portable(self.predictions, base)
        if self.model.startswith("local-dir:"):
            data["model"] = "local-dir:" + _portable(self.model[len("local-dir:"):], base)
        return {"format": PROJECT_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> Project:
        where = f"The project file {path}" if path is not None else "The project"
        if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
            raise ProjectError(f"{where} is not a MUST Studio project; open a .mustproj file.")
        version = data.get("version", PROJECT_VERSION)
        if not isinstance(version, int) or version > PROJECT_VERSION:
            raise ProjectError(f"{where} was written by a newer MUST Studio (format {version}); "
                               "update the app to open it.")
        known = {f.name: f for f in fields(cls) if f.name != "path"}
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "format" or name not in known:
                continue  # unknown keys from a newer minor version are ignored, not fatal
            values[name] = value
        _check_types(values, where)
        base = path.parent if path is not None else None
        project = cls(**values, path=path)
        project.image_folder = _absolute(project.image_folder, base)
        project.runs = [_absolute(r, base) for r in project.runs]
        project.current_run = _absolute(project.current_run, base)
        project.predictions = _absolute(project.predictions, base)
        if project.model.startswith("local-dir:"):
            project.model = "local-dir:" + _absolute(project.model[len("local-dir:"):], base)
        if project.preset not in PRESET_NAMES:
            raise ProjectError(f"{where} names an unknown preset '{project.preset}'; edit it to "
                               f"one of: {', '.join(PRESET_NAMES)}.")
        unknown = sorted(set(project.overrides) - {f.name for f in fields(MustSettings)})
        if unknown:
            raise ProjectError(f"{where} has unknown setting(s) {', '.join(unknown)}; remove "
                               "them from its \"overrides\".")
        project.version = PROJECT_VERSION
        return project

    @classmethod
    def load(cls, path: str | Path) -> Project:
        path = Path(path).expanduser().absolute()
        if not path.is_file():
            raise ProjectError(f"Project file {path} was not found.")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProjectError(f"The project file {path} cannot be read ({exc}); check the file "
                               "and its permissions.") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"The project file {path} is damaged (not valid JSON at line "
                               f"{exc.lineno}); restore it from a copy or create a new project."
                               ) from exc
        return cls.from_dict(data, path)

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically to ``path`` (default: where it was loaded from)."""
        if path is not None:
            self.path = Path(path).expanduser().absolute()
        if self.path is None:
            raise ProjectError("No file to save the project to; choose one.")
        with write_errors_as(ProjectError, self.path, f"Cannot save the project {self.path}",
                             "choose a folder you can write to"):
            write_json(self.path, self.to_dict())
        return self.path


def predictions_cache(run_dir: str | Path) -> Path:
    """Where the app caches a run's predictions (``Predictions.save_npz``)."""
    return Path(run_dir) / PREDICTIONS_FILE


def project_name_for(path: str | Path) -> str:
    return Path(path).stem


def _portable(text: str, base: Path | None) -> str:
    """Relative to ``base`` when the path lies inside it, else unchanged."""
    if not text or base is None:
        return text
    p = Path(text)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(base).as_posix() or "."
    except ValueError:
        return os.fspath(p)


def _absolute(text: str, base: Path | None) -> str:
    if not text:
        return text
    p = Path(text).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return os.fspath(p)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "image_folder": str, "class_names": list, "templates": list,
    "template_set": str, "model": str, "pretrained": str, "preset": str, "overrides": dict,
    "device": str, "runs": list, "current_run": str, "predictions": str, "version": int,
    "synonyms": dict,
}


def _check_types(values: dict[str, Any], where: str) -> None:
    for name, value in values.items():
        expected = _TYPES.get(name)
        if expected is not None and not isinstance(value, expected):
            raise ProjectError(f"{where} is damaged (\"{name}\" has the wrong type); restore it "
                               "from a copy or create a new project.")
    for name in ("class_names", "templates", "runs"):
        if name in values and not all(isinstance(v, str) for v in values[name]):
            raise ProjectError(f"{where} is damaged (\"{name}\" must be a list of text); restore "
                               "it from a copy or create a new project.")


def project_for_run(run_dir: str | Path, path: str | Path) -> Project:
    """A project (to be saved at ``path``) around a run folder made elsewhere: by ``must
    train`` or torchrun on a cluster. Its folder, classes, prompts, model and settings come
    from the run's ``run.json``, the run is its current run, and the device is left to
    this machine ("auto")."""
    run_dir = Path(run_dir).expanduser().absolute()
    info = run_dir / "run.json"
    if not info.is_file():
        raise ProjectError(f"{run_dir} is not a MUST run folder (no run.json); choose the "
                           "folder that `must train --out` wrote.")
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
        job, settings = data["job"], data.get("settings", {})
        model = job["model"]
        known = {f.name for f in fields(MustSettings)} - {"preset", "device"}
        project = Project(
            name=run_dir.name, image_folder=str(job["images"]),
            class_names=[str(n) for n in job["class_names"]],
            templates=[str(t) for t in job.get("templates", [])],
            model=str(model["model"]), pretrained=str(model.get("pretrained") or ""),
            preset=str(settings.get("preset", "auto")),
            overrides={k: v for k, v in settings.items() if k in known},
            synonyms={str(k): list(v) for k, v in (job.get("synonyms") or {}).items()},
            path=Path(path).expanduser().absolute())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"The run file {info} cannot be read ({exc}); check that the run "
                           "folder was copied whole.") from exc
    if project.preset not in PRESET_NAMES:
        project.preset = "auto"
    project.add_run(run_dir)
    return project
