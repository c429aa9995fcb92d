"""The export dialog: pick a format and a destination, export on a worker thread, and show
the check of the exported file (max abs difference against PyTorch, passed or failed).

Formats and their checks are `must_engine.export`'s; this file only asks and reports.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from must_engine.events import ExportCheck, ExportProgress
from must_engine.export import DEFAULT_NAMES
from must_engine.predict import Predictions
from must_engine.runs import MODEL_FILE
from must_gui.run_report import read_run_report
from must_gui.widgets.run_summary import KeptBanner
from must_gui.workers import TaskContext, Worker


@dataclass(frozen=True)
class FormatInfo:
    key: str
    title: str
    blurb: str
    is_folder: bool  # the destination is a folder the export creates
    needs_model: bool  # needs a finished (adapted) run
    file_filter: str = ""


FORMATS: tuple[FormatInfo, ...] = (
    FormatInfo("bundle", "Bundle (recommended)",
               "A folder with the adapted model in safetensors, a card describing it and a "
               "README with example code.", True, True),
    FormatInfo("torchscript", "TorchScript",
               "One .pt file for torch.jit.load: normalised images in, probabilities out.",
               False, True, "TorchScript (*.pt)"),
    FormatInfo("onnx", "ONNX",
               "One .onnx file for ONNX Runtime and other inference engines.",
               False, True, "ONNX (*.onnx)"),
    FormatInfo("csv", "Predictions CSV",
               "One row per image: label, confidence, zero-shot label and every class "
               "probability.", False, False, "CSV (*.csv)"),
    FormatInfo("jsonl", "Predictions JSON lines",
               "One JSON object per image, with both sets of probabilities.", False, False,
               "JSON lines (*.jsonl)"),
    FormatInfo("folders", "Sorted folders",
               "One folder per predicted class holding the images, and mapping.csv. Your "
               "original images are never moved.", True, False),
)
FORMAT_BY_KEY = {f.key: f for f in FORMATS}
LINK_CHOICES = (("copy", "Copy the images"), ("symlink", "Symbolic links"),
                ("hardlink", "Hard links (same drive only)"))
STAGE_TEXT = {"predicting": "Predicting every image…", "loading": "Loading the model…",
              "writing": "Writing…", "checking": "Checking the exported file against PyTorch…",
              "sorting": "Sorting images into folders…", "done": "Finishing…"}

ExportFunction = Callable[..., object]


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def check_text(check: ExportCheck) -> str:
    verdict = "passed" if check.passed else "FAILED"
    return (f"{check.format}: {verdict} — max abs difference {check.max_abs_diff:.2e} vs "
            f"PyTorch (tolerance {check.tolerance:.0e}) on {check.samples} images")


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``... when that exists."""
    path = folder / name
    stem, suffix = (name, "") if "." not in name else (name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1])
    k = 2
    while path.exists():
        path = folder / f"{stem}-{k}{suffix}"
        k += 1
    return path


class ExportDialog(QDialog):
    """Non-blocking export. Signals: `exported(result)` after a successful export,
    `failed(message)` when it fails (the dialog also shows the error)."""

    exported = Signal(object)
    failed = Signal(str)

    def __init__(self, run_dir: str | Path | None, predictions: Predictions | None = None, *,
                 initial_format: str = "bundle", parent: QWidget | None = None,
                 export_function: ExportFunction | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._pred = predictions
        self._export = export_function
        self._worker: Worker | None = None
        self._dest_edited = False
        self._overwrite = False
        self._made_default_folder: Path | None = None
        self.result = None
        self.checks: list[ExportCheck] = []
        self.error_box: QMessageBox | None = None

        self._has_model = self._run_dir is not None and (self._run_dir / MODEL_FILE).is_file()
        self._onnx = onnx_available()

        # Formats
        box = QGroupBox("Format")
        fl = QVBoxLayout(box)
        fl.setSpacing(2)
        self._group = QButtonGroup(self)
        self._radios: dict[str, QRadioButton] = {}
        for row, f in enumerate(FORMATS):
            radio = QRadioButton(f.title)
            why = self._unavailable_reason(f)
            # "Needs a finished run" is said once above the list, not on every line.
            say = why and not (f.needs_model and not self._has_model)
            blurb = QLabel(f.blurb + (f" <i>{why}</i>" if say else ""))
            blurb.setWordWrap(True)
            blurb.setContentsMargins(24, 0, 0, 6)
            font = blurb.font()
            font.setPointSizeF(font.pointSizeF() * 0.92)
            blurb.setFont(font)
            blurb.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # secondary text
            if why:
                radio.setEnabled(False)
                radio.setToolTip(why)
            self._group.addButton(radio, row)
            self._radios[f.key] = radio
            fl.addWidget(radio)
            fl.addWidget(blurb)
            if f.key == "folders":
                self.link_combo = QComboBox()
                for key, text in LINK_CHOICES:
                    self.link_combo.addItem(text, key)
                link_row = QHBoxLayout()
                link_row.setContentsMargins(24, 0, 0, 0)
                link_row.addWidget(QLabel("Place images as:"))
                link_row.addWidget(self.link_combo)
                link_row.addStretch(1)
                fl.addLayout(link_row)
        self._group.idToggled.connect(self._on_format_toggled)

        # Destination
        dest_box = QGroupBox("Destination")
        dl = QHBoxLayout(dest_box)
        self.dest_edit = QLineEdit()
        self.dest_edit.textEdited.connect(self._on_dest_edited)
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_destination)
        dl.addWidget(self.dest_edit, 1)
        dl.addWidget(choose)

        # Progress and outcome
        self.stage_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.check_label = QLabel("")
        self.check_label.setWordWrap(True)
        self.outcome_label = QLabel("")
        self.outcome_label.setWordWrap(True)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.open_button = QPushButton("Show in folder")
        self.open_button.clicked.connect(self._open_result)
        self.open_button.hide()
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.export_button)

        layout = QVBoxLayout(self)
        if self._run_dir is None or not self._has_model:
            note = QLabel("Model formats need a finished training run." if self._run_dir
                          else "There is no training run: only predictions can be exported.")
            note.setWordWrap(True)
            layout.addWidget(note)
        # What is being exported, and plainly when it is not better than zero-shot.
        self.kept_banner = KeptBanner()
        if self._has_model:
            self.kept_banner.show_report(read_run_report(self._run_dir))
        layout.addWidget(self.kept_banner)
        layout.addWidget(box)
        layout.addWidget(dest_box)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.check_label)
        layout.addWidget(self.outcome_label)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.setMinimumWidth(620)
        self.set_format(initial_format if self._usable(initial_format) else self._first_usable())

    # --- choices -------------------------------------------------------------------------

    def _unavailable_reason(self, f: FormatInfo) -> str:
        if f.needs_model and not self._has_model:
            return "Needs a finished training run."
        if not f.needs_model and self._pred is None and self._run_dir is None:
            return "Needs predictions."
        if f.key == "onnx" and not self._onnx:
            return "Needs the onnx extra: pip install 'must-studio[onnx]'."
        return ""

    def _usable(self, key: str) -> bool:
        return key in FORMAT_BY_KEY and not self._unavailable_reason(FORMAT_BY_KEY[key])

    def _first_usable(self) -> str:
        return next((f.key for f in FORMATS if self._usable(f.key)), "bundle")

    @property
    def format(self) -> str:
        checked = self._group.checkedId()
        return FORMATS[checked].key if checked >= 0 else "bundle"

    def set_format(self, key: str) -> None:
        if key not in self._radios:
            raise ValueError(f"Unknown export format '{key}'.")
        self._radios[key].setChecked(True)
        self._on_format_toggled(FORMATS.index(FORMAT_BY_KEY[key]), True)

    @property
    def link(self) -> str:
        return str(self.link_combo.currentData())

    def set_link(self, mode: str) -> None:
        i = self.link_combo.findData(mode)
        if i < 0:
            raise ValueError(f"Unknown link mode '{mode}'.")
        self.link_combo.setCurrentIndex(i)

    @property
    def destination(self) -> Path:
        return Path(self.dest_edit.text().strip()).expanduser()

    def set_destination(self, path: str | Path) -> None:
        self.dest_edit.setText(str(path))
        self._dest_edited = True

    def _on_format_toggled(self, button_id: int, checked: bool) -> None:
        if not checked:
            return
        f = FORMATS[button_id]
        self.link_combo.setEnabled(f.key == "folders")
        if not self._dest_edited:
            self.dest_edit.setText(str(self._default_destination(f.key)))
        self.export_button.setEnabled(self._usable(f.key) and not self.is_running())

    def _default_folder(self) -> Path:
        if self._run_dir is not None:
            return self._run_dir / "exports"
        if self._pred is not None:
            return Path(self._pred.root).parent
        return Path.home()

    def _default_destination(self, key: str) -> Path:
        name = DEFAULT_NAMES[key]
        if key == "folders" and self._pred is not None:
            name = f"{Path(self._pred.root).name}-sorted"
        return free_name(self._default_folder(), name)

    def _on_dest_edited(self, _text: str) -> None:
        self._dest_edited = True
        self._overwrite = False

    def _choose_destination(self) -> None:
        f = FORMAT_BY_KEY[self.format]
        start = str(self.destination) if self.dest_edit.text() else str(self._default_folder())
        if f.is_folder:
            # The export creates the folder: ask for the place, keep the proposed name.
            parent = QFileDialog.getExistingDirectory(self, "Export into folder",
                                                      str(self.destination.parent))
            if parent:
                self.set_destination(free_name(Path(parent), self.destination.name
                                               or DEFAULT_NAMES[f.key]))
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Export to file", start, f.file_filter)
            if path:
                self.set_destination(path)
                # The file dialog has already asked whether to replace an existing file.
                self._overwrite = Path(path).exists()

    # --- running -------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._worker is not None and self._worker.is_running()

    def start_export(self) -> None:
        if self.is_running():
            return
        fmt = self.format
        if not self._usable(fmt):
            return
        if not self.dest_edit.text().strip():
            self._show_error("Choose where to save the export first.", "")
            return
        dest = self.destination
        # Our own default folder (RUN/exports) is created on demand; a folder the user typed
        # must exist, and the engine says so in one sentence if it does not.
        default_parent = self._default_folder()
        if dest.parent == default_parent and not default_parent.exists():
            try:
                default_parent.mkdir(parents=True)
                self._made_default_folder = default_parent
            except OSError as exc:
                self._show_error(f"Cannot create {default_parent} ({exc.strerror}); choose "
                                 "another destination.", "")
                return
        self.result = None
        self.checks = []
        self.check_label.setText("")
        self.outcome_label.setText("")
        self.open_button.hide()
        self._set_running(True)
        run_dir, pred, link, export = self._run_dir, self._pred, self.link, self._export
        extra = {"overwrite": True} if self._overwrite and not FORMAT_BY_KEY[fmt].is_folder else {}

        def task(ctx: TaskContext):
            if export is not None:
                return export(run_dir, fmt, dest, predictions=pred, link=link,
                              on_event=ctx.on_event, should_stop=ctx.should_stop, **extra)
            if run_dir is None:
                # No run behind the table: predictions out only (the model formats are
                # disabled in that case).
                from must_engine.export import export_predictions

                return export_predictions(pred, fmt, dest, link=link, on_event=ctx.on_event,
                                          should_stop=ctx.should_stop, **extra)
            from must_engine.export import export_run

            return export_run(run_dir, fmt, dest, predictions=pred, link=link,
                              on_event=ctx.on_event, should_stop=ctx.should_stop, **extra)

        self._worker = Worker(task, name=f"export-{fmt}", parent=self)
        self._worker.event.connect(self._on_event)
        self._worker.succeeded.connect(self._on_succeeded)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._worker.finished.connect(self._on_finished)
        self._worker.start()

    def _on_finished(self) -> None:
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        for key, radio in self._radios.items():
            radio.setEnabled(not running and self._usable(key))
        self.dest_edit.setEnabled(not running)
        self.link_combo.setEnabled(not running and self.format == "folders")
        self.export_button.setEnabled(not running and self._usable(self.format))
        self.close_button.setText("Cancel" if running else "Close")
        if running:
            self.progress.setRange(0, 0)  # busy until the engine reports numbers
            self.progress.show()
            self.stage_label.setText("Starting…")
        else:
            self.progress.hide()

    def _on_event(self, event: object) -> None:
        if isinstance(event, ExportProgress):
            self.stage_label.setText(STAGE_TEXT.get(event.stage, event.stage.capitalize() + "…"))
            if event.total > 0:
                self.progress.setRange(0, event.total)
                self.progress.setValue(event.done)
            else:
                self.progress.setRange(0, 0)
        elif isinstance(event, ExportCheck):
            self.checks.append(event)
            colour = "#2e7d43" if event.passed else "#c0392b"
            lines = [f"<span style='color:{colour}'>{'✓' if event.passed else '✗'} "
                     f"{check_text(c)}</span>" for c in self.checks]
            self.check_label.setText("<br>".join(lines))

    def _on_succeeded(self, result: object) -> None:
        self.result = result
        path = getattr(result, "path", None)
        self.stage_label.setText("Done.")
        extra = ""
        summary = getattr(result, "summary", None) or {}
        if "per_folder" in summary:
            n = sum(summary["per_folder"].values())
            extra = f" ({n} images in {len(summary['per_folder'])} folders)"
        self.outcome_label.setText(f"Exported to {path}{extra}.")
        self.open_button.setVisible(path is not None)
        self._dest_edited = False  # a second export proposes a fresh name
        self.dest_edit.setText(str(self._default_destination(self.format)))
        self.exported.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        self.stage_label.setText("The export failed.")
        self.outcome_label.setText(message)
        self._remove_unused_default_folder()
        self._show_error(message, details)
        self.failed.emit(message)

    def _on_cancelled(self) -> None:
        self.stage_label.setText("Cancelled: nothing was written.")
        self._remove_unused_default_folder()

    def _remove_unused_default_folder(self) -> None:
        folder, self._made_default_folder = self._made_default_folder, None
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty

    def _show_error(self, message: str, details: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, "Export failed", message,
                          QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        self.error_box = box
        box.open()  # window-modal, does not block the event loop

    def _open_result(self) -> None:
        path = getattr(self.result, "path", None)
        if path is None:
            return
        target = Path(path) if Path(path).is_dir() else Path(path).parent
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(target))):
            # No file manager (a bare desktop, a remote session): say where it is instead.
            self.outcome_label.setText(f"No file manager could be opened here. The export is "
                                       f"in {target}")
            self.outcome_label.setTextInteractionFlags(
                Qt.TextInteractionFlag.TextSelectableByMouse)

    def reject(self) -> None:
        if self.is_running():
            assert self._worker is not None
            self._worker.cancel()
            self.stage_label.setText("Cancelling…")
            return
        super().reject()

    def wait(self, ms: int = 30000) -> bool:
        """For tests and quitting: wait for the worker thread to end."""
        return self._worker is None or self._worker.wait(ms)
