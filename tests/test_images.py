"""Folder scanning and decoding to RGB: real files written with Pillow in a temp folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from must_engine.images import (
    IMAGE_SUFFIXES,
    FolderPathTooLongError,
    FolderScan,
    ImageLoadError,
    SkippedFile,
    load_rgb,
    load_thumbnail,
    scan_folder,
    to_rgb,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _solid(size=(24, 16), color=RED, mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _noise_jpeg(path: Path, size=(320, 240)) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _close(a, b, tol=6) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


# --- scanning ------------------------------------------------------------------------------


@pytest.fixture()
def photo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "b_sub" / "deeper").mkdir(parents=True)
    (root / "a_sub").mkdir()
    (root / ".hidden_dir").mkdir()
    _solid().save(root / "z.jpg")
    _solid().save(root / "A.PNG")
    _solid().save(root / "a_sub" / "x.webp")
    _solid().save(root / "b_sub" / "y.tif")
    _solid().save(root / "b_sub" / "deeper" / "w.bmp")
    _solid(mode="P", color=3).save(root / "b_sub" / "v.gif")
    _solid().save(root / ".hidden.jpg")
    _solid().save(root / ".hidden_dir" / "inside.jpg")
    (root / "notes.txt").write_text("not a photo")
    # damaged files
    (root / "fake.jpg").write_text("this is text, not a JPEG")
    (root / "empty.png").write_bytes(b"")
    _noise_jpeg(root / "cut.jpg")
    _truncate(root / "cut.jpg")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        root / "cut.png"
    )
    _truncate(root / "cut.png")
    return root


GOOD = ["A.PNG", "a_sub/x.webp", "b_sub/deeper/w.bmp", "b_sub/v.gif", "b_sub/y.tif", "z.jpg"]


def test_scan_finds_images_sorted_and_skips_damaged(photo_tree: Path) -> None:
    scan = scan_folder(photo_tree)
    assert isinstance(scan, FolderScan)
    assert scan.files == GOOD
    assert len(scan) == len(GOOD)
    reasons = {s.path: s.reason for s in scan.skipped}
    assert reasons == {
        "cut.jpg": "truncated file",
        "cut.png": "truncated file",
        "empty.png": "empty file",
        "fake.jpg": "not an image",
    }
    assert all(isinstance(s, SkippedFile) for s in scan.skipped)
    assert [s.path for s in scan.skipped] == sorted(reasons)


def test_scan_paths_are_absolute_and_loadable(photo_tree: Path) -> None:
    scan = scan_folder(photo_tree)
    paths = scan.paths()
    assert all(p.is_absolute() and p.is_file() for p in paths)
    assert [p.relative_to(scan.root).as_posix() for p in paths] == scan.files
    for p in paths:
        assert load_rgb(p).mode == "RGB"


def test_scan_without_verify_keeps_damaged_files(photo_tree: Path) -> None:
    scan = scan_folder(photo_tree, verify=False)
    assert scan.files == sorted(GOOD + ["cut.jpg", "cut.png", "empty.png", "fake.jpg"])
    assert scan.skipped == []


def test_scan_ignores_hidden_and_non_image_files(photo_tree: Path) -> None:
    files = scan_folder(photo_tree, verify=False).files
    assert not any(part.startswith(".") for f in files for part in f.split("/"))
    assert "notes.txt" not in files


def test_scan_reports_progress_to_the_end(photo_tree: Path) -> None:
    calls: list[tuple[int, int]] = []
    scan = scan_folder(photo_tree, progress=lambda d, t: calls.append((d, t)), workers=2)
    total = len(scan.files) + len(scan.skipped)
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_scan_can_be_stopped(tmp_path: Path) -> None:
    for i in range(100):
        _solid().save(tmp_path / f"img_{i:03d}.png")
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls > 1

    scan = scan_folder(tmp_path, should_stop=stop, workers=1)
    assert scan.cancelled
    assert 0 < len(scan.files) < 100
    assert scan.files == sorted(scan.files)
    assert not scan_folder(tmp_path).cancelled


def test_scan_is_deterministic(photo_tree: Path) -> None:
    assert scan_folder(photo_tree) == scan_folder(photo_tree, workers=1)


def test_missing_folder_gives_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; choose an existing folder"):
        scan_folder(tmp_path / "nope")
    f = tmp_path / "file.jpg"
    _solid().save(f)
    with pytest.raises(NotADirectoryError, match="not a folder"):
        scan_folder(f)


def test_a_name_too_long_gives_one_clear_sentence(tmp_path: Path) -> None:
    # Not the raw "[Errno 36] File name too long" with the whole path in it.
    with pytest.raises(FolderPathTooLongError, match="holds a name of 300 characters") as info:
        scan_folder(tmp_path / ("a" * 300))
    message = str(info.value)
    assert "Errno" not in message and "a" * 80 not in message
    assert message.endswith("check the path.") and message.count(".") <= 4


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    _solid().save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.skipif(sys.platform == "win32", reason="dir_fd is POSIX-only")
def test_paths_over_the_system_limit_say_what_to_do(tmp_path: Path) -> None:
    """A folder nested deeper than the OS path limit (made through folder handles, as a
    program can): files and folders past the limit are skipped with the reason, and choosing
    such a folder gives one sentence saying to move the images."""
    root = tmp_path / "root"
    root.mkdir()
    _solid().save(root / "a.jpg")
    path, fd = root, os.open(root, os.O_RDONLY)
    try:
        while len(str(path)) + 101 < 4050:  # Linux's PATH_MAX is 4096 bytes
            name = "d" * 100
            os.mkdir(name, dir_fd=fd)
            fd_next = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = fd_next, path / name
        long_file = "f" * (4100 - len(str(path))) + ".jpg"  # fits in the folder, not the path
        for name, data in ((long_file, _jpeg_bytes()),):
            out = os.open(name, os.O_WRONLY | os.O_CREAT, dir_fd=fd)
            os.write(out, data)
            os.close(out)
        os.mkdir("g" * 100, dir_fd=fd)  # a folder whose own path is past the limit
    finally:
        os.close(fd)
    scan = scan_folder(root)
    assert scan.files == ["a.jpg"]
    reasons = {s.path.rsplit("/", 1)[-1][:1]: s.reason for s in scan.skipped}
    assert set(reasons) == {"f", "g"}
    assert all(r.startswith("path too long for this system") for r in reasons.values())
    with pytest.raises(FolderPathTooLongError, match="move the images to a folder with a "
                       "shorter path"):
        scan_folder(path / ("g" * 100))


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_scan_follows_links_without_looping(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _solid().save(root / "sub" / "a.jpg")
    os.symlink(root, root / "sub" / "loop")  # points back up the tree
    other = tmp_path / "elsewhere"
    other.mkdir()
    _solid().save(other / "b.jpg")
    os.symlink(other, root / "linked")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    scan = scan_folder(root)
    assert scan.files == ["linked/b.jpg", "sub/a.jpg"]
    assert scan.skipped == [SkippedFile("dangling.jpg", "broken link")]


def test_suffixes_cover_common_formats() -> None:
    for ext in ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"):
        assert f".{ext}" in IMAGE_SUFFIXES


# --- decoding ------------------------------------------------------------------------------


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    # Stored 40x20: left half red, right half blue. Orientation 6 = "rotate 90 degrees
    # clockwise to display", which puts the stored left side on top.
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_rgb(path)
    assert out.size == (20, 40)
    assert _close(out.getpixel((10, 5)), RED, tol=30)
    assert _close(out.getpixel((10, 35)), BLUE, tol=30)
    thumb = load_thumbnail(path, 10)
    assert thumb.size == (5, 10)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert _close(out.getpixel((8, 8)), RED, tol=12)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(load_rgb(path))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_32_bit_int_and_float_images(tmp_path: Path) -> None:
    path_i = tmp_path / "int.tif"
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.int32), mode="I").save(path_i)
    assert np.asarray(load_rgb(path_i))[0, :, 0].tolist() == [0, 100, 255]
    path_f = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(path_f)
    assert np.asarray(load_rgb(path_f))[0, :, 0].tolist() == [0, 128, 255]


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 6))))
def test_16_bit_conversion_is_monotone_full_range(values: np.ndarray) -> None:
    out = np.asarray(to_rgb(Image.fromarray(values)))[..., 0].astype(int)
    expected = np.rint(values.astype(np.float64) / 257.0).astype(int)
    assert (out == expected).all()


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 1), (255, 0, 0, 255))
    img.putpixel((1, 0), (255, 0, 0, 0))  # fully transparent
    img.putpixel((2, 0), (255, 0, 0, 128))  # half transparent
    for ext in ("png", "webp", "tif"):
        path = tmp_path / f"alpha.{ext}"
        img.save(path, lossless=True) if ext == "webp" else img.save(path)
        out = load_rgb(path)
        assert out.mode == "RGB"
        assert _close(out.getpixel((0, 0)), RED, tol=2)
        assert _close(out.getpixel((1, 0)), (255, 255, 255), tol=2)
        assert _close(out.getpixel((2, 0)), (255, 127, 127), tol=3)


def test_greyscale_la_and_bilevel(tmp_path: Path) -> None:
    Image.new("L", (3, 3), 77).save(tmp_path / "grey.png")
    assert load_rgb(tmp_path / "grey.png").getpixel((1, 1)) == (77, 77, 77)
    Image.new("LA", (3, 3), (77, 0)).save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png").getpixel((1, 1)) == (255, 255, 255)
    Image.new("1", (3, 3), 1).save(tmp_path / "bw.png")
    assert load_rgb(tmp_path / "bw.png").getpixel((1, 1)) == (255, 255, 255)


def test_gif_first_frame_and_transparency(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [_solid((8, 8), RED), _solid((8, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    assert _close(load_rgb(path).getpixel((4, 4)), RED, tol=4)

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "trans.gif", transparency=0)
    out = load_rgb(tmp_path / "trans.gif")
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 2)) == RED


@pytest.mark.parametrize("ext", ["webp", "tif", "tiff", "bmp", "jpeg", "png"])
def test_common_formats_decode(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"img.{ext}"
    _solid((10, 6), RED).save(path, **({"lossless": True} if ext == "webp" else {}))
    out = load_rgb(path)
    assert out.size == (10, 6) and out.mode == "RGB"
    assert _close(out.getpixel((5, 3)), RED, tol=4)


def test_load_errors_say_why(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    with pytest.raises(ImageLoadError) as info:
        load_rgb(fake)
    assert info.value.reason == "not an image"
    assert str(fake) in str(info.value)
    assert isinstance(info.value, ValueError)

    cut = tmp_path / "cut.jpg"
    _noise_jpeg(cut)
    _truncate(cut)
    with pytest.raises(ImageLoadError, match="truncated file"):
        load_rgb(cut)
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb(tmp_path / "missing.jpg")


def test_thumbnail_is_small_and_upright(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _noise_jpeg(path, size=(1600, 1200))
    thumb = load_thumbnail(path, 100)
    assert thumb.mode == "RGB"
    assert thumb.size == (100, 75)
    Image.new("I;16", (300, 30), 65535).save(tmp_path / "deep.png")
    deep = load_thumbnail(tmp_path / "deep.png", 60)
    assert deep.size == (60, 6) and deep.getpixel((3, 3)) == (255, 255, 255)
    with pytest.raises(ValueError, match="max_side"):
        load_thumbnail(path, 0)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about bad TIFF tags
def test_damaged_bytes_never_escape_as_other_errors(tmp_path: Path) -> None:
    # Flip bytes in valid files of every format: decoding must give RGB or ImageLoadError,
    # and a scan over all of them must finish.
    rng = np.random.default_rng(5)
    source = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    for ext in ("jpg", "png", "gif", "bmp", "tif", "webp"):
        clean = tmp_path / f"clean.{ext}"
        source.save(clean)
        data = bytearray(clean.read_bytes())
        clean.unlink()
        for i in range(15):
            damaged = bytearray(data)
            for pos in rng.integers(0, len(data), size=1 + i % 4):
                damaged[pos] = int(rng.integers(0, 256))
            if i % 5 == 4:
                damaged = damaged[: int(rng.integers(1, len(damaged)))]
            path = tmp_path / f"d{i:02d}.{ext}"
            path.write_bytes(bytes(damaged))
            try:
                assert load_rgb(path).mode == "RGB"
            except ImageLoadError as exc:
                assert exc.reason
    scan = scan_folder(tmp_path)
    assert len(scan.files) + len(scan.skipped) == 6 * 15


def test_training_and_prediction_say_what_to_do_with_a_path_too_long(
        tmp_path, tiny_model_dir) -> None:
    """Through the Python API too (the app and the command line check the folder first)."""
    from must_engine.models.source import ModelSpec
    from must_engine.predict import predict_run
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import prepare_run

    too_long = tmp_path / ("a" * 300)
    job = TrainJob(too_long, ["cat", "dog"], ModelSpec.parse(str(tiny_model_dir)))
    with pytest.raises(FolderPathTooLongError, match="check the path"):
        prepare_run(job, tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        _solid(color=(60 * i, 0, 0)).save(images / f"{i}.png")
    prepare_run(TrainJob(images, ["cat", "dog"], ModelSpec.parse(str(tiny_model_dir))),
                tmp_path / "run")
    with pytest.raises(FolderPathTooLongError, match="check the path"):
        predict_run(tmp_path / "run", images=too_long)
