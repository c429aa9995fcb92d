"""Setup page details found by trying the app as a new user: a long error must not push the
right-hand cards off the window, the zero-shot preview must come into view with Advanced
settings open, subfolder names are offered as class names, the class-name length limit is
stated and enforced before Start; the training plots forget the previous run's axes."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint

from must_engine.classes import MAX_CLASS_NAME_CHARS
from must_engine.events import StepMetrics
from must_engine.testing import write_image_folder
from must_gui.pages.setup_page import subfolder_class_names
from must_gui.plots import TrainingPlots
from tests.gui.results_testdata import make_predictions

pytestmark = pytest.mark.gui
SCAN_MS = 20_000


def setup_page(window, tmp_path, name="p"):
    window.resize(1320, 860)
    window.new_project(tmp_path / f"{name}.mustproj")
    return window.setup_page


def test_a_long_folder_error_keeps_both_columns_in_the_window(window, qtbot, tmp_path):
    page = setup_page(window, tmp_path)
    missing = tmp_path / ("a-folder-with-a-very-long-name-" * 12) / "photos"
    page.set_folder(missing)
    qtbot.waitUntil(lambda: not page.scan_bar.isVisible(), timeout=SCAN_MS)
    assert str(missing.name) in page.scan_label.text() or "not" in page.scan_label.text()
    qtbot.wait(50)  # let the layout settle
    viewport = page.scroll.viewport()
    for card in (page.model_box, page.settings_box):
        right = card.mapTo(viewport, QPoint(card.width(), 0)).x()
        assert right <= viewport.width(), (card.title(), right, viewport.width())


def test_a_folder_path_too_long_says_what_to_do(window, qtbot, tmp_path):
    page = setup_page(window, tmp_path)
    page.set_folder(tmp_path / ("a" * 300) / "photos")
    qtbot.waitUntil(lambda: not page.scan_bar.isVisible(), timeout=SCAN_MS)
    text = page.scan_label.text()
    assert "holds a name of 300 characters" in text and "check the path" in text, text
    assert "Errno" not in text
    assert not page.start_button.isEnabled()


def test_the_zero_shot_preview_comes_into_view_with_advanced_settings_open(
        window, qtbot, tmp_path, image_folder):
    page = setup_page(window, tmp_path)
    page.set_folder(image_folder)
    page.class_editor.set_names(["red circle", "green square", "blue circle"])
    qtbot.waitUntil(lambda: page.num_images == 24, timeout=SCAN_MS)
    page.advanced_section.set_expanded(True)
    qtbot.wait(50)
    page._show_preview(make_predictions(tmp_path))
    viewport = page.scroll.viewport()

    def preview_top_shown() -> bool:
        top = page.preview_box.mapTo(viewport, QPoint(0, 0)).y()
        return 0 <= top < viewport.height() // 2

    qtbot.waitUntil(preview_top_shown, timeout=2000)


def test_subfolder_names_are_offered_as_class_names(window, qtbot, tmp_path):
    folder = write_image_folder(tmp_path / "pets", ["golden_retriever", "tabby-cat", "parrot"],
                                3)
    page = setup_page(window, tmp_path)
    page.set_folder(folder)
    qtbot.waitUntil(lambda: page.num_images == 9, timeout=SCAN_MS)
    button = page.subfolder_button
    assert button.isVisible()
    assert "golden retriever, parrot, tabby cat" in button.text()
    button.click()
    page.class_editor.flush()
    assert page.class_editor.names() == ["golden retriever", "parrot", "tabby cat"]
    assert window.project.class_names == ["golden retriever", "parrot", "tabby cat"]
    assert not button.isVisible()

    flat = write_image_folder(tmp_path / "flat", ["a", "b"], 3, subfolders=False)
    page.set_folder(flat)
    qtbot.waitUntil(lambda: page.num_images == 6, timeout=SCAN_MS)
    assert not button.isVisible()


def test_subfolder_class_names_need_one_subfolder_per_class():
    assert subfolder_class_names(["cat/1.png", "dog/2.png", "dog/3.png"]) == ["cat", "dog"]
    assert subfolder_class_names(["cat/1.png", "loose.png", "dog/2.png"]) == []
    assert subfolder_class_names(["cat/1.png", "cat/2.png"]) == []
    assert subfolder_class_names(["sea_lion/a/1.png", "red-fox/2.png"]) == ["red fox",
                                                                            "sea lion"]


def test_class_names_over_the_limit_are_refused_before_start(window, qtbot, tmp_path,
                                                             image_folder):
    page = setup_page(window, tmp_path)
    page.set_folder(image_folder)
    qtbot.waitUntil(lambda: page.num_images == 24, timeout=SCAN_MS)
    limit = str(MAX_CLASS_NAME_CHARS)
    hints = [w.text() for w in page.findChildren(type(page.scan_label)) if w.isVisible()]
    assert any(limit in text and "characters" in text for text in hints)  # stated up front
    page.class_editor.set_names(["cat", "d" * MAX_CLASS_NAME_CHARS])
    assert page.problem() == "" and page.start_button.isEnabled()
    page.class_editor.set_names(["cat", "d" * (MAX_CLASS_NAME_CHARS + 1)])
    assert limit in page.problem()
    assert not page.start_button.isEnabled() and not page.preview_button.isEnabled()
    assert page.status_label.text() == page.problem()
    assert f"the limit is {limit}" in page.class_editor.issues.text()
    assert page.class_editor.flagged_lines() == {1: "duplicate"}  # the line is marked


def test_plots_forget_the_previous_runs_axes(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.resize(900, 500)
    plots.show()
    for step in range(0, 500, 10):
        plots.handle(StepMetrics(step, 0, step, 500, 500, 9.0, 1.0, 2.0, 3.0, 15.0, 0.5, 0.6,
                                 1e-3, 0.999, 100.0, 10.0))
    plots.redraw()
    qtbot.waitUntil(lambda: plots.loss_plot.viewRange()[0][1] > 400, timeout=2000)
    plots.reset(["a", "b"])
    plots.redraw()
    qtbot.wait(50)
    for plot in (plots.loss_plot, plots.lr_plot):
        (x0, x1), (y0, y1) = plot.viewRange()
        assert x1 <= 1.5 and y1 <= 1.5, plot.viewRange()
    assert plots.confidence_plot.viewRange()[0][1] <= 1.5
