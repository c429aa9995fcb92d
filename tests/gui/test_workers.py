"""The background worker: results, events on the GUI thread, errors with tracebacks,
cooperative cancellation."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QCoreApplication, QThread

from must_engine.training.control import TrainControl
from must_gui.workers import Worker

pytestmark = pytest.mark.gui
TIMEOUT = 10_000


def test_result_and_events_arrive_on_the_gui_thread(qtbot):
    worker_threads = []

    def task(context):
        worker_threads.append(threading.get_ident())
        for i in range(5):
            context.emit(i)
        return "done"

    worker = Worker(task, name="t")
    seen, threads = [], []
    results = []
    worker.event.connect(lambda e: (seen.append(e), threads.append(QThread.currentThread())))
    worker.succeeded.connect(results.append)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        worker.start()
    assert results == ["done"]
    assert seen == [0, 1, 2, 3, 4]
    gui = QCoreApplication.instance().thread()
    assert all(t is gui for t in threads)
    assert worker_threads[0] != threading.get_ident()
    assert not worker.is_running()


def test_generator_events_are_emitted_in_order(qtbot):
    worker = Worker(lambda context: iter(["a", "b", "c"]))
    seen = []
    worker.event.connect(seen.append)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        worker.start()
    assert seen == ["a", "b", "c"]


def test_exceptions_become_a_signal_with_the_traceback(qtbot):
    def task(_context):
        raise ValueError("The folder is empty; choose another.")

    worker = Worker(task)
    with qtbot.waitSignal(worker.failed, timeout=TIMEOUT) as failed:
        worker.start()
    message, details = failed.args
    assert message == "The folder is empty; choose another."
    assert "Traceback" in details and "ValueError" in details
    qtbot.waitUntil(lambda: not worker.is_running(), timeout=TIMEOUT)


def test_cancel_stops_a_polling_task(qtbot):
    def task(context):
        while not context.should_stop():
            time.sleep(0.01)
        context.check()

    worker = Worker(task)
    worker.start()
    with qtbot.waitSignal(worker.cancelled, timeout=TIMEOUT):
        worker.cancel()


def test_cancel_ends_an_engine_call_at_its_next_event(qtbot):
    started = threading.Event()

    def engine_call(on_event):
        for i in range(1000):
            on_event(i)
            started.set()
            time.sleep(0.01)
        return "never"

    worker = Worker(lambda context: engine_call(context.on_event))
    got = []
    worker.succeeded.connect(got.append)
    worker.start()
    assert started.wait(5)
    with qtbot.waitSignal(worker.cancelled, timeout=TIMEOUT):
        worker.cancel()
    assert got == []


def test_cancel_with_a_control_lets_the_generator_finish_itself(qtbot):
    control = TrainControl()

    def trainer(_context):
        step = 0
        while not control.stop_requested:
            step += 1
            yield ("step", step)
            time.sleep(0.005)
        yield ("saved", step)  # a trainer saves its checkpoint after the stop request

    worker = Worker(trainer, control=control)
    seen = []
    worker.event.connect(seen.append)
    worker.start()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=TIMEOUT)
    with qtbot.waitSignal(worker.succeeded, timeout=TIMEOUT):
        worker.cancel()
    assert control.stop_requested
    assert seen[-1][0] == "saved"


def test_a_running_thread_survives_its_worker_being_deleted(qtbot):
    release = threading.Event()
    worker = Worker(lambda context: release.wait(5))
    worker.start()
    worker.deleteLater()
    del worker
    qtbot.wait(50)  # the QObject is gone; the thread must not be destroyed while running
    release.set()
    qtbot.wait(100)
