"""The first screen: new project, open a project, the offline demo, and recent projects."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from must_gui.style import app_icon

PATH_ROLE = Qt.ItemDataRole.UserRole
DETAIL_ROLE = Qt.ItemDataRole.UserRole + 1


class RecentItemDelegate(QStyledItemDelegate):
    """Two lines per project: the name in bold, its folder and last change in grey."""

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802 - Qt API
        line = option.fontMetrics.height()
        return QSize(option.rect.width(), 2 * line + 18)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""  # the background and focus come from the style; the text from here
        style = opt.widget.style() if opt.widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        enabled = bool(index.flags() & Qt.ItemFlag.ItemIsEnabled)
        rect = option.rect.adjusted(12, 8, -12, -8)
        line = option.fontMetrics.height()
        painter.save()
        bold = QFont(option.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.setPen(QColor("#101828" if enabled else "#98a2b3"))
        painter.drawText(rect.adjusted(0, 0, 0, -line), Qt.AlignmentFlag.AlignLeft
                         | Qt.AlignmentFlag.AlignTop, index.data(Qt.ItemDataRole.DisplayRole))
        painter.setFont(option.font)
        painter.setPen(QColor("#667085" if enabled else "#b42318"))
        detail = option.fontMetrics.elidedText(index.data(DETAIL_ROLE) or "",
                                               Qt.TextElideMode.ElideMiddle, rect.width())
        painter.drawText(rect.adjusted(0, line + 2, 0, 0), Qt.AlignmentFlag.AlignLeft
                         | Qt.AlignmentFlag.AlignTop, detail)
        painter.restore()


class StartPage(QWidget):
    """Signals: newRequested(), openRequested(), demoRequested(), recentRequested(path)."""

    newRequested = Signal()
    openRequested = Signal()
    demoRequested = Signal()
    recentRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(QSize(72, 72)))
        title = QLabel("MUST Studio")
        title.setObjectName("pageTitle")
        tagline = QLabel("Build an image classifier with no labels: name the classes, and "
                         "MUST adapts a CLIP model to your own photos.")
        tagline.setObjectName("pageSubtitle")
        tagline.setWordWrap(True)
        heading = QVBoxLayout()
        heading.addWidget(title)
        heading.addWidget(tagline)
        top = QHBoxLayout()
        top.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        top.addSpacing(12)
        top.addLayout(heading, 1)

        self.new_button = QPushButton("&New project…")
        self.new_button.setObjectName("primary")
        self.new_button.setToolTip("Start a project for a folder of photos (Ctrl+N)")
        self.open_button = QPushButton("&Open project…")
        self.open_button.setToolTip("Open a .mustproj file (Ctrl+O)")
        self.demo_button = QPushButton("Open &demo project")
        self.demo_button.setToolTip("A small offline example: made-up photos and a tiny model")
        for b in (self.new_button, self.open_button, self.demo_button):
            b.setMinimumHeight(40)
        self.new_button.clicked.connect(self.newRequested)
        self.open_button.clicked.connect(self.openRequested)
        self.demo_button.clicked.connect(self.demoRequested)
        actions = QHBoxLayout()
        actions.addWidget(self.new_button)
        actions.addWidget(self.open_button)
        actions.addWidget(self.demo_button)
        actions.addStretch(1)

        recent_title = QLabel("<b>Recent projects</b>")
        recent_title.setTextFormat(Qt.TextFormat.RichText)
        self.recent_list = QListWidget()
        self.recent_list.setObjectName("recentList")
        self.recent_list.setAccessibleName("Recent projects")
        self.recent_list.setItemDelegate(RecentItemDelegate(self.recent_list))
        self.recent_list.itemActivated.connect(self._activated)
        self.recent_empty = QLabel("Projects you open or create are listed here.")
        self.recent_empty.setObjectName("hint")
        recent_title.setBuddy(self.recent_list)

        column = QVBoxLayout()
        column.setSpacing(14)
        column.addLayout(top)
        column.addSpacing(8)
        column.addLayout(actions)
        column.addSpacing(16)
        column.addWidget(recent_title)
        column.addWidget(self.recent_empty)
        column.addWidget(self.recent_list)
        column.addStretch(1)
        holder = QWidget()
        holder.setMaximumWidth(860)
        holder.setLayout(column)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(40, 36, 40, 28)
        layout.addWidget(holder, 1)
        layout.addStretch(0)
        QShortcut(QKeySequence("Ctrl+R"), self, activated=self.recent_list.setFocus)

    def set_recent(self, paths: list[str]) -> None:
        import datetime as _dt

        self.recent_list.clear()
        for text in paths:
            path = Path(text)
            exists = path.is_file()
            detail = str(path.parent)
            if exists:
                changed = _dt.datetime.fromtimestamp(path.stat().st_mtime)
                detail += f"  ·  changed {changed:%d %b %Y, %H:%M}"
            else:
                detail += "  ·  missing"
            item = QListWidgetItem(path.stem)
            item.setData(PATH_ROLE, text)
            item.setData(DETAIL_ROLE, detail)
            item.setToolTip(text)
            if not exists:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.recent_list.addItem(item)
        has = self.recent_list.count() > 0
        rows = self.recent_list.count()
        row_height = self.recent_list.sizeHintForRow(0) if has else 0
        self.recent_list.setFixedHeight(min(460, rows * row_height + 12))
        self.recent_list.setVisible(has)
        self.recent_empty.setVisible(not has)
        if has:
            self.recent_list.setCurrentRow(0)

    def set_demo_available(self, available: bool) -> None:
        self.demo_button.setEnabled(available)
        if not available:
            self.demo_button.setToolTip("The demo files are not part of this installation.")

    def recent_paths(self) -> list[str]:
        return [self.recent_list.item(i).data(PATH_ROLE) for i in range(self.recent_list.count())]

    def _activated(self, item: QListWidgetItem) -> None:
        path = item.data(PATH_ROLE)
        if path and item.flags() & Qt.ItemFlag.ItemIsEnabled:
            self.recentRequested.emit(path)

