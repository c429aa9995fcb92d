"""Fixtures for driving the real main window offscreen (pytest-qt).

The root conftest already points MUST_STUDIO_CONFIG_DIR / MUST_STUDIO_DATA_DIR at a
temporary folder and sets QT_QPA_PLATFORM=offscreen, so nothing here touches the user's
settings. QSettings goes to an INI file inside that folder too (see preferences.py).
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from must_gui.app import create_application
from must_gui.main_window import MainWindow
from must_gui.preferences import load_preferences

WORKER_WAIT_MS = 60_000


@pytest.fixture
def app(qapp):
    """pytest-qt's QApplication, set up the way the app sets up its own (names, style)."""
    return create_application([])


@pytest.fixture
def window(app, qtbot, monkeypatch):
    """The real main window, shown; stopped and closed cleanly afterwards."""
    win = MainWindow(load_preferences())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.training_page.stop()
    win.wait_for_workers(WORKER_WAIT_MS)
    # Anything still asking must not block the test run.
    monkeypatch.setattr(QMessageBox, "exec", lambda self: int(QMessageBox.StandardButton.Cancel))
    win._quit_after_stop = True
    win.close()


def click_button_in_message_box(text: str):
    """A replacement for QMessageBox.exec that presses the button labelled ``text``."""

    def exec_(box: QMessageBox) -> int:
        for button in box.buttons():
            if button.text().replace("&", "") == text:
                button.click()
                return 0
        raise AssertionError(f"no button {text!r} in {[b.text() for b in box.buttons()]}")

    return exec_
