"""Predictions out of the app: CSV (the columns of ``must predict``), JSON lines, and the
images sorted into one folder per predicted class (copied or linked), with a mapping CSV.

The user's images are only ever read: sorted folders are built under a temporary name and
renamed into place, and a destination that holds anything is refused.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

from must_engine.events import ExportProgress
from must_engine.export.common import EventSink, ExportError
from must_engine.io_utils import spreadsheet_safe
from must_engine.predict import Predictions

LINK_MODES = ("copy", "symlink", "hardlink")
MAPPING_FILE = "mapping.csv"
MAPPING_COLUMNS = ("file", "source", "label", "confidence")
MAX_NAME = 100  # characters kept of a class name as a folder name
# Filesystems limit a name to 255 bytes (ext4, APFS: UTF-8) or 255 UTF-16 units (NTFS): a
# 90-character CJK name is 270 UTF-8 bytes. Keeping 200 bytes leaves room for "_2"...
MAX_NAME_BYTES = 200
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
# Windows refuses these names, with or without an extension ("con.txt" too).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10)), "conin$", "conout$"}


def _fit_bytes(text: str, limit: int) -> str:
    """The longest prefix of text whose UTF-8 form fits in limit bytes (whole characters)."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def safe_folder_name(name: str) -> str:
    """A class name made usable as one folder name on Windows, macOS and Linux."""
    text = unicodedata.normalize("NFC", name)
    text = _UNSAFE.sub("_", text).strip()
    text = text.rstrip(". ")  # Windows drops trailing dots and spaces
    if text.startswith("."):
        text = "_" + text[1:]  # no hidden folders, no "." or ".."
    text = _fit_bytes(text[:MAX_NAME], MAX_NAME_BYTES).rstrip(". ")
    if not text:
        text = "_"
    if text.split(".")[0].lower() in _RESERVED:
        text = "_" + text
    return text


def class_folder_names(class_names: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    """One distinct safe folder name per class; names that collide after cleaning (or differ
    only in case, which Windows and macOS treat as equal) get ``_2``, ``_3``..."""
    taken = {r.casefold() for r in reserved}
    out = []
    for name in class_names:
        base = safe_folder_name(name)
        candidate, k = base, 2
        while candidate.casefold() in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def _unique_file_name(name: str, taken: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, k = name, 2
    while candidate.casefold() in taken:
        # the source name already fits its filesystem; "_k" must not push it past 255 bytes
        tail = f"_{k}{suffix}"
        candidate, k = _fit_bytes(stem, 255 - len(tail.encode("utf-8"))) + tail, k + 1
    taken.add(candidate.casefold())
    return candidate


def _placer(link: str) -> Callable[[Path, Path], None]:
    if link == "copy":
        return lambda src, dst: shutil.copy2(src, dst)
    if link == "symlink":
        return lambda src, dst: os.symlink(src, dst)
    return lambda src, dst: os.link(src, dst)


def _link_error(link: str, exc: OSError) -> ExportError:
    if link == "hardlink" and exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
        return ExportError("Hard links only work on the same drive as the images (and a "
                           "filesystem that has them); sort with copy or symlink instead.")
    if link == "symlink" and (exc.errno == errno.EPERM or getattr(exc, "winerror", 0) == 1314):
        return ExportError("This system does not allow symbolic links here (on Windows, turn "
                           "on Developer Mode); sort with copy or hardlink instead.")
    return ExportError(f"Could not place an image in the sorted folders ({exc}); check the "
                       "destination's free space and permissions.")


def sort_into_folders(predictions: Predictions, folder: Path, *, link: str = "copy",
                      on_event: EventSink | None = None,
                      should_stop: Callable[[], bool] | None = None) -> dict[str, int]:
    """Fill ``folder`` (empty, usually a staging folder) with one sub-folder per predicted
    class and ``mapping.csv``; returns images per class folder."""
    if link not in LINK_MODES:
        raise ExportError(f"Unknown link mode '{link}'; choose one of {', '.join(LINK_MODES)}.")
    place = _placer(link)
    root = Path(predictions.root).resolve()
    folders = class_folder_names(predictions.class_names, reserved=[MAPPING_FILE])
    labels = predictions.labels()
    conf = predictions.confidences()
    taken: dict[int, set[str]] = {}
    counts: dict[str, int] = {}
    rows = []
    total = len(predictions.paths)
    for i, rel in enumerate(predictions.paths):
        if should_stop is not None and should_stop():
            raise InterruptedError("The export was cancelled.")
        src = root / rel
        if not src.is_file():
            raise ExportError(f"{src} was moved or deleted after the predictions were made; "
                              "predict again, then export.")
        c = int(labels[i])
        sub = folder / folders[c]
        if c not in taken:
            try:
                sub.mkdir()
            except OSError as exc:
                raise ExportError(f"Could not create the class folder {sub.name!r} in "
                                  f"{folder.parent} ({exc.strerror or exc}); check that "
                                  "the destination can be written to.") from exc
            taken[c] = set()
        name = _unique_file_name(src.name, taken[c])
        try:
            place(src, sub / name)
        except OSError as exc:
            raise _link_error(link, exc) from exc
        counts[folders[c]] = counts.get(folders[c], 0) + 1
        rows.append({"file": spreadsheet_safe(f"{folders[c]}/{name}"),
                     "source": spreadsheet_safe(str(src)),
                     "label": spreadsheet_safe(predictions.class_names[c]),
                     "confidence": f"{conf[i]:.6f}"})
        if on_event is not None and ((i + 1) % 100 == 0 or i + 1 == total):
            on_event(ExportProgress("sorting", i + 1, total))
    with (folder / MAPPING_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MAPPING_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return counts
