"""What the app does at start-up to stay responsive later (see must_gui/app.py)."""

from __future__ import annotations

import gc
import sys
import time

import pytest

from must_gui.app import WARM_UP_MODULES, warm_up_engine

pytestmark = pytest.mark.gui


def test_warm_up_imports_the_engine_and_freezes_long_lived_objects():
    gc.unfreeze()
    try:
        warm_up_engine()
        deadline = time.monotonic() + 60
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Frozen objects are skipped by full collections: one over all of Qt, torch and
        # pyqtgraph held the GIL ~250 ms as each run ended.
        assert gc.get_freeze_count() > 10_000
        assert all(name in sys.modules for name in WARM_UP_MODULES)
    finally:
        gc.unfreeze()

