"""The main window: a navigation list beside a stack of pages (Start, Setup, Training,
Results), the menus and the status bar.

The window owns the open ``Project`` and wires the pages together through their signals;
each page gets only what it needs (the project data, a run folder, predictions). The
project is saved automatically shortly after each change, and at once with Ctrl+S.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from must_engine.project import PROJECT_SUFFIX, Project, ProjectError, predictions_cache
from must_engine.trust.user_labels import UserLabels, labels_path, write_run_labels
from must_gui.pages.setup_page import SetupPage, StartRequest
from must_gui.pages.start_page import StartPage
from must_gui.pages.training_page import TrainingPage
from must_gui.preferences import (
    APP_NAME,
    Preferences,
    data_dir,
    save_preferences,
    window_state_path,
)
from must_gui.style import app_icon
from must_gui.workers import TaskContext, Worker

log = logging.getLogger(__name__)

START, SETUP, TRAINING, RESULTS = range(4)
PAGE_NAMES = ("Start", "Setup", "Training", "Results")
PROJECT_FILTER = f"MUST Studio projects (*{PROJECT_SUFFIX});;All files (*)"
AUTOSAVE_MS = 600
QUIT_WAIT_MS = 15_000
DEMO_PROJECT_NAME = "MUST demo"
NO_RESULTS = "No results yet. Train a model and the predictions for every image appear here."


def confirm_stop_training(parent: QWidget) -> bool:
    """Ask before quitting during training. True: stop (keeping the checkpoint) and quit."""
    box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                      "A run is still training. Stop it and quit?", parent=parent)
    box.setInformativeText("The run saves a checkpoint when it stops; you can resume it the "
                           "next time you open this project.")
    stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    return box.clickedButton() is stop


def results_page_class():
    """The results browser (written alongside this window); None if it cannot be imported."""
    try:
        from must_gui.results.results_page import ResultsPage
    except ImportError as exc:
        log.warning("The results browser is not available: %s", exc)
        return None
    return ResultsPage


def load_predictions_task(npz: Path, run_dir: Path):
    def run(_context: TaskContext):
        import json

        from must_engine.predict import Predictions

        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        root = Path(data["job"]["images"])
        results_page_class()  # import the browser (and torch) here, not on the GUI thread
        return Predictions.load_npz(npz, root)

    return run


class ResultsHost(QWidget):
    """Holds the results browser, built on first use: it imports torch through the engine,
    which would slow the window's first appearance."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.page = None
        self.labels_file: Path | None = None
        self._fallback_results = False
        self.empty = QLabel(NO_RESULTS)
        self.empty.setObjectName("hint")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.run_dir: Path | None = None  # the run whose results are shown
        self.run_label = QLabel()
        self.run_label.setObjectName("hint")
        self.run_label.setContentsMargins(8, 6, 8, 0)
        self.run_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.run_label.hide()
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.addWidget(self.run_label)
        self.layout_.addWidget(self.empty)

    def prepare(self) -> None:
        """Build the (still hidden) browser ahead of its first results: building it when they
        arrive stalled the window ~100 ms (tests/bench/bench_gui_training_stall.py)."""
        if self.page is None:
            cls = results_page_class()
            if cls is not None:
                self.page = cls(self)
                self.page.trust.set_labels_file(self.labels_file)
                self.page.hide()
                self.layout_.addWidget(self.page, 1)

    def set_labels_file(self, path: Path | None) -> None:
        """The project's user labels (spot-check answers, corrections)."""
        self.labels_file = path
        if self.page is not None:
            self.page.trust.set_labels_file(path)

    def set_results(self, predictions, run_dir: Path) -> None:
        self.prepare()
        self.run_dir = Path(run_dir)
        self.run_label.setText(f"Results of {self.run_dir.name} · to see another run, pick it "
                               "on the Training page")
        self.run_label.show()
        if self.page is None:
            counts = predictions.class_counts()
            lines = [f"{n}: {c}" for n, c in zip(predictions.class_names, counts, strict=True)]
            self.empty.setText("The results browser could not be loaded (see the log).\n"
                               f"{len(predictions)} images:\n" + "\n".join(lines))
            self._fallback_results = True
            return
        self.empty.hide()
        self.page.set_results(predictions, run_dir)
        self.page.show()

    def clear(self) -> None:
        """Drop the shown results (another project was opened)."""
        self.run_dir = None
        self.run_label.hide()
        self._fallback_results = False
        self.empty.setText(NO_RESULTS)
        self.empty.show()
        if self.page is not None:
            self.page.clear_results()
            self.page.hide()

    def has_results(self) -> bool:
        if self.page is None:
            return self._fallback_results
        return getattr(self.page, "predictions", None) is not None

    def open_export(self) -> None:
        if self.page is not None and hasattr(self.page, "open_export_dialog"):
            self.page.open_export_dialog()


class MainWindow(QMainWindow):
    """Signals: projectOpened(object): a project is open now (None when closed)."""

    projectOpened = Signal(object)

    def __init__(self, preferences: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.preferences = preferences
        self.project: Project | None = None
        self._quit_after_stop = False
        self._load_worker: Worker | None = None
        self._old_loads: list[Worker] = []  # cancelled loads still ending on their thread
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self.resize(1320, 860)
        self.setMinimumSize(960, 640)

        self.start_page = StartPage()
        self.setup_page = SetupPage()
        self.training_page = TrainingPage()
        self.results = ResultsHost()
        self.stack = QStackedWidget()
        for page in (self.start_page, self.setup_page, self.training_page, self.results):
            self.stack.addWidget(page)
        self.navigation = QListWidget()
        self.navigation.setObjectName("navigation")
        self.navigation.setAccessibleName("Pages")
        self.navigation.setFixedWidth(170)
        for i, name in enumerate(PAGE_NAMES):
            item = QListWidgetItem(name)
            item.setToolTip(f"{name} (Ctrl+{i + 1})")
            self.navigation.addItem(item)
        self.navigation.currentRowChanged.connect(self._navigate)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.navigation)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.project_label = QLabel()
        self.statusBar().addPermanentWidget(self.project_label)

        self._autosave = QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.setInterval(AUTOSAVE_MS)
        self._autosave.timeout.connect(self.save_project)

        self._build_actions()
        self._wire_pages()
        self._refresh_recent()
        self._update_navigation()
        self.show_page(START)
        self._restore_window_state()

    # ---- menus -----------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        self.new_action = self._action("&New project…", self.new_project_dialog,
                                       QKeySequence.StandardKey.New, "Start a new project")
        self.open_action = self._action("&Open project…", self.open_project_dialog,
                                        QKeySequence.StandardKey.Open, "Open a .mustproj file")
        self.open_run_action = self._action(
            "Open r&un folder…", self.open_run_folder_dialog,
            tip="Open a run made elsewhere (must train, torchrun on a cluster)")
        self.demo_action = self._action("Open &demo project", self.open_demo,
                                        tip="A small offline example project")
        self.save_action = self._action("&Save", self.save_project,
                                        QKeySequence.StandardKey.Save, "Save the project now")
        self.export_action = self._action("&Export…", self.export, "Ctrl+E",
                                          "Export the adapted model or the predictions")
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.about_action = self._action("&About MUST Studio", self.show_about)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.new_action)
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.open_run_action)
        file_menu.addAction(self.demo_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addSeparator()
        file_menu.addAction(self.save_action)
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        self.page_actions = []
        for i, name in enumerate(PAGE_NAMES):
            action = self._action(f"&{i + 1}  {name}", lambda _c=False, i=i: self.show_page(i),
                                  f"Ctrl+{i + 1}")
            view_menu.addAction(action)
            self.page_actions.append(action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.about_action)

    def _wire_pages(self) -> None:
        self.start_page.newRequested.connect(self.new_project_dialog)
        self.start_page.openRequested.connect(self.open_project_dialog)
        self.start_page.demoRequested.connect(self.open_demo)
        self.start_page.recentRequested.connect(lambda p: self.open_project(Path(p)))
        from must_engine.demo_files import demo_available

        self.start_page.set_demo_available(demo_available())
        self.demo_action.setEnabled(demo_available())
        self.setup_page.projectEdited.connect(self._autosave.start)
        self.setup_page.startRequested.connect(self.start_training)
        self.training_page.stateChanged.connect(self._training_state)
        self.training_page.runEnded.connect(self._run_ended)
        self.training_page.resultsReady.connect(self.show_results)
        self.training_page.runPicked.connect(self.pick_run)
        self.training_page.restartRequested.connect(self.start_again)

    # ---- pages -----------------------------------------------------------------------------
    def current_page(self) -> int:
        return self.stack.currentIndex()

    def show_page(self, index: int) -> None:
        item = self.navigation.item(index)
        if item is None or not (item.flags() & Qt.ItemFlag.ItemIsEnabled):
            return
        self.stack.setCurrentIndex(index)
        if self.navigation.currentRow() != index:
            self.navigation.setCurrentRow(index)
        if index == SETUP:
            self.setup_page.activate()
        elif index == RESULTS and self.results.page is not None and self.results.has_results():
            # Straight to the grid: arrows, Enter and the number keys work at once (after
            # Ctrl+4 the focus stayed in the navigation list).
            self.results.page.grid.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _navigate(self, row: int) -> None:
        if row >= 0 and row != self.stack.currentIndex():
            self.show_page(row)

    def _update_navigation(self) -> None:
        has_project = self.project is not None
        has_run = has_project and (bool(self.project.current_run)
                                   or self.training_page.is_busy())
        enabled = [True, has_project, has_run, self.results.has_results()]
        for i, on in enumerate(enabled):
            item = self.navigation.item(i)
            flags = item.flags()
            item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled if on
                          else flags & ~Qt.ItemFlag.ItemIsEnabled)
            self.page_actions[i].setEnabled(on)
        self.save_action.setEnabled(has_project)
        self.export_action.setEnabled(self.results.has_results())

    # ---- projects --------------------------------------------------------------------------
    def _dialog_folder(self) -> str:
        return self.preferences.last_folder or str(Path.home())

    def new_project_dialog(self) -> None:
        if not self._can_switch_project():
            return
        path, _ = QFileDialog.getSaveFileName(self, "Create a project",
                                              str(Path(self._dialog_folder()) /
                                                  f"My photos{PROJECT_SUFFIX}"), PROJECT_FILTER)
        if path:
            self.new_project(Path(path))

    def new_project(self, path: Path) -> Project | None:
        if path.suffix != PROJECT_SUFFIX:
            path = path.with_name(path.name + PROJECT_SUFFIX)
        prefs = self.preferences
        project = Project(name=path.stem, model=prefs.default_model,
                          pretrained=prefs.default_pretrained, device=prefs.default_device,
                          path=path)
        try:
            project.save()
        except ProjectError as exc:  # a read-only or full folder: the sentence names it
            QMessageBox.warning(self, "Could not create the project", str(exc))
            return None
        except OSError as exc:
            QMessageBox.warning(self, "Could not create the project",
                                f"{path} cannot be written ({exc}); choose another place.")
            return None
        self._set_project(project)
        self.show_page(SETUP)
        return project

    def open_project_dialog(self) -> None:
        if not self._can_switch_project():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a project", self._dialog_folder(),
                                              PROJECT_FILTER)
        if path:
            self.open_project(Path(path))

    def open_project(self, path: Path) -> Project | None:
        if not self._can_switch_project():
            return None
        try:
            project = Project.load(path)
        except ProjectError as exc:
            QMessageBox.warning(self, "Could not open the project", str(exc))
            if not Path(path).is_file():
                self.preferences.remove_recent(path)
                self._refresh_recent()
            return None
        self._set_project(project)
        self._show_where_left(project)
        return project

    def open_run_folder_dialog(self) -> None:
        if not self._can_switch_project():
            return
        path = QFileDialog.getExistingDirectory(self, "Open a run folder", self._dialog_folder())
        if path:
            self.open_run_folder(Path(path))

    def open_run_folder(self, run_dir: Path) -> Project | None:
        """A run made elsewhere (``must train``, torchrun on a cluster) in a project of its
        own, saved beside the run folder (or in the app's data folder where that cannot be
        written), shown where it stands: curves, then results."""
        from must_engine.project import project_for_run

        if not self._can_switch_project():
            return None
        run_dir = Path(run_dir).expanduser().absolute()
        beside = run_dir.parent / f"{run_dir.name}{PROJECT_SUFFIX}"
        try:
            if beside.is_file():  # opened before: keep what the user did since
                project = Project.load(beside)
                project.add_run(run_dir)
            else:
                project = project_for_run(run_dir, beside)
        except ProjectError as exc:
            QMessageBox.warning(self, "Could not open the run", str(exc))
            return None
        for where in (beside, data_dir() / "opened runs" / beside.name):
            try:
                where.parent.mkdir(parents=True, exist_ok=True)
                project.save(where)
                break
            except (OSError, ProjectError):
                continue
        else:
            QMessageBox.warning(self, "Could not open the run",
                                f"No project file could be written for {run_dir}, beside it "
                                "or in the app's data folder; free some disk space.")
            return None
        self._set_project(project)
        self._show_where_left(project)
        return project

    def open_demo(self) -> Project | None:
        from must_engine import demo_files

        missing = demo_files.demo_missing_reason()
        if missing is not None:
            QMessageBox.information(self, "Demo not installed", missing)
            return None
        if not self._can_switch_project():
            return None
        path = data_dir() / "demo" / f"{DEMO_PROJECT_NAME}{PROJECT_SUFFIX}"
        project = None
        if path.is_file():
            try:
                project = Project.load(path)
            except ProjectError as exc:
                log.warning("Making the demo project again: %s", exc)
        if project is None:
            overrides = dict(demo_files.demo_settings_overrides())
            project = Project(name=DEMO_PROJECT_NAME, preset=overrides.pop("preset", "auto"),
                              device=overrides.pop("device", "auto"), overrides=overrides,
                              class_names=demo_files.demo_class_names(),
                              templates=demo_files.demo_templates(), path=path)
        # The demo files move with the installation: point at where they are now.
        project.image_folder = str(demo_files.demo_images_dir())
        project.model, project.pretrained = f"local-dir:{demo_files.demo_model_dir()}", ""
        try:
            project.save()
        except (OSError, ProjectError) as exc:
            QMessageBox.warning(self, "Could not create the demo project",
                                str(exc) if isinstance(exc, ProjectError)
                                else f"{path} cannot be written ({exc}).")
            return None
        self._set_project(project)
        self._show_where_left(project)
        return project

    def _can_switch_project(self) -> bool:
        if self.training_page.is_busy():
            QMessageBox.information(self, "Training is running",
                                    "Stop the training before opening another project.")
            return False
        return True

    def _set_project(self, project: Project) -> None:
        if self.project is not None and self._autosave.isActive():
            self.save_project()
        # Nothing of the previous project may stay on show: its results, its export
        # destination (the run folder), its run's curves.
        self._cancel_results_load()
        self.results.clear()
        self.training_page.clear()
        self.project = project
        self.setup_page.set_project(project)
        self.results.set_labels_file(labels_path(project.path) if project.path else None)
        if project.path is not None:
            self.preferences.add_recent(project.path)
            self.preferences.last_folder = str(project.path.parent.parent
                                               if project.name == DEMO_PROJECT_NAME
                                               else project.path.parent)
            self._save_preferences()
        self._refresh_recent()
        self.setWindowTitle(f"{project.name} — {APP_NAME}")
        self.project_label.setText(str(project.path or ""))
        self._update_navigation()
        self.projectOpened.emit(project)

    def _show_where_left(self, project: Project) -> None:
        """Reopen where the user left off: results, else the last run, else the setup."""
        run = project.current_run_dir()
        npz = project.predictions_path()
        if run is not None and run.is_dir():
            self.training_page.show_run(project, run)
            self._update_navigation()
            if npz is not None and npz.is_file():
                self._load_cached_results(npz, run)
                return
            self.show_page(TRAINING)
            return
        self.show_page(SETUP)

    def pick_run(self, run_dir: Path) -> None:
        """Show another of the project's runs: its curves, and its results when it has them
        (cached ones load in the background; otherwise "Show results" computes them)."""
        if self.project is None or self.training_page.is_busy():
            return
        run_dir = Path(run_dir)
        self.project.add_run(run_dir)
        npz = predictions_cache(run_dir)
        has_cache = npz.is_file() and (run_dir / "model.safetensors").is_file()
        self.project.predictions = str(npz) if has_cache else ""
        self.save_project()
        self._cancel_results_load()
        self.results.clear()
        self.training_page.show_run(self.project, run_dir)
        self._update_navigation()
        self.show_page(TRAINING)
        if has_cache:
            self._load_cached_results(npz, run_dir)

    def start_again(self) -> None:
        """"Start again" on the training page: a new run with the setup as it is now."""
        self.show_page(SETUP)
        self.setup_page.request_start()

    def _cancel_results_load(self) -> None:
        if self._load_worker is not None:
            self._load_worker.cancel()
            self._old_loads.append(self._load_worker)
            self._load_worker = None  # its late answer is ignored (see _load_cached_results)

    def _load_cached_results(self, npz: Path, run_dir: Path) -> None:
        self.statusBar().showMessage("Loading the saved results…")
        worker = Worker(load_predictions_task(npz, run_dir), name="load-results", parent=self)
        worker.succeeded.connect(
            lambda p, w=worker: w is self._load_worker and self._cached_results_ready(p, run_dir))
        worker.failed.connect(
            lambda m, _t, w=worker: w is self._load_worker and self._cached_results_failed(m))
        worker.finished.connect(lambda w=worker: self._load_finished(w))
        self._load_worker = worker
        worker.start()

    def _cached_results_ready(self, predictions, run_dir: Path) -> None:
        self.results.set_results(predictions, run_dir)
        self.statusBar().clearMessage()
        self._update_navigation()
        self.show_page(RESULTS)

    def _cached_results_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"The saved results could not be read ({message}); "
                                     "use “Show results” to compute them again.", 10_000)
        self.show_page(TRAINING)

    def _load_finished(self, worker: Worker) -> None:
        if worker is self._load_worker:
            self._load_worker = None
        if worker in self._old_loads:
            self._old_loads.remove(worker)
        worker.deleteLater()

    def save_project(self) -> bool:
        self._autosave.stop()
        if self.project is None:
            return False
        try:
            self.project.save()
        except (OSError, ProjectError) as exc:
            self.statusBar().showMessage(f"Could not save the project: {exc}", 10_000)
            return False
        self.statusBar().showMessage("Project saved", 2000)
        return True

    # ---- training and results --------------------------------------------------------------
    def start_training(self, request: StartRequest) -> None:
        if self.project is None or self.training_page.is_busy():
            return
        self.project.add_run(request.run_dir)
        self.save_project()
        self.training_page.set_runs(self.project)
        if self.project.path is not None and not (Path(request.run_dir) / "checkpoint.pt").exists():
            # the user's labels and left-out images: fixed for this run, as for every run
            write_run_labels(request.run_dir, UserLabels.load(labels_path(self.project.path)),
                             request.project.class_names)
        self.training_page.start(request)
        self._update_navigation()
        self.show_page(TRAINING)

    def _training_state(self, state: str) -> None:
        self._update_navigation()
        self.setup_page.set_training_active(self.training_page.is_busy())
        busy = state != "idle"
        self.statusBar().showMessage(f"Training: {state}" if busy else "", 0 if busy else 1)
        if state == "training":
            # Build the results browser while the run trains, not when its results arrive.
            QTimer.singleShot(0, self.results.prepare)

    def _run_ended(self, run_dir: Path, stopped: bool) -> None:
        self.save_project()
        if self.project is not None:
            self.training_page.set_runs(self.project)  # the run's new state in the picker
        if self._quit_after_stop:
            QTimer.singleShot(0, self.close)

    def show_results(self, predictions, run_dir: Path) -> None:
        if self.project is not None:
            self.project.add_run(run_dir)
            self.project.predictions = str(predictions_cache(run_dir))
            self.save_project()
        self.results.set_results(predictions, run_dir)
        self._update_navigation()
        self.show_page(RESULTS)

    def export(self) -> None:
        if self.results.has_results():
            self.results.open_export()

    # ---- help ------------------------------------------------------------------------------
    def device_in_use(self) -> str:
        """The device the last run reported, else what the project's choice means here."""
        picker = self.setup_page.device_picker
        if self.training_page.device:
            return picker.label_for(self.training_page.device)
        choice = self.project.device if self.project is not None else "auto"
        devices = picker.devices()
        if choice == "auto" and devices:
            return f"automatic: {devices[0][1]}"  # GPUs are listed first
        return picker.label_for(choice)

    def show_about(self) -> None:
        from must_gui.about_dialog import AboutDialog

        dialog = AboutDialog(self.device_in_use(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self.about_dialog = dialog

    # ---- recent projects and preferences ---------------------------------------------------
    def _refresh_recent(self) -> None:
        recent = self.preferences.recent_projects
        self.start_page.set_recent(recent)
        self.recent_menu.clear()
        for text in recent:
            action = self.recent_menu.addAction(Path(text).stem)
            action.setToolTip(text)
            action.triggered.connect(lambda _c=False, t=text: self.open_project(Path(t)))
        self.recent_menu.setEnabled(bool(recent))

    def _save_preferences(self) -> None:
        try:
            save_preferences(self.preferences)
        except OSError as exc:
            log.warning("Could not save preferences: %s", exc)

    def _settings(self) -> QSettings:
        return QSettings(str(window_state_path()), QSettings.Format.IniFormat)

    def _restore_window_state(self) -> None:
        settings = self._settings()
        geometry = settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = settings.value("state")
        if state is not None:
            self.restoreState(state)

    def _save_window_state(self) -> None:
        settings = self._settings()
        settings.setValue("geometry", self.saveGeometry())
        settings.setValue("state", self.saveState())
        settings.sync()

    # ---- closing ---------------------------------------------------------------------------
    def running_workers(self) -> list[Worker]:
        workers = [*self.setup_page.workers(), *self.training_page.workers()]
        if self._load_worker is not None:
            workers.append(self._load_worker)
        return workers + self._old_loads

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self.training_page.is_training():
            if not self._quit_after_stop:
                if not confirm_stop_training(self):
                    event.ignore()
                    return
                self._quit_after_stop = True
                self.training_page.stop()
                self.statusBar().showMessage("Stopping the training and saving a checkpoint…")
            event.ignore()  # closes itself when the run has ended (see _run_ended)
            return
        for worker in self.running_workers():
            worker.cancel()
        if self.project is not None:
            self.save_project()
        self._save_window_state()
        self._save_preferences()
        event.accept()

    def wait_for_workers(self, msecs: int = QUIT_WAIT_MS) -> bool:
        """Bounded wait for background threads at quit (never during normal use)."""
        ok = True
        for worker in self.running_workers():
            worker.cancel()
            ok = worker.wait(msecs) and ok
        results = self.results.page
        if results is not None and hasattr(results, "shutdown"):
            results.shutdown()
        return ok
