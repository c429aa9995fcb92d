"""Keyboard use and drawing details found by trying the app as a new user: mnemonics that
clash, the blank highlighted row of combo-box popups."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QWidget

from must_gui.main_window import SETUP, START, TRAINING, MainWindow

pytestmark = pytest.mark.gui


def mnemonic(text: str) -> str | None:
    """The Alt+ letter of a label ("Choose &folder…" -> "f"), None without one."""
    match = re.search(r"&([^&\s])", text.replace("&&", ""))
    return match.group(1).lower() if match else None


def visible_mnemonics(window: MainWindow) -> dict[str, list[str]]:
    """Alt+ letter -> the texts that claim it: the menu bar and the shown page's widgets."""
    found: dict[str, list[str]] = {}
    texts = [a.text() for a in window.menuBar().actions()]
    page = window.stack.currentWidget()
    for widget in page.findChildren(QWidget):
        if not widget.isVisibleTo(window):
            continue
        if isinstance(widget, QAbstractButton) or (isinstance(widget, QLabel)
                                                   and widget.buddy() is not None):
            texts.append(widget.text())
    for text in texts:
        key = mnemonic(text)
        if key is not None:
            found.setdefault(key, []).append(text)
    return found


def test_no_two_visible_controls_share_an_alt_key(window, qtbot, tmp_path):
    # Alt+F was both the File menu and "Choose folder…", Alt+P both "Prompts" and
    # "Preview zero-shot": Qt then cycles between them instead of acting.
    pages = [START]
    window.new_project(tmp_path / "keys.mustproj")
    window.setup_page.advanced_section.set_expanded(True)
    pages.append(SETUP)
    run = tmp_path / "keys_runs" / "run-001"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")  # a stopped run: Resume and the run picker show
    window.project.add_run(run)
    window.training_page.show_run(window.project, run)
    pages.append(TRAINING)
    for index in pages:
        window.stack.setCurrentIndex(index)
        clashes = {k: v for k, v in visible_mnemonics(window).items() if len(v) > 1}
        assert clashes == {}, (index, clashes)


def highlighted_row_colours(combo: QComboBox, row: int) -> int:
    """How many colours the popup's highlighted row is drawn with (1-2: drawn blank)."""
    combo.showPopup()
    view = combo.view()
    index = view.model().index(row, 0)
    view.setCurrentIndex(index)
    view.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    image = view.viewport().grab().toImage()
    rect = view.visualRect(index)
    colours = {image.pixel(x, y)
               for x in range(max(0, rect.left()), min(rect.right(), image.width()))
               for y in range(max(0, rect.top()), min(rect.bottom(), image.height()))}
    combo.hidePopup()
    return len(colours)


def test_the_highlighted_row_of_a_combo_popup_shows_its_text(app, qtbot):
    combo = QComboBox()
    qtbot.addWidget(combo)
    for text in ("Confidence, high to low", "Confidence, low to high", "Class, then confidence"):
        combo.addItem(text)
    combo.resize(300, 30)
    combo.show()
    qtbot.waitExposed(combo)
    assert highlighted_row_colours(combo, 1) > 10  # text, antialiased: many shades


def test_focus_on_a_collapsible_header_is_visible(app, qtbot):
    from must_gui.widgets.collapsible import Collapsible

    section = Collapsible("Skipped files (3)", QLabel("a.jpg: not an image"))
    qtbot.addWidget(section)
    section.show()
    qtbot.waitExposed(section)
    other = QLabel("elsewhere")
    qtbot.addWidget(other)
    section.header.clearFocus()
    unfocused = section.header.grab().toImage()
    section.activateWindow()
    section.header.setFocus()
    qtbot.waitUntil(section.header.hasFocus, timeout=2000)
    focused = section.header.grab().toImage()
    differing = sum(unfocused.pixel(x, y) != focused.pixel(x, y)
                    for x in range(unfocused.width()) for y in range(unfocused.height()))
    assert differing > unfocused.width()  # at least a frame's worth of pixels


def test_ctrl_4_puts_the_focus_in_the_results_grid(window, qtbot, tmp_path):
    from tests.gui.results_testdata import make_predictions

    pred = make_predictions(tmp_path)
    window.new_project(tmp_path / "g.mustproj")
    run = tmp_path / "g_runs" / "run-001"
    run.mkdir(parents=True)
    window.show_results(pred, run)
    window.show_page(SETUP)
    window.activateWindow()
    window.navigation.setFocus()
    qtbot.waitUntil(window.navigation.hasFocus, timeout=2000)
    qtbot.keyClick(window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    grid = window.results.page.grid
    qtbot.waitUntil(grid.hasFocus, timeout=2000)
    first = window.results.page.current_item()
    qtbot.keyClick(grid, Qt.Key.Key_Right)
    assert window.results.page.current_item() != first


def test_the_inspector_moves_with_the_arrow_keys_wherever_its_focus_is(app, qtbot):
    from must_gui.results.inspector import InspectorDialog

    dialog = InspectorDialog()
    qtbot.addWidget(dialog)
    moves: list[int] = []
    dialog.navigate.connect(moves.append)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.activateWindow()
    buttons = [b for b in dialog.findChildren(QAbstractButton) if "Next" in b.text()]
    for widget in [app.focusWidget() or dialog, buttons[0]]:
        widget.setFocus()
        qtbot.keyClick(widget, Qt.Key.Key_Right)
        qtbot.keyClick(widget, Qt.Key.Key_Left)
        qtbot.keyClick(widget, Qt.Key.Key_Down)
    assert moves == [1, -1, 1, 1, -1, 1]


def test_show_in_folder_says_where_the_export_is_when_no_file_manager_opens(
        app, qtbot, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from PySide6.QtGui import QDesktopServices

    from must_gui.results.export_dialog import ExportDialog

    dialog = ExportDialog(None, None)
    qtbot.addWidget(dialog)
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda _url: False))
    target = tmp_path / "exports" / "predictions.csv"
    target.parent.mkdir()
    target.write_text("path\n")
    dialog.result = SimpleNamespace(path=str(target))
    dialog._open_result()
    assert str(target.parent) in dialog.outcome_label.text()
    assert "file manager" in dialog.outcome_label.text()
