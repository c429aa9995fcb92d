"""Keep ``None``, ``True`` and ``False`` alive despite a PySide6 reference-count bug.

With PySide6 6.12.0 on Python 3.11, two common paths drop a reference they never took:

- a Python override called from C++ that returns ``None`` (``QAbstractItemModel.data`` for a
  role it does not serve, any slot) takes one reference from ``None``;
- ``SignalInstance.emit`` returns ``True`` without a reference, taking one from ``True``.

A GUI does this thousands of times a second; the count reaches zero within seconds and the
interpreter aborts ("none_dealloc: deallocating None" / "bool_dealloc"). From Python 3.12
these objects are immortal and nothing happens.

`protect_singletons()` checks whether the installed PySide has the bug and, if so, gives
the three singletons a reference count so large it cannot run out (they are never freed
anyway). Call it once, early, after creating the QApplication; it is cheap and idempotent.
"""

from __future__ import annotations

import ctypes
import sys

# 2**40 lost references is years of emits; the low 32 bits stay as they were, so the
# same code is harmless on an interpreter with immortal objects.
_HEADROOM = 1 << 40
_done = False


def _probe_leaks() -> bool:
    from PySide6.QtCore import QAbstractListModel, QObject, Qt, Signal

    class _Model(QAbstractListModel):
        def rowCount(self, parent=None):
            return 1

        def data(self, index, role=Qt.ItemDataRole.DisplayRole):
            return None

    class _Emitter(QObject):
        ping = Signal()

    model, emitter = _Model(), _Emitter()
    index = model.index(0, 0)
    tries = 64
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(tries):
        index.data(Qt.ItemDataRole.DisplayRole)  # C++ calls the Python data()
        emitter.ping.emit()
    lost_none = none_before - sys.getrefcount(None)
    lost_true = true_before - sys.getrefcount(True)
    # Other threads may hold or drop references meanwhile: count it a leak when it is
    # about one per call.
    return lost_none >= tries // 2 or lost_true >= tries // 2


def protect_singletons() -> bool:
    """Apply the protection if this PySide needs it; True when it was applied (now or
    before)."""
    global _done
    if _done:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not _probe_leaks():
        return False
    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM
    _done = True
    return True
