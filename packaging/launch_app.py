"""Entry script of the PyInstaller build: starts the MUST Studio app.

Kept outside the packages so that PyInstaller sees a plain script and the app's own modules
stay importable as a package (relative imports, importlib.resources).
"""

import multiprocessing
import sys


def run() -> int:
    # A frozen app that starts worker processes (torch DataLoader workers use "spawn" on
    # Windows and macOS) must let each child take this path instead of opening a new window.
    multiprocessing.freeze_support()
    from must_gui.app import main

    return main() or 0


if __name__ == "__main__":
    sys.exit(run())
