"""Project setup: the image folder, class names and prompts, model, device and settings; a
zero-shot preview before any training; and the button that starts the adaptation.

The page edits the ``Project`` it is given (plain data) and says so with ``projectEdited``;
it asks for training with ``startRequested``. Everything slow (folder scan, model and
device lists, the preview, thumbnails) runs on worker threads.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.classes import MAX_CLASS_NAME_CHARS
from must_engine.events import DownloadProgress, PredictionProgress, Status
from must_engine.project import Project
from must_gui.plots import ClassCountsChart
from must_gui.thumbnails import ThumbnailLoaded, run_thumbnail_source, thumbnail_task
from must_gui.widgets.class_editor import ClassNamesEditor
from must_gui.widgets.collapsible import Collapsible
from must_gui.widgets.device_picker import DevicePicker
from must_gui.widgets.download_bar import DownloadBar
from must_gui.widgets.model_picker import ModelPicker
from must_gui.widgets.settings_form import (
    PLAIN_FIELDS,
    PresetPicker,
    SettingsForm,
    advanced_sections,
    base_settings,
)
from must_gui.widgets.thumbnail_strips import ClassThumbnailStrips
from must_gui.workers import TaskContext, Worker

THUMBS_PER_CLASS = 6
THUMB_SIZE = 72
SCAN_REPORT_SECONDS = 0.1
TWO_COLUMN_WIDTH = 1120


@dataclass(frozen=True)
class ScanProgress:
    done: int
    total: int


@dataclass(frozen=True)
class StartRequest:
    """What the training page needs: a snapshot of the project and the run folder.
    ``resume``: the folder already holds a prepared (or stopped) run to train on."""

    project: Project
    run_dir: Path
    resume: bool


def project_fingerprint(project: Project) -> str:
    """Everything that shapes a prepared run; equal fingerprints can share one."""
    return json.dumps([project.image_folder, project.class_names, project.templates,
                       project.model, project.pretrained, project.preset,
                       sorted(project.overrides.items()), project.device,
                       sorted(project.synonyms.items())], default=str)


def scan_task(folder: Path):
    def run(context: TaskContext):
        from must_engine.images import scan_folder

        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= SCAN_REPORT_SECONDS:
                last[0] = now
                context.emit(ScanProgress(done, total))

        return scan_folder(folder, progress=progress, should_stop=context.should_stop)

    return run


def preview_task(project: Project, run_dir: Path):
    """Prepare the run (scan, load the model, build the text classifier) and score every
    image with the zero-shot model; returns the Predictions."""

    def run(context: TaskContext):
        from must_engine.devices import in_process_device
        from must_engine.predict import predict_run
        from must_engine.training.trainer import prepare_run

        job = project.train_job()
        here = in_process_device(project.device)  # "all GPUs": the first one, here
        device = None if here == "auto" else here
        prepare_run(job, run_dir, on_event=context.on_event, device=device)
        context.emit(Status("Scoring every image with the zero-shot classifier"))
        return predict_run(run_dir, device=here, on_event=context.emit,
                           should_stop=context.should_stop)

    return run


def subfolder_class_names(files: list[str]) -> list[str]:
    """When every image lies in a first-level subfolder and there are at least two of them,
    their names as class names ("golden_retriever" -> "golden retriever"); else []."""
    folders: dict[str, None] = {}
    for f in files:
        head, sep, _rest = f.partition("/")
        if not sep:
            return []  # images at the top level: not one subfolder per class
        folders.setdefault(head, None)
    names = [" ".join(n.replace("_", " ").replace("-", " ").split()) for n in sorted(folders)]
    names = [n for n in names if n]
    return names if len(names) >= 2 and len(set(names)) == len(names) else []


def _group(title: str) -> tuple[QGroupBox, QVBoxLayout]:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setSpacing(8)
    return box, layout


class SetupPage(QWidget):
    """Signals:
      projectEdited(): the project's data changed (the window saves it);
      startRequested(StartRequest): the user asked to start adapting;
      folderScanned(int): a scan finished with this many images;
      previewFinished(object): zero-shot Predictions are shown.
    """

    projectEdited = Signal()
    startRequested = Signal(object)
    folderScanned = Signal(int)
    previewFinished = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.project: Project | None = None
        self.num_images: int | None = None
        self.scan = None  # the last FolderScan
        self.predictions = None  # zero-shot Predictions of the last preview
        self._loading = False
        self._scan_worker: Worker | None = None
        self._preview_worker: Worker | None = None
        self._thumb_worker: Worker | None = None
        self._prepared: tuple[Path, str] | None = None  # (run folder, fingerprint)
        self._subfolder_names: list[str] = []  # offered as class names after a scan
        self._training_active = False
        self._build()

    # ---- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        title = QLabel("Set up the project")
        title.setObjectName("pageTitle")
        subtitle = QLabel("Point to your photos, name the classes, then preview what the "
                          "model sees before adapting it.")
        subtitle.setObjectName("pageSubtitle")
        subtitle.setWordWrap(True)

        # Images
        images_box, images = _group("1  Images")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("A folder of photos (subfolders included)")
        self.folder_edit.setAccessibleName("Image folder")
        self.folder_edit.editingFinished.connect(self._folder_typed)
        self.folder_button = QPushButton("&Choose folder…")
        self.folder_button.clicked.connect(self.choose_folder)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.folder_button)
        images.addLayout(row)
        self.scan_bar = QProgressBar()
        self.scan_bar.hide()
        images.addWidget(self.scan_bar)
        self.scan_label = QLabel("No folder chosen yet.")
        self.scan_label.setObjectName("hint")
        # Wrapped: a long message (a missing folder's path) widened the column and pushed
        # the Model and Training cards out of the window.
        self.scan_label.setWordWrap(True)
        images.addWidget(self.scan_label)
        self.skipped_list = QTreeWidget()
        self.skipped_list.setHeaderLabels(["File", "Why it was skipped"])
        self.skipped_list.setRootIsDecorated(False)
        self.skipped_list.setMinimumHeight(110)
        self.skipped_list.setColumnWidth(0, 220)
        self.skipped_section = Collapsible("Skipped files", self.skipped_list)
        self.skipped_section.hide()
        images.addWidget(self.skipped_section)

        # Classes
        classes_box, classes = _group("2  Classes")
        hint = QLabel("What can the photos show? One class name a line, at most "
                      f"{MAX_CLASS_NAME_CHARS} characters; plain words work best "
                      "(\"golden retriever\", not \"dog_03\").")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        classes.addWidget(hint)
        self.class_editor = ClassNamesEditor()
        self.class_editor.namesChanged.connect(self._names_changed)
        classes.addWidget(self.class_editor)
        self.subfolder_button = QPushButton()
        self.subfolder_button.setObjectName("subfolderNames")
        self.subfolder_button.setToolTip("The folder has one subfolder per class: use their "
                                         "names as the class names")
        self.subfolder_button.clicked.connect(self.use_subfolder_names)
        self.subfolder_button.hide()
        classes.addWidget(self.subfolder_button, 0, Qt.AlignmentFlag.AlignLeft)
        prompt_row = QHBoxLayout()
        prompt_label = QLabel("Pro&mpts:")
        self.template_combo = QComboBox()
        self.template_combo.setAccessibleName("Prompt templates")
        prompt_label.setBuddy(self.template_combo)
        self._fill_templates()
        self.template_combo.currentIndexChanged.connect(self._template_changed)
        prompt_row.addWidget(prompt_label)
        prompt_row.addWidget(self.template_combo, 1)
        classes.addLayout(prompt_row)

        # Model and device
        model_box, model = _group("3  Model and device")
        self.model_box = model_box
        self.model_picker = ModelPicker()
        self.model_picker.modelChanged.connect(self._model_changed)
        model.addWidget(self.model_picker)
        device_row = QHBoxLayout()
        device_label = QLabel("&Device:")
        self.device_picker = DevicePicker()
        device_label.setBuddy(self.device_picker)
        self.device_picker.deviceChanged.connect(self._device_changed)
        device_row.addWidget(device_label)
        device_row.addWidget(self.device_picker, 1)
        model.addLayout(device_row)

        # Training settings
        settings_box, settings = _group("4  Training")
        self.settings_box = settings_box
        self.plain_form = SettingsForm([("", list(PLAIN_FIELDS))])
        self.plain_form.changed.connect(self._settings_changed)
        settings.addWidget(self.plain_form)
        self.override_hint = QLabel("Settings in bold are yours; the others follow the preset.")
        self.override_hint.setObjectName("hint")
        settings.addWidget(self.override_hint)
        advanced = QWidget()
        adv_layout = QVBoxLayout(advanced)
        adv_layout.setContentsMargins(0, 0, 0, 0)
        preset_form = QFormLayout()
        self.preset_picker = PresetPicker()
        self.preset_picker.setAccessibleName("Preset")
        self.preset_picker.currentIndexChanged.connect(self._preset_changed)
        preset_form.addRow("P&reset:", self.preset_picker)
        adv_layout.addLayout(preset_form)
        self.advanced_form = SettingsForm(advanced_sections(), columns=2)
        self.advanced_form.changed.connect(self._settings_changed)
        adv_layout.addWidget(self.advanced_form)
        reset = QPushButton("Reset all settings to the preset")
        reset.clicked.connect(self._reset_settings)
        adv_layout.addWidget(reset, 0, Qt.AlignmentFlag.AlignLeft)
        self.advanced_section = Collapsible("Advanced settings", advanced)
        settings.addWidget(self.advanced_section)

        # Preview results
        preview_box, preview = _group("Zero-shot preview")
        self.preview_box = preview_box
        self.preview_summary = QLabel()
        self.preview_summary.setWordWrap(True)
        preview.addWidget(self.preview_summary)
        preview_row = QHBoxLayout()
        self.counts_chart = ClassCountsChart()
        self.counts_chart.setMinimumWidth(320)
        self.counts_chart.setSizePolicy(QSizePolicy.Policy.Preferred,
                                        QSizePolicy.Policy.Fixed)
        self.strips = ClassThumbnailStrips(THUMB_SIZE, THUMBS_PER_CLASS)
        preview_row.addWidget(self.counts_chart, 2, Qt.AlignmentFlag.AlignTop)
        preview_row.addWidget(self.strips, 3, Qt.AlignmentFlag.AlignTop)
        preview.addLayout(preview_row)
        preview_box.hide()

        # Two columns in a scroll area, the actions always visible below.
        columns = QBoxLayout(QBoxLayout.Direction.LeftToRight)
        columns.setSpacing(16)
        self._columns = columns
        left = QVBoxLayout()
        left.addWidget(images_box)
        left.addWidget(classes_box)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(model_box)
        right.addWidget(settings_box)
        right.addStretch(1)
        columns.addLayout(left, 1)
        columns.addLayout(right, 1)
        body = QWidget()
        body.setObjectName("page")
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(24, 18, 24, 12)
        body_layout.addWidget(title)
        body_layout.addWidget(subtitle)
        body_layout.addLayout(columns)
        body_layout.addWidget(preview_box)
        body_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(body)

        self.download_bar = DownloadBar()
        self.busy_bar = QProgressBar()
        self.busy_bar.setMaximumWidth(220)
        self.busy_bar.hide()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.preview_button = QPushButton("&Preview zero-shot")
        self.preview_button.setToolTip("Classify every image with the unadapted model "
                                       "and show the counts per class")
        self.preview_button.clicked.connect(self._preview_clicked)
        self.names_button = QPushButton("Check class &names…")
        self.names_button.setToolTip("Classes the model can hardly tell apart, template "
                                     "agreement, synonyms; re-scores the images in seconds")
        self.names_button.clicked.connect(self.open_workbench)
        self.start_button = QPushButton("&Start adaptation")
        self.start_button.setObjectName("primary")
        self.start_button.setToolTip("Adapt the model to these photos (Ctrl+Enter)")
        self.start_button.clicked.connect(self.request_start)
        actions = QHBoxLayout()
        actions.setContentsMargins(24, 8, 24, 12)
        actions.addWidget(self.status_label, 1)
        actions.addWidget(self.busy_bar)
        actions.addWidget(self.names_button)
        actions.addWidget(self.preview_button)
        actions.addWidget(self.start_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.scroll, 1)
        download_row = QHBoxLayout()
        download_row.setContentsMargins(24, 4, 24, 0)
        download_row.addWidget(self.download_bar)
        layout.addLayout(download_row)
        layout.addLayout(actions)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, activated=self.request_start)
        self._update_readiness()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        # Side by side when there is room, one above the other in a narrow window.
        narrow = event.size().width() < TWO_COLUMN_WIDTH
        direction = (QBoxLayout.Direction.TopToBottom if narrow
                     else QBoxLayout.Direction.LeftToRight)
        if self._columns.direction() != direction:
            self._columns.setDirection(direction)
        super().resizeEvent(event)

    def _fill_templates(self) -> None:
        from must_engine.classes import default_template_set_name, template_sets

        self._template_sets = template_sets()
        self._default_set = default_template_set_name()
        self.template_combo.clear()
        for name, items in self._template_sets.items():
            label = f"{name} ({len(items)} prompts)"
            if name == self._default_set:
                label += " — default"
            self.template_combo.addItem(label, name)

    # ---- project in and out ----------------------------------------------------------------
    def set_project(self, project: Project) -> None:
        self.cancel_work()
        self._drop_prepared_run()  # a preview's run that was never trained
        self.project = project
        self.predictions = None
        self.preview_box.hide()
        self._loading = True
        try:
            self.folder_edit.setText(project.image_folder)
            self.class_editor.set_names(project.class_names)
            set_name = project.template_set or (self._default_set if not project.templates
                                                else "")
            index = self.template_combo.findData(set_name)
            if index < 0 and project.templates:
                self.template_combo.addItem(f"custom ({len(project.templates)} prompts)",
                                            "")
                index = self.template_combo.count() - 1
            self.template_combo.setCurrentIndex(max(0, index))
            self.model_picker.set_model(project.model, project.pretrained)
            self.device_picker.set_choice(project.device)
            self.preset_picker.set_preset(project.preset)
            self.num_images = None
            self.scan = None
            self._refresh_settings()
        finally:
            self._loading = False
        self.scan_label.setText("No folder chosen yet." if not project.image_folder else "")
        self.skipped_section.hide()
        if project.image_folder:
            self._start_scan(Path(project.image_folder))
        self._update_readiness()

    def activate(self) -> None:
        """The page is shown: list models and devices (once, in the background)."""
        self.model_picker.load_catalog()
        self.device_picker.load_devices()

    def _edited(self) -> None:
        if self._loading or self.project is None:
            return
        self._update_readiness()
        self.projectEdited.emit()

    # ---- images ----------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = self.folder_edit.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder of photos", start)
        if folder:
            self.set_folder(folder)

    def _folder_typed(self) -> None:
        text = self.folder_edit.text().strip()
        if self.project is not None and text and text != self.project.image_folder:
            self.set_folder(text)

    def set_folder(self, folder: str | Path) -> None:
        text = str(folder).strip()
        if self.project is None or not text:
            return
        path = Path(text).expanduser()
        self.folder_edit.setText(str(path))
        self.project.image_folder = str(path.absolute())
        self._start_scan(path)
        self._edited()

    def _start_scan(self, folder: Path) -> None:
        if self._scan_worker is not None:
            self._scan_worker.cancel()
        self.num_images = None
        self.scan = None
        self.skipped_section.hide()
        self.subfolder_button.hide()
        self.scan_bar.setRange(0, 0)
        self.scan_bar.show()
        self.scan_label.setText(f"Looking for images in {folder}…")
        worker = Worker(scan_task(folder), name="scan", parent=self)
        worker.event.connect(lambda e, w=worker: self._scan_progress(w, e))
        worker.succeeded.connect(lambda r, w=worker: self._scan_done(w, r))
        worker.failed.connect(lambda m, _t, w=worker: self._scan_failed(w, m))
        worker.finished.connect(lambda w=worker: self._worker_finished(w))
        self._scan_worker = worker
        worker.start()

    def _scan_progress(self, worker: Worker, event: object) -> None:
        if worker is not self._scan_worker or not isinstance(event, ScanProgress):
            return
        self.scan_bar.setRange(0, max(1, event.total))
        self.scan_bar.setValue(event.done)
        self.scan_label.setText(f"Checking images: {event.done} of {event.total}")

    def _scan_done(self, worker: Worker, scan) -> None:
        if worker is not self._scan_worker or worker.cancel_requested:
            return
        self.scan_bar.hide()
        self.scan = scan
        self.num_images = len(scan.files)
        skipped = len(scan.skipped)
        text = f"<b>{len(scan.files)}</b> image{'s' if len(scan.files) != 1 else ''} found"
        if skipped:
            text += f" · {skipped} file{'s' if skipped != 1 else ''} skipped (see below)"
        if not scan.files:
            text = ("No readable images here (looked for jpg, png, webp, bmp, tiff, gif, in "
                    "subfolders too). Choose another folder.")
        self.scan_label.setText(text)
        self.skipped_list.clear()
        for s in scan.skipped:
            QTreeWidgetItem(self.skipped_list, [s.path, s.reason])
        self.skipped_section.set_title(f"Skipped files ({skipped})")
        self.skipped_section.setVisible(bool(skipped))
        self._offer_subfolder_names()
        self._refresh_settings()
        self._update_readiness()
        self.folderScanned.emit(self.num_images)

    def _offer_subfolder_names(self) -> None:
        names = subfolder_class_names(list(self.scan.files)) if self.scan is not None else []
        self._subfolder_names = names
        if names and names != self.class_editor.names():
            shown = ", ".join(n if len(n) <= 18 else n[:17] + "…" for n in names[:4])
            shown += f" and {len(names) - 4} more" if len(names) > 4 else ""
            self.subfolder_button.setText(f"Use the subfolder names: {shown}")
            self.subfolder_button.show()
        else:
            self.subfolder_button.hide()

    def use_subfolder_names(self) -> None:
        names = self._subfolder_names
        if names:
            self.class_editor.set_names(names)
            self.subfolder_button.hide()

    def _scan_failed(self, worker: Worker, message: str) -> None:
        if worker is not self._scan_worker:
            return
        self.scan_bar.hide()
        self.scan_label.setText(message)
        self._update_readiness()

    def _worker_finished(self, worker: Worker) -> None:
        if worker is self._scan_worker:
            self._scan_worker = None
            self._update_readiness()
        worker.deleteLater()

    # ---- classes, model, device, settings --------------------------------------------------
    def _names_changed(self, names: list[str]) -> None:
        if self.project is not None and not self._loading:
            self.project.class_names = list(names)
        self._edited()

    def _template_changed(self, _index: int) -> None:
        if self.project is None or self._loading:
            return
        name = self.template_combo.currentData()
        if name:
            self.project.template_set = name
            # The default set is stored as "empty" so the engine's default follows updates.
            self.project.templates = ([] if name == self._default_set
                                      else list(self._template_sets[name]))
        self._edited()

    def _model_changed(self, model: str, pretrained: str) -> None:
        if self.project is not None and not self._loading:
            self.project.model, self.project.pretrained = model, pretrained
        self._edited()

    def _device_changed(self, choice: str) -> None:
        if self.project is not None and not self._loading:
            self.project.device = choice
        self._edited()

    def _preset_changed(self, _index: int) -> None:
        if self.project is None or self._loading:
            return
        self.project.preset = self.preset_picker.preset()
        self._refresh_settings()
        self._edited()

    def _settings_changed(self) -> None:
        if self.project is None or self._loading:
            return
        self.project.overrides = {**self.plain_form.overrides(),
                                  **self.advanced_form.overrides()}
        self.override_hint.setVisible(bool(self.project.overrides))
        self._edited()

    def _reset_settings(self) -> None:
        if self.project is None:
            return
        self.project.overrides = {}
        self._refresh_settings()
        self._edited()

    def _refresh_settings(self) -> None:
        if self.project is None:
            return
        base = base_settings(self.project.preset, self.num_images)
        was = self._loading
        self._loading = True
        try:
            self.preset_picker.describe(self.num_images)
            self.plain_form.set_state(base, self.project.overrides)
            self.advanced_form.set_state(base, self.project.overrides)
            self.override_hint.setVisible(bool(self.project.overrides))
        finally:
            self._loading = was

    # ---- readiness -------------------------------------------------------------------------
    def problem(self) -> str:
        """What stops a preview or a run now, in one sentence; "" when ready."""
        p = self.project
        if p is None:
            return "Open or create a project first."
        if self._training_active:
            return "A run is training now; stop it before starting another."
        if not p.image_folder:
            return "Choose the folder of photos."
        if self._scan_worker is not None and self.num_images is None:
            return "Checking the images…"
        if self.num_images is not None and self.num_images < 2:
            return "The folder needs at least two readable images."
        names = self.class_editor.names()
        if len(names) < 2:
            return "Give at least two class names."
        if self.class_editor.has_duplicates():
            a, b = self.class_editor.report().duplicates[0]
            return f"“{b}” is listed twice; remove one."
        too_long = self.class_editor.too_long()
        if too_long:
            return (f"A class name has {len(too_long[0])} characters; shorten it to at most "
                    f"{MAX_CLASS_NAME_CHARS}.")
        if not p.model:
            return "Choose a model."
        return ""

    def _update_readiness(self) -> None:
        busy = self._preview_worker is not None
        problem = self.problem()
        if not busy:
            self.status_label.setObjectName("problem" if problem else "ready")
            ready = ("Preview ready. Happy with the classes? Start the adaptation."
                     if self._prepared is not None and self.project is not None
                     and self._prepared[1] == project_fingerprint(self.project)
                     else "Ready: preview the zero-shot result, or start.")
            self.status_label.setText(problem or ready)
            self.status_label.style().unpolish(self.status_label)
            self.status_label.style().polish(self.status_label)
        self.start_button.setEnabled(not problem and not busy)
        self.preview_button.setEnabled(busy or not problem)

    def set_training_active(self, active: bool) -> None:
        """The window says whether a run is training (only one runs at a time)."""
        self._training_active = active
        self._update_readiness()

    # ---- preview ---------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._preview_worker is not None

    def open_workbench(self):
        """The class-name workbench (must_gui.trust) on the project as it is now."""
        from must_gui.trust.workbench_dialog import WorkbenchDialog

        self.class_editor.flush()
        if self.problem() or self.project is None:
            return None
        dialog = WorkbenchDialog(self.project, self)
        dialog.synonymsSaved.connect(self.projectEdited)
        dialog.start()
        dialog.show()
        return dialog

    def _preview_clicked(self) -> None:
        if self._preview_worker is not None:
            self._preview_worker.cancel()
            self.status_label.setText("Cancelling…")
            return
        self.start_preview()

    def start_preview(self) -> None:
        self.class_editor.flush()
        if self.problem() or self.project is None:
            return
        project = self.project
        self._drop_prepared_run()
        try:
            run_dir = project.new_run_dir()
        except ValueError as exc:
            QMessageBox.warning(self, "Save the project first", str(exc))
            return
        snapshot = copy.deepcopy(project)
        fingerprint = project_fingerprint(project)
        worker = Worker(preview_task(snapshot, run_dir), name="preview", parent=self)
        worker.event.connect(self._preview_event)
        worker.succeeded.connect(lambda r, w=worker: self._preview_done(w, r, run_dir,
                                                                        fingerprint))
        worker.failed.connect(lambda m, t, w=worker: self._preview_failed(w, m, t, run_dir))
        worker.cancelled.connect(lambda w=worker: self._preview_cancelled(w, run_dir))
        worker.finished.connect(lambda w=worker: self._preview_finished(w))
        self._preview_worker = worker
        self.preview_button.setText("Cancel &preview")
        self.busy_bar.setRange(0, 0)
        self.busy_bar.show()
        self.status_label.setObjectName("")
        self.status_label.setText("Preparing the zero-shot classifier…")
        self._update_readiness()
        worker.start()

    def _preview_event(self, event: object) -> None:
        if isinstance(event, Status):
            self.status_label.setText(event.message)
        elif isinstance(event, DownloadProgress):
            self.download_bar.handle(event)
        elif isinstance(event, PredictionProgress):
            self.download_bar.reset()
            self.busy_bar.setRange(0, max(1, event.total))
            self.busy_bar.setValue(event.done)
            self.status_label.setText(f"Scoring images: {event.done} of {event.total}")

    def _preview_done(self, worker: Worker, predictions, run_dir: Path, fingerprint: str) -> None:
        self._prepared = (run_dir, fingerprint)
        self.predictions = predictions
        self._show_preview(predictions, run_dir)
        model, pretrained = self.model_picker.model()
        self.model_picker.mark_cached(model, pretrained)
        self.previewFinished.emit(predictions)

    def _preview_failed(self, worker: Worker, message: str, details: str, run_dir: Path) -> None:
        _remove_prepared(run_dir)
        box = QMessageBox(QMessageBox.Icon.Warning, "Zero-shot preview failed", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setInformativeText("Nothing was trained. Fix the problem and try again.")
        box.setDetailedText(details)
        box.open()  # window-modal, not a nested event loop: workers keep reporting
        self._error_box = box

    def _preview_cancelled(self, worker: Worker, run_dir: Path) -> None:
        _remove_prepared(run_dir)

    def _preview_finished(self, worker: Worker) -> None:
        if worker is self._preview_worker:
            self._preview_worker = None
        worker.deleteLater()
        self.preview_button.setText("&Preview zero-shot")
        self.busy_bar.hide()
        self.download_bar.reset()
        self._update_readiness()

    def _show_preview(self, predictions, run_dir: Path | None = None) -> None:
        import numpy as np

        names = predictions.class_names
        counts = predictions.class_counts(zero_shot=True)
        labels = predictions.zero_shot_labels()
        conf = predictions.zero_shot_confidences()
        empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
        total = len(predictions)
        text = f"The unadapted model sorted <b>{total}</b> images into {len(names)} classes."
        if empty:
            shown = ", ".join(f"“{n}”" for n in empty[:5]) + (" …" if len(empty) > 5 else "")
            text += (f" <span style='color:#93610b'>No image went to {shown}: check that "
                     "each name says what the photos show.</span>")
        self.preview_summary.setText(text)
        self.counts_chart.set_counts(names, counts)
        samples: dict[int, list] = {}
        items = []
        for c in range(len(names)):
            idx = np.flatnonzero(labels == c)
            best = idx[np.argsort(-conf[idx], kind="stable")][:THUMBS_PER_CLASS]
            samples[c] = [((c, int(i)), f"{predictions.paths[i]}\n{conf[i]:.0%} sure")
                          for i in best]
            items += [((c, int(i)), predictions.root / predictions.paths[i]) for i in best]
        self.strips.set_classes(names, counts, samples)
        self.preview_box.show()
        self._load_thumbnails(items, run_dir)
        self.status_label.setObjectName("ready")
        self.status_label.setText("Preview ready. Happy with the classes? Start the adaptation.")
        # After the layout has made room for the box (scrolling at once used the old
        # geometry, and with Advanced settings open the preview stayed below the fold).
        QTimer.singleShot(0, self, self.scroll_to_preview)

    def scroll_to_preview(self) -> None:
        top = self.preview_box.mapTo(self.scroll.widget(), QPoint(0, 0)).y()
        self.scroll.verticalScrollBar().setValue(max(0, top - 12))

    def _load_thumbnails(self, items, run_dir: Path | None = None) -> None:
        if self._thumb_worker is not None:
            self._thumb_worker.cancel()
        # The preview just decoded every image into the run's cache: shrink those entries.
        task = thumbnail_task(items, THUMB_SIZE * 2, run_thumbnail_source(run_dir))
        worker = Worker(task, name="thumbnails", parent=self)
        worker.event.connect(self._thumbnail_loaded)
        worker.finished.connect(lambda w=worker: self._thumbs_finished(w))
        self._thumb_worker = worker
        worker.start()

    def _thumbnail_loaded(self, event: object) -> None:
        if isinstance(event, ThumbnailLoaded):
            self.strips.set_thumbnail(event.key, event.image)

    def _thumbs_finished(self, worker: Worker) -> None:
        if worker is self._thumb_worker:
            self._thumb_worker = None
        worker.deleteLater()

    def thumbnails_loading(self) -> bool:
        return self._thumb_worker is not None

    # ---- starting --------------------------------------------------------------------------
    def request_start(self) -> None:
        self.class_editor.flush()
        if self.problem() or self.project is None or self._preview_worker is not None:
            return
        project = self.project
        resume = False
        if self._prepared is not None and self._prepared[1] == project_fingerprint(project):
            run_dir, resume = self._prepared[0], True  # train the run the preview prepared
        else:
            self._drop_prepared_run()
            try:
                run_dir = project.new_run_dir()
            except ValueError as exc:
                QMessageBox.warning(self, "Save the project first", str(exc))
                return
        self._prepared = None
        self.startRequested.emit(StartRequest(copy.deepcopy(project), run_dir, resume))

    def _drop_prepared_run(self) -> None:
        if self._prepared is not None:
            _remove_prepared(self._prepared[0])
            self._prepared = None

    def cancel_work(self) -> None:
        for worker in (self._scan_worker, self._preview_worker, self._thumb_worker):
            if worker is not None:
                worker.cancel()

    def workers(self) -> list[Worker]:
        pickers = [self.model_picker._worker, self.device_picker._worker]
        return [w for w in (self._scan_worker, self._preview_worker, self._thumb_worker,
                            *pickers) if w is not None]


def _remove_prepared(run_dir: Path) -> None:
    """Delete a run folder the preview made, but only one that was never trained."""
    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {"status": "prepared"} if run_dir.is_dir() else None
    if data is not None and data.get("status") == "prepared" and not (
            run_dir / "checkpoint.pt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
