"""Offline check: the app opens, "Open demo project" trains, and the results show.

Run under Xvfb (no network needed):

    xvfb-run -a -s "-screen 0 1400x900x24" python tools/demo_offline_check.py OUTDIR

writes demo-setup.png, demo-training.png and demo-results.png into OUTDIR (or
demo-timeout.png if no results came within four minutes), using throwaway settings folders.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

for name in ("MUST_STUDIO_CONFIG_DIR", "MUST_STUDIO_DATA_DIR", "MUST_STUDIO_CACHE_DIR"):
    os.environ[name] = tempfile.mkdtemp()
os.environ["HF_HUB_OFFLINE"] = "1"


def main(out: str) -> int:
    from PySide6.QtCore import QTimer

    from must_gui.app import create_application
    from must_gui.main_window import MainWindow
    from must_gui.preferences import load_preferences

    app = create_application(sys.argv[:1])
    win = MainWindow(load_preferences())
    win.resize(1400, 900)
    win.show()
    started = time.monotonic()

    def shot(name: str) -> None:
        win.grab().save(os.path.join(out, f"{name}.png"))

    def open_demo() -> None:
        win.open_demo()
        QTimer.singleShot(3000, start)

    def start() -> None:
        shot("demo-setup")
        win.setup_page.request_start()
        QTimer.singleShot(5000, lambda: shot("demo-training"))
        QTimer.singleShot(240_000, timeout)

    def timeout() -> None:
        shot("demo-timeout")
        app.quit()

    def results(*_args) -> None:
        print(f"results after {time.monotonic() - started:.0f} s")
        QTimer.singleShot(3000, lambda: (shot("demo-results"), app.quit()))

    win.training_page.resultsReady.connect(results)
    QTimer.singleShot(500, open_demo)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
