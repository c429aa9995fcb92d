"""Pick one of the project's runs: each listed by folder name with what became of it
(finished, stopped at step N, failed, prepared), newest first, so an earlier finished run's
results stay reachable after a newer run stopped or failed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

MODEL_FILE = "model.safetensors"  # as must_engine.runs names it (that module imports torch)
RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunChoice:
    path: Path
    state: str  # "finished", "stopped at step 40 of 300", "failed", ...
    finished: bool

    @property
    def label(self) -> str:
        return f"{self.path.name} · {self.state}"


def describe_run(run_dir: Path) -> RunChoice:
    """The run's name and state, read from its run.json (cheap: no torch, no model)."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    finished = (run_dir / MODEL_FILE).is_file()
    if not isinstance(data, dict):
        state = "finished" if finished else "missing" if not run_dir.is_dir() else "no run.json"
    else:
        status = str(data.get("status", ""))
        step, total = int(data.get("step", 0) or 0), int(data.get("total_steps", 0) or 0)
        if finished or status == "finished":
            state = "finished"
        elif status == "stopped":
            state = f"stopped at step {step} of {total}" if total else f"stopped at step {step}"
        elif status == "failed":
            state = "failed"
        elif status == "running":
            state = f"interrupted at step {step}"
        else:
            state = "not trained yet"
    return RunChoice(run_dir, state, finished)


class RunPicker(QWidget):
    """Signals: ``runPicked(Path)`` when the user chooses another run."""

    runPicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setObjectName("runCombo")
        self.combo.setAccessibleName("Run")
        self.combo.setToolTip("The project's runs, newest first: pick one to see its curves "
                              "and results")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        label = QLabel("Ru&n:", self)
        label.setBuddy(self.combo)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(label)
        layout.addWidget(self.combo)
        self._filling = False
        self.combo.activated.connect(self._activated)

    def set_runs(self, runs: list[Path], current: Path | None) -> None:
        """List ``runs`` (oldest first, as the project keeps them), newest at the top."""
        self._filling = True
        try:
            self.combo.clear()
            for run in reversed([Path(r) for r in runs]):
                choice = describe_run(run)
                self.combo.addItem(choice.label, str(choice.path))
            index = self.combo.findData(str(current)) if current is not None else -1
            self.combo.setCurrentIndex(max(0, index) if self.combo.count() else -1)
        finally:
            self._filling = False
        self.setVisible(self.combo.count() > 1)  # one run: nothing to choose

    def labels(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def current_run(self) -> Path | None:
        data = self.combo.currentData()
        return Path(data) if data else None

    def pick(self, run_dir: Path) -> bool:
        """Choose a run as the user would; False when it is not listed."""
        index = self.combo.findData(str(Path(run_dir)))
        if index < 0:
            return False
        self.combo.setCurrentIndex(index)
        self._activated(index)
        return True

    def _activated(self, index: int) -> None:
        if not self._filling and index >= 0:
            self.runPicked.emit(Path(self.combo.itemData(index)))
