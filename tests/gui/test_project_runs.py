"""Projects and their runs in the real window: opening another project leaves nothing of the
previous one on show, and the run picker reaches an earlier finished run's results after a
newer run stopped or failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from must_engine.predict import Predictions
from must_engine.project import Project, predictions_cache
from must_gui.main_window import RESULTS, SETUP, TRAINING, MainWindow
from must_gui.widgets.run_picker import describe_run
from tests.gui.results_testdata import make_predictions

pytestmark = pytest.mark.gui
LONG = 60_000


def fake_run(run_dir: Path, status: str, images: Path, *, step: int = 0, total: int = 30,
             predictions: Predictions | None = None) -> Path:
    """A run folder as the trainer leaves it, without training: run.json, and the files a
    finished (model, cached predictions) or stopped (checkpoint) run keeps."""
    run_dir.mkdir(parents=True)
    data = {"status": status, "step": step, "total_steps": total,
            "job": {"images": str(images), "class_names": []}}
    (run_dir / "run.json").write_text(json.dumps(data), encoding="utf-8")
    if status == "finished":
        (run_dir / "model.safetensors").write_bytes(b"")
        assert predictions is not None
        predictions.save_npz(predictions_cache(run_dir))
    elif status == "stopped":
        (run_dir / "checkpoint.pt").write_bytes(b"")
    return run_dir


def project_with_runs(tmp_path: Path, pred: Predictions) -> Path:
    """A saved project whose newest run stopped and whose older run finished."""
    path = tmp_path / "two runs.mustproj"
    project = Project(name=path.stem, image_folder=str(pred.root), class_names=pred.class_names,
                      model="local-dir:/nowhere", path=path)
    first = fake_run(project.runs_dir() / "run-001", "finished", pred.root, step=30,
                     predictions=pred)
    second = fake_run(project.runs_dir() / "run-002", "stopped", pred.root, step=12)
    project.add_run(first)
    project.predictions = str(predictions_cache(first))
    project.add_run(second)  # the newest is current, and its results are not there
    project.save()
    return path


def test_another_project_shows_none_of_the_previous_projects_results(window, qtbot, tmp_path):
    pred = make_predictions(tmp_path)
    first = window.new_project(tmp_path / "first.mustproj")
    run_dir = fake_run(first.runs_dir() / "run-001", "finished", pred.root, predictions=pred)
    window.show_results(pred, run_dir)
    assert window.current_page() == RESULTS and window.results.has_results()
    assert window.export_action.isEnabled()
    # The line naming the run takes a line, not half the page (as the first layout did).
    qtbot.wait(20)
    label = window.results.run_label
    assert label.isVisible() and label.height() < 3 * label.fontMetrics().lineSpacing()

    window.new_project(tmp_path / "second.mustproj")
    assert window.current_page() == SETUP
    assert not window.results.has_results()
    assert window.results.page.predictions is None
    assert len(window.results.page.shown_items()) == 0
    assert not window.results.page.export_button.isEnabled()
    assert not window.export_action.isEnabled()
    assert not window.navigation.item(RESULTS).flags() & Qt.ItemFlag.ItemIsEnabled
    assert window.training_page.run_dir is None
    assert window.training_page.plots.points == 0
    window.show_page(RESULTS)
    assert window.current_page() == SETUP  # nothing to see there

    # Back to the first project: its results come back, and the export goes to its run.
    window.open_project(first.path)
    qtbot.waitUntil(lambda: window.current_page() == RESULTS, timeout=LONG)
    assert window.results.run_dir == run_dir
    dialog = window.results.page.open_export_dialog("csv")
    assert dialog.destination.is_relative_to(run_dir)
    dialog.close()


def test_the_run_picker_reaches_an_earlier_finished_run(app, qtbot, tmp_path):
    from must_gui.preferences import load_preferences

    pred = make_predictions(tmp_path)
    path = project_with_runs(tmp_path, pred)
    window = MainWindow(load_preferences())
    qtbot.addWidget(window)
    window.show()
    window.open_project(path)
    page = window.training_page
    assert window.current_page() == TRAINING  # the stopped run has no results
    assert not window.results.has_results()
    picker = page.run_picker
    assert picker.isVisible()
    assert picker.labels() == ["run-002 · stopped at step 12 of 30", "run-001 · finished"]
    assert page.resume_button.isVisible()

    assert picker.pick(Path(window.project.runs[0]))
    qtbot.waitUntil(lambda: window.current_page() == RESULTS, timeout=LONG)
    assert window.results.run_dir.name == "run-001"
    assert len(window.results.page.shown_items()) == len(pred)
    assert "run-001" in window.results.run_label.text()
    assert page.run_dir.name == "run-001" and not page.results_button.isHidden()
    # The choice is remembered: the project reopens on the picked run and its results.
    saved = Project.load(path)
    assert Path(saved.current_run).name == "run-001"
    assert saved.predictions == str(predictions_cache(Path(saved.current_run)))

    # And back to the stopped run: its results are not there, so none are shown.
    assert picker.pick(Path(window.project.runs[1]))
    assert window.current_page() != RESULTS and not window.results.has_results()
    assert not page.resume_button.isHidden()
    window.close()


def test_a_failed_run_offers_to_start_again(window, qtbot, tmp_path, image_folder):
    project = window.new_project(tmp_path / "f.mustproj")
    run_dir = fake_run(project.runs_dir() / "run-001", "failed", image_folder)
    project.add_run(run_dir)
    window.training_page.show_run(project, run_dir)
    page = window.training_page
    window.show_page(TRAINING)
    assert page.restart_button.isVisible()
    assert not page.resume_button.isVisible() and not page.results_button.isVisible()
    assert "failed" in page.status.text()
    # The setup is not complete: Start again leads there, where the problem is said.
    page.restart_button.click()
    assert window.current_page() == SETUP
    assert window.setup_page.status_label.text() == window.setup_page.problem() != ""


@pytest.mark.parametrize(("status", "files", "expected"), [
    ("finished", ["model.safetensors"], "finished"),
    ("stopped", ["checkpoint.pt"], "stopped at step 7 of 30"),
    ("failed", [], "failed"),
    ("prepared", [], "not trained yet"),
    ("running", [], "interrupted at step 7"),
])
def test_describe_run_says_what_became_of_it(tmp_path, status, files, expected):
    run = tmp_path / "run-004"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": status, "step": 7, "total_steps": 30}))
    for name in files:
        (run / name).write_bytes(b"")
    assert describe_run(run).label == f"run-004 · {expected}"
    assert describe_run(tmp_path / "gone").state == "missing"
