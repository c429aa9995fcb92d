"""The decoded-image cache: each photo decoded once, small, and reused.

Training decodes every image twice per epoch (teacher and student views) and prediction,
the zero-shot preview and export checks decode them again. A 12-megapixel JPEG costs about
190 ms to decode at full size; the views only need a shorter side a little above the
model's input. So images are decoded once at that size (JPEG draft mode does most of the
work) and the upright 8-bit RGB pixels are stored, uncompressed, under the user cache
folder. Reading an entry back costs about a millisecond.

Safety: an entry's key holds the file's absolute path, its identity (`file_identity`: size,
modification and change times in ns, inode) and the decoded size; the source file is stat'ed
on every read, so a changed file is decoded again and a deleted one is reported as missing,
never served from the cache. The app's thumbnail cache keys its entries the same way.
The folder is capped in bytes; the least recently used entries (by modification time, which
a read refreshes) are removed first.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from must_engine.images import ImageLoadError, load_rgb_min_side, load_thumbnail

if TYPE_CHECKING:
    from must_engine.runs import RunInfo

CACHE_ENV = "MUST_STUDIO_CACHE_DIR"
APP_NAME = "MUST Studio"
DEFAULT_MAX_GB = 4.0
# Image side in pixels is rounded up to this multiple, so close settings share entries.
_SIDE_STEP = 32
_MAGIC = b"MUSTIMG1"
_HEADER = struct.Struct("<8sIII")  # magic, width, height, key length
_SUFFIX = ".rgb"
# After writing this share of the cap, re-measure the folder (other processes write too).
_RECHECK_SHARE = 0.05
# Eviction goes down to this share of the cap, so it does not run on every write.
_EVICT_TO = 0.9


def default_cache_dir() -> Path:
    """$MUST_STUDIO_CACHE_DIR/images if set (tests and benchmarks), else the user cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "images"
    import appdirs

    return Path(appdirs.user_cache_dir(APP_NAME, appauthor=False)) / "images"


def file_identity(st: os.stat_result) -> str:
    """What tells one version of a file from another, for every cache of decoded pixels.

    Size and modification time catch ordinary edits; the inode catches a file replaced
    through a new one (editors, sync tools) with the old time put back; the change time,
    which programs cannot set back, catches one rewritten in place with the old time put back
    (``cp -p``, ``touch -r``). Left: a rewrite of the same length within one tick of the
    file system's clock after it was cached (up to 2 s on FAT drives).
    """
    return f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"


def cache_side(image_size: int, scale_min: float = 1.0) -> int:
    """The shorter side to decode to: the smallest crop of the student's strong view
    (``scale_min`` of the area) must still hold ``image_size`` pixels, so nothing the views
    cut out is enlarged. 224-px models at scale 0.3 get 416 px."""
    scale = min(1.0, max(scale_min, 1e-3))
    side = image_size / math.sqrt(scale)
    return int(math.ceil(side / _SIDE_STEP) * _SIDE_STEP)


@dataclass(frozen=True)
class CacheSetting:
    """What the ``image_cache`` setting says: a folder, or None when the cache is off."""

    directory: Path | None
    max_bytes: int

    @classmethod
    def parse(cls, value: str, max_gb: float = DEFAULT_MAX_GB) -> CacheSetting:
        """'auto' (the user cache folder), 'off', or a folder path."""
        text = (value or "auto").strip()
        max_bytes = int(max_gb * 1024**3)
        if text.lower() == "off":
            return cls(None, max_bytes)
        if text.lower() == "auto":
            return cls(default_cache_dir(), max_bytes)
        return cls(Path(text).expanduser(), max_bytes)


class ImageSource:
    """Decodes images for the views at one shorter side, through the cache when it is on.

    Pickles into loader worker processes as its settings; each process opens its own
    `DecodedImageCache` on first use (which keeps that process's running size estimate).
    """

    def __init__(self, side: int, cache_dir: Path | None = None,
                 max_bytes: int = int(DEFAULT_MAX_GB * 1024**3)):
        self.side = int(side)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_bytes = int(max_bytes)
        self._cache: DecodedImageCache | None = None

    def __getstate__(self) -> dict:
        return {"side": self.side, "cache_dir": self.cache_dir, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["side"], state["cache_dir"], state["max_bytes"])

    def __repr__(self) -> str:
        return f"ImageSource(side={self.side}, cache_dir={self.cache_dir})"

    @property
    def cache(self) -> DecodedImageCache | None:
        if self.cache_dir is not None and self._cache is None:
            self._cache = DecodedImageCache(self.cache_dir, self.max_bytes)
        return self._cache

    def load(self, path: str | os.PathLike[str]) -> Image.Image:
        cache = self.cache
        if cache is None:
            return load_rgb_min_side(path, self.side)
        return cache.load(path, self.side)

    def peek(self, path: str | os.PathLike[str]) -> Image.Image | None:
        """The cached pixels of ``path`` as it is now, or None; never decodes or writes."""
        cache = self.cache
        return cache.peek(path, self.side) if cache is not None else None


def image_source(setting: CacheSetting, side: int) -> ImageSource:
    return ImageSource(side, setting.directory, setting.max_bytes)


def run_image_source(run: RunInfo, image_cache: str | None = None) -> ImageSource:
    """The source a run's images are decoded through (its cache setting unless
    ``image_cache`` overrides it, at the side its views need)."""
    settings = run.settings
    setting = CacheSetting.parse(settings.image_cache if image_cache is None else image_cache,
                                 settings.image_cache_gb)
    return image_source(setting, cache_side(run.preprocess.image_size,
                                            settings.strong_scale_min))


def load_preview(path: str | os.PathLike[str], max_side: int,
                 source: ImageSource | None = None) -> Image.Image:
    """A thumbnail whose longer side is at most ``max_side``: shrunk from the decoded-image
    cache entry when ``source`` holds one big enough, else decoded small from the file.

    Read only, never filled: an entry is raw pixels at the views' side (~0.5-0.7 MB against
    ~5 KB for a 160-px JPEG thumbnail), so browsing a folder would push out the entries
    training reuses every epoch. Reading one back (~6 ms) beats a draft decode of a
    12-megapixel JPEG (~170 ms), so what training or the preview decoded is shown fast.
    Raises ImageLoadError when the file cannot be decoded.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}.")
    cached = source.peek(path) if source is not None else None
    # An entry smaller than its side is the whole image; otherwise it must cover max_side.
    if cached is not None and (min(cached.size) < source.side or max(cached.size) >= max_side):
        cached.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        return cached
    return load_thumbnail(path, max_side)


class DecodedImageCache:
    """One cache folder. Safe to use from several processes and threads at once: entries
    are written under a temporary name and renamed, and a vanished entry is a miss."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"The image cache size must be positive, got {max_bytes} bytes.")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._usage: int | None = None  # bytes in the folder when last measured + our writes
        self._written_since_check = 0
        self.hits = 0
        self.misses = 0

    # ---- keys ----------------------------------------------------------------------------
    @staticmethod
    def key_for(path: str | os.PathLike[str], side: int) -> str:
        """The entry key of the file as it is now; raises ImageLoadError if it is gone."""
        full = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise ImageLoadError(full, "file not found") from None
        except OSError as exc:
            raise ImageLoadError(full, f"cannot read it ({exc.strerror or exc})") from None
        return f"{full}\0{file_identity(st)}\0{side}"

    def entry_path(self, key: str) -> Path:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                 digest_size=16).hexdigest()
        return self.directory / digest[:2] / (digest + _SUFFIX)

    # ---- reading and writing -------------------------------------------------------------
    def load(self, path: str | os.PathLike[str], side: int) -> Image.Image:
        """Upright RGB with the shorter side at most ``side``: from the cache, or decoded
        (and stored). Raises ImageLoadError when the file is gone or cannot be decoded."""
        key = self.key_for(path, side)
        entry = self.entry_path(key)
        image = self._read(entry, key)
        if image is not None:
            self.hits += 1
            return image
        self.misses += 1
        image = load_rgb_min_side(path, side)
        self._write(entry, key, image)
        return image

    def peek(self, path: str | os.PathLike[str], side: int) -> Image.Image | None:
        """The entry for ``path`` as it is now at ``side``, or None (absent, stale, gone)."""
        try:
            key = self.key_for(path, side)
        except ImageLoadError:
            return None
        return self._read(self.entry_path(key), key)

    def _read(self, entry: Path, key: str) -> Image.Image | None:
        try:
            with open(entry, "rb") as f:
                data = f.read()
        except OSError:
            return None
        key_bytes = key.encode("utf-8", "surrogateescape")
        try:
            magic, width, height, key_len = _HEADER.unpack_from(data)
            start = _HEADER.size + key_len
            ok = (magic == _MAGIC and data[_HEADER.size:start] == key_bytes
                  and len(data) == start + width * height * 3)
        except struct.error:
            ok = False
        if not ok:
            # A damaged or foreign file (or, vanishingly unlikely, a hash collision):
            # decode again and let the write replace it.
            return None
        # Last use, for least-recently-used eviction; an OSError means another process
        # evicted it a moment ago, and the pixels are already read.
        with contextlib.suppress(OSError):
            os.utime(entry)
        return Image.frombuffer("RGB", (width, height), data[start:], "raw", "RGB", 0, 1).copy()

    def _write(self, entry: Path, key: str, image: Image.Image) -> None:
        key_bytes = key.encode("utf-8", "surrogateescape")
        pixels = image.tobytes()
        size = _HEADER.size + len(key_bytes) + len(pixels)
        if size > self.max_bytes * _EVICT_TO:
            return  # would evict everything else; decode this one every time instead
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_HEADER.pack(_MAGIC, image.width, image.height, len(key_bytes)))
                    f.write(key_bytes)
                    f.write(pixels)
                os.replace(tmp, entry)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            # A full disk or a read-only cache folder must not stop training: the image was
            # decoded, it just is not kept.
            return
        self._written_since_check += size
        if self._usage is None or self._written_since_check > self.max_bytes * _RECHECK_SHARE:
            self._usage = self.usage()
            self._written_since_check = 0
        else:
            self._usage += size
        if self._usage > self.max_bytes:
            self.evict(int(self.max_bytes * _EVICT_TO))

    # ---- size and eviction ---------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every entry; vanished ones are left out."""
        out = []
        if not self.directory.is_dir():
            return out
        for sub in os.scandir(self.directory):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for item in os.scandir(sub.path):
                if not item.name.endswith(_SUFFIX):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, Path(item.path)))
        return out

    def usage(self) -> int:
        """Bytes the cache holds now."""
        return sum(size for _, size, _ in self._entries())

    def evict(self, target_bytes: int) -> int:
        """Remove least recently used entries until at most ``target_bytes`` remain;
        returns the bytes now held."""
        entries = sorted(self._entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= target_bytes:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another process evicted it first
            except OSError:
                continue
            total -= size
        self._usage = total
        self._written_since_check = 0
        return total

    def clear(self) -> None:
        self.evict(0)
