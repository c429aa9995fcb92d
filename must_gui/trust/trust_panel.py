"""The results page's "Check" section: spot-check, known labels, changed predictions, unsure
images, and corrections (for the inspector's image or every image selected in the grid).

The labels the user gives live in the project's labels file (``<project>_labels.json``);
``must_gui.main_window`` copies them into each new run before it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from must_engine.evaluate import (
    evaluate_labels,
    has_class_folders,
    labels_from_folders,
    read_labels_csv,
)
from must_engine.predict import Predictions
from must_engine.trust.unsure import unsure_mask, write_unsure_csv
from must_engine.trust.user_labels import UserLabels, UserLabelsError
from must_gui.results.prediction_model import Roles
from must_gui.trust.changes_view import ChangesDialog
from must_gui.trust.confusion_view import ConfusionDialog
from must_gui.trust.spot_check_dialog import SpotCheckDialog


class CorrectionBox(QWidget):
    """Give the current image (or every selected one) a class of your own. ``rows`` says
    which table rows it acts on (default: the grid's selection, else its current image)."""

    def __init__(self, panel: TrustPanel, rows: Callable[[], list[int]] | None = None) -> None:
        super().__init__()
        self.panel = panel
        self._rows = rows or panel.selected_items
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.combo = QComboBox()
        self.apply_button = QPushButton("Set")
        self.apply_button.setToolTip("Use this class for the selected images in the next run "
                                     "(Ctrl+click in the grid selects several)")
        self.apply_button.clicked.connect(self.apply)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove)
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.apply_button)
        row.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 0, 8, 8)
        title = QLabel("<b>Your label</b>")
        layout.addWidget(title)
        layout.addWidget(self.status)
        layout.addLayout(row)

    def set_classes(self, names: list[str]) -> None:
        self.combo.clear()
        self.combo.addItems(names)

    def refresh(self) -> None:
        rows = self._rows()
        pred = self.panel.pred
        if pred is None or not rows:
            self.status.setText("Select an image.")
            self.remove_button.setEnabled(False)
            self.apply_button.setEnabled(False)
            return
        self.apply_button.setEnabled(True)
        self.apply_button.setText("Set" if len(rows) == 1 else f"Set for {len(rows)}")
        labelled = [self.panel.labels.labels.get(pred.paths[r]) for r in rows]
        self.remove_button.setEnabled(any(u is not None for u in labelled))
        if len(rows) == 1:
            u = labelled[0]
            if u is None:
                self.status.setText("None: the next run trains on the teacher's pseudo-label.")
                # Offer the class the image is shown as (Set confirms it), not the first one.
                self.combo.setCurrentIndex(int(pred.final_probs[rows[0]].argmax()))
            else:
                name = u.label if u.label is not None else "none of these"
                self.status.setText(f"<b>{name}</b> ({u.source}): a fixed label in every "
                                    "later run.")
                if u.label in pred.class_names:
                    self.combo.setCurrentIndex(pred.class_names.index(u.label))
        else:
            n = sum(u is not None for u in labelled)
            self.status.setText(f"{len(rows)} images selected, {n} with your label.")

    def apply(self) -> None:
        name = self.combo.currentText()
        self.panel.set_user_label(self._rows(), name)

    def remove(self) -> None:
        self.panel.set_user_label(self._rows(), None, remove=True)


class TrustPanel(QWidget):
    """Lives in the results page's filter column; ``page`` is the ResultsPage."""

    labelsChanged = Signal()

    def __init__(self, page) -> None:
        super().__init__()
        self.page = page
        self.pred: Predictions | None = None
        self.run_dir: Path | None = None
        self.labels = UserLabels()
        self.labels_file: Path | None = None
        self.spot_check: SpotCheckDialog | None = None
        self.confusion: ConfusionDialog | None = None
        self.changes: ChangesDialog | None = None
        self._unsure = np.zeros(0, dtype=bool)

        self.spot_check_button = QPushButton("Spot-check…")
        self.spot_check_button.setToolTip("Answer “which class is this?” for a few images to "
                                          "estimate how accurate the classifier is")
        self.spot_check_button.clicked.connect(self.open_spot_check)
        self.labels_button = QPushButton("Measure with labels…")
        self.labels_button.setToolTip("Where the folder has one subfolder per class (or you "
                                      "have a labels CSV): true accuracy and confusion matrices")
        self.labels_button.clicked.connect(self.measure_with_labels)
        self.changes_button = QPushButton("Changed predictions…")
        self.changes_button.clicked.connect(self.open_changes)
        self.unsure_check = QCheckBox("Unsure images only")
        self.unsure_check.setToolTip("Images whose best class is weak (under 50 %) for both the "
                                     "zero-shot and the adapted classifier")
        self.unsure_check.toggled.connect(self.show_unsure)
        self.unsure_export = QPushButton("Save unsure list…")
        self.unsure_export.clicked.connect(self.export_unsure)
        self.leave_out_check = QCheckBox("Leave unsure out of training")
        self.leave_out_check.toggled.connect(self._on_leave_out)
        self.show_all_button = QPushButton("Show all images")
        self.show_all_button.clicked.connect(self.show_all)
        self.show_all_button.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        heading = QLabel("<b>Check</b>")
        layout.addWidget(heading)
        for w in (self.spot_check_button, self.labels_button, self.changes_button,
                  self.unsure_check, self.unsure_export, self.leave_out_check,
                  self.show_all_button):
            layout.addWidget(w)

        self.correction = CorrectionBox(self)
        page.inspector.layout().addWidget(self.correction)
        # the inspector window's own box, made with the window (attach_inspector_window)
        self.window_correction: CorrectionBox | None = None
        # several images at once: Ctrl/Shift+click in the grid
        page.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        page.grid.selectionModel().selectionChanged.connect(lambda *_: self.correction.refresh())
        self._enable()

    def attach_inspector_window(self, dialog) -> None:
        """Give the large inspector window (``InspectorDialog``) a correction box of its own,
        acting on the one image it shows, whatever is selected in the grid."""
        self._window_panel = dialog.panel
        box = CorrectionBox(self, self._window_rows)
        box.layout().setContentsMargins(0, 8, 0, 0)
        dialog.panel.add_detail(box)
        dialog.panel.imageShown.connect(self._refresh_boxes)
        self.window_correction = box
        if self.pred is not None:
            box.set_classes(self.pred.class_names)
        box.refresh()

    def _window_rows(self) -> list[int]:
        item = self._window_panel.item
        return [item] if item >= 0 and self.pred is not None else []

    def _boxes(self) -> list[CorrectionBox]:
        return [b for b in (self.correction, self.window_correction) if b is not None]

    def _refresh_boxes(self, *_args) -> None:
        for box in self._boxes():
            box.refresh()

    # ---- state -------------------------------------------------------------------------------
    def set_labels_file(self, path: Path | None) -> None:
        """The project's labels file (read now; written on every change)."""
        self.labels_file = Path(path) if path is not None else None
        try:
            self.labels = UserLabels.load(path) if path is not None else UserLabels()
        except UserLabelsError as exc:
            QMessageBox.warning(self, "Labels file", str(exc))
            self.labels = UserLabels()
        self._sync_leave_out()
        self._refresh_boxes()

    def set_results(self, predictions: Predictions, run_dir: Path | None) -> None:
        self.pred = predictions
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._unsure = unsure_mask(predictions.zero_shot_probs, predictions.probs)
        self.unsure_check.blockSignals(True)
        self.unsure_check.setChecked(False)
        self.unsure_check.blockSignals(False)
        self.unsure_check.setText(f"Unsure images only ({int(self._unsure.sum()):,})")
        for box in self._boxes():
            box.set_classes(predictions.class_names)
        self.show_all_button.setVisible(False)
        self._sync_leave_out()
        self._enable()
        self._refresh_boxes()

    def clear(self) -> None:
        """No results (another project was opened): close this panel's windows."""
        self.pred = None
        self.run_dir = None
        self._unsure = np.zeros(0, dtype=bool)
        for dialog in (self.spot_check, self.confusion, self.changes):
            if dialog is not None:
                dialog.close()
        self.spot_check = self.confusion = self.changes = None
        self.show_all_button.setVisible(False)
        self._enable()
        self._refresh_boxes()

    def _enable(self) -> None:
        has = self.pred is not None and len(self.pred) > 0
        for w in (self.spot_check_button, self.labels_button, self.changes_button,
                  self.unsure_check, self.unsure_export, self.leave_out_check):
            w.setEnabled(has)
        if has:
            self.changes_button.setEnabled(self.pred.probs is not None)

    def _save(self) -> None:
        if self.labels_file is not None:
            self.labels.save(self.labels_file)
        self.labelsChanged.emit()

    def selected_items(self) -> list[int]:
        rows = sorted({int(i.data(Roles.ITEM)) for i in self.page.grid.selectedIndexes()})
        if not rows and self.page.current_item() >= 0:
            rows = [self.page.current_item()]
        return rows

    def set_user_label(self, rows: list[int], name: str | None, *, remove: bool = False) -> None:
        if self.pred is None:
            return
        for r in rows:
            path = self.pred.paths[r]
            if remove:
                self.labels.remove_label(path)
            else:
                self.labels.set_label(path, name, "inspector")
        self._save()
        self._refresh_boxes()

    # ---- filters -----------------------------------------------------------------------------
    def _filter_items(self, items: frozenset[int] | None) -> None:
        proxy = self.page.proxy
        proxy.set_filter(replace(proxy.filter_state, items=items))
        self.show_all_button.setVisible(items is not None)

    def show_all(self) -> None:
        self.unsure_check.blockSignals(True)
        self.unsure_check.setChecked(False)
        self.unsure_check.blockSignals(False)
        self._filter_items(None)

    def show_unsure(self, on: bool) -> None:
        self._filter_items(frozenset(np.flatnonzero(self._unsure).tolist()) if on else None)

    def unsure_paths(self) -> list[str]:
        if self.pred is None:
            return []
        return [self.pred.paths[i] for i in np.flatnonzero(self._unsure)]

    def _sync_leave_out(self) -> None:
        paths = set(self.unsure_paths())
        self.leave_out_check.blockSignals(True)
        self.leave_out_check.setChecked(bool(paths) and paths <= set(self.labels.excluded))
        self.leave_out_check.blockSignals(False)

    def _on_leave_out(self, on: bool) -> None:
        self.labels.set_excluded(set(self.unsure_paths()), on)
        self._save()

    def export_unsure(self, path: str | Path | None = None) -> int:
        if self.pred is None:
            return 0
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the unsure images", "unsure.csv",
                                                  "CSV (*.csv)")
            if not path:
                return 0
        p = self.pred
        return write_unsure_csv(path, p.paths, p.class_names, p.zero_shot_probs, p.probs,
                                self._unsure)

    # ---- dialogs -----------------------------------------------------------------------------
    def open_spot_check(self) -> SpotCheckDialog | None:
        if self.pred is None:
            return None
        key = self.run_dir.name if self.run_dir is not None else ""
        self.spot_check = SpotCheckDialog(self.pred, self.labels, self.labels_file, key, self)
        self.spot_check.answered.connect(lambda *_: (self.labelsChanged.emit(),
                                                     self._refresh_boxes()))
        self.spot_check.resize(1000, 600)
        self.spot_check.show()
        return self.spot_check

    def measure_with_labels(self, labels_csv: str | Path | None = None) -> ConfusionDialog | None:
        """Class subfolders when the folder has them, else ask for a labels CSV."""
        p = self.pred
        if p is None:
            return None
        if labels_csv is None and has_class_folders(p.root, p.class_names):
            truth = labels_from_folders(p.paths, p.class_names)
            source = "the class subfolders"
        else:
            if labels_csv is None:
                labels_csv, _ = QFileDialog.getOpenFileName(
                    self, "Labels CSV (columns path, label)", str(p.root), "CSV (*.csv)")
                if not labels_csv:
                    return None
            try:
                known = read_labels_csv(labels_csv, p.class_names)
            except (OSError, ValueError) as exc:
                QMessageBox.warning(self, "Labels", str(exc))
                return None
            truth = [known.get(path) for path in p.paths]
            source = Path(labels_csv).name
        result = evaluate_labels(p.class_names, truth, p.labels().tolist(),
                                 p.zero_shot_labels().tolist())
        if result.count == 0:
            QMessageBox.warning(self, "Labels", "No image has a known label; put the images in "
                                "one subfolder per class or choose a labels CSV.")
            return None
        self.confusion = ConfusionDialog(result, source, self, adapted=p.probs is not None)
        self.confusion.show()
        return self.confusion

    def open_changes(self) -> ChangesDialog | None:
        if self.pred is None or self.pred.probs is None:
            return None
        self.changes = ChangesDialog(self.pred, self)
        self.changes.groupChosen.connect(self._filter_items)
        self.changes.show()
        return self.changes
