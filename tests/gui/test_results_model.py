"""The results browser's list model and filter proxy: counts, order, 20,000 rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QPersistentModelIndex
from results_testdata import CLASSES, make_predictions

from must_gui.results.prediction_model import (
    FilterState,
    PredictionFilterProxy,
    PredictionListModel,
    Roles,
    SortKey,
)

pytestmark = pytest.mark.gui


def _models(pred):
    model = PredictionListModel()
    model.set_predictions(pred)
    proxy = PredictionFilterProxy()
    proxy.setSourceModel(model)
    return model, proxy


def _shown_items(proxy) -> list[int]:
    return [proxy.index(r, 0).data(Roles.ITEM) for r in range(proxy.rowCount())]


def test_model_rows_and_roles(qapp, tmp_path):
    pred = make_predictions(tmp_path)
    model, proxy = _models(pred)
    assert model.rowCount() == len(pred) == proxy.rowCount()
    labels, conf, changed = pred.labels(), pred.confidences(), pred.changed()
    for row in range(model.rowCount()):
        idx = model.index(row, 0)
        item = idx.data(Roles.ITEM)
        assert idx.data(Roles.PATH) == pred.paths[item]
        assert idx.data(Roles.LABEL) == labels[item]
        assert idx.data(Roles.LABEL_NAME) == CLASSES[labels[item]]
        assert idx.data(Roles.CONFIDENCE) == pytest.approx(conf[item])
        assert idx.data(Roles.ZERO_SHOT_LABEL) == pred.zero_shot_labels()[item]
        assert idx.data(Roles.CHANGED) == bool(changed[item])
        assert idx.data(Roles.ABS_PATH).endswith(pred.paths[item])
        assert idx.data(Roles.THUMBNAIL) is None  # no cache attached
    assert b"label_name" in model.roleNames().values()


def test_filters_give_the_right_counts(qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=10)
    model, proxy = _models(pred)
    labels, conf, changed = pred.labels(), pred.confidences(), pred.changed()
    assert 0 < changed.sum() < len(pred), "test data should have some changed labels"

    proxy.set_class_filter({1})
    assert proxy.rowCount() == int((labels == 1).sum())
    assert all(pred.labels()[i] == 1 for i in _shown_items(proxy))

    proxy.set_class_filter({0, 2})
    assert proxy.rowCount() == int(np.isin(labels, [0, 2]).sum())

    proxy.set_class_filter(None)
    proxy.set_confidence_range(0.5, 0.8)
    assert proxy.rowCount() == int(((conf >= 0.5) & (conf <= 0.8)).sum())

    proxy.set_filter(FilterState(classes=frozenset({3}), min_confidence=0.3,
                                 max_confidence=1.0, changed_only=True))
    want = (labels == 3) & (conf >= 0.3) & changed
    assert proxy.rowCount() == int(want.sum())
    assert sorted(_shown_items(proxy)) == np.flatnonzero(want).tolist()
    assert proxy.item_mask().tolist() == want.tolist()

    proxy.set_filter(FilterState())
    assert proxy.rowCount() == len(pred)


class _CountingProxy(PredictionFilterProxy):
    """Counts filter calls. A subclass, not a patched attribute: a bound method stored on
    the instance makes a reference cycle, and the garbage collector may then free the Qt
    object from whichever thread allocates next (a thumbnail worker), which crashes Qt."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def filterAcceptsRow(self, row, parent):
        self.calls += 1
        return super().filterAcceptsRow(row, parent)


def test_filter_change_invalidates_once(qapp, tmp_path):
    pred = make_predictions(tmp_path)
    model = PredictionListModel()
    model.set_predictions(pred)
    proxy = _CountingProxy()
    proxy.setSourceModel(model)
    proxy.rowCount()  # the mapping exists, as it does once a view shows the proxy
    proxy.calls = 0
    proxy.set_filter(FilterState(classes=frozenset({0}), min_confidence=0.2, changed_only=True))
    proxy.rowCount()
    # One pass over the rows for a change of three criteria.
    assert proxy.calls <= len(pred)
    proxy.calls = 0
    proxy.set_filter(proxy.filter_state)  # no change: no work
    proxy.rowCount()
    assert proxy.calls == 0


def test_sorting_by_confidence_and_name(qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=8)
    model, proxy = _models(pred)
    conf = pred.confidences()

    proxy.set_sort(SortKey.CONFIDENCE, descending=True)
    shown = [conf[i] for i in _shown_items(proxy)]
    assert shown == sorted(shown, reverse=True)

    proxy.set_sort(SortKey.CONFIDENCE, descending=False)
    shown = [conf[i] for i in _shown_items(proxy)]
    assert shown == sorted(shown)

    proxy.set_sort(SortKey.NAME, descending=False)
    names = [pred.paths[i] for i in _shown_items(proxy)]
    assert names == sorted(names, key=str.casefold)

    proxy.set_sort(SortKey.CLASS, descending=True)
    items = _shown_items(proxy)
    keys = [(pred.labels()[i], -conf[i]) for i in items]
    assert keys == sorted(keys)

    # Sorting keeps the filter, and the filter keeps the sort.
    proxy.set_class_filter({2})
    proxy.set_sort(SortKey.CONFIDENCE, descending=True)
    items = _shown_items(proxy)
    assert all(pred.labels()[i] == 2 for i in items)
    assert [conf[i] for i in items] == sorted((conf[i] for i in items), reverse=True)


def test_sorting_keeps_the_selected_image(qapp, tmp_path):
    pred = make_predictions(tmp_path)
    model, proxy = _models(pred)
    idx = proxy.index(3, 0)
    item = idx.data(Roles.ITEM)
    keep = QPersistentModelIndex(idx)
    proxy.set_sort(SortKey.NAME, descending=True)
    assert keep.isValid() and keep.data(Roles.ITEM) == item
    assert proxy.proxy_row_of_item(item) == keep.row()


def test_new_table_resets_and_resorts(qapp, tmp_path):
    pred = make_predictions(tmp_path / "a", per_class=4)
    model, proxy = _models(pred)
    proxy.set_class_filter({0})
    other = make_predictions(tmp_path / "b", per_class=7, seed=3)
    model.set_predictions(other)
    assert proxy.rowCount() == int((other.labels() == 0).sum())
    conf = other.confidences()
    shown = [conf[i] for i in _shown_items(proxy)]
    assert shown == sorted(shown, reverse=True)


def test_zero_shot_only_table(qapp, tmp_path):
    pred = make_predictions(tmp_path, adapted=False)
    model, proxy = _models(pred)
    assert not pred.changed().any()
    proxy.set_changed_only(True)
    assert proxy.rowCount() == 0


def test_twenty_thousand_rows(qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=2, n_rows=20_000, seed=7)
    t0 = time.perf_counter()
    model, proxy = _models(pred)
    assert proxy.rowCount() == 20_000
    labels, conf, changed = pred.labels(), pred.confidences(), pred.changed()

    t1 = time.perf_counter()
    proxy.set_filter(FilterState(classes=frozenset({0, 3}), min_confidence=0.4,
                                 max_confidence=0.9, changed_only=True))
    n = proxy.rowCount()
    t_filter = time.perf_counter() - t1
    want = np.isin(labels, [0, 3]) & (conf >= 0.4) & (conf <= 0.9) & changed
    assert n == int(want.sum())
    assert sorted(_shown_items(proxy)) == np.flatnonzero(want).tolist()

    t2 = time.perf_counter()
    proxy.set_sort(SortKey.CONFIDENCE, descending=False)
    n2 = proxy.rowCount()
    t_sort = time.perf_counter() - t2
    assert n2 == n
    shown = [conf[i] for i in _shown_items(proxy)]
    assert shown == sorted(shown)

    proxy.set_filter(FilterState())
    assert proxy.rowCount() == 20_000
    # Generous bounds (a loaded CI machine): the work is numpy plus one list look-up per
    # row; QSortFilterProxyModel's own sort with a Python lessThan takes about a second.
    assert t_filter < 1.0 and t_sort < 1.0, (t_filter, t_sort)
    assert time.perf_counter() - t0 < 10
