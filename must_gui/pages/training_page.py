"""The training screen: live plots, progress with ETA, Pause / Resume / Stop.

The engine's ``train`` generator runs on a worker thread; its events arrive here as
signals. When a run finishes, the predictions for its folder are computed on another
worker and handed on with ``resultsReady``. Errors are shown in a dialog with the detail,
and the last checkpoint is kept so the run can be resumed.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from must_engine.events import (
    CheckpointSaved,
    ClassifierKept,
    ClassifierScored,
    DownloadProgress,
    EpochSummary,
    Paused,
    PredictionProgress,
    Resumed,
    RunFinished,
    RunStarted,
    RunWarning,
    SettingsProbed,
    Status,
    StepMetrics,
    TimeEstimate,
)
from must_engine.project import Project, predictions_cache
from must_gui.pages.setup_page import StartRequest
from must_gui.plots import TrainingPlots
from must_gui.run_history import read_warnings
from must_gui.run_report import BELOW_ZERO_SHOT, RunReport, format_duration, read_run_report
from must_gui.trust.run_warnings import RunWarningsLabel
from must_gui.widgets.download_bar import DownloadBar
from must_gui.widgets.run_picker import RunPicker, describe_run
from must_gui.widgets.run_summary import RunSummaryBar
from must_gui.workers import TaskContext, Worker

# Training states, for the buttons and for the window (which asks before quitting).
IDLE, PREPARING, TRAINING, PAUSED, STOPPING, PREDICTING = (
    "idle", "preparing", "training", "paused", "stopping", "predicting")
# The probe's Status lines ("Probing settings 2/5: lr / 10"), for its progress.
PROBE_STEP = re.compile(r"Probing settings (\d+)/(\d+)")
# A run's worker starts this long after the page shows (see start()).
START_DELAY_MS = 100


def train_task(request: StartRequest, control, gpu_count=None, child_device: str = "cuda"):
    """Train in this process, or for "all GPUs" in a torchrun child of ``gpu_count()``
    processes on ``child_device`` (both settable for tests), followed through its log."""

    def run(context: TaskContext):
        from must_engine.devices import ALL_GPUS, cuda_count
        from must_engine.training.trainer import train

        project = request.project
        if project.device == ALL_GPUS:
            from must_engine.torchrun_child import train_in_child

            return train_in_child(project.train_job(), request.run_dir,
                                  processes=(gpu_count or cuda_count)(), device=child_device,
                                  control=control, resume=request.resume,
                                  on_event=context.on_event)
        device = None if project.device == "auto" else project.device
        return train(project.train_job(), request.run_dir, control=control,
                     resume=request.resume, device=device, on_event=context.on_event)

    return run


def predict_task(run_dir: Path, device: str, control):
    """Classify the run's folder; ``control`` (a TrainControl) pauses it between batches."""

    def run(context: TaskContext):
        from must_engine.devices import in_process_device
        from must_engine.predict import predict_run

        def should_stop() -> bool:
            control.wait_until_resumed()  # Pause holds here, between two batches
            return control.stop_requested or context.should_stop()

        context.emit(Status("Classifying every image with the adapted model"))
        predictions = predict_run(run_dir, device=in_process_device(device),
                                  on_event=context.emit,
                                  should_stop=should_stop)
        predictions.save_npz(predictions_cache(run_dir))
        return predictions

    return run


class PausableClock:
    """Keeps the time spent paused, so the clocks below can leave it out."""

    def __init__(self) -> None:
        self._paused_at: float | None = None
        self._paused_for = 0.0

    def pause(self, now: float) -> None:
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self._paused_at is not None:
            self._paused_for += now - self._paused_at
            self._paused_at = None

    def paused_for(self, now: float) -> float:
        """Seconds paused so far, the pause under way included."""
        return self._paused_for + (now - self._paused_at if self._paused_at is not None
                                   else 0.0)


class TrainingClock(PausableClock):
    """How long training has run (pauses left out), and how long scoring one epoch's teacher
    takes: the trainer's own time left counts only the steps, and the label-free score after
    each epoch adds to it."""

    def __init__(self) -> None:
        super().__init__()
        self.started: float | None = None
        self._epoch_end: float | None = None
        self.score_seconds: float | None = None  # measured, one epoch's scoring

    def start(self, now: float) -> None:
        self.__init__()
        self.started = now

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return max(0.0, now - self.started - self.paused_for(now))

    def epoch_ended(self, now: float) -> None:
        self._epoch_end = now

    def epoch_scored(self, now: float) -> None:
        if self._epoch_end is not None:
            self.score_seconds = max(0.0, now - self._epoch_end)
            self._epoch_end = None


def time_left(step_eta: float, epochs_to_score: int, score_seconds: float | None) -> float:
    """The trainer's time left for the steps plus the scoring still to come."""
    return step_eta + max(0, epochs_to_score) * (score_seconds or 0.0)


def estimated_score_seconds(estimate: TimeEstimate | None) -> float | None:
    """One epoch's scoring time as the estimate counted it (its total less the steps)."""
    if estimate is None or estimate.epochs <= 0:
        return None
    steps = estimate.total_steps * estimate.seconds_per_step
    return max(0.0, estimate.seconds - steps) / estimate.epochs


class RateClock(PausableClock):
    """Time left for a count that grows (images classified): the rate is measured from the
    first report on, so the start-up before it (loading the models) does not count."""

    def __init__(self) -> None:
        super().__init__()
        self._first: tuple[float, int] | None = None

    def update(self, done: int, total: int, now: float) -> tuple[float, float] | None:
        """(items a second, seconds left), or None until a rate can be measured."""
        if self._first is None:
            self._first = (now, done)
            return None
        t0, d0 = self._first
        elapsed = now - t0 - self._paused_for
        if done <= d0 or elapsed <= 0:
            return None
        rate = (done - d0) / elapsed
        return rate, max(0, total - done) / rate


class TrainingPage(QWidget):
    """Signals:
      stateChanged(str): idle / preparing / training / paused / stopping / predicting;
      runEnded(object, bool): the run folder and whether it was stopped early;
      resultsReady(object, object): Predictions and the run folder, after a finished run;
      failed(str): training or prediction failed (already shown to the user);
      runPicked(object): the user chose another of the project's runs (its folder);
      restartRequested(): "Start again" after a run that failed or never trained.
    """

    stateChanged = Signal(str)
    runPicked = Signal(object)
    restartRequested = Signal()
    runEnded = Signal(object, bool)
    resultsReady = Signal(object, object)
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.state = IDLE
        self.run_dir: Path | None = None
        self.request: StartRequest | None = None
        self.control = None
        self.last_finished: RunFinished | None = None
        self._train_worker: Worker | None = None
        self._predict_worker: Worker | None = None
        self._total_steps = 0
        self._epochs = 0
        self._predict_control = None  # TrainControl of the classification after a run
        self._train_stats = ""  # the last training line, without its time left
        self._pending_results = None  # (Predictions, run folder) until the worker has ended
        self._predict_clock = RateClock()
        self._train_clock = TrainingClock()
        self.report = RunReport()  # expected time, probe, label-free scores, kept classifier
        self._report_state = ""
        self._resumed_at = 0  # the step the current run (re)started from
        self.device = ""  # where the current or last run trains, as the engine reported it
        # "All GPUs": how many there are (None: ask torch) and what each child process uses.
        self.gpu_count = None
        self.child_device = "cuda"
        self._build()
        self._set_state(IDLE)

    def _build(self) -> None:
        self.title = QLabel("Training")
        self.title.setObjectName("pageTitle")
        self.subtitle = QLabel("No run yet. Set up the project and start the adaptation.")
        self.subtitle.setObjectName("pageSubtitle")
        self.subtitle.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.progress.setMinimumHeight(22)
        self.stats = QLabel("")
        self.stats.setObjectName("trainingStats")
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.download_bar = DownloadBar()
        self.warnings = RunWarningsLabel()  # class collapse and the like, beside the plots
        self.summary = RunSummaryBar()  # expected time, probe's choice, classifier kept

        self.pause_button = QPushButton("&Pause")
        self.pause_button.setToolTip("Pause after the current step; nothing is lost")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("S&top")
        self.stop_button.setToolTip("Stop and keep a checkpoint; you can resume later")
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("&Resume training")
        self.resume_button.setObjectName("primary")
        self.resume_button.clicked.connect(self.resume_run)
        self.results_button = QPushButton("Show &results")
        self.results_button.setObjectName("primary")
        self.results_button.clicked.connect(self.compute_results)
        self.restart_button = QPushButton("Start &again")
        self.restart_button.setObjectName("primary")
        self.restart_button.setToolTip("Start a new run with the project's setup as it is now")
        self.restart_button.clicked.connect(self.restartRequested)
        self.run_picker = RunPicker()
        self.run_picker.runPicked.connect(self.runPicked)
        self.run_picker.hide()

        header = QVBoxLayout()
        title_row = QHBoxLayout()
        title_row.addWidget(self.title, 1)
        title_row.addWidget(self.run_picker)
        header.addLayout(title_row)
        header.addWidget(self.subtitle)
        # The rows above the plots keep their height whichever buttons and messages show: a
        # resized plot area redraws every plot from scratch, a ~300 ms stall here.
        button_row = QWidget()
        buttons = QHBoxLayout(button_row)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.stats, 1)
        for b in (self.pause_button, self.stop_button, self.resume_button, self.results_button,
                  self.restart_button):
            buttons.addWidget(b)
        styled = (self.pause_button, self.resume_button, self.results_button,
                  self.restart_button)
        for b in styled:
            b.ensurePolished()  # the style sheet's padding counts in the height
        button_row.setFixedHeight(max(b.sizeHint().height() for b in styled))
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing())
        self.status.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.plots = TrainingPlots()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 18, 24, 16)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.progress)
        layout.addWidget(button_row)
        layout.addWidget(self.status)
        layout.addWidget(self.summary)
        layout.addWidget(self.warnings)
        layout.addWidget(self.download_bar)
        layout.addWidget(self.plots, 1)

    # ---- state -----------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        running = state in (PREPARING, TRAINING, PAUSED, PREDICTING)
        self.pause_button.setVisible(running)
        self.pause_button.setEnabled(state in (TRAINING, PAUSED, PREDICTING))
        paused = state == PAUSED or (state == PREDICTING and self.predict_paused())
        self.pause_button.setText("&Resume" if paused else "&Pause")
        self.stop_button.setVisible(running or state == STOPPING)
        self.stop_button.setEnabled(running)
        can_resume = (state == IDLE and self.run_dir is not None
                      and (self.run_dir / "checkpoint.pt").is_file())
        self.resume_button.setVisible(can_resume)
        finished = (state == IDLE and self.run_dir is not None
                    and (self.run_dir / "model.safetensors").is_file())
        self.results_button.setVisible(finished)
        # A run that failed or never trained has nothing to resume: offer a fresh start.
        self.restart_button.setVisible(state == IDLE and self.run_dir is not None
                                       and not can_resume and not finished)
        self.run_picker.setEnabled(state == IDLE)
        self.stateChanged.emit(state)

    def is_training(self) -> bool:
        """True while a run is being prepared, trained, paused or stopped."""
        return self._train_worker is not None

    def is_busy(self) -> bool:
        return self._train_worker is not None or self._predict_worker is not None

    def workers(self) -> list[Worker]:
        return [w for w in (self._train_worker, self._predict_worker) if w is not None]

    # ---- starting --------------------------------------------------------------------------
    def start(self, request: StartRequest) -> None:
        if self.is_busy():
            raise RuntimeError("A run is already in progress.")
        from must_engine.training.control import TrainControl

        self.request = request
        self.run_dir = Path(request.run_dir)
        self.last_finished = None
        self.control = TrainControl()
        self.plots.reset(request.project.class_names)
        self.warnings.clear_warnings()
        self._train_clock = TrainingClock()
        self.report = read_run_report(self.run_dir) if request.resume else RunReport()
        if request.resume:
            self.plots.load_history(self.run_dir)
            self._show_logged_warnings()
        self.summary.set_time_left(None)
        self._show_report("preparing")
        self._describe(request.project)
        self.progress.setRange(0, 0)  # busy until the run says how long it is
        self.progress.setFormat("Preparing…")
        self.stats.setText("")
        self._train_stats = ""
        self.status.setText("Loading the model and checking the images…")
        worker = Worker(train_task(request, self.control, self.gpu_count, self.child_device),
                        name="training",
                        control=self.control, parent=self)
        worker.event.connect(self.handle_event)
        worker.succeeded.connect(self._train_succeeded)
        worker.failed.connect(self._train_failed)
        worker.cancelled.connect(self._train_cancelled)
        worker.finished.connect(lambda w=worker: self._train_finished(w))
        self._train_worker = worker
        self._set_state(PREPARING)
        # Let the page paint first: the run's first second (checking every image on several
        # threads) leaves the GUI thread little of the GIL, and the first paint of the plots
        # then stalled the window ~90 ms.
        QTimer.singleShot(START_DELAY_MS, self, lambda w=worker: self._start_worker(w))

    def _start_worker(self, worker: Worker) -> None:
        if self._train_worker is worker and not worker.is_running():
            worker.start()

    def _describe(self, project: Project, device: str = "") -> None:
        model = project.model
        if model.startswith("local-dir:"):
            model = Path(model[len("local-dir:"):]).name
        elif project.pretrained:
            model = f"{model} ({Path(project.pretrained).name})"
        run = self.run_dir.name if self.run_dir else ""
        self.title.setText(f"Training · {project.name}")
        where = device or ("automatic" if project.device == "auto" else project.device)
        self.subtitle.setText(f"{run} · {model} · {len(project.class_names)} classes · "
                              f"device: {where}")

    def set_runs(self, project: Project) -> None:
        """List the project's runs in the run picker, the current one chosen."""
        self.run_picker.set_runs(project.run_dirs(), project.current_run_dir())

    def clear(self) -> None:
        """Forget the shown run (another project was opened): no curves, no buttons."""
        if self.is_busy():
            return
        self.run_dir = None
        self.request = None
        self.control = None
        self.last_finished = None
        self.device = ""
        self.plots.reset()
        self.warnings.clear_warnings()
        self.report = RunReport()
        self.summary.set_time_left(None)
        self._show_report("")
        self.title.setText("Training")
        self.subtitle.setText("No run yet. Set up the project and start the adaptation.")
        self.status.setText("")
        self.stats.setText("")
        self._train_stats = ""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.download_bar.reset()
        self.run_picker.set_runs([], None)
        self._set_state(IDLE)

    def show_run(self, project: Project, run_dir: Path) -> None:
        """Show an existing run (reopened project): its curves, and Resume if it stopped."""
        if self.is_busy():
            return
        from must_engine.training.control import TrainControl

        self.set_runs(project)
        self.run_dir = Path(run_dir)
        self.request = StartRequest(project, self.run_dir, True)
        self.control = TrainControl()
        self.plots.reset(project.class_names)
        steps = self.plots.load_history(self.run_dir)
        self.warnings.clear_warnings()
        self._show_logged_warnings()
        self._describe(project)
        finished = (self.run_dir / "model.safetensors").is_file()
        self.report = read_run_report(self.run_dir)
        self.summary.set_time_left(None)
        self._show_report("finished" if finished else "stopped")
        if finished:
            self.status.setText("This run has finished.")
        elif (self.run_dir / "checkpoint.pt").is_file():
            self.status.setText(f"This run was stopped after {steps} steps; its checkpoint "
                                "is kept. Resume to go on from there.")
        elif describe_run(self.run_dir).state == "failed":
            self.status.setText("This run failed before its first step. Fix the problem in "
                                "Setup, then start again.")
        else:
            self.status.setText("This run has not trained yet. Start again to train it.")
        self.stats.setText("")
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if finished else 0)
        self.progress.setFormat("Finished" if finished else "")
        self._set_state(IDLE)

    def _show_logged_warnings(self) -> None:
        """An earlier run's warnings, from its log (a reopened or resumed run)."""
        if self.run_dir is not None:
            for warning in read_warnings(self.run_dir):
                self.warnings.add(warning)

    def resume_run(self) -> None:
        if self.request is None or self.run_dir is None or self.is_busy():
            return
        self.start(StartRequest(self.request.project, self.run_dir, True))

    # ---- control ---------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.state == PREDICTING:
            self._toggle_predict_pause()
        elif self.state == PAUSED:
            self.resume()
        else:
            self.pause()

    def predict_paused(self) -> bool:
        control = self._predict_control
        return control is not None and control.pause_requested

    def _toggle_predict_pause(self) -> None:
        import time

        control = self._predict_control
        if control is None:
            return
        if control.pause_requested:
            control.resume()
            self._predict_clock.resume(time.monotonic())
            self.status.setText("Classifying every image with the adapted model")
        else:
            control.pause()
            self._predict_clock.pause(time.monotonic())
            self.status.setText("Paused after the current batch of images. Resume when you "
                                "are ready; Stop keeps the adapted model.")
            self.stats.setText(self.stats.text().split("  ·  about")[0])  # no time left now
        self._set_state(PREDICTING)

    def pause(self) -> None:
        if self.control is not None and self.state == TRAINING:
            self.control.pause()
            self.pause_button.setEnabled(False)
            self.status.setText("Pausing after this step…")

    def resume(self) -> None:
        if self.control is not None and self.state == PAUSED:
            self.control.resume()
            self.pause_button.setEnabled(False)

    def stop(self) -> None:
        """Ask the run to stop; it saves a checkpoint and ends by itself."""
        worker = self._train_worker
        if worker is None:
            if self._predict_worker is not None:
                self._predict_worker.cancel()  # also wakes a paused classification
                self.status.setText("Stopping the classification after this batch…")
                self.stop_button.setEnabled(False)
                self.pause_button.setEnabled(False)
            return
        worker.cancel()  # stops the TrainControl; also ends model loading at its next event
        self.status.setText("Stopping after this step and saving a checkpoint…")
        self._set_state(STOPPING)

    # ---- events ----------------------------------------------------------------------------
    def handle_event(self, event: object) -> None:
        if isinstance(event, (TimeEstimate, SettingsProbed, ClassifierScored, ClassifierKept)) \
                or (isinstance(event, RunWarning) and event.kind == BELOW_ZERO_SHOT) \
                or isinstance(event, (RunStarted, RunFinished)):
            self._report_event(event)
        if isinstance(event, StepMetrics):
            self.plots.handle(event)
            self._show_step(event)
        elif isinstance(event, EpochSummary):
            self._train_clock.epoch_ended(time.monotonic())
            self.plots.handle(event)
            self.status.setText(f"Epoch {event.epoch + 1} done in "
                                f"{format_duration(event.seconds)}: "
                                f"{event.confident_fraction:.0%} of pseudo-labels confident, "
                                f"mean confidence {event.mean_confidence:.2f}.")
        elif isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, RunWarning):
            self.warnings.add(event)
        elif isinstance(event, Paused):
            self._train_clock.pause(time.monotonic())
            self._set_state(PAUSED)
            self.status.setText(f"Paused at step {event.step}. Resume when you are ready.")
        elif isinstance(event, Resumed):
            self._train_clock.resume(time.monotonic())
            self._set_state(TRAINING)
            self.status.setText("Training…")
        elif isinstance(event, CheckpointSaved):
            self.status.setText(f"Checkpoint saved at step {event.step}.")
        elif isinstance(event, RunFinished):
            self.last_finished = event
        elif isinstance(event, DownloadProgress):
            self.download_bar.handle(event)
        elif isinstance(event, Status):
            self.status.setText(event.message)
            if event.message.startswith("Probing settings") and self.state == PREPARING:
                self._show_probing(event.message)
        elif isinstance(event, PredictionProgress):
            self._show_prediction(event)

    def _show_probing(self, message: str) -> None:
        """The auto preset's probe, before training: which candidate of how many."""
        if self._report_state != "probing":
            self._show_report("probing")
        match = PROBE_STEP.match(message)
        if match is not None:
            k, n = int(match.group(1)), int(match.group(2))
            self.progress.setRange(0, n)
            self.progress.setValue(k - 1)
            self.progress.setFormat(f"Probing settings: {k} of {n}")

    def _report_event(self, event: object) -> None:
        if isinstance(event, ClassifierScored) and event.kind == "teacher":
            self._train_clock.epoch_scored(time.monotonic())
        if not self.report.handle(event):
            return
        state = self._report_state or "preparing"
        if isinstance(event, RunStarted):
            state = "training"
        elif isinstance(event, RunFinished):
            state = "stopped" if event.stopped else "finished"
        self._show_report(state)

    def _show_report(self, state: str) -> None:
        """The summary cards and the score plot, from ``self.report``."""
        self._report_state = state
        self.summary.show_report(self.report, state=state)
        self.plots.show_scores(self.report)

    def _run_started(self, event: RunStarted) -> None:
        self._train_clock.start(time.monotonic())
        self._resumed_at = event.start_step
        self.download_bar.reset()
        self.device = event.device
        if self.request is not None:
            self._describe(self.request.project, event.device)
        self._total_steps = event.epochs * event.steps_per_epoch
        self._epochs = event.epochs
        if not self.plots.class_names:
            self.plots.reset(event.class_names)
        with contextlib.suppress(Exception):  # the threshold line is a nicety
            from must_engine.runs import open_run

            self.plots.set_threshold(open_run(event.run_dir).settings.conf_threshold)
        self.progress.setRange(0, max(1, self._total_steps))
        self.progress.setValue(event.start_step)
        self.progress.setFormat("%p%")
        where = "Resuming" if event.start_step else "Training"
        self.status.setText(f"{where} on {event.num_images} images, {event.device}…")
        if self.state != STOPPING:
            self._set_state(TRAINING)

    def _show_step(self, m: StepMetrics) -> None:
        done = m.step + 1
        self.progress.setRange(0, max(1, m.total_steps))
        self.progress.setValue(done)
        self.progress.setFormat(f"%p%  ·  step {done} of {m.total_steps}")
        self._train_stats = (f"Epoch {m.epoch + 1} of {max(self._epochs, m.epoch + 1)}  ·  "
                             f"step {m.epoch_step + 1} of {m.steps_per_epoch}  ·  "
                             f"{m.images_per_second:.0f} images/s")
        now = time.monotonic()
        clock = self._train_clock
        score_seconds = clock.score_seconds
        if score_seconds is None:
            score_seconds = estimated_score_seconds(self.report.estimate)
        epochs = max(self._epochs, m.epoch + 1)
        left = time_left(m.eta_seconds, epochs - m.epoch, score_seconds)
        self.stats.setText(f"{self._train_stats}  ·  about {format_duration(left)} left")
        # a resumed run's clock started part-way: it cannot tell the whole run's length
        self.summary.set_time_left(left, clock.elapsed(now) if not self._resumed_at else None)

    def _show_prediction(self, event: PredictionProgress) -> None:
        import time

        self.progress.setRange(0, max(1, event.total))
        self.progress.setValue(event.done)
        self.progress.setFormat(f"Classifying images: {event.done:,} of {event.total:,}")
        measured = self._predict_clock.update(event.done, event.total, time.monotonic())
        if self.predict_paused():
            return
        if measured is None:
            self.stats.setText("Classifying every image · measuring the time left…")
        else:
            rate, left = measured
            self.stats.setText(f"Classifying every image · {rate:.0f} images/s  ·  "
                               f"about {format_duration(left)} left")

    # ---- endings ---------------------------------------------------------------------------
    def _train_succeeded(self, _result: object) -> None:
        finished = self.last_finished
        self.stats.setText(self._train_stats)  # a run that ended has no time left
        stopped = finished is None or finished.stopped
        if stopped:
            step = finished.step if finished else 0
            self.status.setText(f"Stopped at step {step}. The checkpoint is kept: resume "
                                "whenever you like.")
            self.progress.setFormat(f"Stopped at step {step}")
        else:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"Finished in {format_duration(finished.seconds)}")
            self.status.setText("Training finished.")

    def _train_failed(self, message: str, details: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setFormat("Failed")
        self.status.setText(f"Training failed: {message}")
        kept = self.run_dir is not None and (self.run_dir / "checkpoint.pt").is_file()
        box = QMessageBox(QMessageBox.Icon.Critical, "Training failed", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setInformativeText("The last checkpoint is kept; fix the problem and resume."
                               if kept else "Nothing was lost; fix the problem and start again.")
        box.setDetailedText(details)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.open()  # window-modal without a nested event loop
        self.error_box = box
        self.failed.emit(message)

    def _train_cancelled(self) -> None:
        # Stopped while the model was still loading: nothing trained, nothing to keep.
        self.status.setText("Stopped before training began.")
        self.progress.setRange(0, 1)
        self.progress.setFormat("Stopped")

    def _train_finished(self, worker: Worker) -> None:
        self._train_worker = None
        worker.deleteLater()
        finished = self.last_finished
        self._set_state(IDLE)
        if self.run_dir is not None:
            stopped = finished is None or finished.stopped
            self.runEnded.emit(self.run_dir, stopped)
            if not stopped:
                self.compute_results()

    def compute_results(self) -> None:
        """Classify the run's folder with both models, cache it, then hand it on."""
        if self.run_dir is None or self._predict_worker is not None:
            return
        from must_engine.training.control import TrainControl

        device = self.request.project.device if self.request is not None else "auto"
        self._predict_control = TrainControl()
        self._predict_clock = RateClock()
        worker = Worker(predict_task(self.run_dir, device, self._predict_control),
                        name="predict", control=self._predict_control, parent=self)
        worker.event.connect(self.handle_event)
        run_dir = self.run_dir
        worker.succeeded.connect(lambda p: self._predicted(p, run_dir))
        worker.failed.connect(self._predict_failed)
        worker.cancelled.connect(self._predict_cancelled)
        worker.finished.connect(lambda w=worker: self._predict_finished(w))
        self._predict_worker = worker
        self.results_button.hide()
        # The training line ("about 0 s left") does not describe this step: start afresh.
        self.stats.setText("Classifying every image · loading the models…")
        self.progress.setRange(0, 0)
        self.progress.setFormat("Classifying images…")
        self._set_state(PREDICTING)
        worker.start()

    def _predicted(self, predictions, run_dir: Path) -> None:
        self.stats.setText(self._train_stats)  # before the results are handed on
        self.progress.setFormat("Done")
        self.status.setText(f"Classified {len(predictions)} images.")
        # Handed on once the worker has ended (_predict_finished): with the page busy until
        # then, a Start pressed on the results just shown was ignored.
        self._pending_results = (predictions, run_dir)

    def _predict_cancelled(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Classification stopped")
        self.stats.setText("")
        self.status.setText("Classification stopped. The adapted model is saved; “Show "
                            "results” classifies the images again.")

    def _predict_failed(self, message: str, details: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, "Could not classify the images", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setInformativeText("The adapted model is saved; try “Show results” again.")
        box.setDetailedText(details)
        box.open()
        self.error_box = box
        self.failed.emit(message)

    def _predict_finished(self, worker: Worker) -> None:
        self._predict_worker = None
        self._predict_control = None
        # Back to the run's own summary line, without a time left that no longer applies.
        self.stats.setText(self._train_stats)
        worker.deleteLater()
        self._set_state(IDLE)
        pending, self._pending_results = self._pending_results, None
        if pending is not None:
            self.resultsReady.emit(*pending)
