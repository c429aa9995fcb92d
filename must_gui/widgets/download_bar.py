"""A progress bar for model downloads, fed with the engine's DownloadProgress events."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from must_engine.events import DownloadProgress


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


class DownloadBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(self)
        self.bar = QProgressBar(self)
        self.bar.setObjectName("downloadBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar, 1)
        self.hide()

    def handle(self, event: DownloadProgress) -> None:
        name = event.what.rsplit("/", 1)[-1]
        if event.total_bytes > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * event.done_bytes / event.total_bytes))
            self.bar.setFormat(f"{_mb(event.done_bytes)} of {_mb(event.total_bytes)}")
            finished = event.done_bytes >= event.total_bytes
        else:
            self.bar.setRange(0, 0)  # size unknown: a busy bar
            self.bar.setFormat(_mb(event.done_bytes))
            finished = False
        self.label.setText(f"Downloading {name}")
        self.setToolTip(event.what)
        self.setVisible(not finished)

    def reset(self) -> None:
        self.hide()
