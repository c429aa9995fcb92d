"""Small previews decoded off the GUI thread as QImage (never QPixmap, which only the GUI
thread may touch); the GUI turns each into a pixmap when it arrives.

Thumbnails of a run's images are shrunk from the engine's decoded-image cache when training,
the preview or prediction left an entry there (`must_engine.image_cache.load_preview`: read,
never filled, and why), else decoded small from the file.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtGui import QImage

from must_engine.image_cache import ImageSource
from must_gui.workers import Task, TaskContext


@dataclass(frozen=True)
class ThumbnailLoaded:
    key: Hashable
    image: QImage  # null when the file could not be decoded


def pil_to_qimage(image) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
    return qimage.copy()  # detach from `data`, which Python frees


def run_thumbnail_source(run_dir: Path | None) -> ImageSource | None:
    """The decoded-image cache a run's images went through, or None (no run, or it cannot be
    read: thumbnails are then decoded from the files)."""
    if run_dir is None:
        return None
    from must_engine.image_cache import run_image_source
    from must_engine.runs import open_run

    try:
        return run_image_source(open_run(run_dir))
    except (OSError, ValueError):  # RunError is a ValueError
        return None


def load_qimage(path: Path, size: int, source: ImageSource | None = None) -> QImage:
    from must_engine.image_cache import load_preview
    from must_engine.images import ImageLoadError

    try:
        return pil_to_qimage(load_preview(path, size, source))
    except (ImageLoadError, OSError):
        return QImage()


def thumbnail_task(items: Sequence[tuple[Hashable, Path]], size: int,
                   source: ImageSource | None = None) -> Task:
    """A worker task yielding a ThumbnailLoaded for each (key, path), in order."""
    items = list(items)

    def run(context: TaskContext) -> Iterator[ThumbnailLoaded]:
        for key, path in items:
            if context.should_stop():
                return
            yield ThumbnailLoaded(key, load_qimage(Path(path), size, source))

    return run
