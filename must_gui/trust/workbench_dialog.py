"""The class-name workbench: before training, see which class names the model can hardly
tell apart, how far the prompt templates agree per class, add synonyms ("cab; taxi"), and
re-score every image in seconds (the images are embedded once, in the background)."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.project import Project
from must_gui.workers import TaskContext, Worker

NAME, SYNONYMS, IMAGES, AGREEMENT = range(4)


def embed_task(project: Project):
    """Load the model and embed every image of the project's folder once."""

    def run(context: TaskContext):
        from must_engine.images import scan_folder
        from must_engine.models.source import load_clip
        from must_engine.trust.prompts import ZeroShotWorkbench

        scan = scan_folder(Path(project.image_folder))
        clip = load_clip(project.model_spec(), device="cpu", on_event=context.on_event)
        return ZeroShotWorkbench.from_images(clip, scan.paths(),
                                             should_stop=context.should_stop)

    return run


class WorkbenchDialog(QDialog):
    """Signal synonymsSaved(): the project's synonyms were changed."""

    synonymsSaved = Signal()
    ready = Signal()

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Check class names")
        self.project = project
        self.bench = None
        self.result = None
        from must_engine.classes import default_templates

        self.templates = list(project.templates) or default_templates()
        self.status = QLabel("Embedding the images once…")
        self.status.setWordWrap(True)
        self.similar = QLabel()
        self.similar.setWordWrap(True)
        self.similar.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(len(project.class_names), 4)
        self.table.setHorizontalHeaderLabels(["class", "synonyms (separate with ;)", "images",
                                              "templates agree"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(SYNONYMS, QHeaderView.ResizeMode.Stretch)
        for r, name in enumerate(project.class_names):
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(r, NAME, item)
            self.table.setItem(r, SYNONYMS,
                               QTableWidgetItem("; ".join(project.synonyms.get(name, []))))
            for col in (IMAGES, AGREEMENT):
                cell = QTableWidgetItem("")
                cell.setFlags(cell.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(r, col, cell)
        self.table.resizeColumnToContents(NAME)
        note = QLabel("“Templates agree”: of the images a class gets, the share of prompt "
                      "templates that, alone, give them the same class. Low agreement means the "
                      "name reads differently from prompt to prompt; try a clearer name or a "
                      "synonym.")
        note.setWordWrap(True)
        note.setStyleSheet("color: gray;")
        self.preview_button = QPushButton("Preview again")
        self.preview_button.setEnabled(False)
        self.preview_button.clicked.connect(self.preview)
        self.save_button = QPushButton("Save synonyms")
        self.save_button.clicked.connect(self.save_synonyms)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.similar)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        layout.addLayout(buttons)
        self.resize(760, 460)
        self.worker: Worker | None = None

    def start(self) -> None:
        """Embed the images in the background, then preview."""
        self.worker = Worker(embed_task(self.project), name="workbench", parent=self)
        self.worker.succeeded.connect(self._embedded)
        self.worker.failed.connect(lambda message, _tb: self.status.setText(message))
        self.worker.start()

    def _embedded(self, bench) -> None:
        self.bench = bench
        self.preview_button.setEnabled(True)
        self.preview()
        self.ready.emit()

    def entries(self) -> list[str]:
        out = []
        for r, name in enumerate(self.project.class_names):
            extra = self.table.item(r, SYNONYMS).text().strip()
            out.append(f"{name}; {extra}" if extra else name)
        return out

    def preview(self) -> None:
        if self.bench is None:
            return
        try:
            self.result = self.bench.preview(self.entries(), self.templates)
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        r = self.result
        for row, (count, agree) in enumerate(zip(r.class_counts(), r.agreement, strict=True)):
            self.table.item(row, IMAGES).setText(f"{count:,}")
            self.table.item(row, AGREEMENT).setText("–" if math.isnan(agree) else f"{agree:.0%}")
        for col in (IMAGES, AGREEMENT):  # the headers in full, beside the numbers
            self.table.resizeColumnToContents(col)
        if r.similar:
            pairs = ", ".join(f"“{a}” and “{b}” ({s:.2f})" for a, b, s in r.similar)
            self.similar.setText(f"<span style='color:#b35900'>⚠ Nearly identical to the model: "
                                 f"{pairs}. Rename one, or add a synonym that sets it apart."
                                 "</span>")
        else:
            self.similar.setText("No two class names look alike to the model.")
        self.status.setText(f"Scored {len(r.probs):,} images in {r.seconds:.2f} s.")

    def save_synonyms(self) -> None:
        from must_engine.trust.prompts import split_synonyms

        synonyms = {}
        for r, name in enumerate(self.project.class_names):
            extra = split_synonyms(self.table.item(r, SYNONYMS).text())
            extra = [s for s in extra if s.casefold() != name.casefold()]
            if extra:
                synonyms[name] = extra
        self.project.synonyms = synonyms
        self.synonymsSaved.emit()
        self.status.setText("Synonyms saved; the next run uses them.")

    def done(self, result: int) -> None:
        if self.worker is not None:
            self.worker.cancel()  # the images need not be embedded for a closed dialog
        super().done(result)
