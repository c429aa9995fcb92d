"""New project in a folder that cannot be written: one sentence naming the project file."""

from __future__ import annotations

import errno
import os
import tempfile

from PySide6.QtWidgets import QMessageBox


def test_new_project_on_a_read_only_drive_names_the_file(window, tmp_path, monkeypatch):
    def mkstemp(suffix=None, prefix=None, dir=None, text=False):  # noqa: A002
        raise OSError(errno.EROFS, os.strerror(errno.EROFS),
                      os.path.join(dir or ".", f"{prefix or ''}x1y2z3{suffix or ''}"))

    shown = []
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(QMessageBox, "warning",
                        lambda _parent, title, text, *a, **k: shown.append((title, text)))
    path = tmp_path / "flowers.mustproj"
    assert window.new_project(path) is None
    assert shown == [("Could not create the project",
                      f"Cannot save the project {path}: the drive is read-only; choose a "
                      "folder you can write to.")]
