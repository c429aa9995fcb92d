"""The run's warnings (``RunWarning``: class collapse, classes never confident, ...) on the
training page, beside the plots: the latest one in full with what to try, earlier ones in the
tooltip. Its height is fixed so a warning arriving never resizes the plots."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from must_engine.events import RunWarning

LINES = 3


class RunWarningsLabel(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runWarnings")
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setFixedHeight(LINES * self.fontMetrics().lineSpacing() + 4)
        self.warnings: list[RunWarning] = []

    def add(self, warning: RunWarning) -> None:
        self.warnings.append(warning)
        more = len(self.warnings) - 1
        tail = f" <i>({more} earlier warning{'s' if more > 1 else ''}: hover)</i>" if more else ""
        self.setText(f"<span style='color:#b35900'>⚠ <b>{escape(warning.message)}</b> "
                     f"{escape(warning.suggestion)}</span>{tail}")
        self.setToolTip("\n\n".join(f"{w.message} {w.suggestion}" for w in self.warnings))

    def clear_warnings(self) -> None:
        self.warnings = []
        self.setText("")
        self.setToolTip("")
