"""The app shows what a run chose and kept: the expected time, the settings probe, the
label-free score per epoch with zero-shot and refined zero-shot as reference lines, which
classifier was kept and why, and, plainly, a run that is not better than zero-shot. The
events are the real trainer's, from tiny runs with made-up label-free scores (so which
classifier wins is known), fed to the page as the worker would, and read back from the run
folder as the Run picker does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from must_engine.events import (
    ClassifierKept,
    ClassifierScored,
    RunFinished,
    RunWarning,
    SettingsProbed,
    Status,
    StepMetrics,
    TimeEstimate,
)
from must_engine.predict import Predictions
from must_engine.project import Project
from must_gui.pages.training_page import (
    TrainingClock,
    TrainingPage,
    estimated_score_seconds,
    time_left,
)
from must_gui.run_report import read_run_report

pytestmark = pytest.mark.gui

PROBE_SCORES = {"recipe": 0.50, "lr / 10": 0.52, "layer decay 0.65": 0.61,
                "strong student view": 0.55, "masking 10% + MIM + alignment": 0.40}
GOOD_TEACHERS = [0.55, 0.60, 0.66, 0.70, 0.74, 0.78, 0.81, 0.80, 0.79, 0.78]  # best: epoch 7
ZERO, REFINED, CENTRED = 0.5, 0.45, 0.48


def _fake_scores(mp: pytest.MonkeyPatch, teacher_scores) -> None:
    """Made-up label-free scores: the probe's candidates, zero-shot, refined zero-shot and
    each epoch's teacher (the real code still trains and embeds everything)."""
    from must_engine import probe
    from must_engine.selection import CENTRED as CENTRED_KIND
    from must_engine.selection import REFINED as REFINED_KIND
    from must_engine.selection import ZERO_SHOT as ZERO_KIND
    from must_engine.selection import ScoredCandidate
    from must_engine.training import label_free

    real_probe = probe.run_probe

    def probed(run_dir, candidates, **kwargs):
        outcomes = real_probe(run_dir, candidates, **kwargs)
        for o in outcomes:
            o.score = PROBE_SCORES[o.name]
        return outcomes

    real_score = label_free.score_candidate

    def scored(kind, *args, **kwargs):
        # by epoch: the probe's short runs score their teachers too (their scores are
        # replaced above)
        real = real_score(kind, *args, **kwargs)
        score = {ZERO_KIND: ZERO, REFINED_KIND: REFINED, CENTRED_KIND: CENTRED}.get(kind)
        return ScoredCandidate(kind, teacher_scores[real.epoch] if score is None else score,
                               real.signals, real.epoch, real.step)

    mp.setattr(probe, "run_probe", probed)
    mp.setattr(label_free, "score_candidate", scored)


def _train(folder: Path, image_folder, class_names, model_dir, teacher_scores,
           **overrides) -> tuple[Path, list]:
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import train

    with pytest.MonkeyPatch.context() as mp:
        _fake_scores(mp, teacher_scores)
        job = TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                       templates=["a photo of a {}."],
                       overrides={"batch_size": 6, "seed": 2, **overrides})
        events = list(train(job, folder / "run"))
    return folder / "run", events


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, image_folder, class_names, tiny_model_dir):
    """The auto preset: the probe picks "layer decay 0.65"; the teacher after epoch 7 has
    the best score and is kept."""
    return _train(tmp_path_factory.mktemp("good"), image_folder, class_names, tiny_model_dir,
                  GOOD_TEACHERS, epochs=10)


@pytest.fixture(scope="module")
def worse_run(tmp_path_factory, image_folder, class_names, tiny_model_dir):
    """Every teacher scores below zero-shot: the run keeps zero-shot and says so."""
    return _train(tmp_path_factory.mktemp("worse"), image_folder, class_names, tiny_model_dir,
                  [0.3, 0.3], epochs=2, preset="pets", keep="best",
                  prototype_init="text")


@pytest.fixture
def page(qtbot):
    widget = TrainingPage()
    qtbot.addWidget(widget)
    widget.resize(1360, 860)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def feed(page: TrainingPage, events, until=None) -> None:
    for event in events:
        page.handle_event(event)
        if until is not None and isinstance(event, until):
            return


def project_for(run_dir: Path, class_names) -> Project:
    return Project(path=run_dir.parent / "p.mustproj", name="Shapes",
                   class_names=list(class_names), runs=[str(run_dir)])


def test_the_run_picked_the_outcomes_the_tests_expect(good_run, worse_run):
    _run, events = good_run
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert (kept.kind, kept.epoch) == ("teacher", 6)
    assert next(e for e in events if isinstance(e, SettingsProbed)).chosen == "layer decay 0.65"
    _run, events = worse_run
    assert next(e for e in events if isinstance(e, ClassifierKept)).kind == "zero_shot"
    assert any(isinstance(e, RunWarning) and e.kind == "below_zero_shot" for e in events)


def test_training_page_shows_expected_time_probe_scores_and_the_kept_classifier(
        page, good_run):
    run_dir, events = good_run
    summary = page.summary
    assert "Known once a run starts" in summary.time_card.text()

    # While the probe runs (before training, the page preparing), its progress shows.
    page._set_state("preparing")
    page.handle_event(Status("Probing settings 2/5: lr / 10"))
    assert page.progress.format() == "Probing settings: 2 of 5"
    assert (page.progress.value(), page.progress.maximum()) == (1, 5)
    assert "Trying a few candidate settings" in summary.probe_card.text()

    # Before the first step: the expected time, measured before training.
    feed(page, events, until=TimeEstimate)
    estimate = page.report.estimate
    assert estimate is not None
    assert "Expected: about" in summary.time_card.text()
    # The probe: what it chose, out of how many, on how many images, and its settings.
    probe_text = summary.probe_card.text()
    assert "Layer decay 0.65 (0.610), best of 5 on 24 images" in probe_text
    assert "layer_decay = 0.65" in probe_text
    # The starting classifiers are scored: zero-shot and refined are reference lines.
    plots = page.plots
    assert plots.zero_shot_line.isVisible() and plots.zero_shot_line.value() == ZERO
    assert plots.refined_line.isVisible() and plots.refined_line.value() == REFINED
    assert plots.centred_line.isVisible() and plots.centred_line.value() == CENTRED
    assert plots.score_points == []
    assert "So far: zero-shot, score 0.500" in summary.kept_card.text()

    # During training: the time left counts the scoring still to come, and the card sets the
    # pace against the estimate.
    steps = [e for e in events if isinstance(e, StepMetrics)]
    first_epoch_end = events.index(steps[3]) + 1  # 24 images / batch 6: 4 steps an epoch
    feed(page, events[events.index(estimate) + 1:first_epoch_end])
    assert "left" in page.stats.text()
    assert "in all at this pace" in summary.time_card.text()

    # Each epoch's teacher score lands on the plot; the best so far is ringed.
    feed(page, events[first_epoch_end:], until=RunFinished)
    assert plots.score_points == [(i + 1, s) for i, s in enumerate(GOOD_TEACHERS)]
    x, y = plots.score_curve.getData()
    assert list(x) == list(range(1, 11)) and list(y) == GOOD_TEACHERS
    kx, ky = plots.kept_marker.getData()
    assert list(kx) == [7.0] and list(ky) == [0.81]
    kept = summary.kept_card.text()
    assert "teacher after epoch 7, score 0.810 (zero-shot 0.500)" in kept
    assert "Best of the 13 classifiers scored" in kept and not summary.kept_card.alarm
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert "Took " in summary.time_card.text() and "expected about" in summary.time_card.text()
    assert finished.seconds > 0

    # Details on demand: every candidate of the probe and every score.
    dialog = summary.open_details()
    assert dialog.scores_table.rowCount() == 13  # zero-shot, refined, centred, 10 teachers
    labels = [dialog.scores_table.item(r, 0).text() for r in range(13)]
    assert labels[2] == "centred zero-shot"
    assert labels[9] == "teacher after epoch 7  ← kept"
    assert dialog.probe_table.rowCount() == 5
    chosen = [dialog.probe_table.item(r, 0).text() for r in range(5)]
    assert "layer decay 0.65  ← chosen" in chosen
    dialog.close()


def test_an_earlier_run_from_the_picker_reads_as_it_did_live(page, qtbot, good_run,
                                                             class_names):
    run_dir, events = good_run
    feed(page, events)
    live = (page.summary.probe_card.text(), page.summary.kept_card.text(),
            page.plots.score_points)
    page.clear()
    assert page.plots.score_points == [] and not page.plots.zero_shot_line.isVisible()

    page.show_run(project_for(run_dir, class_names), run_dir)
    assert (page.summary.probe_card.text(), page.summary.kept_card.text(),
            page.plots.score_points) == live
    assert page.plots.zero_shot_line.value() == ZERO
    assert "Took " in page.summary.time_card.text()


def test_a_run_not_better_than_zero_shot_says_so_on_the_page_and_in_the_results(
        page, qtbot, worse_run, class_names):
    run_dir, events = worse_run
    feed(page, events)
    card = page.summary.kept_card
    assert card.alarm
    assert "Not better than zero-shot" in card.text()
    assert "zero-shot, score 0.500" in card.text()
    assert "the trained weights are not used" in card.text()
    assert "did not beat zero-shot" in card.toolTip()
    assert any(w.kind == "below_zero_shot" for w in page.warnings.warnings)
    kx, ky = page.plots.kept_marker.getData()
    assert list(kx) == [0.0] and list(ky) == [ZERO]  # zero-shot, before training
    assert "No probe ran" in page.summary.probe_card.text()

    # The same from the run folder (the Run picker).
    page.clear()
    assert not page.summary.kept_card.alarm
    page.show_run(project_for(run_dir, class_names), run_dir)
    assert page.summary.kept_card.alarm and "did not beat zero-shot" in card.toolTip()

    # The results say it above the grid.
    from must_gui.results.results_page import ResultsPage

    results = ResultsPage()
    qtbot.addWidget(results)
    results.show()
    probs = np.full((2, len(class_names)), 1 / len(class_names), np.float32)
    preds = Predictions(run_dir, ["a.png", "b.png"], list(class_names), probs, probs)
    results.set_results(preds, run_dir)
    banner = results.kept_banner
    assert banner.isVisible() and banner.alarm
    assert "not better than zero-shot" in banner.text()
    assert "did not beat zero-shot" in banner.text()
    # ... and so does the export dialog, before anything is exported.
    dialog = results.open_export_dialog("bundle")
    assert dialog.kept_banner.isVisible() and dialog.kept_banner.alarm
    assert "did not beat zero-shot" in dialog.kept_banner.text()
    dialog.close()
    results.clear_results()
    assert not banner.isVisible()


def test_results_name_the_kept_classifier_of_a_good_run(qtbot, good_run, class_names):
    from must_gui.results.results_page import ResultsPage

    run_dir, _events = good_run
    results = ResultsPage()
    qtbot.addWidget(results)
    results.show()
    probs = np.full((2, len(class_names)), 1 / len(class_names), np.float32)
    results.set_results(Predictions(run_dir, ["a.png", "b.png"], list(class_names), probs,
                                    probs), run_dir)
    banner = results.kept_banner
    assert banner.isVisible() and not banner.alarm
    assert "teacher after epoch 7, score 0.810 (zero-shot 0.500)" in banner.text()


def test_the_exported_card_names_the_kept_classifier_and_the_warning(tmp_path, worse_run,
                                                                     good_run):
    from must_engine.export import export_run

    run_dir, _ = worse_run
    bundle = export_run(run_dir, "bundle", tmp_path / "worse").path
    card = json.loads((bundle / "card.json").read_text(encoding="utf-8"))
    kept = card["classifier"]
    assert kept["kept"] == "zero-shot" and kept["label_free_score"] == ZERO
    assert "did not beat zero-shot" in kept["warning"]
    assert "zero-shot classifier, kept by the label-free score" in card["training"]["model"]
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    assert "**Warning: this classifier is not better than zero-shot" in readme

    run_dir, _ = good_run
    bundle = export_run(run_dir, "bundle", tmp_path / "good").path
    card = json.loads((bundle / "card.json").read_text(encoding="utf-8"))
    assert card["classifier"]["kept"] == "teacher after epoch 7"
    assert card["classifier"]["warning"] is None
    assert card["classifier"]["settings_probe"]["chosen"] == "layer decay 0.65"
    assert "Warning" not in (bundle / "README.md").read_text(encoding="utf-8")


def test_reading_a_run_log_cut_short_keeps_what_was_whole(tmp_path, good_run):
    run_dir, _ = good_run
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "cut"
    cut.mkdir()
    kept_at = next(i for i, line in enumerate(lines) if '"ClassifierKept"' in line)
    (cut / "metrics.jsonl").write_text("\n".join(lines[:kept_at]) + "\n" + lines[kept_at][:40],
                                       encoding="utf-8")
    report = read_run_report(cut)
    assert report.kept is None and len(report.teacher_scores()) == 10
    assert report.kept_so_far() == ("teacher after epoch 7", 0.81)
    assert read_run_report(tmp_path / "nothing").has_anything() is False


def test_time_left_adds_the_scoring_still_to_come():
    estimate = TimeEstimate(seconds=130.0, epochs=10, total_steps=100, seconds_per_step=1.2,
                            device="cpu")
    assert estimated_score_seconds(estimate) == pytest.approx(1.0)
    assert time_left(30.0, 3, 1.0) == pytest.approx(33.0)
    assert time_left(30.0, 3, None) == 30.0
    clock = TrainingClock()
    clock.start(100.0)
    clock.epoch_ended(110.0)
    clock.epoch_scored(112.5)
    assert clock.score_seconds == pytest.approx(2.5)
    clock.pause(120.0)
    clock.resume(150.0)
    assert clock.elapsed(160.0) == pytest.approx(30.0)
    # a score that arrives with no epoch end before it (replayed) measures nothing
    clock.epoch_scored(170.0)
    assert clock.score_seconds == pytest.approx(2.5)


def test_a_resumed_run_says_its_time_is_since_resuming(page, good_run):
    from dataclasses import replace

    from must_engine.events import RunStarted

    _run_dir, events = good_run
    started = next(e for e in events if isinstance(e, RunStarted))
    finished = next(e for e in events if isinstance(e, RunFinished))
    feed(page, events[: events.index(finished)])
    page.handle_event(replace(started, start_step=20))  # resumed at step 20...
    page.handle_event(finished)  # ...and finished
    text = page.summary.time_card.text()
    assert "after resuming at step 20" in text and "for the whole run" in text
    assert len(page.report.teacher_scores()) == 10  # a resume keeps what came before


def test_events_the_report_ignores_leave_it_alone():
    from must_gui.run_report import RunReport

    report = RunReport()
    assert not report.handle(RunWarning("class_collapse", "x"))
    assert report.handle(ClassifierScored("zero_shot", "zero-shot", -1, 0, 0.5, {}, "zero-shot",
                                          0.5, 0.5))
    assert report.zero_shot_score == 0.5 and not report.below_zero_shot()


def test_a_summary_card_grows_to_show_a_long_reason_whole(qtbot):
    from must_gui.widgets.run_summary import SummaryCard

    card = SummaryCard("CLASSIFIER KEPT")
    qtbot.addWidget(card)
    card.resize(380, 40)
    card.show()
    short_height = card.sizeHint().height()
    card.set("<b>refined zero-shot</b><br>" + "a reason that goes on and on " * 12)
    card.adjustSize()
    label = card.value
    # every wrapped line fits: the label is at least as tall as its text needs at its width
    assert label.height() >= label.heightForWidth(label.width()) > 3 * label.fontMetrics(
        ).lineSpacing()
    assert card.sizeHint().height() > short_height


def test_a_kept_centred_classifier_is_ringed_on_its_line_inside_the_plot(page):
    """Made-up scores: the centred zero-shot classifier beats every teacher and is kept."""
    from must_gui.run_report import RunReport

    report = RunReport()
    for kind, label, score in (("zero_shot", "zero-shot", 0.5), ("refined", "refined", 0.6),
                               ("centred_zero_shot", "centred zero-shot", 0.9)):
        report.handle(ClassifierScored(kind, label, -1, 0, score, {}, label, score, 0.5))
    for epoch, score in enumerate((0.55, 0.62)):
        report.handle(ClassifierScored("teacher", f"epoch {epoch + 1}", epoch, 4 * epoch + 4,
                                       score, {}, "centred zero-shot", 0.9, 0.5))
    report.handle(ClassifierKept("centred_zero_shot", "centred zero-shot", -1, 0.9, 0.5,
                                 "best label-free score"))
    plots = page.plots
    plots.show_scores(report)
    assert plots.centred_line.isVisible() and plots.centred_line.value() == 0.9
    kx, ky = plots.kept_marker.getData()
    assert list(kx) == [0.0] and list(ky) == [0.9]
    low, high = plots.score_plot.viewRange()[1]
    assert low < 0.5 and high > 0.9  # the ring and every line are in view
    # A kept classifier with no line of its own (a refined teacher) is still in view.
    report.handle(ClassifierKept("refined_teacher", "refined teacher after epoch 2", 1, 0.99,
                                 0.5, "best label-free score"))
    plots.show_scores(report)
    assert plots.score_plot.viewRange()[1][1] > 0.99
    # A run without a centred candidate (center 0) draws no centred line.
    plots.show_scores(None)
    assert not plots.centred_line.isVisible()
