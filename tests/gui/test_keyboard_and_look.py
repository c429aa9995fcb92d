"""Keyboard use and drawing details found by trying the app as a new user: mnemonics that
clash, the blank highlighted row of combo-box popups."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QItemSelectionModel
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
