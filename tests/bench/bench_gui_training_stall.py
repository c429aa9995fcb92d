"""Longest stall of the GUI event loop while the app trains (the demo project).

Not a test: run it, ideally under Xvfb, and read the figures.

    xvfb-run -a -s "-screen 0 1400x900x24" python tests/bench/bench_gui_training_stall.py

A 5 ms QTimer records the gaps between its ticks from "Start adaptation" until the results
are shown (the worker trains, the plots redraw at ~20 Hz, predictions are computed, the
results grid fills). Prints the maximum and 95th percentile gap in milliseconds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

for name in ("MUST_STUDIO_CONFIG_DIR", "MUST_STUDIO_DATA_DIR", "MUST_STUDIO_CACHE_DIR"):
    os.environ[name] = tempfile.mkdtemp()
os.environ["HF_HUB_OFFLINE"] = "1"


def main() -> int:
    import numpy as np
    from PySide6.QtCore import QTimer

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
        app.quit()

    win.training_page.resultsReady.connect(done)
    # As the app does: warm the engine up while the user reads the start page (5 s here).
    QTimer.singleShot(300, warm_up_engine)
    QTimer.singleShot(5000, start)
    QTimer.singleShot(300_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
