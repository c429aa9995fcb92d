"""A Qt list model over a `Predictions` table, and the proxy that filters and sorts it.

Everything a filter or a sort needs is computed once per table as numpy arrays. Sorting is a
numpy ``argsort`` applied as a permutation of the source rows (``QSortFilterProxyModel``'s own
sort calls a Python ``lessThan`` n·log n times: about a second at 20,000 rows), and the proxy's
per-row filter test is one list look-up into a mask built with numpy once per change.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)

from must_engine.predict import Predictions
from must_gui.results.thumbnail_cache import ThumbnailCache

_USER = int(Qt.ItemDataRole.UserRole)


class Roles(enum.IntEnum):
    """Custom data roles of `PredictionListModel` (Qt.DisplayRole gives the file name)."""

    ITEM = _USER + 1  # index of the image in the Predictions table
    PATH = _USER + 2  # path relative to the table's root (str)
    ABS_PATH = _USER + 3  # absolute path (str)
    LABEL = _USER + 4  # predicted class index (after adaptation when available)
    LABEL_NAME = _USER + 5
    CONFIDENCE = _USER + 6  # float 0..1
    ZERO_SHOT_LABEL = _USER + 7
    ZERO_SHOT_LABEL_NAME = _USER + 8
    ZERO_SHOT_CONFIDENCE = _USER + 9
    CHANGED = _USER + 10  # bool: the label differs from the zero-shot one
    THUMBNAIL = _USER + 11  # QPixmap; None while loading; a null QPixmap when it cannot load


class SortKey(enum.Enum):
    CONFIDENCE = "confidence"
    NAME = "name"
    CLASS = "class"  # class name, then confidence high to low
    ZERO_SHOT_CONFIDENCE = "zero_shot_confidence"


@dataclass(frozen=True)
class TableArrays:
    """The per-image numbers the browser filters, sorts and paints with."""

    labels: np.ndarray  # int [N]
    confidences: np.ndarray  # float [N]
    zero_shot_labels: np.ndarray
    zero_shot_confidences: np.ndarray
    changed: np.ndarray  # bool [N]

    @classmethod
    def of(cls, p: Predictions) -> TableArrays:
        return cls(p.labels().astype(np.int64), p.confidences().astype(np.float64),
                   p.zero_shot_labels().astype(np.int64),
                   p.zero_shot_confidences().astype(np.float64), p.changed().astype(bool))

    @classmethod
    def empty(cls) -> TableArrays:
        z = np.zeros(0)
        return cls(z.astype(np.int64), z, z.astype(np.int64), z, z.astype(bool))


class PredictionListModel(QAbstractListModel):
    """One row per image. Rows are shown in a *display order* (a permutation of the table)
    set by `set_order`; `Roles.ITEM` maps a row back to the table."""

    orderChanged = Signal()  # emitted after the order is set, before layoutChanged

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._pred: Predictions | None = None
        self._arrays = TableArrays.empty()
        self._order: list[int] = []
        self._order_np = np.zeros(0, dtype=np.int64)
        self._row_of_item = np.zeros(0, dtype=np.int64)
        self._abs_paths: list[str] = []
        self._names: list[str] = []
        self._class_names: list[str] = []
        self._rows_by_abs_path: dict[str, list[int]] | None = None
        self._name_rank: np.ndarray | None = None
        self._cache: ThumbnailCache | None = None

    # --- the table -----------------------------------------------------------------------

    def set_predictions(self, predictions: Predictions | None) -> None:
        self.beginResetModel()
        self._pred = predictions
        if predictions is None:
            self._arrays = TableArrays.empty()
            self._abs_paths, self._names, self._class_names = [], [], []
        else:
            self._arrays = TableArrays.of(predictions)
            # Plain string joins: pathlib costs ~0.2 s for 20,000 paths.
            root = str(Path(predictions.root))
            prefix = root if root.endswith(os.sep) else root + os.sep
            if os.sep == "/":
                self._abs_paths = [prefix + p for p in predictions.paths]
            else:
                self._abs_paths = [prefix + p.replace("/", os.sep) for p in predictions.paths]
            self._names = [p.rsplit("/", 1)[-1] for p in predictions.paths]
            self._class_names = list(predictions.class_names)
        n = len(self._abs_paths)
        self._order_np = np.arange(n, dtype=np.int64)
        self._order = self._order_np.tolist()
        self._row_of_item = self._order_np.copy()
        self._rows_by_abs_path = None
        self._name_rank = None
        self.orderChanged.emit()
        self.endResetModel()

    @property
    def predictions(self) -> Predictions | None:
        return self._pred

    @property
    def arrays(self) -> TableArrays:
        return self._arrays

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def order(self) -> np.ndarray:
        """Table index of each display row."""
        return self._order_np

    def name_rank(self) -> np.ndarray:
        """Position of each image when sorted by path, case-insensitively (computed once)."""
        if self._name_rank is None:
            paths = self._pred.paths if self._pred is not None else []
            order = sorted(range(len(paths)), key=lambda i: paths[i].casefold())
            rank = np.empty(len(paths), dtype=np.int64)
            rank[np.asarray(order, dtype=np.int64)] = np.arange(len(paths), dtype=np.int64)
            self._name_rank = rank
        return self._name_rank

    def item_count(self) -> int:
        return len(self._abs_paths)

    def item_of_row(self, row: int) -> int:
        return self._order[row]

    def row_of_item(self, item: int) -> int:
        return int(self._row_of_item[item])

    def abs_path(self, item: int) -> str:
        return self._abs_paths[item]

    def set_order(self, order: np.ndarray) -> None:
        """Show the table in this order (a permutation of range(N)); keeps the selection."""
        order = np.asarray(order, dtype=np.int64)
        if len(order) != self.item_count():
            raise ValueError("The order must list every image exactly once.")
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        old_items = [self._order[i.row()] for i in persistent]
        self._order_np = order
        self._order = order.tolist()
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order), dtype=np.int64)
        self._row_of_item = inverse
        self.changePersistentIndexList(
            persistent, [self.index(int(inverse[it]), 0) for it in old_items])
        self.orderChanged.emit()
        self.layoutChanged.emit()

    # --- thumbnails ----------------------------------------------------------------------

    def set_thumbnail_cache(self, cache: ThumbnailCache | None) -> None:
        if self._cache is not None:
            self._cache.thumbnailsReady.disconnect(self._on_thumbnails_ready)
        self._cache = cache
        if cache is not None:
            cache.thumbnailsReady.connect(self._on_thumbnails_ready)

    def _on_thumbnails_ready(self, paths: list[str]) -> None:
        if self._rows_by_abs_path is None:
            items: dict[str, list[int]] = {}
            for i, p in enumerate(self._abs_paths):
                items.setdefault(p, []).append(i)  # a list: a table may name a file twice
            self._rows_by_abs_path = items
        roles = [int(Roles.THUMBNAIL), int(Qt.ItemDataRole.DecorationRole)]
        for path in paths:
            for item in self._rows_by_abs_path.get(path, ()):
                idx = self.index(int(self._row_of_item[item]), 0)
                self.dataChanged.emit(idx, idx, roles)

    # --- QAbstractListModel --------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._order)

    def roleNames(self) -> dict[int, bytes]:
        names = dict(super().roleNames())
        names.update({int(r): r.name.lower().encode() for r in Roles})
        return names

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: C901
        if not index.isValid():
            return None
        row = index.row()
        if row >= len(self._order):
            return None
        item = self._order[row]
        a = self._arrays
        role = int(role)
        if role == Roles.THUMBNAIL:
            return None if self._cache is None else self._cache.pixmap(self._abs_paths[item])
        if role == Roles.LABEL_NAME:
            return self._class_names[int(a.labels[item])]
        if role == Roles.CONFIDENCE:
            return float(a.confidences[item])
        if role == Roles.CHANGED:
            return bool(a.changed[item])
        if role == Roles.ITEM:
            return item
        if role == Qt.ItemDataRole.DisplayRole:
            return self._names[item]
        if role == Roles.LABEL:
            return int(a.labels[item])
        if role == Roles.ZERO_SHOT_LABEL:
            return int(a.zero_shot_labels[item])
        if role == Roles.ZERO_SHOT_LABEL_NAME:
            return self._class_names[int(a.zero_shot_labels[item])]
        if role == Roles.ZERO_SHOT_CONFIDENCE:
            return float(a.zero_shot_confidences[item])
        if role == Roles.PATH:
            assert self._pred is not None
            return self._pred.paths[item]
        if role == Roles.ABS_PATH:
            return self._abs_paths[item]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(item)
        return None

    def _tooltip(self, item: int) -> str:
        assert self._pred is not None
        a = self._arrays
        names = self._class_names
        tip = (f"{self._pred.paths[item]}\n{names[int(a.labels[item])]} "
               f"{a.confidences[item]:.1%}")
        if a.changed[item]:
            tip += (f"\nChanged since zero-shot (was {names[int(a.zero_shot_labels[item])]} "
                    f"{a.zero_shot_confidences[item]:.1%})")
        return tip

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren


@dataclass(frozen=True)
class FilterState:
    """What the browser shows. ``classes`` None (or empty) means every class."""

    classes: frozenset[int] | None = None
    min_confidence: float = 0.0
    max_confidence: float = 1.0
    changed_only: bool = False
    items: frozenset[int] | None = None  # only these table rows (a group chosen elsewhere)


class PredictionFilterProxy(QSortFilterProxyModel):
    """Filters a `PredictionListModel` by class set, confidence range and "changed since
    zero-shot", and sorts it (by reordering the source with a numpy permutation).

    Each setter invalidates the filter once; `set_filter` changes several at once.
    """

    filterChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        # Nothing in the table changes after it is set; thumbnails arriving must not re-sort.
        self.setDynamicSortFilter(False)
        self._state = FilterState()
        self._sort = (SortKey.CONFIDENCE, True)
        self._item_mask = np.zeros(0, dtype=bool)
        self._accept_rows: list[bool] = []
        self._source: PredictionListModel | None = None

    # --- wiring --------------------------------------------------------------------------

    def setSourceModel(self, model: PredictionListModel) -> None:  # type: ignore[override]
        if self._source is not None:
            self._source.orderChanged.disconnect(self._on_source_order)
            self._source.modelAboutToBeReset.disconnect(self._on_source_reset)
            self._source.modelReset.disconnect(self._apply_sort)
        self._source = model
        # Connected before the base class connects its own slots, so the mask is ready
        # by the time the proxy rebuilds its mapping.
        model.orderChanged.connect(self._on_source_order)
        model.modelAboutToBeReset.connect(self._on_source_reset)
        self._recompute_mask()
        super().setSourceModel(model)
        # After the base class: it must have taken in a new table before it is re-sorted.
        model.modelReset.connect(self._apply_sort)
        self._apply_sort()

    def source(self) -> PredictionListModel:
        assert self._source is not None
        return self._source

    def _on_source_reset(self) -> None:
        self._item_mask = np.zeros(0, dtype=bool)
        self._accept_rows = []

    def _on_source_order(self) -> None:
        n = self.source().item_count()
        if len(self._item_mask) != n:
            # A new table: the class filter may name classes it does not have.
            self._recompute_mask()
        else:
            self._accept_rows = self._item_mask[self.source().order].tolist()

    # --- filtering -----------------------------------------------------------------------

    @property
    def filter_state(self) -> FilterState:
        return self._state

    def set_filter(self, state: FilterState) -> None:
        if state == self._state:
            return
        # A model reset, not Qt's incremental filter update: un-filtering 20,000 rows as
        # thousands of scattered row insertions costs the view about twice as much as
        # laying out the grid again. Views lose their current index; the page restores it.
        self.beginResetModel()
        self._state = state
        self._recompute_mask()
        self.invalidate()  # drop the proxy's mapping; rebuilt on first use
        self.endResetModel()
        self.filterChanged.emit()

    def set_class_filter(self, classes: set[int] | frozenset[int] | None) -> None:
        self.set_filter(_replace(self._state, classes=frozenset(classes) if classes else None))

    def set_confidence_range(self, low: float, high: float) -> None:
        self.set_filter(_replace(self._state, min_confidence=float(low),
                                 max_confidence=float(high)))

    def set_changed_only(self, on: bool) -> None:
        self.set_filter(_replace(self._state, changed_only=bool(on)))

    def item_mask(self) -> np.ndarray:
        """Which table rows pass the filter (bool [N], table order)."""
        return self._item_mask

    def _recompute_mask(self) -> None:
        src = self._source
        if src is None or src.item_count() == 0:
            self._item_mask = np.zeros(0, dtype=bool)
            self._accept_rows = []
            return
        a, s = src.arrays, self._state
        # A small tolerance so a spin box showing 80.0 % keeps an image at 0.79999997.
        eps = 1e-9
        mask = (a.confidences >= s.min_confidence - eps) & (a.confidences <= s.max_confidence + eps)
        if s.classes:
            mask &= np.isin(a.labels, np.fromiter(s.classes, dtype=np.int64))
        if s.changed_only:
            mask &= a.changed
        if s.items is not None:
            mask &= np.isin(np.arange(len(mask)), np.fromiter(s.items, dtype=np.int64))
        self._item_mask = mask
        self._accept_rows = mask[src.order].tolist()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        rows = self._accept_rows
        return source_row < len(rows) and rows[source_row]

    # --- sorting -------------------------------------------------------------------------

    @property
    def sort_key(self) -> tuple[SortKey, bool]:
        """(key, descending)."""
        return self._sort

    def set_sort(self, key: SortKey, descending: bool = True) -> None:
        self._sort = (key, bool(descending))
        self._apply_sort()

    def _apply_sort(self) -> None:
        src = self._source
        if src is None or src.item_count() == 0:
            return
        src.set_order(sort_order(src, *self._sort))

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Views that call sort() get the confidence order; use `set_sort` for the others."""
        self.set_sort(self._sort[0], order == Qt.SortOrder.DescendingOrder)

    # --- helpers for the page ------------------------------------------------------------

    def item_of(self, proxy_index: QModelIndex) -> int:
        return int(proxy_index.data(Roles.ITEM))

    def proxy_row_of_item(self, item: int) -> int:
        """Row of a table index in this proxy, or -1 when it is filtered out."""
        src = self.source()
        idx = self.mapFromSource(src.index(src.row_of_item(item), 0))
        return idx.row() if idx.isValid() else -1


def sort_order(model: PredictionListModel, key: SortKey, descending: bool) -> np.ndarray:
    """A stable permutation of the table for this sort key (ties keep file-name order)."""
    a = model.arrays
    pred = model.predictions
    n = model.item_count()
    if pred is None or n == 0:
        return np.zeros(0, dtype=np.int64)
    name_rank = model.name_rank()  # every key breaks ties by file name
    if key is SortKey.NAME:
        order = np.argsort(name_rank, kind="stable")
        return order[::-1].copy() if descending else order
    if key is SortKey.CLASS:
        # lexsort: the last key is primary. Classes in list order, confidence within each.
        return np.lexsort((name_rank, -a.confidences if descending else a.confidences,
                           a.labels))
    values = a.confidences if key is SortKey.CONFIDENCE else a.zero_shot_confidences
    return np.lexsort((name_rank, -values if descending else values))


def _replace(state: FilterState, **changes) -> FilterState:
    return dataclasses.replace(state, **changes)
