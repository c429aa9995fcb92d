"""Small previews decoded off the GUI thread as QImage (never QPixmap, which only the GUI
thread may touch); the GUI turns each into a pixmap when it arrives."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtGui import QImage

from must_gui.workers import Task, TaskContext


@dataclass(frozen=True)
class ThumbnailLoaded:
    key: Hashable
    image: QImage  # null when the file could not be decoded


def pil_to_qimage(image) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels."""
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
    return qimage.copy()  # detach from `data`, which Python frees


def load_qimage(path: Path, size: int) -> QImage:
    from must_engine.images import ImageLoadError, load_thumbnail

    try:
        return pil_to_qimage(load_thumbnail(path, size))
    except (ImageLoadError, OSError):
        return QImage()


def thumbnail_task(items: Sequence[tuple[Hashable, Path]], size: int) -> Task:
    """A worker task yielding a ThumbnailLoaded for each (key, path), in order."""
    items = list(items)

    def run(context: TaskContext) -> Iterator[ThumbnailLoaded]:
        for key, path in items:
            if context.should_stop():
                return
            yield ThumbnailLoaded(key, load_qimage(Path(path), size))

    return run
