"""The trust views in the app: a spot-check of 30 answers shows the estimate, the confusion
matrix on a folder with class subfolders, the changed-predictions view filters the grid, the
unsure filter, and a correction made in the inspector enters the next run's training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from must_engine.evaluate import labels_from_folders
from must_engine.trust.changes import changed_groups
from must_engine.trust.unsure import unsure_mask
from must_engine.trust.user_labels import UserLabels, read_run_labels
from must_gui.main_window import RESULTS, SETUP, MainWindow
from must_gui.results.results_page import ResultsPage
from tests.gui.results_testdata import make_predictions

pytestmark = pytest.mark.gui
LONG = 120_000  # two training runs on a shared, busy machine


@pytest.fixture
def page(qtbot, tmp_path):
    pred = make_predictions(tmp_path, per_class=15)
    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(1200, 700)
    page.show()
    page.trust.set_labels_file(tmp_path / "shapes_labels.json")
    page.set_results(pred, tmp_path / "run-001")
    return page


def test_spot_check_30_answers_show_the_estimate(page, qtbot, tmp_path):
    pred = page.predictions
    truth = labels_from_folders(pred.paths, pred.class_names)
    dialog = page.trust.open_spot_check()
    qtbot.waitExposed(dialog)
    assert "more to see" in dialog.estimate_label.text()
    shown = []
    for k in range(30):
        assert dialog.result is None
        path = dialog.current
        shown.append(path)
        c = truth[pred.paths.index(path)]
        if k % 2:
            qtbot.keyClick(dialog, Qt.Key(Qt.Key.Key_1 + c))  # number keys answer
        else:
            dialog.class_buttons[c].click()
        if k == 10:
            skipped = dialog.current
            dialog.skip_button.click()
            assert dialog.current != skipped
    assert len(set(shown)) == 30
    assert dialog.result is not None and dialog.result.answers == 30
    text = dialog.estimate_label.text()
    assert "Adapted:" in text and "Zero-shot:" in text and "halve the interval" in text
    assert dialog.table.rowCount() == len(pred.class_names)
    # the estimate speaks for the truth of the sampled images
    rows = [pred.paths.index(p) for p in shown]
    right = np.mean([pred.labels()[r] == truth[r] for r in rows])
    assert dialog.result.adapted.overall.low <= 1.0
    assert abs(dialog.result.adapted.overall.value - right) < 0.25
    # answers are saved in the project's labels file, as spot-check labels
    saved = UserLabels.load(tmp_path / "shapes_labels.json")
    assert len(saved.spot_check.answers) == 30
    assert {p for p, u in saved.labels.items() if u.source == "spot-check"} == set(shown)
    assert skipped in saved.spot_check.asked and skipped not in saved.spot_check.answers
    dialog.close()
    # a new spot-check on a later run leaves the labelled images out of its sample
    page.set_results(pred, tmp_path / "run-002")
    again = page.trust.open_spot_check()
    assert not set(shown) & set(again.plan.paths)
    again.close()


def test_spot_check_key_0_answers_the_tenth_class(qtbot, tmp_path):
    from must_engine.predict import Predictions

    base = make_predictions(tmp_path, per_class=10)
    names = [f"class {i}" for i in range(10)]
    probs = np.random.default_rng(0).dirichlet(np.ones(10), len(base.paths)).astype(np.float32)
    page = ResultsPage()
    qtbot.addWidget(page)
    page.show()
    page.trust.set_labels_file(tmp_path / "ten_labels.json")
    page.set_results(Predictions(base.root, base.paths, names, probs, probs), tmp_path / "run")
    dialog = page.trust.open_spot_check()
    qtbot.waitExposed(dialog)
    assert dialog.class_buttons[9].text().startswith("0 ")
    path = dialog.current
    qtbot.keyClick(dialog, Qt.Key.Key_0)
    assert dialog.state.answers == {path: "class 9"}
    dialog.close()


def test_confusion_matrix_on_a_folder_with_class_subfolders(page, qtbot):
    pred = page.predictions
    dialog = page.trust.measure_with_labels()
    assert dialog is not None
    qtbot.waitExposed(dialog)
    truth = np.array(labels_from_folders(pred.paths, pred.class_names))
    c = len(pred.class_names)
    expected = np.zeros((c, c), dtype=int)
    np.add.at(expected, (truth, pred.labels()), 1)
    assert dialog.evaluation.confusion_adapted == expected.tolist()
    assert dialog.adapted_table.item(1, 2).text() == str(expected[1, 2])
    assert "Measured with labels" in dialog.findChildren(type(dialog.accuracy_label))[0].text()
    assert f"{(pred.labels() == truth).mean():.1%}" in dialog.accuracy_label.text()
    dialog.close()


def test_changed_predictions_and_unsure_filter_the_grid(page, qtbot):
    pred = page.predictions
    dialog = page.trust.open_changes()
    groups = changed_groups(pred.zero_shot_labels(), pred.labels())
    assert dialog.tree.topLevelItemCount() == len(groups) > 0
    dialog.tree.itemClicked.emit(dialog.tree.topLevelItem(0), 0)
    assert sorted(page.shown_items().tolist()) == sorted(groups[0].indices)
    page.trust.show_all_button.click()
    assert len(page.shown_items()) == len(pred)
    dialog.close()
    unsure = unsure_mask(pred.zero_shot_probs, pred.probs)
    page.trust.unsure_check.setChecked(True)
    assert sorted(page.shown_items().tolist()) == np.flatnonzero(unsure).tolist()
    page.trust.unsure_check.setChecked(False)
    assert len(page.shown_items()) == len(pred)


def test_unsure_export_and_leave_out(page, tmp_path):
    pred = page.predictions
    n = page.trust.export_unsure(tmp_path / "unsure.csv")
    lines = (tmp_path / "unsure.csv").read_text(encoding="utf-8").splitlines()
    assert n == int(unsure_mask(pred.zero_shot_probs, pred.probs).sum()) == len(lines) - 1
    page.trust.leave_out_check.setChecked(True)
    saved = UserLabels.load(tmp_path / "shapes_labels.json")
    assert set(saved.excluded) == set(page.trust.unsure_paths())


def test_several_images_corrected_at_once_from_the_grid(page, qtbot, tmp_path):
    grid = page.grid
    first, third = page.proxy.index(0, 0), page.proxy.index(2, 0)
    grid.setCurrentIndex(first)
    grid.selectionModel().select(third, grid.selectionModel().SelectionFlag.Select)
    assert page.trust.correction.apply_button.text() == "Set for 2"
    page.trust.correction.combo.setCurrentIndex(1)
    page.trust.correction.apply_button.click()
    saved = UserLabels.load(tmp_path / "shapes_labels.json")
    assert len(saved.labels) == 2
    assert {u.label for u in saved.labels.values()} == {page.predictions.class_names[1]}


def test_the_inspector_window_sets_and_clears_the_images_class(page, qtbot, tmp_path):
    pred = page.predictions
    # Offered: the class the image is shown as (Set confirms it), not the first class.
    other = int(np.flatnonzero(pred.labels() != pred.labels()[4])[-1])
    for item in (other, 4):
        assert page.select_item(item)
        shown_as = pred.class_names[pred.labels()[item]]
        assert page.trust.correction.combo.currentText() == shown_as
    # a second image selected in the grid: the window still acts on the one it shows
    page.grid.selectionModel().select(page.proxy.index(page.proxy.proxy_row_of_item(7), 0),
                                      page.grid.selectionModel().SelectionFlag.Select)
    dialog = page.open_inspector()
    qtbot.waitExposed(dialog)
    box = page.trust.window_correction
    assert box is not None and box.isVisible()
    assert dialog.isAncestorOf(box)
    assert dialog.panel.item == 4
    assert "pseudo-label" in box.status.text() and not box.remove_button.isEnabled()
    assert box.apply_button.text() == "Set"
    assert box.combo.currentText() == pred.class_names[pred.labels()[4]]
    name = pred.class_names[2]
    box.combo.setCurrentText(name)
    box.apply_button.click()
    saved = UserLabels.load(tmp_path / "shapes_labels.json")
    assert {p: u.label for p, u in saved.labels.items()} == {pred.paths[4]: name}
    assert saved.labels[pred.paths[4]].source == "inspector"
    assert name in box.status.text() and box.remove_button.isEnabled()

    dialog.next()  # the box follows the image the window shows
    assert dialog.panel.item != 4
    assert "pseudo-label" in box.status.text()
    dialog.previous()
    assert dialog.panel.item == 4 and name in box.status.text()
    assert name in page.trust.correction.status.text()  # the side panel agrees

    box.remove_button.click()
    assert UserLabels.load(tmp_path / "shapes_labels.json").labels == {}
    assert "pseudo-label" in box.status.text() and not box.remove_button.isEnabled()
    dialog.close()


CLASSES = ["red circle", "green square", "blue circle"]


def test_a_correction_in_the_inspector_changes_the_next_runs_training_set(
        window: MainWindow, qtbot, tmp_path, image_folder, tiny_model_dir):
    project = tmp_path / "shapes.mustproj"
    window.new_project(project)
    setup = window.setup_page
    setup.set_folder(image_folder)
    assert setup.model_picker.use_local_folder(tiny_model_dir)
    setup.class_editor.set_names(CLASSES)
    setup.plain_form.editor("epochs").setValue(1)
    setup.plain_form.editor("batch_size").setValue(8)
    qtbot.waitUntil(lambda: setup.num_images == 24, timeout=20_000)
    with qtbot.waitSignal(window.training_page.resultsReady, timeout=LONG) as first:
        setup.start_button.click()
    assert window.current_page() == RESULTS
    first_run = Path(first.args[1])
    assert read_run_labels(first_run, CLASSES).fixed == {}

    results = window.results.page
    assert results.select_item(5)
    path = results.predictions.paths[5]
    box = results.trust.correction
    assert "pseudo-label" in box.status.text()
    box.combo.setCurrentText("blue circle")
    box.apply_button.click()
    assert "blue circle" in box.status.text() and "inspector" in box.status.text()
    assert json.loads((tmp_path / "shapes_labels.json").read_text())["labels"][path]["label"] \
        == "blue circle"

    window.show_page(SETUP)  # back to the setup page, train again
    with qtbot.waitSignal(window.training_page.resultsReady, timeout=LONG) as second:
        setup.start_button.click()
    second_run = Path(second.args[1])
    assert second_run != first_run
    assert read_run_labels(second_run, CLASSES).fixed == {path: 2}


def test_run_warnings_show_beside_the_plots_without_resizing_them(window, qtbot):
    from must_engine.events import RunWarning

    page = window.training_page
    height = page.plots.height()
    assert page.warnings.text() == ""
    page.handle_event(RunWarning("class_collapse", "Class 'fox' is losing its pseudo-labels.",
                                 "Rename the class.", ["fox"], 12))
    page.handle_event(RunWarning("class_never_confident", "No image of 'owl' has passed.",
                                 "Lower the threshold.", ["owl"], 20))
    assert "owl" in page.warnings.text() and "Lower the threshold." in page.warnings.text()
    assert "1 earlier warning" in page.warnings.text()
    assert "fox" in page.warnings.toolTip()
    qtbot.wait(50)
    assert page.plots.height() == height
    page.clear()
    assert page.warnings.text() == ""


def test_class_name_workbench_previews_and_saves_synonyms(window, qtbot, tmp_path, image_folder,
                                                          tiny_model_dir):
    window.new_project(tmp_path / "names.mustproj")
    setup = window.setup_page
    setup.set_folder(image_folder)
    assert setup.model_picker.use_local_folder(tiny_model_dir)
    setup.class_editor.set_names(CLASSES)
    qtbot.waitUntil(lambda: setup.num_images == 24, timeout=20_000)
    dialog = setup.open_workbench()
    with qtbot.waitSignal(dialog.ready, timeout=LONG):
        pass
    first = dialog.result
    assert sum(first.class_counts()) == 24
    assert dialog.table.item(0, 2).text() == str(first.class_counts()[0])
    assert dialog.table.item(0, 3).text().endswith("%") or dialog.table.item(0, 3).text() == "–"
    assert "images in" in dialog.status.text()
    dialog.table.item(0, 1).setText("crimson disc; red ball")
    dialog.preview_button.click()
    assert dialog.result is not first
    assert not np.allclose(dialog.result.probs, first.probs)
    dialog.save_button.click()
    assert window.project.synonyms == {"red circle": ["crimson disc", "red ball"]}
    assert window.project.train_job().synonyms == {"red circle": ["crimson disc", "red ball"]}
    dialog.close()
