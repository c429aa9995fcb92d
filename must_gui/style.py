"""The app's look: Fusion with a light palette, a small style sheet and the app icon,
all from plain files shipped with the app (must_engine.shipped_data)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from must_engine.shipped_data import shipped_file

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ACCENT = "#2e6fdb"

STYLE_SHEET = """
QMainWindow, QWidget#page { background: #f7f8fa; }
QListWidget#navigation {
    background: #eef1f6; border: none; border-right: 1px solid #dde2ea;
    padding-top: 8px; font-size: 10.5pt;
}
QListWidget#navigation::item { padding: 9px 14px; border-radius: 6px; margin: 1px 8px; }
QListWidget#navigation::item:selected { background: #dbe6fa; color: #173b7a; }
QListWidget#navigation::item:disabled { color: #98a2b3; }
QLabel#pageTitle { font-size: 17pt; font-weight: 600; color: #101828; }
QLabel#pageSubtitle, QLabel#hint { color: #667085; }
QLabel#problem { color: #b42318; }
QLabel#formHeading { color: #475467; font-weight: 600; padding-top: 4px; }
QLabel#ready { color: #1f7a44; }
QGroupBox {
    background: white; border: 1px solid #dde2ea; border-radius: 8px;
    margin-top: 14px; padding: 14px 12px 10px 12px; font-weight: 600;
}
QGroupBox::title { subcontrol-origin: margin; left: 12px; padding: 0 4px; color: #344054; }
QGroupBox QLabel, QGroupBox QCheckBox { font-weight: normal; }
QPushButton { padding: 6px 14px; border-radius: 6px; border: 1px solid #c9d0db;
              background: white; }
QPushButton:hover { background: #f0f4fb; }
QPushButton:focus { border: 1px solid #2e6fdb; }
QPushButton:disabled { color: #98a2b3; background: #f2f4f7; }
QPushButton#primary { background: #2e6fdb; color: white; border: 1px solid #2559b3;
                      font-weight: 600; }
QPushButton#primary:hover { background: #2559b3; }
QPushButton#primary:disabled { background: #a9c1ee; border-color: #a9c1ee; }
QToolButton#collapsibleHeader { border: 1px solid transparent; border-radius: 4px;
                                font-weight: 600; color: #344054; padding: 4px 2px;
                                text-align: left; }
QToolButton#collapsibleHeader:focus { border: 1px solid #2e6fdb; background: #eef3fc; }
QProgressBar { border: 1px solid #dde2ea; border-radius: 5px; background: white;
               text-align: center; min-height: 18px; }
QProgressBar::chunk { background: #7aa6ee; border-radius: 4px; }
QPlainTextEdit, QLineEdit, QComboBox, QSpinBox, QDoubleSpinBox, QListWidget, QTreeWidget {
    background: white;
}
QComboBox QAbstractItemView {
    background: white; border: 1px solid #c9d0db; outline: none;
    selection-background-color: #dbe6fa; selection-color: #173b7a;
}
QComboBox QAbstractItemView::item { min-height: 22px; padding: 0 6px; color: #101828; }
QComboBox QAbstractItemView::item:selected { background: #dbe6fa; color: #173b7a; }
QListWidget#recentList { border: 1px solid #dde2ea; border-radius: 8px; padding: 4px; }
QListWidget#recentList::item { border-radius: 6px; }
QListWidget#recentList::item:selected { background: #dbe6fa; color: #173b7a; }
QScrollArea { border: none; background: transparent; }
QStatusBar { background: #eef1f6; color: #475467; }
"""


def icon_dir() -> Path:
    return shipped_file("icons")


def app_icon() -> QIcon:
    icon = QIcon()
    folder = icon_dir()
    for size in ICON_SIZES:
        path = folder / f"must-studio-{size}.png"
        if path.is_file():
            icon.addFile(str(path))
    if icon.isNull() and (folder / "must-studio.svg").is_file():
        icon.addFile(str(folder / "must-studio.svg"))
    return icon


def apply_style(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#f7f8fa", QPalette.ColorRole.WindowText: "#101828",
        QPalette.ColorRole.Base: "#ffffff", QPalette.ColorRole.AlternateBase: "#f5f7fa",
        QPalette.ColorRole.Text: "#101828", QPalette.ColorRole.Button: "#ffffff",
        QPalette.ColorRole.ButtonText: "#101828", QPalette.ColorRole.Highlight: ACCENT,
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#ffffff",
        QPalette.ColorRole.ToolTipText: "#101828", QPalette.ColorRole.PlaceholderText: "#98a2b3",
        QPalette.ColorRole.Link: ACCENT,
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#98a2b3"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText,
                     QColor("#98a2b3"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText,
                     QColor("#98a2b3"))
    app.setPalette(palette)
    app.setStyleSheet(STYLE_SHEET)
