"""The thumbnail grid: one QListView in icon mode and one painting delegate.

No widget per thumbnail: the delegate paints every cell, and it asks the model for a
thumbnail only while painting, so only the rows on screen are ever requested.
"""

from __future__ import annotations

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QPoint,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QKeyEvent,
    QPainter,
    QPalette,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolTip,
    QWidget,
)

from must_gui.results.prediction_model import Roles
from must_gui.results.thumbnail_cache import ThumbnailCache

MIN_THUMB, MAX_THUMB, DEFAULT_THUMB = 80, 320, 148
CHANGED_COLOUR = QColor("#e8772e")


def confidence_colour(conf: float) -> QColor:
    """Green when sure, amber when unsure, red when the model is guessing."""
    if conf >= 0.8:
        return QColor("#3f9e5b")
    if conf >= 0.5:
        return QColor("#d39b1f")
    return QColor("#cc4b3c")


class ThumbnailDelegate(QStyledItemDelegate):
    """Paints a cell: thumbnail (or a placeholder), a confidence bar, label and percentage,
    and an orange corner badge when the label changed since zero-shot."""

    PAD = 6
    BAR_H = 4

    def __init__(self, thumb_size: int = DEFAULT_THUMB, parent=None) -> None:
        super().__init__(parent)
        self._thumb = thumb_size
        self._width = 0  # cell width set by the grid to fill its columns (0: natural)
        self._small = QFont()
        self._small.setPointSizeF(max(7.0, self._small.pointSizeF() * 0.85))
        self._bold = QFont()
        self._bold.setBold(True)
        self._small_metrics = QFontMetrics(self._small)
        self._bold_metrics = QFontMetrics(self._bold)
        self._badges: dict[tuple[int, int], QPixmap] = {}
        self._placeholders: dict[tuple, QPixmap] = {}

    @property
    def thumb_size(self) -> int:
        return self._thumb

    def set_thumb_size(self, px: int) -> None:
        self._thumb = int(px)

    def set_cell_width(self, px: int) -> None:
        self._width = int(px)

    def natural_size(self) -> QSize:
        line = QFontMetrics(self._bold).height()
        return QSize(self._thumb + 2 * self.PAD,
                     self.PAD + self._thumb + 5 + self.BAR_H + 3 + line + self.PAD)

    def cell_size(self) -> QSize:
        size = self.natural_size()
        return QSize(max(size.width(), self._width), size.height())

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return self.cell_size()

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        # Paint cost matters at 20,000 images: plain fills for the bar, thumbnails already
        # rounded by the workers, the badge from a cached pixmap. Antialiased shapes only
        # where they show (the selection outline, the placeholder).
        painter.save()
        pal = option.palette
        rect = QRect(option.rect)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        if selected or hovered:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            cell = QRectF(rect).adjusted(1.5, 1.5, -1.5, -1.5)
            if selected:
                hl = QColor(pal.color(QPalette.ColorRole.Highlight))
                fill = QColor(hl)
                fill.setAlpha(60)
                painter.setPen(QPen(hl, 2))
                painter.setBrush(fill)
            else:
                fill = QColor(pal.color(QPalette.ColorRole.Text))
                fill.setAlpha(18)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(fill)
            painter.drawRoundedRect(cell, 6, 6)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)

        t = self._thumb
        box = QRect(rect.x() + (rect.width() - t) // 2, rect.y() + self.PAD, t, t)
        shown = self._paint_thumbnail(painter, box, index.data(Roles.THUMBNAIL), pal)
        if index.data(Roles.CHANGED):
            badge = self._badge(painter.device().devicePixelRatioF())
            size = badge.deviceIndependentSize()
            painter.drawPixmap(QPointF(shown.right() - size.width() - 2, shown.top() + 2), badge)

        conf = float(index.data(Roles.CONFIDENCE) or 0.0)
        bar = QRect(box.x(), box.bottom() + 6, t, self.BAR_H)
        track = QColor(pal.color(QPalette.ColorRole.Text))
        track.setAlpha(35)
        painter.fillRect(bar, track)
        painter.fillRect(QRect(bar.x(), bar.y(), max(2, round(bar.width() * conf)), bar.height()),
                         confidence_colour(conf))

        text_top = bar.bottom() + 3
        text_rect = QRect(box.x(), text_top, t, rect.bottom() - text_top - self.PAD + 2)
        pct = f"{conf:.0%}"
        painter.setFont(self._small)
        pct_w = self._small_metrics.horizontalAdvance(pct) + 2
        text_colour = pal.color(QPalette.ColorRole.Text)
        dim = QColor(text_colour)
        dim.setAlpha(170)
        painter.setPen(dim)
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                         pct)
        painter.setFont(self._bold)
        painter.setPen(text_colour)
        name = str(index.data(Roles.LABEL_NAME) or "")
        name_rect = text_rect.adjusted(0, 0, -pct_w - 4, 0)
        elided = self._bold_metrics.elidedText(name, Qt.TextElideMode.ElideRight,
                                               name_rect.width())
        painter.drawText(name_rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         elided)
        painter.restore()

    def _paint_thumbnail(self, painter: QPainter, box: QRect, pm: QPixmap | None,
                         pal: QPalette) -> QRectF:
        """Draw the thumbnail (or a placeholder) centred in box; returns where it went."""
        if pm is not None and not pm.isNull():
            size = pm.deviceIndependentSize()
            w, h = size.width(), size.height()
            scale = min(box.width() / max(w, 1), box.height() / max(h, 1), 1.0)
            w, h = w * scale, h * scale
            # Centred across, sitting on the bar: a landscape photo stays next to its label.
            target = QRectF(box.x() + (box.width() - w) / 2, box.y() + box.height() - h, w, h)
            if scale < 1.0:  # only while a zoom change waits for new thumbnails
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawPixmap(target, pm, QRectF(pm.rect()))
            return target
        # Placeholder while loading (None) or when the file could not be read (null pixmap);
        # pre-rendered, since a fast scroll paints a screenful of them.
        holder = self._placeholder(pm is None, painter.device().devicePixelRatioF(), pal)
        painter.drawPixmap(box.topLeft(), holder)
        return QRectF(box)

    def _placeholder(self, loading: bool, dpr: float, pal: QPalette) -> QPixmap:
        t = self._thumb
        key = (loading, t, round(dpr * 100), pal.color(QPalette.ColorRole.Text).rgba())
        pm = self._placeholders.get(key)
        if pm is not None:
            return pm
        pm = QPixmap(round(t * dpr), round(t * dpr))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        base = QColor(pal.color(QPalette.ColorRole.Text))
        base.setAlpha(22)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(base)
        inner = QRectF(0, 0, t, t).adjusted(t * 0.06, t * 0.06, -t * 0.06, -t * 0.06)
        p.drawRoundedRect(inner, 6, 6)
        ink = QColor(pal.color(QPalette.ColorRole.Text))
        ink.setAlpha(110)
        p.setPen(ink)
        p.setFont(self._small)
        p.drawText(inner, int(Qt.AlignmentFlag.AlignCenter),
                   "Loading…" if loading else "Cannot open")
        p.end()
        if len(self._placeholders) > 16:
            self._placeholders.clear()
        self._placeholders[key] = pm
        return pm

    def _badge(self, dpr: float) -> QPixmap:
        """The "changed since zero-shot" marker: an orange disc with a "≠" drawn as lines
        (no font needed). Rendered once per size."""
        r = max(7.0, self._thumb * 0.07)
        key = (round(r * 4), round(dpr * 100))
        pm = self._badges.get(key)
        if pm is not None:
            return pm
        side = int(2 * r + 3)
        pm = QPixmap(round(side * dpr), round(side * dpr))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        cx = cy = side / 2
        p.setPen(QPen(QColor(255, 255, 255, 230), 1.5))
        p.setBrush(CHANGED_COLOUR)
        p.drawEllipse(QPointF(cx, cy), r, r)
        pen = QPen(QColor("white"), max(1.3, r * 0.2))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        p.setPen(pen)
        a, gap = r * 0.48, r * 0.24
        p.drawLine(QPointF(cx - a, cy - gap), QPointF(cx + a, cy - gap))
        p.drawLine(QPointF(cx - a, cy + gap), QPointF(cx + a, cy + gap))
        p.drawLine(QPointF(cx - a * 0.45, cy + a), QPointF(cx + a * 0.45, cy - a))
        p.end()
        self._badges[key] = pm
        return pm

    def helpEvent(self, event: QHelpEvent, view: QAbstractItemView,
                  option: QStyleOptionViewItem, index: QModelIndex) -> bool:
        if event.type() == QEvent.Type.ToolTip and index.isValid():
            QToolTip.showText(event.globalPos(), str(index.data(Qt.ItemDataRole.ToolTipRole)),
                              view)
            return True
        return super().helpEvent(event, view, option, index)


class ThumbnailGrid(QListView):
    """Icon-mode list of thumbnails. Enter or a double-click emits `openRequested`; Ctrl+wheel
    (or `set_thumb_size`) zooms."""

    openRequested = Signal(QModelIndex)
    thumbSizeChanged = Signal(int)

    def __init__(self, cache: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cache = cache
        self._delegate = ThumbnailDelegate(DEFAULT_THUMB, self)
        self.setItemDelegate(self._delegate)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionRectVisible(False)
        self.setDragEnabled(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setMouseTracking(True)  # hover highlight
        self.setUniformItemSizes(True)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setWordWrap(False)
        self.doubleClicked.connect(self.openRequested)
        self._apply_thumb_size(DEFAULT_THUMB)
        # After scrolling stops, fetch a screenful below and above at low priority.
        self._prefetch_timer = QTimer(self)
        self._prefetch_timer.setSingleShot(True)
        self._prefetch_timer.setInterval(120)
        self._prefetch_timer.timeout.connect(self._prefetch)
        # A bound method, not a lambda: a lambda holding self would keep the grid alive.
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

    # --- size ----------------------------------------------------------------------------

    @property
    def thumb_size(self) -> int:
        return self._delegate.thumb_size

    def set_thumb_size(self, px: int) -> None:
        px = max(MIN_THUMB, min(MAX_THUMB, int(px)))
        if px != self._delegate.thumb_size:
            self._apply_thumb_size(px)
            self.thumbSizeChanged.emit(px)

    def _apply_thumb_size(self, px: int) -> None:
        self._delegate.set_thumb_size(px)
        dpr = self.devicePixelRatioF()
        self._cache.set_thumb_size(round(px * dpr), dpr)
        self._cache.set_corner_radius(4 * dpr)
        cell = self._delegate.cell_size()
        self.verticalScrollBar().setSingleStep(max(20, cell.height() // 3))
        self._fit_columns()
        self._size_cache()
        self.scheduleDelayedItemsLayout()
        self.viewport().update()

    def _fit_columns(self) -> None:
        """Share the leftover width between the columns, so the grid fills the view
        instead of leaving a ragged strip on the right."""
        cell = self._delegate.natural_size()
        gap = 2 * self.spacing()
        # The icon-mode layout advances by grid width + spacing and wraps a column that
        # touches the right edge, hence the spare pixels.
        width = max(1, self.viewport().width() - self.spacing() - 2)
        step = cell.width() + gap + self.spacing()
        cols = max(1, width // step)
        # Never stretch a column by more than half a cell (a very wide window with one
        # column would look odd); the rest stays on the right.
        col_w = min(width // cols - self.spacing(), cell.width() + gap + cell.width() // 2)
        col_w = max(cell.width() + gap, col_w)
        self._delegate.set_cell_width(col_w - gap)
        size = QSize(col_w, cell.height() + gap)
        if size != self.gridSize():
            self.setGridSize(size)

    def _size_cache(self) -> None:
        # Enough pixmaps for a few screens, so scrolling back is instant; the queue only
        # needs to hold about two screens of requests.
        n = self.cells_per_screen()
        self._cache.set_capacity(max(300, 5 * n))
        self._cache.set_max_pending(max(64, 2 * n))

    def cells_per_screen(self) -> int:
        g = self.gridSize()
        vp = self.viewport().size()
        cols = max(1, vp.width() // max(1, g.width()))
        rows = max(1, -(-vp.height() // max(1, g.height())))
        return cols * (rows + 1)

    # --- what is on screen ---------------------------------------------------------------

    def visible_rows(self) -> range:
        """Model rows whose cells intersect the viewport, in order."""
        model = self.model()
        n = model.rowCount() if model is not None else 0
        if n == 0:
            return range(0)
        vp = self.viewport().rect()
        g = self.gridSize()
        first = -1
        # The top-left point may fall in the spacing between cells; try a few.
        for y in (2, max(2, g.height() // 2)):
            for x in (2, max(2, g.width() // 2)):
                idx = self.indexAt(QPoint(x, y))
                if idx.isValid():
                    first = idx.row()
                    break
            if first >= 0:
                break
        if first < 0:
            return range(0)
        while first > 0 and self.visualRect(model.index(first - 1, 0)).intersects(vp):
            first -= 1
        last = first
        for r in range(first, n):
            rect = self.visualRect(model.index(r, 0))
            if rect.top() > vp.bottom():
                break
            if rect.intersects(vp):
                last = r
        return range(first, last + 1)

    def _on_scrolled(self, _value: int) -> None:
        self._prefetch_timer.start()

    def _prefetch(self) -> None:
        model = self.model()
        rows = self.visible_rows()
        if model is None or not rows:
            return
        n = len(rows)
        ahead = range(rows.stop, min(model.rowCount(), rows.stop + n))
        behind = range(max(0, rows.start - n // 2), rows.start)
        # Low priority: anything painted later still goes first.
        for r in list(reversed(behind)) + list(reversed(ahead)):
            path = model.index(r, 0).data(Roles.ABS_PATH)
            if path:
                self._cache.request(path, low_priority=True)

    # --- events --------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            idx = self.currentIndex()
            if idx.isValid():
                self.openRequested.emit(idx)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        # Typed characters are shortcuts on the results page (1..9 pick a class), not a
        # search by file name.
        return

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            delta = event.angleDelta().y()
            if delta:
                self.set_thumb_size(self.thumb_size + (16 if delta > 0 else -16))
            event.accept()
            return
        super().wheelEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_columns()
        self._size_cache()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        model = self.model()
        if model is not None and model.rowCount() == 0:
            painter = QPainter(self.viewport())
            ink = QColor(self.palette().color(QPalette.ColorRole.Text))
            ink.setAlpha(140)
            painter.setPen(ink)
            painter.drawText(self.viewport().rect(), int(Qt.AlignmentFlag.AlignCenter),
                             self.empty_text)
            painter.end()

    empty_text = "No images match these filters."
