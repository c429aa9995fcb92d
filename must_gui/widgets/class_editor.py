"""The class names editor: one name a line; a pasted list is split into lines; duplicates and
near-duplicates are flagged live, on the lines themselves and in words below."""

from __future__ import annotations

import html

from PySide6.QtCore import QMimeData, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QTextEdit, QVBoxLayout, QWidget

from must_engine.classes import (
    MAX_CLASS_NAME_CHARS,
    ClassNameReport,
    parse_class_names,
    review_class_names,
)

DUPLICATE_COLOUR = QColor("#fbd5d5")
NEAR_COLOUR = QColor("#fdf0c4")
MAX_MESSAGES = 6


class _NamesTextEdit(QPlainTextEdit):
    """Pasting "cat, dog; bird" or a tab-separated row puts one name on each line."""

    def insertFromMimeData(self, source: QMimeData) -> None:  # noqa: N802 - Qt API
        text = source.text() if source.hasText() else ""
        if text and "\n" not in text.strip() and any(sep in text for sep in ",;\t"):
            names = parse_class_names(text)
            self.insertPlainText("\n".join(names))
            return
        super().insertFromMimeData(source)


class ClassNamesEditor(QWidget):
    """Signals: ``namesChanged(list)`` after each edit (debounced a little)."""

    namesChanged = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = _NamesTextEdit(self)
        self.edit.setPlaceholderText("One class name a line, e.g.\ncat\ndog\nbird\n\n"
                                     "or paste a comma-separated list")
        self.edit.setTabChangesFocus(True)  # keyboard users can leave the editor with Tab
        self.edit.setAccessibleName("Class names")
        self.edit.setMinimumHeight(120)
        self.summary = QLabel(self)
        self.summary.setObjectName("hint")
        self.issues = QLabel(self)
        self.issues.setWordWrap(True)
        self.issues.setTextFormat(Qt.TextFormat.RichText)
        self.issues.setObjectName("classIssues")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.summary)
        layout.addWidget(self.issues)
        self._report = ClassNameReport([], [])
        self._names: list[str] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._review)
        self.edit.textChanged.connect(self._timer.start)
        self._review()

    # ---- public ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return parse_class_names(self.edit.toPlainText())

    def set_names(self, names: list[str]) -> None:
        self.edit.setPlainText("\n".join(names))
        self._timer.stop()
        self._review()

    def report(self) -> ClassNameReport:
        return self._report

    def has_duplicates(self) -> bool:
        return bool(self._report.duplicates)

    def too_long(self) -> list[str]:
        """Names over the engine's length limit (a run refuses them)."""
        return [n for n in self.names() if len(n) > MAX_CLASS_NAME_CHARS]

    def flush(self) -> None:
        """Review now instead of after the debounce (tests, and before starting a run)."""
        if self._timer.isActive():
            self._timer.stop()
            self._review()

    # ---- internals -------------------------------------------------------------------------
    def _review(self) -> None:
        names = self.names()
        report = review_class_names(names)
        self._report = report
        dup = {n for pair in report.duplicates for n in pair}
        near = {n for pair in report.near_duplicates for n in pair}
        dup |= {n for n in names if len(n) > MAX_CLASS_NAME_CHARS}  # marked as errors too
        self._highlight(dup, near)
        count = len(names)
        self.summary.setText("No classes yet" if count == 0 else
                             f"{count} class{'es' if count != 1 else ''}")
        messages = [f"<span style='color:#b42318'>&#9888; “{b}” repeats “{a}”: remove one."
                    "</span>" for a, b in report.duplicates]
        messages += [f"<span style='color:#b42318'>&#9888; “{html.escape(_clip(n))}” has {len(n)} characters; "
                     f"the limit is {MAX_CLASS_NAME_CHARS}: shorten it.</span>"
                     for n in names if len(n) > MAX_CLASS_NAME_CHARS]
        messages += [f"<span style='color:#93610b'>“{a}” and “{b}” look alike: are they "
                     "really different classes?</span>" for a, b in report.near_duplicates]
        extra = len(messages) - MAX_MESSAGES
        messages = messages[:MAX_MESSAGES] + ([f"… and {extra} more"] if extra > 0 else [])
        self.issues.setText("<br>".join(messages))
        self.issues.setVisible(bool(messages))
        if names != self._names:
            self._names = names
            self.namesChanged.emit(names)

    def _highlight(self, duplicates: set[str], near: set[str]) -> None:
        selections = []
        block = self.edit.document().firstBlock()
        while block.isValid():
            line_names = set(parse_class_names(block.text()))
            colour = (DUPLICATE_COLOUR if line_names & duplicates
                      else NEAR_COLOUR if line_names & near else None)
            if colour is not None:
                sel = QTextEdit.ExtraSelection()
                fmt = QTextCharFormat()
                fmt.setBackground(colour)
                fmt.setProperty(QTextFormat.Property.FullWidthSelection, True)
                sel.format = fmt
                cursor = QTextCursor(block)
                sel.cursor = cursor
                selections.append(sel)
            block = block.next()
        self.edit.setExtraSelections(selections)

    def flagged_lines(self) -> dict[int, str]:
        """Line number -> "duplicate" or "near" for the lines highlighted now."""
        out: dict[int, str] = {}
        for sel in self.edit.extraSelections():
            colour = sel.format.background().color()
            out[sel.cursor.blockNumber()] = ("duplicate" if colour == DUPLICATE_COLOUR
                                             else "near")
        return out


def _clip(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
