"""Project files: round trip, relative paths, atomic save, clear errors for damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from must_engine.project import (
    PROJECT_VERSION,
    Project,
    ProjectError,
    predictions_cache,
)


def make_project(tmp_path: Path) -> Project:
    path = tmp_path / "work" / "birds.mustproj"
    images = tmp_path / "work" / "photos"
    images.mkdir(parents=True)
    project = Project(name="birds", image_folder=str(images), class_names=["robin", "crow"],
                      templates=["a photo of a {}."], template_set="", model="ViT-B-32",
                      pretrained="openai", preset="pets", overrides={"epochs": 3},
                      device="cpu", path=path)
    run = project.new_run_dir()
    project.add_run(run)
    project.predictions = str(predictions_cache(run))
    return project


def test_round_trip_keeps_every_field(tmp_path):
    project = make_project(tmp_path)
    project.save()
    loaded = Project.load(project.path)
    assert loaded == project
    assert loaded.path == project.path
    assert loaded.version == PROJECT_VERSION


def test_paths_inside_the_project_folder_are_stored_relative(tmp_path):
    project = make_project(tmp_path)
    outside = tmp_path / "elsewhere" / "run-x"
    project.add_run(outside, make_current=False)
    project.save()
    data = json.loads(project.path.read_text(encoding="utf-8"))
    assert data["image_folder"] == "photos"
    assert data["runs"][0] == "birds_runs/run-001"
    assert data["current_run"] == "birds_runs/run-001"
    assert data["predictions"] == "birds_runs/run-001/predictions.npz"
    assert Path(data["runs"][1]).is_absolute()  # outside the folder: kept absolute

    # Moving the whole folder keeps the project working.
    moved = tmp_path / "moved"
    project.path.parent.rename(moved)
    again = Project.load(moved / "birds.mustproj")
    assert again.image_folder == str(moved / "photos")
    assert again.current_run_dir() == moved / "birds_runs" / "run-001"


def test_runs_live_beside_the_project_file(tmp_path):
    project = Project(path=tmp_path / "cats.mustproj")
    assert project.runs_dir() == tmp_path / "cats_runs"
    first = project.new_run_dir()
    assert first.name == "run-001"
    first.mkdir(parents=True)
    assert project.new_run_dir().name == "run-002"


def test_new_run_replaces_cached_predictions(tmp_path):
    project = make_project(tmp_path)
    assert project.predictions
    project.add_run(project.new_run_dir())
    assert project.predictions == ""
    assert len(project.runs) == 2


def test_unsaved_project_has_no_run_folder():
    with pytest.raises(ProjectError, match="Save the project"):
        Project().runs_dir()


def test_local_model_folder_is_stored_relative(tmp_path):
    project = Project(path=tmp_path / "p.mustproj", model=f"local-dir:{tmp_path / 'model'}")
    project.save()
    assert json.loads(project.path.read_text())["model"] == "local-dir:model"
    assert Project.load(project.path).model == f"local-dir:{tmp_path / 'model'}"


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    project = make_project(tmp_path)
    project.save()
    before = project.path.read_text(encoding="utf-8")

    import must_engine.io_utils as io_utils

    def broken_dumps(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(io_utils.json, "dumps", broken_dumps)
    project.name = "changed"
    with pytest.raises(OSError):
        project.save()
    assert project.path.read_text(encoding="utf-8") == before
    assert [p.name for p in project.path.parent.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("text, message", [
    ("{not json", "damaged"),
    ("[1, 2]", "not a MUST Studio project"),
    ('{"format": "something-else"}', "not a MUST Studio project"),
    ('{"format": "must-project", "version": 99}', "newer MUST Studio"),
    ('{"format": "must-project", "class_names": "cat"}', "wrong type"),
    ('{"format": "must-project", "runs": [1, 2]}', "list of text"),
    ('{"format": "must-project", "preset": "imagenet-xxl"}', "unknown preset"),
    ('{"format": "must-project", "overrides": {"epochz": 3}}', "unknown setting"),
])
def test_damaged_files_give_one_clear_sentence(tmp_path, text, message):
    path = tmp_path / "bad.mustproj"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProjectError, match=message):
        Project.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProjectError, match="was not found"):
        Project.load(tmp_path / "nope.mustproj")


def test_unknown_keys_are_ignored(tmp_path):
    path = tmp_path / "p.mustproj"
    path.write_text(json.dumps({"format": "must-project", "version": 1, "name": "x",
                                "future_field": 1}), encoding="utf-8")
    assert Project.load(path).name == "x"


def test_train_job_carries_the_preset(tmp_path, tiny_model_dir):
    project = Project(image_folder=str(tmp_path), class_names=["a", "b"],
                      model=str(tiny_model_dir), preset="dtd", overrides={"epochs": 2})
    job = project.train_job()
    assert job.overrides == {"epochs": 2, "preset": "dtd"}
    assert job.model.kind == "local-dir"
    assert job.class_names == ["a", "b"]
