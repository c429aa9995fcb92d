"""Thumbnail cache and grid: thumbnails arrive off the GUI thread, only for what is on
screen, stale ones are dropped, the disk cache is used, and the delegate paints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, QRect, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QStyleOptionViewItem
from results_testdata import make_predictions

from must_gui.results import thumbnail_cache as tc
from must_gui.results.prediction_model import PredictionFilterProxy, PredictionListModel, Roles
from must_gui.results.thumbnail_cache import ThumbnailCache, default_cache_dir
from must_gui.results.thumbnail_grid import CHANGED_COLOUR, ThumbnailDelegate, ThumbnailGrid
from tests.file_versions import pad_to_same_size, replace_through_new_file, rewrite_in_place

pytestmark = pytest.mark.gui


@pytest.fixture
def cache(qapp):
    c = ThumbnailCache(64, disk_cache=False, workers=2)
    yield c
    c.shutdown()


def _abs(pred, i: int) -> str:
    return str(Path(pred.root) / pred.paths[i])


def test_thumbnails_arrive_as_pixmaps(qtbot, cache, tmp_path):
    pred = make_predictions(tmp_path, per_class=2, size=120)
    paths = [_abs(pred, i) for i in range(len(pred))]
    arrived: list[str] = []
    cache.thumbnailsReady.connect(arrived.extend)
    assert all(cache.pixmap(p) is None for p in paths)  # queued, not ready yet
    qtbot.waitUntil(lambda: len(arrived) == len(paths), timeout=10_000)
    for p in paths:
        pm = cache.pixmap(p)
        assert isinstance(pm, QPixmap) and not pm.isNull()
        assert max(pm.width(), pm.height()) <= 64
    assert sorted(arrived) == sorted(paths)


def test_unreadable_file_gives_null_pixmap(qtbot, cache, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    arrived: list[str] = []
    cache.thumbnailsReady.connect(arrived.extend)
    assert cache.pixmap(str(bad)) is None
    qtbot.waitUntil(lambda: arrived == [str(bad)], timeout=10_000)
    pm = cache.pixmap(str(bad))
    assert pm is not None and pm.isNull()


def test_lifo_newest_request_first(qtbot, qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=3, size=64)
    paths = [_abs(pred, i) for i in range(len(pred))]
    one = ThumbnailCache(32, disk_cache=False, workers=1)
    try:
        order: list[str] = []
        one.thumbnailsReady.connect(order.extend)
        # Hold the single worker's queue: push everything while the lock is taken, so the
        # worker starts on a full queue.
        with one._jobs.lock:
            one._jobs.max_pending = 1000
        for p in paths:
            one._jobs.push(p)
        one._jobs.active = 1
        one._pool.start(tc._Worker(one._jobs, one._bridge, None))
        qtbot.waitUntil(lambda: len(order) == len(paths), timeout=10_000)
        assert order == list(reversed(paths))
    finally:
        one.shutdown()


def test_queue_is_bounded_and_drops_the_oldest(qapp):
    jobs = tc._Jobs(max_pending=3, max_workers=0)
    for i in range(6):
        jobs.push(f"p{i}")
    assert list(jobs.pending) == ["p3", "p4", "p5"]
    jobs.push("p3")  # asked again: moves to the front of the line
    assert jobs.pop()[-1] == "p3"
    jobs.push("low", low_priority=True)
    assert list(jobs.pending)[0] == "low"


def test_old_generation_results_are_dropped(qtbot, cache, tmp_path):
    pred = make_predictions(tmp_path, per_class=2, size=64)
    paths = [_abs(pred, i) for i in range(len(pred))]
    arrived: list[str] = []
    cache.thumbnailsReady.connect(arrived.extend)
    for p in paths:
        cache.request(p)
    assert cache.wait_idle(10_000)  # the workers are done; their results are queued
    cache.clear()  # a new folder before the GUI thread saw them
    qtbot.wait(100)
    assert arrived == [] and len(cache) == 0
    cache.set_thumb_size(48)
    assert cache.generation >= 2


def test_disk_cache_is_written_and_used(qtbot, qapp, tmp_path, monkeypatch):
    monkeypatch.setenv(tc.CACHE_ENV, str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "thumbnails"
    pred = make_predictions(tmp_path, per_class=1, size=200)
    path = _abs(pred, 0)
    first = ThumbnailCache(80, disk_min_bytes=0, workers=1)
    try:
        got: list[str] = []
        first.thumbnailsReady.connect(got.extend)
        first.request(path)
        qtbot.waitUntil(lambda: got == [path], timeout=10_000)
    finally:
        first.shutdown()
    files = list((tmp_path / "cache" / "thumbnails").rglob("*.jpg"))
    assert len(files) == 1

    # A second cache reads it back without decoding the image.
    def no_decode(*_a, **_k):
        raise AssertionError("decoded although a disk thumbnail exists")

    monkeypatch.setattr(tc, "load_preview", no_decode)
    second = ThumbnailCache(80, disk_min_bytes=0, workers=1)
    try:
        got2: list[str] = []
        second.thumbnailsReady.connect(got2.extend)
        second.request(path)
        qtbot.waitUntil(lambda: got2 == [path], timeout=10_000)
        assert not second.pixmap(path).isNull()
    finally:
        second.shutdown()
    # A changed file (new mtime) is not served from the old entry.
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    disk = tc._DiskCache(tmp_path / "cache" / "thumbnails", 0)
    assert disk.read(disk.key(path, os.stat(path), 80)) is None


def _solid_jpeg(path: Path, colour) -> Path:
    from PIL import Image

    Image.new("RGB", (200, 150), colour).save(path, quality=95)
    return path


def _centre(image: QImage) -> tuple[int, int, int]:
    c = image.pixelColor(image.width() // 2, image.height() // 2)
    return c.red(), c.green(), c.blue()


def test_a_file_replaced_under_its_name_never_shows_an_old_disk_thumbnail(qapp, tmp_path):
    """Same name, same length, old mtime put back: through a new file (the inode differs)
    and rewritten in place (the change time differs) -- the rule of the engine's cache."""
    disk = tc._DiskCache(tmp_path / "cache", 0)
    path = _solid_jpeg(tmp_path / "a.jpg", (220, 20, 20))
    blue = _solid_jpeg(tmp_path / "b.jpg", (20, 20, 220))
    green = _solid_jpeg(tmp_path / "c.jpg", (20, 220, 20))
    pad_to_same_size(path, blue)
    pad_to_same_size(path, green)
    pad_to_same_size(blue, green)

    def reddest() -> str:
        r, g, b = _centre(tc.make_thumbnail(str(path), 64, disk))
        return {r: "red", g: "green", b: "blue"}[max(r, g, b)]

    assert reddest() == "red" and reddest() == "red"  # the second from the disk entry
    replace_through_new_file(path, blue)
    assert reddest() == "blue"
    rewrite_in_place(path, green.read_bytes())
    assert reddest() == "green"
    assert len(list((tmp_path / "cache").rglob("*.jpg"))) == 3


def test_a_runs_cached_decodes_make_its_thumbnails(qtbot, qapp, tmp_path, monkeypatch):
    """What training or prediction decoded is shrunk, not decoded again; nothing is added
    to the engine's cache from here."""
    import must_engine.image_cache as ic
    from must_engine.image_cache import ImageSource

    source = ImageSource(256, tmp_path / "decoded")
    pred = make_predictions(tmp_path, per_class=2, size=300)
    paths = [_abs(pred, i) for i in range(len(pred))]
    for p in paths[:-1]:
        source.load(p)
    entries = sorted((tmp_path / "decoded").rglob("*.rgb"))
    decoded: list[str] = []
    real = ic.load_thumbnail
    monkeypatch.setattr(ic, "load_thumbnail", lambda p, s: decoded.append(str(p)) or real(p, s))
    cache = ThumbnailCache(80, disk_cache=False, workers=1)
    cache.set_image_source(source)
    try:
        got: list[str] = []
        cache.thumbnailsReady.connect(got.extend)
        for p in paths:
            cache.request(p)
        qtbot.waitUntil(lambda: len(got) == len(paths), timeout=10_000)
        assert all(max(cache.peek(p).width(), cache.peek(p).height()) == 80 for p in paths)
    finally:
        cache.shutdown()
    assert decoded == [paths[-1]]
    assert sorted((tmp_path / "decoded").rglob("*.rgb")) == entries


def _grid(qtbot, pred, cache, size=(700, 500)):
    model = PredictionListModel()
    model.set_thumbnail_cache(cache)
    model.set_predictions(pred)
    proxy = PredictionFilterProxy()
    proxy.setSourceModel(model)
    grid = ThumbnailGrid(cache)
    grid.setModel(proxy)
    grid.resize(*size)
    qtbot.addWidget(grid)
    grid.show()
    qtbot.waitExposed(grid)
    grid._keep = (model, proxy)  # keep Python references alive for the test
    return grid, model, proxy


def test_grid_shows_all_rows_and_loads_only_visible(qtbot, qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=3, n_rows=3000, size=64, distinct=True)
    cache = ThumbnailCache(64, disk_cache=False, workers=2)
    asked: set[str] = set()
    real_request = cache.request

    def spy(path, **kw):
        asked.add(path)
        real_request(path, **kw)

    cache.request = spy
    try:
        grid, model, proxy = _grid(qtbot, pred, cache)
        assert grid.model().rowCount() == 3000
        qtbot.waitUntil(lambda: len(grid.visible_rows()) > 0, timeout=5000)
        visible = grid.visible_rows()
        assert 0 < len(visible) < 3000
        # Every visible cell gets its thumbnail.
        qtbot.waitUntil(lambda: all(cache.peek(proxy.index(r, 0).data(Roles.ABS_PATH))
                                    is not None for r in grid.visible_rows()), timeout=10_000)
        # Only rows on screen (plus about a screen of prefetch) were ever asked for.
        assert 0 < len(asked) <= 3 * grid.cells_per_screen()
        # Scrolling to the end loads the new screen.
        grid.scrollToBottom()
        qtbot.waitUntil(lambda: 2999 in grid.visible_rows(), timeout=5000)
        qtbot.waitUntil(lambda: cache.peek(proxy.index(2999, 0).data(Roles.ABS_PATH))
                        is not None, timeout=10_000)
        assert len(asked) <= 6 * grid.cells_per_screen()
    finally:
        cache.shutdown()


def test_grid_keyboard_and_open(qtbot, qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=4, size=48)
    cache = ThumbnailCache(64, disk_cache=False, workers=1)
    try:
        grid, model, proxy = _grid(qtbot, pred, cache)
        grid.setFocus()
        grid.setCurrentIndex(proxy.index(0, 0))
        qtbot.keyClick(grid, Qt.Key.Key_Right)
        assert grid.currentIndex().row() == 1
        qtbot.keyClick(grid, Qt.Key.Key_Down)
        cols = grid.viewport().width() // grid.gridSize().width()
        assert grid.currentIndex().row() == 1 + cols
        with qtbot.waitSignal(grid.openRequested, timeout=1000) as sig:
            qtbot.keyClick(grid, Qt.Key.Key_Return)
        assert sig.args[0].row() == 1 + cols
        # Ctrl+wheel is zoom; set_thumb_size clamps and re-sizes the cache.
        grid.set_thumb_size(1000)
        assert grid.thumb_size == 320 and cache.thumb_size >= 320
    finally:
        cache.shutdown()


def _paint_cell(delegate: ThumbnailDelegate, index: QModelIndex) -> QImage:
    size = delegate.cell_size()
    img = QImage(size, QImage.Format.Format_ARGB32)
    img.fill(QColor("white"))
    painter = QPainter(img)
    option = QStyleOptionViewItem()
    option.rect = QRect(0, 0, size.width(), size.height())
    delegate.paint(painter, option, index)
    painter.end()
    return img


def _count(img: QImage, pred) -> int:
    return sum(1 for y in range(0, img.height(), 2) for x in range(0, img.width(), 2)
               if pred(img.pixelColor(x, y)))


def test_delegate_paints_thumbnail_bar_and_changed_marker(qtbot, qapp, tmp_path):
    pred = make_predictions(tmp_path, per_class=4, size=96)
    cache = ThumbnailCache(96, disk_cache=False, workers=1)
    try:
        model = PredictionListModel()
        model.set_thumbnail_cache(cache)
        model.set_predictions(pred)
        delegate = ThumbnailDelegate(96)
        changed = next(i for i in range(len(pred)) if pred.changed()[i])
        same = next(i for i in range(len(pred)) if not pred.changed()[i])

        loading = _paint_cell(delegate, model.index(model.row_of_item(same), 0))
        not_white = _count(loading, lambda c: c != QColor("white"))
        assert not_white > 0  # placeholder, bar and text

        qtbot.waitUntil(lambda: cache.pending_count() == 0 and
                        cache.peek(model.abs_path(same)) is not None, timeout=10_000)
        loaded = _paint_cell(delegate, model.index(model.row_of_item(same), 0))
        # The made-up photos have dark noisy backgrounds: the thumbnail shows up as dark.
        dark = _count(loaded, lambda c: c.lightness() < 90)
        assert dark > _count(loading, lambda c: c.lightness() < 90) + 200

        def orange(c: QColor) -> bool:
            return (abs(c.red() - CHANGED_COLOUR.red()) < 30 and
                    abs(c.green() - CHANGED_COLOUR.green()) < 30 and
                    abs(c.blue() - CHANGED_COLOUR.blue()) < 30)

        marked = _paint_cell(delegate, model.index(model.row_of_item(changed), 0))
        assert _count(marked, orange) > 3
        assert _count(loaded, orange) == 0
    finally:
        cache.shutdown()
