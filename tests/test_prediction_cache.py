"""`must export` after `must predict` reuses the predictions kept in the run folder, only
while the run's models and the images are unchanged; progress shows off a terminal too."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from must_engine import cli, predict, prediction_cache
from must_engine.models.source import ModelSpec
from must_engine.predict import predict_run
from must_engine.runs import MODEL_FILE, TrainJob
from must_engine.testing import write_image_folder
from must_engine.training.trainer import train

CLASSES = ["red circle", "green square", "blue circle"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("cache-run")
    images = write_image_folder(base / "photos", CLASSES, 4)
    run_dir = base / "run"
    job = TrainJob(images, CLASSES, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"epochs": 1, "batch_size": 6, "seed": 1})
    for _ in train(job, run_dir, device="cpu"):
        pass
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the run and its images (tests change files)."""
    images = tmp_path / "photos"
    shutil.copytree(trained_run.parent / "photos", images)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    run_json = run_dir / "run.json"
    run_json.write_text(run_json.read_text(encoding="utf-8").replace(
        str(trained_run.parent / "photos"), str(images)), encoding="utf-8")
    shutil.rmtree(run_dir / prediction_cache.CACHE_FOLDER, ignore_errors=True)
    return run_dir, images


@pytest.fixture
def scoring_calls(monkeypatch):
    """How many times images were actually scored."""
    calls = []
    real = predict.predict_probs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_probs", counting)
    return calls


def test_second_prediction_reuses_the_first(run_copy, scoring_calls):
    run_dir, _images = run_copy
    first = predict_run(run_dir, device="cpu")
    again = predict_run(run_dir, device="cpu")
    assert len(scoring_calls) == 1
    assert again.paths == first.paths and again.class_names == first.class_names
    np.testing.assert_array_equal(again.probs, first.probs)
    np.testing.assert_array_equal(again.zero_shot_probs, first.zero_shot_probs)
    predict_run(run_dir, device="cpu", reuse=False)
    assert len(scoring_calls) == 2


def test_export_after_predict_does_not_score_again(run_copy, scoring_calls, tmp_path):
    run_dir, images = run_copy
    assert cli.main(["predict", str(run_dir), str(images), "--out",
                     str(tmp_path / "p.csv"), "--quiet"]) == 0
    for fmt in ("csv", "jsonl", "folders", "bundle"):
        assert cli.main(["export", str(run_dir), "--format", fmt, "--out",
                         str(tmp_path / f"out-{fmt}")]) == 0
    assert len(scoring_calls) == 1


def test_changed_image_or_model_scores_again(run_copy, scoring_calls):
    run_dir, images = run_copy
    predict_run(run_dir, device="cpu")
    picture = sorted(images.rglob("*.png"))[0]
    later = picture.stat().st_mtime_ns + 5_000_000_000
    os.utime(picture, ns=(later, later))
    predict_run(run_dir, device="cpu")
    assert len(scoring_calls) == 2
    model = run_dir / MODEL_FILE
    shutil.copy2(model, run_dir / "model.tmp")
    os.replace(run_dir / "model.tmp", model)  # a resumed run rewrites its model like this
    predict_run(run_dir, device="cpu")
    assert len(scoring_calls) == 3
    predict_run(run_dir, device="cpu")
    assert len(scoring_calls) == 3


def test_another_folder_is_never_answered_from_the_runs_cache(run_copy, scoring_calls,
                                                              tmp_path):
    run_dir, images = run_copy
    predict_run(run_dir, device="cpu")
    other = tmp_path / "other"
    shutil.copytree(images, other)
    predictions = predict_run(run_dir, other, device="cpu")
    assert len(scoring_calls) == 2 and predictions.root == other


def test_unwritable_cache_costs_only_the_reuse(run_copy, scoring_calls):
    run_dir, _images = run_copy
    (run_dir / prediction_cache.CACHE_FOLDER).write_text("a file where the folder goes")
    first = predict_run(run_dir, device="cpu")
    again = predict_run(run_dir, device="cpu")
    assert len(scoring_calls) == 2 and again.paths == first.paths


def test_progress_prints_lines_when_not_on_a_terminal(capsys):
    from must_engine.events import ExportProgress, PredictionProgress

    progress = cli.Progress()
    progress.tty = False
    for done in range(0, 1001, 25):
        progress(PredictionProgress(done, 1000))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Classifying images: 0/1000 (0%)"
    assert lines[-1] == "Classifying images: 1000/1000 (100%)"
    assert len(lines) == 11
    progress(ExportProgress("predicting"))
    for done in range(0, 201):
        progress(ExportProgress("predicting", done, 200))
    progress(ExportProgress("writing"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Classifying the run's images" and lines[-1] == "Writing the export"
    assert len(lines) == 13
