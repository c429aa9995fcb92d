"""Run engine work on a background thread and hand its events to the GUI thread as signals.

A *task* is a callable taking a ``TaskContext``; it may return a value, or an iterator of
engine events (the trainer is a generator). The ``Worker`` runs it on a ``QThread`` and
re-emits everything from an object that lives on the GUI thread, so every slot, lambdas
included, runs on the GUI thread (queued connections). Exceptions never die on the thread:
they arrive as ``failed(message, traceback)``.

Cancellation is cooperative (Python threads cannot be killed): ``cancel()`` sets a flag the
task polls through ``context.should_stop``, stops a ``TrainControl`` if one was given, and
makes ``context.on_event`` raise ``Cancelled`` so engine calls that only report progress
(model loading, downloads) end at their next event.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot


class Cancelled(Exception):
    """Raised inside a task that was asked to stop."""


class TaskContext:
    """What a task may use from its thread: report events and poll for cancellation."""

    def __init__(self, emit: Callable[[object], None], stop_flag: threading.Event) -> None:
        self._emit = emit
        self._stop = stop_flag

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        if self._stop.is_set():
            raise Cancelled()

    def emit(self, event: object) -> None:
        self._emit(event)

    def on_event(self, event: object) -> None:
        """An engine ``on_event`` sink: forwards the event, then ends the task if asked to."""
        self._emit(event)
        self.check()


Task = Callable[[TaskContext], Any]


class _TaskThread(QThread):
    """Runs the task; its signals are emitted on the worker thread."""

    event = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()

    # Started threads are held here until their Worker hears they ended: if the widget that
    # owns a Worker is deleted first, destroying a running QThread would abort the process.
    # (Released on the GUI thread; a thread whose Worker is gone stays, finished and idle.)
    keep_alive: set[_TaskThread] = set()

    def __init__(self, task: Task, stop_flag: threading.Event, stop_generator: bool,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._task = task
        self._stop = stop_flag
        self._stop_generator = stop_generator

    def run(self) -> None:  # noqa: D401 - QThread API
        context = TaskContext(self.event.emit, self._stop)
        try:
            result = self._task(context)
            if isinstance(result, Iterator):
                for item in result:
                    self.event.emit(item)
                    if self._stop_generator and self._stop.is_set():
                        close = getattr(result, "close", None)
                        if close is not None:
                            close()
                        raise Cancelled()
                result = None
        except (Cancelled, InterruptedError):
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
            message = str(exc).strip() or type(exc).__name__
            self.failed.emit(message, traceback.format_exc())
        else:
            self.succeeded.emit(result)


class Worker(QObject):
    """One background task. Keep a reference to it until ``finished``.

    Signals (all delivered on the GUI thread):
      event(object): each engine event the task reports or yields;
      succeeded(object): the task's return value (None for generators);
      failed(str, str): message and traceback text;
      cancelled(): the task stopped because ``cancel()`` asked it to;
      finished(): always last, once the thread has ended.
    """

    event = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, task: Task, *, name: str = "", control: Any = None,
                 parent: QObject | None = None) -> None:
        """``control``: a ``TrainControl`` the task obeys; ``cancel()`` then stops it and the
        task ends itself (a generator is not closed early, so it can save its state)."""
        super().__init__(parent)
        self.setObjectName(name or "worker")
        self._stop = threading.Event()
        self._control = control
        self._running = False
        self._thread = _TaskThread(task, self._stop, stop_generator=control is None)
        self._thread.setObjectName(self.objectName())
        self._thread.event.connect(self._on_event)
        self._thread.succeeded.connect(self._on_succeeded)
        self._thread.failed.connect(self._on_failed)
        self._thread.cancelled.connect(self._on_cancelled)
        self._thread.finished.connect(self._on_thread_finished)

    @property
    def control(self) -> Any:
        return self._control

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._running:
            raise RuntimeError("This worker is already running.")
        self._running = True
        _TaskThread.keep_alive.add(self._thread)
        self._thread.start()

    def cancel(self) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.stop()

    def is_running(self) -> bool:
        return self._running

    def wait(self, msecs: int) -> bool:
        """Block until the thread ends or ``msecs`` pass. Only for quitting the app."""
        return self._thread.wait(msecs)

    @Slot(object)
    def _on_event(self, item: object) -> None:
        self.event.emit(item)

    @Slot(object)
    def _on_succeeded(self, result: object) -> None:
        self.succeeded.emit(result)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self.failed.emit(message, details)

    @Slot()
    def _on_cancelled(self) -> None:
        self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        self._running = False
        _TaskThread.keep_alive.discard(self._thread)
        self.finished.emit()
