"""The results page: filters on the left, the thumbnail grid, the inspector on the right.

The shell calls `ResultsPage.set_results(predictions, run_dir)`; everything else happens
here. Keys: arrows move in the grid, Enter opens the inspector window, 1..9 show only that
class, 0 shows every class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.predict import Predictions
from must_gui.pyside_fix import protect_singletons
from must_gui.results.export_dialog import ExportDialog
from must_gui.results.inspector import InspectorDialog, InspectorPanel
from must_gui.results.prediction_model import (
    FilterState,
    PredictionFilterProxy,
    PredictionListModel,
    Roles,
    SortKey,
)
from must_gui.results.pseudo_labels import PseudoLabels
from must_gui.results.thumbnail_cache import ThumbnailCache
from must_gui.results.thumbnail_grid import ThumbnailGrid
from must_gui.run_report import read_run_report
from must_gui.thumbnails import run_thumbnail_source
from must_gui.trust.trust_panel import TrustPanel
from must_gui.widgets.run_summary import KeptBanner

SORT_CHOICES: tuple[tuple[str, SortKey, bool], ...] = (
    ("Confidence, high to low", SortKey.CONFIDENCE, True),
    ("Confidence, low to high", SortKey.CONFIDENCE, False),
    ("Class, then confidence", SortKey.CLASS, True),
    ("File name, A to Z", SortKey.NAME, False),
    ("File name, Z to A", SortKey.NAME, True),
)


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    f = label.font()
    f.setBold(True)
    label.setFont(f)
    return label


class ResultsPage(QWidget):
    """Browse every image with its predicted class.

    Signals:
      exportRequested(): "Export model…" was pressed (the page also opens the export dialog
        itself unless `handles_export` is set to False);
      imageSelected(int): the image (index into the Predictions table) now selected.
    """

    exportRequested = Signal()
    imageSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None, *,
                 thumbnail_cache: ThumbnailCache | None = None) -> None:
        super().__init__(parent)
        # PySide6 6.12 + Python 3.11 drops references to None/True on every data() call
        # and emit; without this the app aborts after a few seconds of scrolling.
        protect_singletons()
        self.handles_export = True
        self._pred: Predictions | None = None
        self._run_dir: Path | None = None
        self._pseudo: PseudoLabels | None = None
        self._updating_classes = False
        self._dialog: InspectorDialog | None = None
        self._export_dialog: ExportDialog | None = None
        self._loading = False
        self._last_selected = -1
        self._kept_item = -1  # the current image across a filter change (a proxy reset)

        self.cache = (thumbnail_cache if thumbnail_cache is not None
                      else ThumbnailCache(parent=self))
        self.model = PredictionListModel(self)
        self.model.set_thumbnail_cache(self.cache)
        self.proxy = PredictionFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.grid = ThumbnailGrid(self.cache)
        self.grid.setModel(self.proxy)
        self.grid.setFrameShape(QFrame.Shape.NoFrame)
        self.inspector = InspectorPanel()
        self.inspector.setMinimumWidth(280)

        self._build_filters()
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setContentsMargins(8, 6, 8, 6)

        center = QWidget()
        cl = QVBoxLayout(center)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        self.kept_banner = KeptBanner()  # which classifier made these results, and why
        cl.addWidget(self.kept_banner)
        cl.addWidget(self.summary)
        cl.addWidget(self.grid, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.filters)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.inspector)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([240, 800, 320])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.grid.openRequested.connect(self._open_inspector)
        self.proxy.filterChanged.connect(self._update_summary)
        self.proxy.modelAboutToBeReset.connect(self._remember_current)
        self.proxy.modelReset.connect(self._restore_current)
        self.proxy.layoutChanged.connect(self._keep_current_visible)
        # Number keys pick a class. A shortcut (not keyPressEvent) so it works wherever the
        # focus is on this page, while a focused spin box still gets its digits (text
        # fields claim printable keys before shortcuts fire).
        self._shortcuts = []
        for n in range(10):
            sc = QShortcut(QKeySequence(str(n)), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.setProperty("class_number", n)
            sc.activated.connect(self._on_number_key)
            self._shortcuts.append(sc)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._update_summary()

    # --- layout --------------------------------------------------------------------------

    def _build_filters(self) -> None:
        self.filters = QWidget()
        self.filters.setMinimumWidth(200)
        fl = QVBoxLayout(self.filters)
        fl.setContentsMargins(8, 8, 8, 8)

        head = QHBoxLayout()
        head.addWidget(_heading("Classes"))
        head.addStretch(1)
        self.all_classes_button = QPushButton("All")
        self.all_classes_button.setToolTip("Show every class (key 0)")
        self.all_classes_button.clicked.connect(self.show_all_classes)
        head.addWidget(self.all_classes_button)
        fl.addLayout(head)

        self.class_list = QTreeWidget()
        self.class_list.setColumnCount(2)
        self.class_list.setHeaderHidden(True)
        self.class_list.setRootIsDecorated(False)
        self.class_list.setUniformRowHeights(True)
        self.class_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.class_list.header().setStretchLastSection(False)
        self.class_list.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_list.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.class_list.setToolTip("Select one or more classes (Ctrl+click); none selected "
                                   "shows every class. Keys 1–9 pick a class, 0 all.")
        self.class_list.itemSelectionChanged.connect(self._on_class_selection)
        fl.addWidget(self.class_list, 1)

        fl.addSpacing(6)
        fl.addWidget(_heading("Confidence"))
        conf = QHBoxLayout()
        self.min_conf = QDoubleSpinBox()
        self.max_conf = QDoubleSpinBox()
        for spin, value in ((self.min_conf, 0.0), (self.max_conf, 100.0)):
            spin.setRange(0.0, 100.0)
            spin.setDecimals(0)
            spin.setSingleStep(5.0)
            spin.setSuffix(" %")
            spin.setValue(value)
            spin.setKeyboardTracking(False)  # filter when typing is done, not per digit
            spin.valueChanged.connect(self._on_confidence_changed)
        conf.addWidget(QLabel("from"))
        conf.addWidget(self.min_conf, 1)
        conf.addWidget(QLabel("to"))
        conf.addWidget(self.max_conf, 1)
        fl.addLayout(conf)

        self.changed_check = QCheckBox("Changed since zero-shot only")
        self.changed_check.toggled.connect(self.proxy.set_changed_only)
        fl.addWidget(self.changed_check)

        fl.addSpacing(6)
        fl.addWidget(_heading("Sort by"))
        self.sort_combo = QComboBox()
        for text, _key, _desc in SORT_CHOICES:
            self.sort_combo.addItem(text)
        self.sort_combo.currentIndexChanged.connect(self._on_sort_changed)
        fl.addWidget(self.sort_combo)

        self.trust = TrustPanel(self)  # spot-check, known labels, changes, unsure, corrections
        fl.addWidget(self.trust)

        fl.addSpacing(12)
        self.export_button = QPushButton("Export model…")
        self.export_button.setToolTip("Save the adapted classifier as a bundle, TorchScript "
                                      "or ONNX, or the predictions as CSV or JSON lines")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.sorted_copies_button = QPushButton("Save sorted copies…")
        self.sorted_copies_button.setToolTip("Copy or link the images into one folder per "
                                             "predicted class, with a CSV")
        self.sorted_copies_button.clicked.connect(self.open_sorted_copies_dialog)
        fl.addWidget(self.export_button)
        fl.addWidget(self.sorted_copies_button)

    # --- public API ----------------------------------------------------------------------

    @property
    def predictions(self) -> Predictions | None:
        return self._pred

    @property
    def pseudo_labels(self) -> PseudoLabels | None:
        return self._pseudo

    def set_results(self, predictions: Predictions, run_dir: Path | None) -> None:
        """Show a new table (reads run_dir/pseudo_labels.json when there is one)."""
        self._loading = True
        try:
            self._load(predictions, run_dir)
        finally:
            self._loading = False
        if self.proxy.rowCount() > 0:
            first = self.proxy.index(0, 0)
            self.grid.selectionModel().setCurrentIndex(
                first, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.grid.scrollToTop()

    def _load(self, predictions: Predictions, run_dir: Path | None) -> None:
        self._pred = predictions
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._pseudo = PseudoLabels.read(self._run_dir)
        self.cache.clear()  # a new folder: drop thumbnails and work for the old one
        self.cache.set_image_source(run_thumbnail_source(self._run_dir))
        self.inspector.clear()
        if self._dialog is not None:
            self._dialog.close()
        self._updating_classes = True
        self.proxy.set_filter(FilterState())
        self.min_conf.blockSignals(True)
        self.max_conf.blockSignals(True)
        self.min_conf.setValue(0.0)
        self.max_conf.setValue(100.0)
        self.min_conf.blockSignals(False)
        self.max_conf.blockSignals(False)
        self.changed_check.blockSignals(True)
        self.changed_check.setChecked(False)
        self.changed_check.blockSignals(False)
        self._updating_classes = False
        self.model.set_predictions(predictions)
        self._fill_class_list()
        self.export_button.setEnabled(len(predictions) > 0)
        self.sorted_copies_button.setEnabled(len(predictions) > 0)
        self.trust.set_results(predictions, self._run_dir)
        self.kept_banner.show_report(read_run_report(self._run_dir))
        self._update_summary()

    def clear_results(self) -> None:
        """Show nothing (another project was opened): no images, no run to export from."""
        self._loading = True
        try:
            self._pred = None
            self._run_dir = None
            self._pseudo = None
            self.cache.clear()
            self.cache.set_image_source(None)
            self.inspector.clear()
            if self._dialog is not None:
                self._dialog.close()
            if self._export_dialog is not None and not self._export_dialog.is_running():
                self._export_dialog.close()
            self.model.set_predictions(None)
            self._fill_class_list()
        finally:
            self._loading = False
        self.export_button.setEnabled(False)
        self.sorted_copies_button.setEnabled(False)
        self.trust.clear()
        self.kept_banner.show_report(read_run_report(None))
        self._last_selected = -1
        self._update_summary()

    def set_class_filter(self, classes: set[int] | None) -> None:
        """Show only these classes (None or empty: all), and mirror it in the class list."""
        self._updating_classes = True
        try:
            self.class_list.clearSelection()
            for c in sorted(classes or ()):
                item = self.class_list.topLevelItem(c)
                if item is not None:
                    item.setSelected(True)
        finally:
            self._updating_classes = False
        self.proxy.set_class_filter(set(classes) if classes else None)

    def show_all_classes(self) -> None:
        self.set_class_filter(None)

    def _on_number_key(self) -> None:
        self.pick_class_by_number(int(self.sender().property("class_number")))

    def pick_class_by_number(self, n: int) -> None:
        """Key n: 0 shows every class, 1..9 only the n-th class."""
        if self._pred is None:
            return
        if n == 0:
            self.set_class_filter(None)
        elif n <= len(self._pred.class_names):
            self.set_class_filter({n - 1})

    def set_confidence_range(self, low: float, high: float) -> None:
        """In 0..1; the spin boxes follow."""
        self.min_conf.blockSignals(True)
        self.max_conf.blockSignals(True)
        self.min_conf.setValue(low * 100)
        self.max_conf.setValue(high * 100)
        self.min_conf.blockSignals(False)
        self.max_conf.blockSignals(False)
        self._on_confidence_changed()

    def set_sort(self, key: SortKey, descending: bool = True) -> None:
        for i, (_t, k, d) in enumerate(SORT_CHOICES):
            if k is key and d == descending:
                self.sort_combo.setCurrentIndex(i)  # emits, which sorts
                return
        self.proxy.set_sort(key, descending)

    def shown_items(self) -> np.ndarray:
        """Table indices of the images shown, in grid order."""
        return self.model.order[self.proxy.item_mask()[self.model.order]]

    def current_item(self) -> int:
        idx = self.grid.currentIndex()
        return int(idx.data(Roles.ITEM)) if idx.isValid() else -1

    def select_item(self, item: int) -> bool:
        """Make a table row the grid's current image; False when it is filtered out."""
        row = self.proxy.proxy_row_of_item(item)
        if row < 0:
            return False
        idx = self.proxy.index(row, 0)
        self.grid.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.grid.scrollTo(idx)
        return True

    def open_inspector(self) -> InspectorDialog | None:
        """Open (or raise) the inspector window on the current image."""
        idx = self.grid.currentIndex()
        if not idx.isValid():
            return None
        self._open_inspector(idx)
        return self._dialog

    @property
    def inspector_dialog(self) -> InspectorDialog | None:
        return self._dialog

    def open_export_dialog(self, initial_format: str = "bundle") -> ExportDialog:
        if self._export_dialog is not None and self._export_dialog.is_running():
            self._export_dialog.raise_()
            self._export_dialog.activateWindow()
            return self._export_dialog
        if self._export_dialog is not None:
            self._export_dialog.deleteLater()  # a finished one: free it on this thread
        self._export_dialog = ExportDialog(self._run_dir, self._pred,
                                           initial_format=initial_format, parent=self)
        self._export_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self._export_dialog.open()
        return self._export_dialog

    def open_sorted_copies_dialog(self) -> ExportDialog:
        """"Save sorted copies…": the export dialog on the sorted-folders format."""
        return self.open_export_dialog("folders")

    @property
    def export_dialog(self) -> ExportDialog | None:
        return self._export_dialog

    def shutdown(self) -> None:
        """Stop the thumbnail workers (the app calls this when quitting)."""
        self.cache.shutdown()

    # --- reactions -----------------------------------------------------------------------

    def _fill_class_list(self) -> None:
        self._updating_classes = True
        try:
            self.class_list.clear()
            pred = self._pred
            if pred is None:
                return
            after = pred.class_counts()
            before = pred.class_counts(zero_shot=True)
            for c, name in enumerate(pred.class_names):
                key = f"{c + 1}  " if c < 9 else "    "
                item = QTreeWidgetItem([f"{key}{name}", f"{after[c]:,}"])
                item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                tip = f"{name}: {after[c]:,} images"
                if pred.probs is not None:
                    tip += f" ({before[c]:,} before adaptation)"
                if c < 9:
                    tip += f". Key {c + 1} shows only this class."
                item.setToolTip(0, tip)
                item.setToolTip(1, tip)
                self.class_list.addTopLevelItem(item)
        finally:
            self._updating_classes = False

    def _on_class_selection(self) -> None:
        if self._updating_classes:
            return
        chosen = {self.class_list.indexOfTopLevelItem(it) for it in self.class_list.selectedItems()}
        self.proxy.set_class_filter(chosen or None)

    def _on_confidence_changed(self, *_args) -> None:
        if self._updating_classes:
            return
        low, high = self.min_conf.value() / 100, self.max_conf.value() / 100
        if low > high:
            low, high = high, low
        self.proxy.set_confidence_range(low, high)

    def _on_sort_changed(self, i: int) -> None:
        _t, key, desc = SORT_CHOICES[i]
        self.proxy.set_sort(key, desc)

    def _remember_current(self) -> None:
        self._kept_item = -1 if self._loading else self.current_item()

    def _restore_current(self) -> None:
        item, self._kept_item = self._kept_item, -1
        if self._loading or self.proxy.rowCount() == 0:
            return
        # Keep the image the user was on; when the filter hid it, start at the first one
        # (so Enter and the arrows work straight after a number key).
        row = self.proxy.proxy_row_of_item(item) if item >= 0 else -1
        idx = self.proxy.index(max(row, 0), 0)
        self.grid.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if row >= 0:
            self.grid.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)
        else:
            self.grid.scrollToTop()

    def _keep_current_visible(self) -> None:
        idx = self.grid.currentIndex()
        if idx.isValid():
            self.grid.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)

    def _update_summary(self) -> None:
        pred = self._pred
        if pred is None or len(pred) == 0:
            self.summary.setText("No results yet.")
            return
        mask = self.proxy.item_mask()
        shown = int(mask.sum())
        arrays = self.model.arrays
        changed = int(arrays.changed[mask].sum())
        mean = float(arrays.confidences[mask].mean()) if shown else float("nan")
        parts = [f"<b>{shown:,}</b> of {len(pred):,} images shown"]
        if pred.probs is not None:
            parts.append(f"{changed:,} changed since zero-shot")
            if pred.stopped_at is not None:
                parts.append(f"the run was {pred.stopped_at}")
        else:
            parts.append("zero-shot predictions (the run has not finished)")
        if shown:
            parts.append(f"mean confidence {mean:.1%}")
        self.summary.setText(" · ".join(parts))
        if shown == 0:
            self.inspector.clear()

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid() or self._pred is None or self._loading:
            return
        item = int(current.data(Roles.ITEM))
        if item == self.inspector.item and item == self._last_selected:
            return  # the same image again after a filter change: nothing to reload
        thumb = self.cache.peek(self.model.abs_path(item))
        self.inspector.set_image(self._pred, item, self._pseudo, thumb)
        if self._dialog is not None and self._dialog.isVisible():
            self._dialog.panel.set_image(self._pred, item, self._pseudo, thumb)
        self._last_selected = item
        self.imageSelected.emit(item)

    def _open_inspector(self, index: QModelIndex) -> None:
        if not index.isValid() or self._pred is None:
            return
        if self.grid.currentIndex() != index:
            self.grid.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if self._dialog is None:
            self._dialog = InspectorDialog(self)
            self._dialog.navigate.connect(self._step)
            self.trust.attach_inspector_window(self._dialog)
        item = int(index.data(Roles.ITEM))
        self._dialog.panel.set_image(self._pred, item, self._pseudo,
                                     self.cache.peek(self.model.abs_path(item)))
        self._dialog.show()
        self._dialog.raise_()
        self._dialog.activateWindow()

    def _step(self, delta: int) -> None:
        """Previous/next image in grid order (from the inspector window)."""
        idx = self.grid.currentIndex()
        n = self.proxy.rowCount()
        if n == 0:
            return
        row = 0 if not idx.isValid() else max(0, min(n - 1, idx.row() + delta))
        new = self.proxy.index(row, 0)
        self.grid.selectionModel().setCurrentIndex(
            new, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.grid.scrollTo(new)

    def _on_export_clicked(self) -> None:
        self.exportRequested.emit()
        if self.handles_export:
            self.open_export_dialog("bundle")
