"""The images whose class changed between zero-shot and adapted, grouped by (from, to) pair
with counts; choosing a group shows exactly those images in the grid."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.predict import Predictions
from must_engine.trust.changes import ChangeGroup, changed_groups


class ChangesDialog(QDialog):
    """Signal groupChosen(object): a frozenset of table rows to show in the grid."""

    groupChosen = Signal(object)

    def __init__(self, predictions: Predictions, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Changed predictions")
        self.groups: list[ChangeGroup] = changed_groups(
            predictions.zero_shot_labels(), predictions.labels(), predictions.confidences())
        names = predictions.class_names
        total = sum(g.count for g in self.groups)
        head = QLabel(f"<b>{total:,}</b> of {len(predictions):,} images changed class during "
                      "adaptation. Click a row to see those images in the grid.")
        head.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["zero-shot said", "adapted says", "images"])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for g in self.groups:
            item = QTreeWidgetItem([names[g.source], names[g.target], f"{g.count:,}"])
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.tree.addTopLevelItem(item)
        self.tree.itemClicked.connect(self._on_clicked)
        self.tree.itemActivated.connect(self._on_clicked)
        layout = QVBoxLayout(self)
        layout.addWidget(head)
        layout.addWidget(self.tree, 1)
        self.resize(460, 420)

    def choose(self, row: int) -> None:
        self.groupChosen.emit(frozenset(self.groups[row].indices))

    def _on_clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        self.choose(self.tree.indexOfTopLevelItem(item))
