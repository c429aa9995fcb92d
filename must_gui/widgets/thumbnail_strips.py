"""One row per class: its name, how many images the model gave it, and a strip of the
images it is most sure of, so a badly named class shows before any training."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QWidget

MAX_ROWS = 60


class ClassThumbnailStrips(QWidget):
    def __init__(self, thumb_size: int = 72, per_class: int = 6,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.per_class = per_class
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(6)
        self._slots: dict[Hashable, QLabel] = {}

    def clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.deleteLater()
        self._slots.clear()

    def set_classes(self, names: Sequence[str], counts: Sequence[int],
                    samples: dict[int, list[tuple[Hashable, str]]]) -> None:
        """``samples[c]``: (key, tooltip) of the thumbnails to come for class c, best first."""
        self.clear()
        order = list(range(len(names)))[:MAX_ROWS]
        for row, c in enumerate(order):
            title = QLabel(f"<b>{names[c]}</b><br><span style='color:#667085'>"
                           f"{counts[c]} image{'s' if counts[c] != 1 else ''}</span>")
            title.setTextFormat(Qt.TextFormat.RichText)
            title.setMinimumWidth(150)
            title.setWordWrap(True)
            title.setFixedHeight(self.thumb_size)  # every row as tall as a thumbnail
            self.grid.addWidget(title, row, 0, Qt.AlignmentFlag.AlignVCenter)
            strip = QWidget()
            strip.setFixedHeight(self.thumb_size)
            line = QHBoxLayout(strip)
            line.setContentsMargins(0, 0, 0, 0)
            line.setSpacing(4)
            picks = samples.get(c, [])[: self.per_class]
            if not picks:
                empty = QLabel("No image went to this class. Is the name what the photos "
                               "show?")
                empty.setStyleSheet("color:#93610b")
                line.addWidget(empty)
            for key, tip in picks:
                slot = QLabel()
                slot.setFixedSize(self.thumb_size, self.thumb_size)
                slot.setAlignment(Qt.AlignmentFlag.AlignCenter)
                slot.setFrameShape(QFrame.Shape.StyledPanel)
                slot.setStyleSheet("background:#eef1f6;border-radius:4px")
                slot.setToolTip(tip)
                self._slots[key] = slot
                line.addWidget(slot)
            line.addStretch(1)
            self.grid.addWidget(strip, row, 1)
        if len(names) > MAX_ROWS:
            more = QLabel(f"… {len(names) - MAX_ROWS} more classes not shown")
            more.setObjectName("hint")
            self.grid.addWidget(more, MAX_ROWS, 0, 1, 2)
        self.grid.setColumnStretch(1, 1)

    def set_thumbnail(self, key: Hashable, image: QImage) -> None:
        slot = self._slots.get(key)
        if slot is None:
            return
        if image.isNull():
            slot.setText("?")
            return
        pixmap = QPixmap.fromImage(image).scaled(
            self.thumb_size, self.thumb_size, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation)
        slot.setPixmap(pixmap)

    def filled_count(self) -> int:
        return sum(1 for s in self._slots.values() if s.pixmap() is not None
                   and not s.pixmap().isNull())
