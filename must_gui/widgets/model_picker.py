"""Choose the pretrained model: open_clip's pretrained ViTs (with approximate download size
and whether each is cached), a local open_clip model folder, or a checkpoint file.

The list needs open_clip (and so torch) imported, which takes seconds: it is built on a
worker thread the first time the picker is shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from must_gui.workers import TaskContext, Worker

LOCAL_PREFIX = "local-dir:"
CHECKPOINT_FILTER = "Checkpoints (*.pt *.pth *.bin *.safetensors);;All files (*)"


@dataclass(frozen=True)
class ModelCatalog:
    entries: list  # must_engine.models.catalog.CatalogEntry
    architectures: list[str]  # ViT configs open_clip knows (for checkpoint files)
    cache_dir: str


def load_catalog(_context: TaskContext) -> ModelCatalog:
    import open_clip

    from must_engine.models.catalog import cache_location, is_vit_config, pretrained_vits

    entries = pretrained_vits()
    archs = [m for m in open_clip.list_models() if is_vit_config(open_clip.get_model_config(m))]
    return ModelCatalog(entries, archs, cache_location())


def human_size(n_bytes: float) -> str:
    """Decimal units, as download sizes are usually quoted: "605 MB", "1.7 GB"."""
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.1f} GB"
    if n_bytes >= 1e6:
        return f"{n_bytes / 1e6:.0f} MB"
    return f"{n_bytes / 1e3:.0f} KB"


def shipped_model() -> tuple[str, str] | None:
    """The tiny CLIP that ships with the app (the demo's model), as a (model, pretrained)
    choice; None when this installation has no demo files."""
    from must_engine import demo_files

    folder = demo_files.demo_model_dir()
    if not (folder / "open_clip_config.json").is_file():
        return None
    return LOCAL_PREFIX + str(folder.resolve()), ""


SHIPPED_LABEL = "MUST tiny CLIP (ships with the app)"


def matches(text: str, query: str) -> bool:
    """Every word of the query appears in the text (case-insensitive): "b-16 laion"."""
    low = text.lower()
    return all(word in low for word in query.lower().split())


def same_choice(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Equal choices; local folders compare as resolved paths (the demo names its model
    folder as installed, the folder button as resolved)."""
    if a == b:
        return True
    if a[0].startswith(LOCAL_PREFIX) and b[0].startswith(LOCAL_PREFIX) and a[1] == b[1]:
        return Path(a[0][len(LOCAL_PREFIX):]).resolve() == Path(b[0][len(LOCAL_PREFIX):]).resolve()
    return False


def describe_choice(model: str, pretrained: str) -> str:
    if model.startswith(LOCAL_PREFIX):
        return f"Local folder: {Path(model[len(LOCAL_PREFIX):]).name}"
    if model.startswith("hf-hub:"):
        return model
    if pretrained and (os.path.sep in pretrained or pretrained.endswith(
            (".pt", ".pth", ".bin", ".safetensors"))):
        return f"{model} · {Path(pretrained).name} (checkpoint file)"
    return f"{model} · {pretrained}" if pretrained else model


class ModelPicker(QWidget):
    """Signals: ``modelChanged(model, pretrained)`` when the user picks another model."""

    modelChanged = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setObjectName("modelCombo")
        self.combo.setAccessibleName("Model")
        self.combo.setMinimumContentsLength(24)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.search = QLineEdit(self)
        self.search.setObjectName("modelSearch")
        self.search.setAccessibleName("Search models")
        self.search.setPlaceholderText("Search the models: B-16, laion, cached…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._fill())
        self.search.returnPressed.connect(self.combo.showPopup)  # Enter: choose among matches
        self.local_button = QPushButton("&Local folder…", self)
        self.local_button.setToolTip("An open_clip model folder (open_clip_config.json + weights)")
        self.file_button = QPushButton("Chec&kpoint file…", self)
        self.file_button.setToolTip("A weights file for one of open_clip's ViT architectures")
        self.info = QLabel(self)
        self.info.setObjectName("hint")
        self.info.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.local_button)
        row.addWidget(self.file_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addLayout(row)
        layout.addWidget(self.info)
        self._catalog: ModelCatalog | None = None
        self._worker: Worker | None = None
        self._model = ""
        self._pretrained = ""
        self._filling = False
        self.combo.currentIndexChanged.connect(self._picked)
        self.local_button.clicked.connect(self.choose_local_folder)
        self.file_button.clicked.connect(self.choose_checkpoint)
        self._fill()

    # ---- public ----------------------------------------------------------------------------
    def model(self) -> tuple[str, str]:
        return self._model, self._pretrained

    def set_model(self, model: str, pretrained: str) -> None:
        self._model, self._pretrained = model, pretrained
        self._fill()

    def catalog(self) -> ModelCatalog | None:
        return self._catalog

    def load_catalog(self) -> None:
        """Start listing open_clip's models in the background (once)."""
        if self._catalog is not None or self._worker is not None:
            return
        self.info.setText("Listing open_clip's pretrained models…")
        self._worker = Worker(load_catalog, name="model-catalog", parent=self)
        self._worker.succeeded.connect(self._catalog_ready)
        self._worker.failed.connect(lambda msg, _tb: self.info.setText(
            f"Could not list open_clip's models ({msg}); a local folder still works."))
        self._worker.finished.connect(self._worker_done)
        self._worker.start()

    def is_loading(self) -> bool:
        return self._worker is not None

    def mark_cached(self, model: str, pretrained: str) -> None:
        """After a download: show the entry as cached without listing everything again."""
        if self._catalog is None:
            return
        from dataclasses import replace

        self._catalog = ModelCatalog(
            [replace(e, cached=True) if (e.model, e.pretrained) == (model, pretrained) else e
             for e in self._catalog.entries], self._catalog.architectures,
            self._catalog.cache_dir)
        self._fill()

    # ---- choosing --------------------------------------------------------------------------
    def choose_local_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an open_clip model folder")
        if folder:
            self.use_local_folder(Path(folder))

    def use_local_folder(self, folder: Path) -> bool:
        if not (folder / "open_clip_config.json").is_file():
            QMessageBox.warning(self, "Not a model folder",
                                f"{folder} has no open_clip_config.json. Choose a folder that "
                                "holds an open_clip model (config and weights).")
            return False
        self._set_and_announce(LOCAL_PREFIX + str(folder.resolve()), "")
        return True

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint file", "",
                                              CHECKPOINT_FILTER)
        if not path:
            return
        archs = self._catalog.architectures if self._catalog else ["ViT-B-32", "ViT-B-16",
                                                                   "ViT-L-14"]
        current = archs.index("ViT-B-16") if "ViT-B-16" in archs else 0
        arch, ok = QInputDialog.getItem(self, "Architecture of the checkpoint",
                                        "Which open_clip architecture are these weights for?",
                                        archs, current, False)
        if ok and arch:
            self._set_and_announce(arch, str(Path(path).resolve()))

    def _set_and_announce(self, model: str, pretrained: str) -> None:
        self._model, self._pretrained = model, pretrained
        self._fill()
        self.modelChanged.emit(model, pretrained)

    # ---- internals -------------------------------------------------------------------------
    def _catalog_ready(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog
        self._fill()

    def _worker_done(self) -> None:
        self._worker = None

    def choices(self) -> list[tuple[str, tuple[str, str]]]:
        """(label, (model, pretrained)) of every model the picker offers, search aside."""
        items = []
        shipped = shipped_model()
        if shipped is not None:
            items.append((SHIPPED_LABEL, shipped))
        if self._catalog is not None:
            for e in self._catalog.entries:
                mark = "  ✓ cached" if e.cached else ""
                size = human_size(e.cached_bytes if e.cached else e.download_bytes)
                items.append((f"{e.model} · {e.pretrained}   ≈ {size}{mark}",
                              (e.model, e.pretrained)))
        return items

    def index_of(self, model: str, pretrained: str) -> int:
        """The combo row holding this choice, -1 if none. (QComboBox.findData cannot be
        used: it does not match Python tuples reliably, and showed the wrong model.)"""
        for i in range(self.combo.count()):
            if same_choice(self.combo.itemData(i), (model, pretrained)):
                return i
        return -1

    def _fill(self) -> None:
        self._filling = True
        try:
            self.combo.clear()
            current = (self._model, self._pretrained)
            query = self.search.text().strip()
            offered = self.choices()
            for label, data in offered:
                # The current choice stays listed whatever the search, so the combo never
                # shows a model other than the one that loads.
                if same_choice(data, current) or not query or matches(label, query):
                    self.combo.addItem(label, data)
            if self._model and not any(same_choice(data, current) for _label, data in offered):
                self.combo.insertItem(0, describe_choice(*current), current)
            self.combo.setCurrentIndex(max(0, self.index_of(*current)))
        finally:
            self._filling = False
        shown = self.combo.count()
        if query:
            self.search.setToolTip(f"{shown} of {len(offered)} models match")
        self._describe()

    def _picked(self, index: int) -> None:
        if self._filling or index < 0:
            return
        data = self.combo.itemData(index)
        if data is None:
            return
        self._model, self._pretrained = data
        self._describe()
        self.modelChanged.emit(self._model, self._pretrained)

    def _describe(self) -> None:
        model, pretrained = self._model, self._pretrained
        if not model:
            self.info.setText("Choose a model.")
            return
        shipped = shipped_model()
        if shipped is not None and same_choice((model, pretrained), shipped):
            self.info.setText("A tiny CLIP for trying the app offline (the demo's model): "
                              "nothing to download; for real photos pick a pretrained ViT.")
            return
        if model.startswith(LOCAL_PREFIX):
            self.info.setText(f"Local model folder {model[len(LOCAL_PREFIX):]}: nothing to "
                              "download.")
            return
        entry = None
        if self._catalog is not None:
            entry = next((e for e in self._catalog.entries
                          if (e.model, e.pretrained) == (model, pretrained)), None)
        if entry is None:
            if self._catalog is None and self._worker is not None:
                self.info.setText("Listing open_clip's pretrained models…")
            elif pretrained and Path(pretrained).is_file():
                self.info.setText(f"Checkpoint file {pretrained} for the {model} architecture.")
            else:
                self.info.setText(describe_choice(model, pretrained))
            return
        where = self._catalog.cache_dir if self._catalog else ""
        if entry.cached:
            self.info.setText(f"{entry.params_millions:.0f} M parameters · in the model cache "
                              f"({human_size(entry.cached_bytes)}) · works offline")
        else:
            self.info.setText(f"{entry.params_millions:.0f} M parameters · about "
                              f"{human_size(entry.download_bytes)} to download the first time, "
                              f"into {where}")
