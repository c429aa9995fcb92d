"""Longest stall of the GUI event loop while the app trains (the demo project).

Not a test: run it, ideally under Xvfb, and read the figures.

    xvfb-run -a -s "-screen 0 1400x900x24" python tests/bench/bench_gui_training_stall.py

A 5 ms QTimer records the gaps between its ticks from "Start adaptation" until the results
are shown (the worker trains, the plots redraw at ~20 Hz, predictions are computed, the
results grid fills). Prints the maximum and 95th percentile gap in milliseconds.

``--trace``: a sampler thread also records every thread's innermost frames every 10 ms and
prints those around the worst stalls, with garbage collections over 20 ms and resizes of
the plot area (to find their cause).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

for name in ("MUST_STUDIO_CONFIG_DIR", "MUST_STUDIO_DATA_DIR", "MUST_STUDIO_CACHE_DIR"):
    os.environ[name] = tempfile.mkdtemp()
os.environ["HF_HUB_OFFLINE"] = "1"


def main() -> int:
    import numpy as np
    from PySide6.QtCore import QEvent, QObject, QTimer
    from slow_gc import SlowCollections  # beside this script

    from must_gui.app import create_application, warm_up_engine
    from must_gui.main_window import MainWindow
    from must_gui.preferences import load_preferences

    app = create_application(sys.argv[:1])
    win = MainWindow(load_preferences())
    win.resize(1400, 900)
    win.show()
    gaps: list[float] = []
    stamps: list[float] = []
    state = {"last": None, "t0": None}
    ticker = QTimer()
    ticker.setInterval(5)

    def tick() -> None:
        now = time.perf_counter()
        if state["last"] is not None:
            gaps.append((now - state["last"]) * 1000)
            stamps.append(now - state["t0"])
        state["last"] = now

    ticker.timeout.connect(tick)
    snapshots: list[tuple[float, str]] = []  # (seconds since start, stacks)
    gui_thread = threading.get_ident()

    def watchdog() -> None:
        # Every 10 ms, the innermost frames of every other thread. A thread that holds the GIL
        # also stops this one, so a stall shows as a gap here too: the samples on either side
        # of it say who held the GIL and where.
        while not state.get("done"):
            time.sleep(0.01)
            if state["t0"] is None:
                continue
            frames = sys._current_frames()
            text = "\n".join(
                f"  [{'GUI' if tid == gui_thread else 'worker'}] "
                + " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                              for f in reversed(traceback.extract_stack(frame)[-6:]))
                for tid, frame in frames.items() if tid != threading.get_ident())
            snapshots.append((time.perf_counter() - state["t0"], text))

    resizes: list[str] = []

    class ResizeLog(QObject):
        # A resized plot area redraws every plot from scratch: worth knowing when it happens.
        def eventFilter(self, obj, event):  # noqa: N802 - Qt API
            if event.type() == QEvent.Type.Resize and state["t0"] is not None:
                resizes.append(f"{time.perf_counter() - state['t0']:.2f} s "
                               f"{event.oldSize().toTuple()} -> {event.size().toTuple()}")
            return False

    resize_log = ResizeLog()
    slow_gc = SlowCollections()

    if "--trace" in sys.argv:
        slow_gc.install()
        threading.Thread(target=watchdog, daemon=True).start()
        win.training_page.plots.installEventFilter(resize_log)

    def start() -> None:
        win.open_demo()
        QTimer.singleShot(2000, begin)

    def begin() -> None:
        state["t0"] = time.perf_counter()
        ticker.start()
        win.setup_page.request_start()

    def done(*_args) -> None:
        state["results_at"] = time.perf_counter() - state["t0"]
        QTimer.singleShot(2000, finish)  # let the results grid paint its first thumbnails

    def finish() -> None:
        ticker.stop()
        g = np.array(gaps)
        print(f"training + predictions + results: {time.perf_counter() - state['t0']:.0f} s, "
              f"{len(g)} ticks; longest stall {g.max():.1f} ms, p95 {np.percentile(g, 95):.1f}"
              f" ms, p99 {np.percentile(g, 99):.1f} ms")
        worst = np.argsort(-g)[:5]
        print(f"results signalled at {state.get('results_at', float('nan')):.1f} s; worst "
              "stalls (ms at s): " + ", ".join(f"{g[i]:.0f}@{stamps[i]:.1f}" for i in worst))
        state["done"] = True
        during = [(at, gen, ms) for at, gen, ms in slow_gc.seen if at >= state["t0"]]
        if during:
            print("garbage collections over 20 ms: " + "; ".join(
                f"gen {gen} at {at - state['t0']:.2f} s took {ms:.0f} ms"
                for at, gen, ms in during))
        if resizes:
            print("plot area resized at: " + "; ".join(resizes))
        for i in np.argsort(-g)[:3]:
            if g[i] < 60:
                break
            end = stamps[i]
            begin = end - g[i] / 1000
            print(f"\n==== stall of {g[i]:.0f} ms, {begin:.2f}-{end:.2f} s; samples around it:")
            for at, text in snapshots:
                if begin - 0.03 <= at <= end + 0.01:
                    print(f"{at:.3f} s\n{text}")
        app.quit()

    win.training_page.resultsReady.connect(done)
    # As the app does: warm the engine up while the user reads the start page (5 s here).
    QTimer.singleShot(300, warm_up_engine)
    QTimer.singleShot(5000, start)
    QTimer.singleShot(300_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
