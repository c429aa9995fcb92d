"""The training page after a run: classifying every image shows real progress and an honest
time left, with Pause and Stop; the engine's run warnings show beside the plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from must_engine.events import PredictionProgress, RunWarning
from must_engine.predict import Predictions
from must_gui.pages import training_page as training_module
from must_gui.pages.training_page import RateClock, TrainingPage

pytestmark = pytest.mark.gui
TOTAL, BATCH, BATCH_SECONDS = 400, 10, 0.03


@pytest.fixture
def page(qtbot):
    widget = TrainingPage()
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.stop()
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=30_000)


def slow_predict_run(batches_seen: list[int]):
    """A stand-in for predict_run: TOTAL images in batches, BATCH_SECONDS each, polling
    should_stop between batches as the engine does."""

    def predict_run(run_dir, *, device="auto", on_event=None, should_stop=None, **_kw):
        done = 0
        while done < TOTAL:
            if should_stop is not None and should_stop():
                raise InterruptedError("Prediction was cancelled.")
            time.sleep(BATCH_SECONDS)
            done += BATCH
            batches_seen.append(done)
            on_event(PredictionProgress(done, TOTAL))
        probs = np.full((2, 2), 0.5, np.float32)
        return Predictions(Path(run_dir), ["a.png", "b.png"], ["x", "y"], probs, probs)

    return predict_run


def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run-001"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    return run


def test_classifying_shows_the_time_left_and_can_pause_and_stop(page, qtbot, tmp_path,
                                                                monkeypatch):
    import must_engine.predict as predict

    seen: list[int] = []
    monkeypatch.setattr(predict, "predict_run", slow_predict_run(seen))
    page.run_dir = finished_run(tmp_path)
    page.stats.setText("Epoch 2 of 2 · about 0 s left")  # what training left behind
    page.compute_results()
    assert page.state == training_module.PREDICTING
    assert "0 s left" not in page.stats.text()
    assert page.pause_button.isVisible() and page.stop_button.isVisible()
    qtbot.waitUntil(lambda: "about " in page.stats.text(), timeout=30_000)
    # The time left is measured, not made up: about (TOTAL - done) / rate.
    left_text = page.stats.text().split("about ")[1]
    assert "images/s" in page.stats.text() and left_text.endswith("left")
    assert page.progress.maximum() == TOTAL and 0 < page.progress.value() < TOTAL

    page.pause_button.click()
    assert page.pause_button.text().replace("&", "") == "Resume"
    qtbot.wait(3 * int(BATCH_SECONDS * 1000) + 100)  # the batch under way may still end
    held = len(seen)
    qtbot.wait(300)
    assert len(seen) == held  # nothing is classified while paused
    assert "left" not in page.stats.text()

    page.pause_button.click()
    qtbot.waitUntil(lambda: len(seen) > held + 1, timeout=5000)
    assert page.pause_button.text().replace("&", "") == "Pause"

    page.stop_button.click()
    qtbot.waitUntil(lambda: page.state == training_module.IDLE, timeout=10_000)
    assert seen[-1] < TOTAL
    assert "stopped" in page.status.text().lower()
    assert page.results_button.isVisible()  # classify again whenever


def test_rate_clock_measures_from_the_first_report_and_leaves_pauses_out():
    clock = RateClock()
    assert clock.update(10, 100, now=5.0) is None  # model loading before it does not count
    rate, left = clock.update(30, 100, now=6.0)
    assert rate == pytest.approx(20.0) and left == pytest.approx(3.5)
    clock.pause(6.0)
    clock.resume(16.0)  # ten seconds paused
    rate, left = clock.update(50, 100, now=17.0)
    assert rate == pytest.approx(20.0) and left == pytest.approx(2.5)


def warning(kind="never_confident", classes=("tulip",), step=40):
    return RunWarning(kind, f"No image of {classes[0]} passed the threshold.",
                      "Lower the threshold, or rename the class.", list(classes), step)


def test_an_earlier_runs_warnings_come_back_from_its_log(page, qtbot, tmp_path):
    # (Live warnings: tests/gui/test_trust_gui.py.)
    run = tmp_path / "run-002"
    run.mkdir()
    lines = [{"type": "StepMetrics", "step": 0}, {"type": "RunWarning", **warning().__dict__},
             "not json"]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x
                                                 for x in lines) + "\n")
    from must_engine.project import Project

    project = Project(name="p", class_names=["tulip", "rose"], path=tmp_path / "p.mustproj")
    page.show_run(project, run)
    assert [w.classes for w in page.warnings.warnings] == [["tulip"]]
    assert "What" not in page.warnings.text() and "Lower the threshold" in page.warnings.text()
    other = tmp_path / "run-003"
    other.mkdir()
    page.show_run(project, other)
    assert page.warnings.warnings == [] and page.warnings.text() == ""


def test_results_are_handed_on_when_the_page_is_idle_again(page, qtbot, tmp_path,
                                                         monkeypatch):
    # A Start pressed on the results just shown was ignored while the classification's
    # thread was still ending (the page was busy): results now come once it is idle.
    import must_engine.predict as predict

    monkeypatch.setattr(predict, "predict_run", slow_predict_run([]))
    page.run_dir = finished_run(tmp_path)
    busy_when_handed_on = []
    page.resultsReady.connect(lambda *_a: busy_when_handed_on.append(page.is_busy()))
    with qtbot.waitSignal(page.resultsReady, timeout=30_000):
        page.compute_results()
    assert busy_when_handed_on == [False] and page.state == training_module.IDLE
