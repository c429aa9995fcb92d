"""A read-only, protected or full destination gives one sentence naming the user's path,
never the temporary name the error happened on ('.../.classifier.gt325gij.part')."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from must_engine import cli
from must_engine.export import ExportError, export_predictions, export_run
from must_engine.models.source import ModelSpec
from must_engine.predict import Predictions
from must_engine.project import Project, ProjectError
from must_engine.runs import RunError, TrainJob
from must_engine.training import trainer
from must_engine.training.trainer import prepare_run, train
from must_engine.write_errors import concerns, write_error_message

CLASSES = ["red circle", "green square", "blue circle"]


def _erofs(path: str) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), path)


@pytest.fixture
def read_only_drive(monkeypatch):
    """Every temporary file or folder the code asks for fails as on a read-only mount."""
    def mkstemp(suffix=None, prefix=None, dir=None, text=False):  # noqa: A002
        raise _erofs(os.path.join(dir or ".", f"{prefix or ''}gt325gij{suffix or ''}"))

    def mkdtemp(suffix=None, prefix=None, dir=None):  # noqa: A002
        raise _erofs(os.path.join(dir or ".", f"{prefix or ''}k2j4x9q1{suffix or ''}"))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_errors_on_temporary_names_count_as_the_destinations(tmp_path):
    dest = tmp_path / "out" / "classifier"
    assert concerns(_erofs(str(dest.parent / ".classifier.gt325gij.part")), dest)
    assert concerns(_erofs(str(dest.parent / ".classifier.x.part" / "card.json")), dest)
    assert concerns(_erofs(str(dest)), dest)
    assert concerns(_erofs(str(tmp_path / "out")), dest)  # creating the folder it goes in
    assert concerns(_erofs(str(dest.parent / "classifier.json")), dest)
    assert not concerns(_erofs(str(dest.parent / "photo.jpg")), dest)
    assert not concerns(_erofs(str(tmp_path / "elsewhere" / "x")), dest)
    assert not concerns(OSError(errno.EIO, "I/O error"), dest)


def test_message_says_why_in_words():
    assert write_error_message(OSError(errno.ENOSPC, "No space left on device", "x"),
                               "Cannot write X", "free some space") == \
        "Cannot write X: the drive is full; free some space."
    assert "do not have permission" in write_error_message(
        PermissionError(errno.EACCES, "Permission denied", "x"), "A", "b")


def _predictions(tmp_path: Path) -> Predictions:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes(b"picture")
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], dtype=np.float32)
    return Predictions(photos, ["a.png", "b.png"], CLASSES, probs, probs)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "folders"])
def test_prediction_exports_to_a_read_only_drive(tmp_path, read_only_drive, fmt):
    dest = tmp_path / "usb" / f"out-{fmt}"
    dest.parent.mkdir()
    with pytest.raises(ExportError) as caught:
        export_predictions(_predictions(tmp_path), fmt, dest)
    message = str(caught.value)
    assert message == (f"Cannot write the export {dest}: the drive is read-only; choose "
                       "another place for it.")
    assert ".part" not in message


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    from must_engine.testing import write_image_folder

    base = tmp_path_factory.mktemp("ro-run")
    images = write_image_folder(base / "photos", CLASSES, 3)
    job = TrainJob(images, CLASSES, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"epochs": 1, "batch_size": 6, "seed": 1})
    for _ in train(job, base / "run", device="cpu"):
        pass
    return base / "run"


def test_bundle_export_to_a_read_only_drive(finished_run, tmp_path, read_only_drive):
    dest = tmp_path / "classifier"
    with pytest.raises(ExportError, match=rf"^Cannot write the export {dest}: the drive is "
                                          "read-only"):
        export_run(finished_run, "bundle", dest)


def test_cli_export_says_one_line_and_exits_2(finished_run, tmp_path, read_only_drive,
                                              capsys):
    dest = tmp_path / "classifier"
    assert cli.main(["export", str(finished_run), "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ".part" not in err
    assert f"Cannot write the export {dest}: the drive is read-only" in err


def test_new_project_in_a_read_only_folder(tmp_path, read_only_drive):
    path = tmp_path / "ro" / "flowers.mustproj"
    path.parent.mkdir()
    with pytest.raises(ProjectError, match=rf"^Cannot save the project {path}: the drive is "
                                           "read-only; choose a folder you can write to"):
        Project(name="flowers", path=path).save()


def test_start_in_a_read_only_project_folder(tmp_path, image_folder, class_names,
                                             tiny_model_dir, monkeypatch):
    run_dir = tmp_path / "project" / "runs" / "run-1"

    def refuse(path, *_args, **_kwargs):
        raise _erofs(str(Path(path).parent / f".{Path(path).name}.a8f3.part"))

    monkeypatch.setattr(trainer, "save_model_weights", refuse)
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."], overrides={"epochs": 1, "batch_size": 6})
    with pytest.raises(RunError, match=rf"^Cannot create the run folder {run_dir}: the drive "
                                       "is read-only; choose a project folder you can write "
                                       "to"):
        prepare_run(job, run_dir)
