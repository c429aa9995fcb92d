"""Finding the images in a folder and decoding them to 8-bit RGB.

Every image the engine sees goes through `load_rgb` (or `load_thumbnail` for previews) so
orientation, alpha, palette, CMYK and high bit depth are handled the same way everywhere.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Modes that image files decode to and that `to_rgb` knows how to turn into RGB.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
SUPPORTED_MODES: frozenset[str] = frozenset(
    {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"} | _HIGH_DEPTH_MODES | _ALPHA_MODES
)

# JPEG can decode at 1/8 scale: the whole entropy stream is still read (so truncation and
# corrupt data are caught) for a fraction of the cost of a full decode.
_VERIFY_DRAFT_SIZE = (64, 64)


class ImageLoadError(ValueError):
    """An image file could not be decoded; `reason` is short and meant for people."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Could not load {self.path}: {reason}.")


class FolderPathTooLongError(ValueError):
    """The chosen folder's path cannot be used: a name in it, or the whole path, is longer
    than the operating system allows (ENAMETOOLONG)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        longest = max(Path(self.path).parts, key=lambda part: len(os.fsencode(part)), default="")
        # Most drives allow 255 bytes per name: a longer one cannot be a folder on disk, so
        # it is a mistyped or pasted path; otherwise the folder is nested too deep.
        shown = _shorten(self.path)
        if len(os.fsencode(longest)) > 255:
            message = (f"The folder path {shown} holds a name of {len(longest)} characters, "
                       "longer than a folder name can be; check the path.")
        else:
            message = (f"The folder path {shown} is longer than this system allows; move the "
                       "images to a folder with a shorter path and use that one.")
        super().__init__(message)


def _shorten(text: str, keep: int = 30) -> str:
    """The start and end of a long path or name, so a message stays readable."""
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}...{text[-keep:]}"


def is_name_too_long(exc: BaseException) -> bool:
    # Windows reports ERROR_FILENAME_EXCED_RANGE (206) with errno ENOENT.
    return isinstance(exc, OSError) and (exc.errno == errno.ENAMETOOLONG
                                         or getattr(exc, "winerror", None) == 206)


@dataclass(frozen=True)
class SkippedFile:
    path: str  # POSIX path relative to the scanned folder
    reason: str


@dataclass
class FolderScan:
    root: Path
    files: list[str]  # POSIX paths relative to root, sorted
    skipped: list[SkippedFile] = field(default_factory=list)
    cancelled: bool = False  # True when should_stop ended the scan early: files is partial

    def __len__(self) -> int:
        return len(self.files)

    def paths(self) -> list[Path]:
        return [self.root.joinpath(*rel.split("/")) for rel in self.files]


def has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _walk_candidates(root: Path) -> tuple[list[str], list[SkippedFile]]:
    """Image-named files under root (relative POSIX paths) plus folders/links we could not use.

    Symlinked folders are followed, but each real folder is entered once, so a link back up
    the tree cannot loop. Hidden names (".git", ".DS_Store", "._x.jpg") are ignored.
    """
    files: list[str] = []
    skipped: list[SkippedFile] = []
    root_stat = os.stat(root)
    seen_dirs = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel and is_name_too_long(exc):
                raise FolderPathTooLongError(root) from exc
            if not rel:
                raise PermissionError(
                    f"Cannot read the folder {root} ({exc.strerror or exc}); check its permissions."
                ) from exc
            skipped.append(SkippedFile(rel, _folder_reason(exc)))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    skipped.append(SkippedFile(entry_rel, _folder_reason(exc)))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue
                seen_dirs.add(key)
                subdirs.append((Path(entry.path), entry_rel))
                continue
            if not has_image_suffix(entry.name):
                continue
            try:
                # The directory listing already says a plain entry is a regular file (no
                # system call); only links need their target looked up.
                if not entry.is_symlink():
                    is_file = entry.is_file(follow_symlinks=False)
                else:
                    is_file = stat.S_ISREG(entry.stat(follow_symlinks=True).st_mode)
            except OSError:
                skipped.append(SkippedFile(entry_rel, "broken link"))
                continue
            if is_file:
                files.append(entry_rel)
        # Reversed so the stack pops folders in name order (deterministic visit order).
        stack.extend(reversed(subdirs))
    files.sort()
    return files, skipped


_PATH_TOO_LONG = "path too long for this system; move it to a shorter path"


def _folder_reason(exc: OSError) -> str:
    if is_name_too_long(exc):
        return _PATH_TOO_LONG
    return f"folder not readable ({exc.strerror or exc})"


def _reason_for(exc: BaseException) -> str:
    """A short human reason for a decode failure."""
    if is_name_too_long(exc):
        return _PATH_TOO_LONG
    if isinstance(exc, Image.DecompressionBombError):
        return "image too large to open safely"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ImageLoadError):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it"
    message = str(exc).strip()
    if "truncated" in message.lower():
        return "truncated file"
    # Anything else (Pillow uses SyntaxError for bad headers/checksums) is damage; keep
    # Pillow's words in brackets for whoever wants the detail.
    return f"damaged image ({message})" if message else "damaged image"


def _check_one(path: Path) -> str | None:
    """None if the file decodes, else the reason it does not. Cheap per format, see below."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as im:
            if im.mode not in SUPPORTED_MODES:
                return f"unsupported mode {im.mode}"
            if im.format == "JPEG":
                im.draft(None, _VERIFY_DRAFT_SIZE)
                im.load()
            elif im.format == "PNG":
                # CRC of every chunk up to IEND: catches truncation and damage without
                # inflating the pixels (~25x cheaper than load on a 12 MP photo).
                im.verify()
            else:
                # GIF, WebP, TIFF, BMP have no cheap partial decode; load the first frame.
                im.load()
    # Pillow's format plugins raise many types on malformed files (OSError, SyntaxError,
    # EOFError, struct.error, IndexError...); one bad file must never end a scan or a run.
    except Exception as exc:  # noqa: BLE001
        return _reason_for(exc)
    return None


def unreadable_reason(path: str | os.PathLike[str]) -> str | None:
    """None if the file decodes, else a short reason (the same check a verifying scan runs)."""
    return _check_one(Path(path))


def _default_workers() -> int:
    # Pillow releases the GIL while decoding, so a few threads overlap file reads and decodes.
    return max(1, min(4, os.cpu_count() or 1))


def is_folder(path: str | os.PathLike[str]) -> bool:
    """Path.is_dir, but a path over the system's limit raises FolderPathTooLongError (one
    sentence saying what to do) instead of a raw "[Errno 36] File name too long"."""
    try:
        return Path(path).is_dir()
    except OSError as exc:
        if is_name_too_long(exc):
            raise FolderPathTooLongError(path) from exc
        raise


def check_folder(folder: Path) -> None:
    """Raise one clear sentence when ``folder`` is missing, a file, or a path too long."""
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except OSError as exc:
        if is_name_too_long(exc):
            raise FolderPathTooLongError(folder) from exc
        raise
    if not exists:
        raise FileNotFoundError(
            f"The folder {folder} does not exist; choose an existing folder of images."
        )
    if not is_dir:
        raise NotADirectoryError(
            f"{folder} is a file, not a folder; choose the folder that holds the images."
        )


def scan_folder(
    root: str | os.PathLike[str],
    *,
    verify: bool = True,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> FolderScan:
    """List the images under `root` (recursive, sorted, hidden names ignored).

    With verify=True each file is decoded cheaply and failures go to `skipped` with a reason.
    progress(done, total) is called as files are checked; should_stop() is polled between
    files and ends the scan early (the result then has cancelled=True).
    """
    root_path = Path(root).expanduser().absolute()
    check_folder(root_path)
    candidates, skipped = _walk_candidates(root_path)
    total = len(candidates)
    if progress is not None:
        progress(0, total)
    if not verify:
        if progress is not None and total:
            progress(total, total)
        return FolderScan(root_path, candidates, skipped)

    good: list[str] = []
    bad: list[SkippedFile] = []
    cancelled = False
    n_workers = workers or _default_workers()
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        # Submit in bounded chunks so a stop request does not wait for a whole large folder.
        chunk = max(16, 8 * n_workers)
        done = 0
        for start in range(0, total, chunk):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            batch = candidates[start : start + chunk]
            futures = [
                pool.submit(_check_one, root_path.joinpath(*rel.split("/"))) for rel in batch
            ]
            for rel, fut in zip(batch, futures, strict=True):
                reason = fut.result()
                if reason is None:
                    good.append(rel)
                else:
                    bad.append(SkippedFile(rel, reason))
                done += 1
                if progress is not None:
                    progress(done, total)
            if should_stop is not None and done < total and should_stop():
                cancelled = True
                break
    skipped = sorted(skipped + bad, key=lambda s: s.path)
    return FolderScan(root_path, good, skipped, cancelled=cancelled)


def confirm_readable(scan: FolderScan, needed: int = 2) -> FolderScan:
    """A lazily listed scan (verify=False) with its first ``needed`` readable files checked.

    Files are checked in order until ``needed`` decode; those that fail on the way move to
    ``skipped`` with the reason. The rest are checked when they are first decoded (training
    and prediction report them then), so a large folder starts without a full pass.
    """
    good = 0
    bad: list[SkippedFile] = []
    for rel in scan.files:
        if good >= needed:
            break
        reason = _check_one(scan.root.joinpath(*rel.split("/")))
        if reason is None:
            good += 1
        else:
            bad.append(SkippedFile(rel, reason))
    if not bad:
        return scan
    dropped = {b.path for b in bad}
    return FolderScan(scan.root, [f for f in scan.files if f not in dropped],
                      sorted(scan.skipped + bad, key=lambda s: s.path), scan.cancelled)


# --- decoding -----------------------------------------------------------------------------


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map one high-bit-depth channel to 0..255 by its nominal range (never by clipping)."""
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = a / 257.0  # 65535 -> 255 exactly
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0  # float images are usually 0..1
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a  # 8-bit data stored wide
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = a / 257.0  # 16-bit data stored in a 32-bit mode (PNG/PGM via older paths)
        else:
            # Unknown range (signed or 32-bit): stretch what is there rather than clip it.
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a decoded image of any supported mode to 8-bit RGB (alpha on white)."""
    mode = im.mode
    if mode not in SUPPORTED_MODES:
        raise ImageLoadError(getattr(im, "filename", "") or "<image>", f"unsupported mode {mode}")
    if mode in _HIGH_DEPTH_MODES:
        grey = _scale_to_uint8(np.asarray(im), mode)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in ("P", "L", "RGB") and "transparency" in im.info:
        return _composite_on_white(im.convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _composite_on_white(im)
    if mode == "RGB":
        return im
    return im.convert("RGB")


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the picture; keep it as stored
        return im


def _open_converted(path: str | os.PathLike[str], max_side: int | None) -> Image.Image:
    try:
        with Image.open(path) as im:
            if max_side is not None:
                # JPEG decodes directly at 1/2, 1/4 or 1/8 scale (still >= max_side).
                im.draft(None, (max_side, max_side))
            im.load()
            out = to_rgb(_upright(im))
            if out is im:
                out = im.copy()  # the file-backed image is closed when the with block ends
    except ImageLoadError as exc:
        raise ImageLoadError(path, exc.reason) from None
    # Pillow's format plugins raise many types on malformed files (OSError, SyntaxError,
    # EOFError, struct.error, IndexError...); one bad file must never end a scan or a run.
    except Exception as exc:  # noqa: BLE001
        raise ImageLoadError(path, _reason_for(exc)) from exc
    if max_side is not None:
        out.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return out


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file to upright 8-bit RGB (first frame of animations).

    Alpha is composited on white; 16-bit and float data are scaled to 0..255.
    Raises ImageLoadError with a short reason when the file cannot be decoded.
    """
    return _open_converted(path, None)


def load_rgb_min_side(path: str | os.PathLike[str], min_side: int) -> Image.Image:
    """Like load_rgb, but the shorter side shrunk to ``min_side`` when it is longer.

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (draft mode) when that still leaves
    the shorter side at least ``min_side``, so a 12-megapixel photo costs a fraction of a full
    decode. Smaller images come back at their own size (never enlarged).
    """
    if min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}.")
    try:
        with Image.open(path) as im:
            # draft keeps both sides >= the request, so the shorter side stays >= min_side.
            im.draft(None, (min_side, min_side))
            im.load()
            out = to_rgb(_upright(im))
            if out is im:
                out = im.copy()
    except ImageLoadError as exc:
        raise ImageLoadError(path, exc.reason) from None
    except Exception as exc:  # noqa: BLE001 - see _open_converted
        raise ImageLoadError(path, _reason_for(exc)) from exc
    return shrink_to_min_side(out, min_side)


def shrink_to_min_side(image: Image.Image, min_side: int) -> Image.Image:
    """Resize (bicubic, antialiased) so the shorter side is ``min_side``; never enlarges."""
    w, h = image.size
    short = min(w, h)
    if short <= min_side:
        return image
    scale = min_side / short
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def load_thumbnail(path: str | os.PathLike[str], max_side: int) -> Image.Image:
    """Like load_rgb but decoded small: the longer side is at most max_side pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}.")
    return _open_converted(path, max_side)
