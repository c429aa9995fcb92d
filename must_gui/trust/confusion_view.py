"""Known labels: true accuracy and the confusion matrices before and after adaptation, shown
only where the labels are really known (class-named subfolders or a labels CSV) and marked as
measured with them."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.evaluate import Evaluation


def matrix_table(matrix: list[list[int]], names: list[str]) -> QTableWidget:
    """Rows: true class; columns: predicted. Cells shaded by their share of the row; the
    diagonal green, the rest red."""
    table = QTableWidget(len(names), len(names))
    table.setHorizontalHeaderLabels(names)
    table.setVerticalHeaderLabels(names)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, row in enumerate(matrix):
        total = max(1, sum(row))
        for c, value in enumerate(row):
            item = QTableWidgetItem(str(value))
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            share = value / total
            base = (60, 170, 90) if r == c else (220, 80, 70)
            if value:
                item.setBackground(QBrush(QColor(*base, int(40 + 200 * share))))
            item.setToolTip(f"true {names[r]}, predicted {names[c]}: {value} "
                            f"({share:.0%} of {names[r]})")
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    # The whole matrix when the screen has room (ten classes were cut off at the right).
    table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
    # Not in the Tab chain: a focus frame on the first cell read as "this one is special".
    table.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
    return table


class ConfusionDialog(QDialog):
    def __init__(self, evaluation: Evaluation, source: str, parent: QWidget | None = None,
                 *, adapted: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Measured with labels")
        self.evaluation = evaluation
        e = evaluation
        head = QLabel(f"<b>Measured with labels</b> from {source}: {e.count:,} images."
                      + (f" {e.unlabelled:,} without a label were not counted."
                         if e.unlabelled else ""))
        head.setWordWrap(True)
        self.accuracy_label = QLabel(
            f"Zero-shot accuracy <b>{e.zero_shot:.1%}</b>"
            + (f" → adapted <b>{e.adapted:.1%}</b> ({100 * (e.adapted - e.zero_shot):+.1f} "
               "points)" if adapted else " (the run has not finished)"))
        names = e.class_names
        self.zero_shot_table = matrix_table(e.confusion_zero_shot, names)
        self.adapted_table = matrix_table(e.confusion_adapted, names)
        tables = QHBoxLayout()
        for title, table in (("Before adaptation (zero-shot)", self.zero_shot_table),
                             ("After adaptation", self.adapted_table)):
            if table is self.adapted_table and not adapted:
                continue
            box = QVBoxLayout()
            box.addWidget(QLabel(f"<b>{title}</b> · rows: true class, columns: predicted"))
            box.addWidget(table)
            tables.addLayout(box)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(head)
        layout.addWidget(self.accuracy_label)
        layout.addLayout(tables, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignRight)
        hint = self.sizeHint()
        room = self.screen().availableGeometry()
        self.resize(min(max(hint.width(), 600), int(room.width() * 0.95)),
                    min(max(hint.height(), 360), int(room.height() * 0.9)))
