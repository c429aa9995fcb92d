"""Start MUST Studio: ``must-studio`` (or ``python -m must_gui``).

Smoke protocol (packaging/smoke_test.py): with ``MUST_STUDIO_SMOKE=1`` the app prints
``MUST_STUDIO_READY <seconds>`` once the main window is shown (and writes it to
``MUST_STUDIO_SMOKE_FILE`` if set), then quits with exit code 0. Start-up stays fast
because torch and open_clip are imported only when first needed, off the GUI thread.
"""

import time

T0 = time.perf_counter()  # before the Qt and torch imports, so start-up is measured whole

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

SMOKE_ENV = "MUST_STUDIO_SMOKE"
SMOKE_FILE_ENV = "MUST_STUDIO_SMOKE_FILE"
DESKTOP_FILE_NAME = "must-studio"


def _ready_line() -> str:
    return f"MUST_STUDIO_READY {time.perf_counter() - T0:.3f}"


def report_ready(app) -> None:
    """The smoke test's signal: the window is up. Print, write the file, quit with 0."""
    line = _ready_line()
    if sys.stdout is not None:  # a windowed Windows build has no stdout
        print(line, flush=True)
    target = os.environ.get(SMOKE_FILE_ENV)
    if target:
        Path(target).write_text(line + "\n", encoding="utf-8")
    app.quit()


def create_application(argv: list[str]):
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from must_engine.version import __version__
    from must_gui.preferences import APP_NAME, ORGANISATION
    from must_gui.style import app_icon, apply_style

    QCoreApplication.setApplicationName(APP_NAME)
    QCoreApplication.setOrganizationName(ORGANISATION)
    QCoreApplication.setApplicationVersion(__version__)
    QGuiApplication.setDesktopFileName(DESKTOP_FILE_NAME)
    app = QApplication.instance() or QApplication(argv)
    # PySide6 6.12 on Python 3.11 leaks references to None/True until the process aborts;
    # this is a no-op where the bug is absent (see pyside_fix.py).
    from must_gui.pyside_fix import protect_singletons

    protect_singletons()
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())
    apply_style(app)
    return app


# Modules a run needs. Imported once in the background while the user is still on the start
# or setup page: a first import of torch/open_clip/timm holds the GIL for long stretches, and
# when it happened at "Start adaptation" the event loop stalled up to 340 ms (measured with
# tests/bench/bench_gui_training_stall.py).
WARM_UP_MODULES = ("must_engine.training.trainer", "must_engine.predict",
                   "must_engine.export", "must_gui.results.results_page")


def preload_engine() -> None:
    """Import WARM_UP_MODULES, then freeze what is alive for the garbage collector. Blocks;
    the app runs it on a thread (warm_up_engine), benchmarks call it directly."""
    import gc
    import importlib

    for name in WARM_UP_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the real import later reports any problem properly
            logging.getLogger(__name__).debug("warm-up import of %s failed", name,
                                              exc_info=True)
    # The modules, classes and functions of Qt, torch and pyqtgraph live as long as the
    # app: keep the garbage collector from re-scanning them. A full collection over them
    # holds the GIL for ~250 ms, and one fell as each run ended (measured 247-265 ms
    # stalls with tests/bench/bench_gui_training_stall.py --trace).
    gc.freeze()


def warm_up_engine() -> None:
    import threading

    threading.Thread(target=preload_engine, name="engine-warm-up", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Qt aborts (exit 134) on a missing system library or display, naming at most one: check
    # first and say what to install (must_gui/platform_check.py).
    from must_gui.platform_check import qt_start_problem

    problem = qt_start_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    app = create_application(argv)

    from PySide6.QtCore import QTimer

    from must_gui.main_window import MainWindow
    from must_gui.preferences import load_preferences

    window = MainWindow(load_preferences())
    window.show()
    # A project file given on the command line (or by the desktop file) opens at once.
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if paths and os.environ.get(SMOKE_ENV) != "1":
        QTimer.singleShot(0, lambda: window.open_project(Path(paths[0])))
    if os.environ.get(SMOKE_ENV) == "1":
        QTimer.singleShot(0, lambda: report_ready(app))
    else:
        QTimer.singleShot(500, warm_up_engine)
    code = app.exec()
    window.wait_for_workers()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
