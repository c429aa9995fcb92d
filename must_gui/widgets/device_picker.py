"""Choose where to compute: automatic, each CUDA GPU (name and memory), all GPUs together
(training under torchrun) where there are several, Apple MPS, or the CPU.

Listing devices imports torch, so it runs on a worker thread the first time it is shown.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QWidget

from must_gui.workers import TaskContext, Worker

AUTO_LABEL = "Automatic (the best device here)"


def list_device_choices(_context: TaskContext) -> list[tuple[str, str]]:
    from must_engine.devices import device_choices, list_devices

    return device_choices(list_devices())  # with "All N GPUs" where there are several


class DevicePicker(QComboBox):
    """Signals: ``deviceChanged(choice)`` with "auto", "cuda:0", "cuda:all", "mps" or "cpu"."""

    deviceChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("deviceCombo")
        self.setAccessibleName("Device")
        self._choice = "auto"
        self._devices: list[tuple[str, str]] | None = None
        self._worker: Worker | None = None
        self._filling = False
        self.currentIndexChanged.connect(self._picked)
        self._fill()

    def choice(self) -> str:
        return self._choice

    def set_choice(self, choice: str) -> None:
        self._choice = choice or "auto"
        self._fill()

    def devices(self) -> list[tuple[str, str]] | None:
        return self._devices

    def label_for(self, choice: str) -> str:
        for value, label in self._devices or []:
            if value == choice:
                return label
        return AUTO_LABEL if choice == "auto" else choice

    def load_devices(self) -> None:
        if self._devices is not None or self._worker is not None:
            return
        self._worker = Worker(list_device_choices, name="devices", parent=self)
        self._worker.succeeded.connect(self._ready)
        self._worker.failed.connect(lambda _m, _t: self._ready([("cpu", "CPU")]))
        self._worker.finished.connect(self._done)
        self._worker.start()

    def is_loading(self) -> bool:
        return self._worker is not None

    def _ready(self, devices: list[tuple[str, str]]) -> None:
        self._devices = devices
        self._fill()

    def _done(self) -> None:
        self._worker = None

    def _fill(self) -> None:
        self._filling = True
        try:
            self.clear()
            self.addItem(AUTO_LABEL, "auto")
            known = {"auto"}
            for value, label in self._devices or []:
                self.addItem(label, value)
                known.add(value)
            if self._choice not in known:
                # A project made on another machine: keep its choice visible, say it is absent.
                suffix = " (not found here)" if self._devices is not None else ""
                self.addItem(self._choice + suffix, self._choice)
            self.setCurrentIndex(max(0, self.findData(self._choice)))
        finally:
            self._filling = False

    def _picked(self, index: int) -> None:
        if self._filling or index < 0:
            return
        self._choice = self.itemData(index)
        self.deviceChanged.emit(self._choice)
