"""The app's disk thumbnail cache stays within its cap (least recently used go first), drops
the .tmp files killed writers left but never one a live writer may still be writing, leaves
files it did not make alone, and scans its folder only now and then, not per thumbnail."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image
from results_testdata import make_predictions

from must_gui.results import thumbnail_cache as tc
from must_gui.results.thumbnail_cache import ThumbnailCache

pytestmark = pytest.mark.gui


def _image() -> Image.Image:
    # Noise, so every entry is a few KiB like a real thumbnail.
    return Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))


def _entries(folder: Path) -> set[str]:
    return {p.stem for p in folder.rglob("*.jpg")}


def _key(i: int) -> str:
    return tc._DiskCache.key(f"/photos/{i}.jpg", os.stat(__file__), 80)


def test_least_recently_used_thumbnails_go_first_down_to_the_cap(qapp, tmp_path):
    disk = tc._DiskCache(tmp_path, 0, max_bytes=10**9)
    keys = [_key(i) for i in range(10)]
    for key in keys:
        disk.write(key, _image())
    # Written one a minute apart, oldest first.
    t0 = time.time() - 3600
    for i, key in enumerate(keys):
        os.utime(disk.file(key), (t0 + 60 * i, t0 + 60 * i))
    assert disk.read(keys[0]) is not None  # the oldest write, but used just now
    sizes = {key: disk.file(key).stat().st_size for key in keys}
    disk.max_bytes = sum(sizes.values()) // 2

    total = disk.prune()

    kept = _entries(tmp_path)
    assert total == sum(sizes[k] for k in kept) <= disk.max_bytes * tc._PRUNE_TO
    assert keys[0] in kept and keys[9] in kept  # just read; newest written
    assert keys[1] not in kept and keys[2] not in kept  # least recently used
    # What goes is always older than what stays (apart from the one just read).
    gone = [i for i, k in enumerate(keys) if k not in kept]
    assert max(gone) < min(i for i, k in enumerate(keys[1:], 1) if k in kept)


def test_stale_tmp_files_go_fresh_ones_and_foreign_files_stay(qapp, tmp_path):
    disk = tc._DiskCache(tmp_path, 0)
    key = _key(1)
    sub = disk.file(key).parent
    sub.mkdir(parents=True)
    stale = sub / f"{key}.111.222.tmp"  # a writer killed long ago
    live = sub / f"{key}.333.444.tmp"  # a writer in another process, mid-write
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"x" * 100)
    old = time.time() - tc._STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    # Files the user keeps in a folder they chose for the cache are never ours to remove.
    foreign = [tmp_path / "notes.tmp", sub / "holiday.tmp", tmp_path / "photos" / "a.jpg"]
    foreign[2].parent.mkdir()
    for f in foreign:
        f.write_bytes(b"mine")
        os.utime(f, (old, old))
    disk.max_bytes = 1  # even over the cap, only cache entries are removed

    disk.prune()

    assert not stale.exists()
    assert live.exists()
    assert all(f.exists() for f in foreign)


def test_the_folder_is_scanned_at_the_first_write_then_every_n_writes(
        qapp, tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "_PRUNE_EVERY_WRITES", 5)
    disk = tc._DiskCache(tmp_path, 0)
    scans: list[int] = []
    real = disk.prune
    monkeypatch.setattr(disk, "prune", lambda: scans.append(1) or real())
    for i in range(11):
        disk.write(_key(i), _image())
    assert len(scans) == 3  # writes 1, 6 and 11
    assert len(_entries(tmp_path)) == 11


def test_the_app_cache_prunes_what_it_writes_to_the_cap(qtbot, qapp, tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "_PRUNE_EVERY_WRITES", 1)
    folder = tmp_path / "thumbs"
    stale = folder / "ab" / ("ab" + "0" * 38 + ".1.2.tmp")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a thumbnail")
    old = time.time() - tc._STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    pred = make_predictions(tmp_path, per_class=3, size=200)
    paths = [str(Path(pred.root) / p) for p in pred.paths]
    cap = 12 * 1024
    cache = ThumbnailCache(120, disk_cache=folder, disk_min_bytes=0, disk_max_bytes=cap,
                           workers=1)
    try:
        got: list[str] = []
        cache.thumbnailsReady.connect(got.extend)
        for path in paths:
            cache.request(path)
        qtbot.waitUntil(lambda: sorted(got) == sorted(paths), timeout=20_000)
        assert cache.wait_idle()
    finally:
        cache.shutdown()
    assert all(not cache.pixmap(p).isNull() for p in paths)  # the cap never costs a thumbnail
    assert not stale.exists()
    files = list(folder.rglob("*.jpg"))
    assert 0 < len(files) < len(paths)
    assert sum(f.stat().st_size for f in files) <= cap
