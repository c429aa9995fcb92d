"""One image up close: the picture, top-5 classes after and before adaptation, the
teacher's pseudo-label in the last epoch, and the file's details.

`InspectorPanel` is the side panel of the results page; `InspectorDialog` shows the same
panel larger (Enter or a double-click in the grid), with Left/Right to step through images.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QEvent, QObject, QRectF, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QFontMetrics, QKeyEvent, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QBoxLayout,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from must_engine.images import ImageLoadError, load_thumbnail
from must_engine.predict import Predictions
from must_gui.results.pseudo_labels import PseudoLabel, PseudoLabels
from must_gui.results.thumbnail_cache import pil_to_qimage
from must_gui.results.thumbnail_grid import CHANGED_COLOUR, confidence_colour

PREVIEW_MAX_SIDE = 1600


# --- loading the large picture off the GUI thread ------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    modified: float | None = None
    error: str | None = None


class _PreviewBridge(QObject):
    loaded = Signal(int, object, object)  # token, QImage | None, FileInfo


class _PreviewJob(QRunnable):
    def __init__(self, token: int, path: str, max_side: int, bridge: _PreviewBridge) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._token, self._path, self._max, self._bridge = token, path, max_side, bridge

    def run(self) -> None:
        info = read_file_info(self._path)
        image = None
        if info.error is None:
            try:
                image = pil_to_qimage(load_thumbnail(self._path, self._max))
            except (ImageLoadError, OSError, ValueError) as exc:
                info = FileInfo(info.size_bytes, info.width, info.height, info.format,
                                info.modified, getattr(exc, "reason", str(exc)))
        self._bridge.loaded.emit(self._token, image, info)


def read_file_info(path: str) -> FileInfo:
    """Size, pixel dimensions (from the header only) and modification time."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return FileInfo(error=exc.strerror or "file not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            fmt = im.format
            # Dimensions as shown upright (EXIF orientations 5..8 swap the sides).
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception:  # noqa: BLE001 - any decoder failure just means "no dimensions"
        return FileInfo(st.st_size, modified=st.st_mtime)
    return FileInfo(st.st_size, w, h, fmt, st.st_mtime)


class PreviewLoader(QObject):
    """Loads one picture at a time; only the latest request's result is delivered."""

    loaded = Signal(object, object)  # QImage | None, FileInfo

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._bridge = _PreviewBridge()
        self._bridge.loaded.connect(self._on_loaded)
        self._token = 0

    def load(self, path: str, max_side: int = PREVIEW_MAX_SIDE) -> None:
        self._token += 1
        self._pool.clear()  # drop requests not yet started: the user has moved on
        self._pool.start(_PreviewJob(self._token, path, max_side, self._bridge))

    def _on_loaded(self, token: int, image, info: FileInfo) -> None:
        if token == self._token:
            self.loaded.emit(image, info)

    def wait(self, ms: int = 5000) -> bool:
        return self._pool.waitForDone(ms)


# --- painted widgets -------------------------------------------------------------------------


class ImagePreview(QWidget):
    """A picture scaled to fit, aspect kept, centred; a note while there is none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._note = ""
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_pixmap(self, pixmap: QPixmap | None, note: str = "") -> None:
        self._pixmap = pixmap if pixmap is not None and not pixmap.isNull() else None
        self._note = note
        self.update()

    def pixmap(self) -> QPixmap | None:
        return self._pixmap

    def sizeHint(self) -> QSize:
        return QSize(320, 320)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        bg = QColor(self.palette().color(QPalette.ColorRole.Text))
        bg.setAlpha(14)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bg)
        painter.drawRoundedRect(QRectF(self.rect()), 6, 6)
        pm = self._pixmap
        if pm is not None:
            size = pm.deviceIndependentSize()
            avail = QRectF(self.rect()).adjusted(4, 4, -4, -4)
            scale = min(avail.width() / size.width(), avail.height() / size.height())
            # Small images are shown at most 4x: bigger just shows blur.
            scale = min(scale, 4.0)
            w, h = size.width() * scale, size.height() * scale
            target = QRectF(avail.x() + (avail.width() - w) / 2,
                            avail.y() + (avail.height() - h) / 2, w, h)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawPixmap(target, pm, QRectF(pm.rect()))
        if self._note:
            ink = QColor(self.palette().color(QPalette.ColorRole.Text))
            ink.setAlpha(150)
            painter.setPen(ink)
            painter.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), self._note)
        painter.end()


class ClassBars(QWidget):
    """Horizontal bars: class name, a bar as long as the probability, the percentage."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, float]] = []
        self._highlight: str | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_rows(self, rows: list[tuple[str, float]], highlight: str | None = None) -> None:
        self._rows = list(rows)
        self._highlight = highlight
        self.updateGeometry()
        self.update()

    def rows(self) -> list[tuple[str, float]]:
        return list(self._rows)

    def _line(self) -> int:
        return QFontMetrics(self.font()).height() + 6

    def sizeHint(self) -> QSize:
        return QSize(260, max(1, len(self._rows)) * self._line())

    def minimumSizeHint(self) -> QSize:
        return QSize(160, max(1, len(self._rows)) * self._line())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        fm = QFontMetrics(self.font())
        line = self._line()
        w = self.width()
        name_w = min(int(w * 0.38), max(fm.horizontalAdvance(n) for n, _ in self._rows) + 8) \
            if self._rows else 0
        pct_w = fm.horizontalAdvance("100.0%") + 6
        bar_x = name_w + 4
        bar_w = max(10, w - bar_x - pct_w)
        text = self.palette().color(QPalette.ColorRole.Text)
        track = QColor(text)
        track.setAlpha(28)
        for i, (name, p) in enumerate(self._rows):
            y = i * line
            strong = name == self._highlight
            f = painter.font()
            f.setBold(strong)
            painter.setFont(f)
            painter.setPen(text)
            painter.drawText(QRectF(0, y, name_w, line), int(Qt.AlignmentFlag.AlignVCenter),
                             QFontMetrics(f).elidedText(name, Qt.TextElideMode.ElideRight, name_w))
            bar = QRectF(bar_x, y + line * 0.28, bar_w, line * 0.44)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(track)
            painter.drawRoundedRect(bar, 3, 3)
            fill = confidence_colour(p) if strong else QColor(text)
            if not strong:
                fill.setAlpha(110)
            painter.setBrush(fill)
            painter.drawRoundedRect(QRectF(bar.x(), bar.y(), max(2.0, bar_w * p), bar.height()),
                                    3, 3)
            painter.setPen(text)
            painter.drawText(QRectF(bar_x + bar_w, y, pct_w, line),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                             f"{p:.1%}")
        painter.end()


# --- the panel -------------------------------------------------------------------------------


def _section(title: str) -> QLabel:
    label = QLabel(title)
    f = label.font()
    f.setBold(True)
    label.setFont(f)
    label.setContentsMargins(0, 8, 0, 2)
    return label


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def pseudo_label_text(pseudo: PseudoLabels | None, row: PseudoLabel | None,
                      class_names: list[str]) -> str:
    """One or two plain sentences about what the teacher said in the last epoch."""
    if pseudo is None:
        return "No training record for this run (it has not finished an epoch)."
    if row is None:
        return "This image was not part of the training run."
    if row.label < 0:
        return "The teacher did not see this image in the last epoch."
    name = class_names[row.label] if row.label < len(class_names) else f"class {row.label}"
    verdict = ("above the threshold" if row.passed else "below the threshold")
    used = "trained on this label" if row.passed else "not used for training"
    return (f"{name} at {row.confidence:.1%} (step {pseudo.step}), {verdict} of "
            f"{pseudo.threshold:.0%}: {used}.")


class InspectorPanel(QWidget):
    """Shows one image of a `Predictions` table. Vertical for the side panel, horizontal
    (picture left, details right) for the dialog."""

    imageShown = Signal(int)  # the table row now shown (-1: none)

    def __init__(self, parent: QWidget | None = None, *, horizontal: bool = False) -> None:
        super().__init__(parent)
        self._pred: Predictions | None = None
        self._pseudo: PseudoLabels | None = None
        self._item = -1
        self._abs_path = ""
        self._loader = PreviewLoader(self)
        self._loader.loaded.connect(self._on_loaded)

        self.preview = ImagePreview()
        self.title = QLabel()
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.1)
        self.title.setFont(f)
        self.title.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.after_title = _section("After adaptation")
        self.after_bars = ClassBars()
        self.before_title = _section("Zero-shot (before)")
        self.before_bars = ClassBars()
        self.pseudo_label = QLabel()
        self.pseudo_label.setWordWrap(True)
        self.file_label = QLabel()
        self.file_label.setWordWrap(True)
        self.file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_label.setTextFormat(Qt.TextFormat.PlainText)

        details = QWidget()
        dl = QVBoxLayout(details)
        dl.setContentsMargins(0, 0, 4, 0)
        dl.setSpacing(2)
        dl.addWidget(self.title)
        dl.addWidget(self.verdict)
        dl.addWidget(self.after_title)
        dl.addWidget(self.after_bars)
        dl.addWidget(self.before_title)
        dl.addWidget(self.before_bars)
        dl.addWidget(_section("Teacher in the last epoch"))
        dl.addWidget(self.pseudo_label)
        self._file_title = _section("File")
        dl.addWidget(self._file_title)
        dl.addWidget(self.file_label)
        dl.addStretch(1)
        self._details_layout = dl
        scroll = QScrollArea()
        scroll.setWidget(details)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        direction = (QBoxLayout.Direction.LeftToRight if horizontal
                     else QBoxLayout.Direction.TopToBottom)
        layout = QBoxLayout(direction, self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(10)
        layout.addWidget(self.preview, 3 if horizontal else 5)
        layout.addWidget(scroll, 2 if horizontal else 6)
        if horizontal:
            scroll.setMinimumWidth(320)
        self.clear()

    @property
    def item(self) -> int:
        return self._item

    def add_detail(self, widget: QWidget) -> None:
        """Show ``widget`` among the details, above the file's (the inspector window's
        correction box)."""
        dl = self._details_layout
        dl.insertWidget(dl.indexOf(self._file_title), widget)

    def clear(self) -> None:
        self._item = -1
        self.preview.set_pixmap(None, "Select an image")
        self.title.setText("")
        self.verdict.setText("")
        self.after_bars.set_rows([])
        self.before_bars.set_rows([])
        self.pseudo_label.setText("")
        self.file_label.setText("")
        self.imageShown.emit(-1)

    def set_image(self, predictions: Predictions, item: int,
                  pseudo: PseudoLabels | None = None, thumbnail: QPixmap | None = None) -> None:
        """Show image ``item`` of the table; ``thumbnail`` stands in until the picture loads."""
        self._pred, self._pseudo, self._item = predictions, pseudo, item
        path = predictions.paths[item]
        names = predictions.class_names
        self.title.setText(path.rsplit("/", 1)[-1])
        # One row's argmax, not labels() over the whole table.
        label = int(predictions.final_probs[item].argmax())
        zs = int(predictions.zero_shot_probs[item].argmax())
        conf = float(predictions.final_probs[item, label])
        if predictions.probs is None:
            self.verdict.setText(f"Zero-shot: <b>{names[zs]}</b> {conf:.1%} "
                                 "(the run has not finished adapting)")
        elif label != zs:
            self.verdict.setText(
                f"<b>{names[label]}</b> {conf:.1%} "
                f"<span style='color:{CHANGED_COLOUR.name()}'>— changed from "
                f"{names[zs]} ({predictions.zero_shot_probs[item, zs]:.1%})</span>")
        else:
            self.verdict.setText(f"<b>{names[label]}</b> {conf:.1%} (same as zero-shot)")
        if predictions.probs is not None:
            self.after_title.show()
            self.after_bars.show()
            self.after_bars.set_rows(predictions.top_k(item, 5), names[label])
        else:
            self.after_title.hide()
            self.after_bars.hide()
            self.after_bars.set_rows([])
        self.before_bars.set_rows(predictions.top_k(item, 5, zero_shot=True), names[zs])
        row = pseudo.get(path) if pseudo is not None else None
        self.pseudo_label.setText(pseudo_label_text(pseudo, row, names))
        abs_path = str(Path(predictions.root) / path)
        self.file_label.setText(abs_path)
        self.preview.set_pixmap(thumbnail, "" if thumbnail is not None else "Loading…")
        self._abs_path = abs_path
        self._loader.load(abs_path)
        self.imageShown.emit(item)

    def _on_loaded(self, image, info: FileInfo) -> None:
        if self._item < 0:
            return
        lines = [self._abs_path]
        if info.width:
            lines.append(f"{info.width} × {info.height} pixels"
                         + (f", {info.format}" if info.format else ""))
        if info.size_bytes is not None:
            lines.append(_human_size(info.size_bytes))
        if info.modified is not None:
            stamp = _dt.datetime.fromtimestamp(info.modified).strftime("%Y-%m-%d %H:%M")
            lines.append(f"Modified {stamp}")
        if info.error:
            lines.append(f"Cannot open: {info.error}")
        self.file_label.setText("\n".join(lines))
        if image is not None:
            pm = QPixmap.fromImage(image)
            pm.setDevicePixelRatio(self.devicePixelRatioF())
            self.preview.set_pixmap(pm)
        elif self.preview.pixmap() is None:
            self.preview.set_pixmap(None, "This file cannot be opened.")

    def wait_loaded(self, ms: int = 5000) -> bool:
        """For tests: wait for the picture's worker (its result still needs the event loop)."""
        return self._loader.wait(ms)


class InspectorDialog(QDialog):
    """The inspector in its own window. Left/Right (or the buttons) ask for the previous or
    next image in the grid through `navigate(delta)`."""

    navigate = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Inspect image")
        self.panel = InspectorPanel(self, horizontal=True)
        prev_button = QPushButton("◀ Previous")
        next_button = QPushButton("Next ▶")
        prev_button.setAutoDefault(False)
        next_button.setAutoDefault(False)
        prev_button.clicked.connect(self.previous)
        next_button.clicked.connect(self.next)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(prev_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(next_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.panel, 1)
        layout.addWidget(buttons)
        self.resize(1000, 640)

    # Bound methods, not lambdas, in connections: a lambda holding self keeps the dialog
    # alive through Qt (PySide cannot see that cycle).
    def previous(self) -> None:
        self.navigate.emit(-1)

    def next(self) -> None:
        self.navigate.emit(1)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self._arrow(event):
            super().keyPressEvent(event)

    # The focused child (the scroll area, a button) used to take the arrow keys for itself,
    # so they never reached keyPressEvent: watch the children's keys too.
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        for child in self.findChildren(QWidget):
            child.installEventFilter(self)
        super().showEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.KeyPress and isinstance(watched, QWidget):
            key = event.key()
            editing = isinstance(watched, (QLineEdit, QTextEdit, QPlainTextEdit,
                                           QAbstractSpinBox))
            # Up/Down stay with widgets that use them (a combo's choice, a list).
            choosing = isinstance(watched, (QComboBox, QAbstractItemView)) or isinstance(
                watched.parent(), QAbstractItemView)
            vertical = key in (Qt.Key.Key_Up, Qt.Key.Key_Down)
            if not editing and not (vertical and choosing) and self._arrow(event):
                return True
        return super().eventFilter(watched, event)

    def _arrow(self, event: QKeyEvent) -> bool:
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False
        if event.key() in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.previous()
            return True
        if event.key() in (Qt.Key.Key_Right, Qt.Key.Key_Down):
            self.next()
            return True
        return False
