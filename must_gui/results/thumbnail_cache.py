"""Thumbnails for the results grid: decoded off the GUI thread, newest request first.

- Workers (a small private ``QThreadPool``) decode with `must_engine.images.load_thumbnail`
  (JPEG draft decoding, EXIF orientation) into a ``QImage``; only the GUI thread turns it into
  a ``QPixmap`` (pixmaps are not thread-safe).
- The queue is LIFO: the rows just painted are what the user is looking at, so they render
  first; it is bounded, and the oldest requests (rows scrolled past) are dropped.
- A generation number is bumped for a new folder or thumbnail size; work finished for an old
  generation is thrown away.
- An optional disk cache of small JPEGs makes a second visit to a folder of large photos
  cheap. Its key is the path, the file's identity (`must_engine.image_cache.file_identity`,
  the same rule as the engine's decoded-image cache: a file replaced under the same name is
  never shown from an old entry) and the thumbnail size. It is capped in bytes (least
  recently used thumbnails go first) and drops the ``.tmp`` files that writers killed
  mid-write leave behind; both in one folder scan, at the first write of a session and then
  every few hundred writes, never on every thumbnail.
- Before decoding, a run's images are looked up in the engine's decoded-image cache (read
  only: `must_engine.image_cache.load_preview` says why it is never filled from here).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import QObject, QRectF, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QBrush, QImage, QPainter, QPixmap

from must_engine.image_cache import ImageSource, file_identity, load_preview
from must_engine.images import ImageLoadError
from must_gui.thumbnails import pil_to_qimage

CACHE_ENV = "MUST_STUDIO_CACHE_DIR"
APP_NAME = "MUST Studio"
# A 160-px thumbnail at quality 88 is ~7 KiB, so 300 MiB holds ~44,000 of them: a few big
# photo folders at the default size, or one at every zoom step, for under a tenth of the
# decoded-image cache beside it (4 GB).
DEFAULT_DISK_MAX_BYTES = 300 * 1024**2
# A folder scan (the cap and stale files) runs at the first write of a session and then
# after this many writes (~3.5 MB at 7 KiB, about 1 % of the cap: the overshoot between
# scans), so a thumbnail never pays for a scan of the whole folder.
_PRUNE_EVERY_WRITES = 500
# Pruning goes down to this share of the cap, so it does not run again at the next scan.
_PRUNE_TO = 0.9
# A writer saves ~7 KiB and renames it within milliseconds; a .tmp file this old was left by
# a killed writer. Generous, so a writer in another process stalled by a suspended laptop or
# a slow network drive is never cut off (if one were, its rename fails and it only loses
# that one thumbnail).
_STALE_TMP_SECONDS = 15 * 60


def default_cache_dir() -> Path:
    """Where disk thumbnails go: $MUST_STUDIO_CACHE_DIR/thumbnails, else the user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "thumbnails"
    import appdirs

    return Path(appdirs.user_cache_dir(APP_NAME, appauthor=False)) / "thumbnails"


def default_workers() -> int:
    # Pillow releases the GIL while decoding, but the GUI thread needs a core too.
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _Jobs:
    """The request queue shared by the GUI thread and the workers (all under one lock)."""

    def __init__(self, max_pending: int, max_workers: int) -> None:
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, None] = OrderedDict()  # newest last
        self.inflight: set[str] = set()
        self.generation = 0
        self.size = 0
        self.radius = 0.0  # rounded corners, device pixels
        self.source: ImageSource | None = None  # the run's decoded-image cache, read only
        self.max_pending = max_pending
        self.max_workers = max_workers
        self.active = 0
        self.stopped = False

    def push(self, path: str, *, low_priority: bool = False) -> bool:
        """Queue a path; True when a new worker should be started."""
        with self.lock:
            if self.stopped or path in self.inflight:
                return False
            if path in self.pending:
                if not low_priority:
                    self.pending.move_to_end(path)
            else:
                self.pending[path] = None
                if low_priority:
                    self.pending.move_to_end(path, last=False)
                while len(self.pending) > self.max_pending:
                    self.pending.popitem(last=False)  # the oldest: long scrolled out of view
            if self.active < self.max_workers and self.pending:
                self.active += 1
                return True
            return False

    def pop(self) -> tuple[int, int, float, ImageSource | None, str] | None:
        """The newest request, or None (and this worker counts as finished)."""
        with self.lock:
            if self.stopped or not self.pending:
                self.active -= 1
                return None
            path, _ = self.pending.popitem(last=True)
            self.inflight.add(path)
            return self.generation, self.size, self.radius, self.source, path

    def done(self, path: str) -> None:
        with self.lock:
            self.inflight.discard(path)

    def reset(self, size: int) -> None:
        with self.lock:
            self.generation += 1
            self.size = size
            self.pending.clear()
            self.inflight.clear()


class _Bridge(QObject):
    """Carries results from the workers to the GUI thread (queued: it lives there).

    Kept separate from the cache and referenced by every worker, so a worker finishing
    after the cache is gone emits into a live object instead of a deleted one."""

    delivered = Signal(int, str, QImage, bool)  # generation, path, image, ok


class _Worker(QRunnable):
    def __init__(self, jobs: _Jobs, bridge: _Bridge, disk: _DiskCache | None) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._jobs, self._bridge, self._disk = jobs, bridge, disk

    def run(self) -> None:
        while True:
            job = self._jobs.pop()
            if job is None:
                return
            generation, size, radius, source, path = job
            if generation != self._jobs.generation:
                self._jobs.done(path)
                continue
            image = make_thumbnail(path, size, self._disk, source)
            if image is not None and radius > 0:
                # Done here, not when painting: clipping every cell on the GUI thread
                # costs more than the rest of the cell.
                image = rounded_corners(image, radius)
            self._bridge.delivered.emit(generation, path, image if image is not None else QImage(),
                                        image is not None)


def make_thumbnail(path: str, size: int, disk: _DiskCache | None = None,
                   source: ImageSource | None = None) -> QImage | None:
    """A QImage whose longer side is at most ``size`` pixels, or None if the file cannot be
    read. Safe to call from any thread."""
    try:
        # Stat before reading the pixels: if the file changes in between, the entry is
        # written under the identity it no longer has, so it is never served.
        st = os.stat(path)
    except OSError:
        return None
    key = disk.key(path, st, size) if disk is not None and disk.wants(st) else None
    if key is not None:
        cached = disk.read(key)  # type: ignore[union-attr]
        if cached is not None:
            return cached
    try:
        pil = load_preview(path, size, source)
    except (ImageLoadError, OSError, ValueError):
        return None
    if key is not None:
        disk.write(key, pil)  # type: ignore[union-attr]
    return pil_to_qimage(pil)


def rounded_corners(image: QImage, radius: float) -> QImage:
    """A copy with transparent, antialiased rounded corners. Safe off the GUI thread."""
    out = QImage(image.size(), QImage.Format.Format_ARGB32_Premultiplied)
    out.fill(Qt.GlobalColor.transparent)
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QBrush(image))
    painter.drawRoundedRect(QRectF(out.rect()), radius, radius)
    painter.end()
    return out


class _DiskCache:
    """JPEG thumbnails in a folder, named by a hash of the path, the file's identity and the
    thumbnail size. Safe from several threads and processes at once: entries are written
    under a temporary name and renamed, and an entry removed under a reader is a miss."""

    def __init__(self, folder: Path, min_bytes: int,
                 max_bytes: int = DEFAULT_DISK_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"The thumbnail cache size must be positive, got {max_bytes} bytes.")
        self.folder = Path(folder)
        self.min_bytes = min_bytes
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._writes_until_prune = 0  # 0: prune at the first write of this session
        self._pruning = threading.Lock()

    def wants(self, st: os.stat_result) -> bool:
        # Decoding a small file is as cheap as reading a cached thumbnail.
        return st.st_size >= self.min_bytes

    @staticmethod
    def key(path: str, st: os.stat_result, size: int) -> str:
        text = f"{os.path.abspath(path)}\0{file_identity(st)}\0{size}"
        return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()

    def file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.jpg"

    def read(self, key: str) -> QImage | None:
        f = self.file(key)
        if not f.is_file():
            return None
        image = QImage()
        if not image.load(str(f)) or image.isNull():
            return None
        # Last use, for least-recently-used pruning; an OSError means a read-only folder or
        # an entry pruned a moment ago, and the image is already read.
        with contextlib.suppress(OSError):
            os.utime(f)
        return image

    def write(self, key: str, pil) -> None:
        f = self.file(key)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            pil.save(tmp, "JPEG", quality=88)
            os.replace(tmp, f)
        except OSError:
            # A full or read-only cache folder only costs speed, never the thumbnail.
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            due = self._writes_until_prune <= 0
            if due:
                self._writes_until_prune = _PRUNE_EVERY_WRITES
            self._writes_until_prune -= 1
        if due:
            self.prune()

    def _files(self) -> Iterator[os.DirEntry]:
        """This cache's own files (entries and .tmp files) in their two-letter folders;
        anything else a user put in a chosen folder is never touched."""
        try:
            subs = [d for d in os.scandir(self.folder)
                    if len(d.name) == 2 and d.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for sub in subs:
            try:
                items = list(os.scandir(sub.path))
            except OSError:
                continue
            for item in items:
                if item.name.startswith(sub.name) and item.name.endswith((".jpg", ".tmp")):
                    yield item

    def prune(self, now: float | None = None) -> int:
        """Remove .tmp files older than `_STALE_TMP_SECONDS` and, when the entries hold more
        than the cap, the least recently used ones down to `_PRUNE_TO` of it; returns the
        bytes the entries hold after. One thread at a time; another that asks meanwhile gets -1
        and skips (the one under way does the work)."""
        if not self._pruning.acquire(blocking=False):
            return -1
        try:
            now = time.time() if now is None else now
            entries: list[tuple[float, int, str]] = []
            for item in self._files():
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile (another process pruning, or renamed)
                if item.name.endswith(".tmp"):
                    if now - st.st_mtime > _STALE_TMP_SECONDS:
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
                    continue
                entries.append((st.st_mtime, st.st_size, item.path))
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return total
            target = int(self.max_bytes * _PRUNE_TO)
            for _, size, path in sorted(entries):
                if total <= target:
                    break
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass  # another process pruned it first
                except OSError:
                    continue
                total -= size
            return total
        finally:
            self._pruning.release()


class ThumbnailCache(QObject):
    """An LRU of QPixmaps keyed by absolute path, filled by background workers.

    Use from the GUI thread only. `pixmap(path)` answers at once: the pixmap, None while it
    is being made (and queues it), or a null QPixmap when the file cannot be read.
    `thumbnailsReady(paths)` says which ones just arrived.
    """

    thumbnailsReady = Signal(list)

    def __init__(self, thumb_size: int = 160, *, capacity: int = 600,
                 workers: int | None = None, max_pending: int = 256,
                 disk_cache: bool | str | Path = True, disk_min_bytes: int = 48 * 1024,
                 disk_max_bytes: int = DEFAULT_DISK_MAX_BYTES,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._capacity = max(1, capacity)
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._failed: set[str] = set()
        self._arrived: list[tuple[str, QImage, bool]] = []
        n_workers = workers or default_workers()
        self._jobs = _Jobs(max_pending, n_workers)
        self._jobs.size = int(thumb_size)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(n_workers)
        self._bridge = _Bridge()
        self._bridge.delivered.connect(self._on_delivered)
        if disk_cache is True:
            self._disk: _DiskCache | None = _DiskCache(default_cache_dir(), disk_min_bytes,
                                                       disk_max_bytes)
        elif disk_cache:
            self._disk = _DiskCache(Path(disk_cache), disk_min_bytes,  # type: ignore[arg-type]
                                    disk_max_bytes)
        else:
            self._disk = None
        # Converting to QPixmap is batched: one repaint per batch, not per thumbnail.
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(15)
        self._flush_timer.timeout.connect(self._flush)
        self._dpr = 1.0
        self.requests = 0  # counters for tests and the benchmark
        self.delivered = 0

    # --- settings ------------------------------------------------------------------------

    @property
    def thumb_size(self) -> int:
        return self._jobs.size

    @property
    def generation(self) -> int:
        return self._jobs.generation

    @property
    def disk_folder(self) -> Path | None:
        return self._disk.folder if self._disk is not None else None

    def set_thumb_size(self, size: int, device_pixel_ratio: float = 1.0) -> None:
        """Pixels of the longer side (device pixels); changing it drops every thumbnail."""
        self._dpr = float(device_pixel_ratio)
        if int(size) != self._jobs.size:
            self.clear(int(size))

    def set_image_source(self, source: ImageSource | None) -> None:
        """Where a run's decoded images are cached (read before decoding a file); None for
        none. Thumbnails already made stay: the pixels are the same either way."""
        with self._jobs.lock:
            self._jobs.source = source

    def set_corner_radius(self, radius: float) -> None:
        """Round the thumbnails' corners (device pixels; 0 for square). Applies to
        thumbnails made from now on."""
        with self._jobs.lock:
            self._jobs.radius = float(radius)

    def set_capacity(self, capacity: int) -> None:
        self._capacity = max(1, int(capacity))
        self._trim()

    def set_max_pending(self, n: int) -> None:
        with self._jobs.lock:
            self._jobs.max_pending = max(1, int(n))

    def clear(self, size: int | None = None) -> None:
        """Forget everything (a new folder): work already under way is dropped on arrival."""
        self._jobs.reset(self._jobs.size if size is None else int(size))
        self._pixmaps.clear()
        self._failed.clear()
        self._arrived.clear()

    # --- lookups -------------------------------------------------------------------------

    def pixmap(self, path: str) -> QPixmap | None:
        pm = self._pixmaps.get(path)
        if pm is not None:
            self._pixmaps.move_to_end(path)
            return pm
        if path in self._failed:
            return QPixmap()
        self.request(path)
        return None

    def peek(self, path: str) -> QPixmap | None:
        """Like `pixmap` but never queues anything."""
        pm = self._pixmaps.get(path)
        if pm is None and path in self._failed:
            return QPixmap()
        return pm

    def request(self, path: str, *, low_priority: bool = False) -> None:
        if path in self._pixmaps or path in self._failed:
            return
        self.requests += 1
        if self._jobs.push(path, low_priority=low_priority):
            self._pool.start(_Worker(self._jobs, self._bridge, self._disk))

    def pending_count(self) -> int:
        with self._jobs.lock:
            return len(self._jobs.pending) + len(self._jobs.inflight)

    def __len__(self) -> int:
        return len(self._pixmaps)

    def __contains__(self, path: str) -> bool:
        return path in self._pixmaps

    # --- arrivals (GUI thread) -----------------------------------------------------------

    def _on_delivered(self, generation: int, path: str, image: QImage, ok: bool) -> None:
        if generation != self._jobs.generation:
            return  # made for an old folder or size
        self._jobs.done(path)
        self._arrived.append((path, image, ok))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _flush(self) -> None:
        batch, self._arrived = self._arrived, []
        paths = []
        for path, image, ok in batch:
            if ok:
                pm = QPixmap.fromImage(image)
                pm.setDevicePixelRatio(self._dpr)
                self._pixmaps[path] = pm
            else:
                self._failed.add(path)
            paths.append(path)
        self.delivered += len(paths)
        self._trim()
        if paths:
            self.thumbnailsReady.emit(paths)

    def _trim(self) -> None:
        while len(self._pixmaps) > self._capacity:
            self._pixmaps.popitem(last=False)

    # --- shutdown ------------------------------------------------------------------------

    def shutdown(self, wait_ms: int = 2000) -> bool:
        """Stop the workers (drops queued requests); True when they all finished."""
        with self._jobs.lock:
            self._jobs.stopped = True
            self._jobs.pending.clear()
        return self._pool.waitForDone(wait_ms)

    def wait_idle(self, wait_ms: int = 5000) -> bool:
        """For tests: wait until the queue has drained (arrivals still need the event loop)."""
        return self._pool.waitForDone(wait_ms)
