"""The decoded-image cache: same pixels as a direct decode, never stale, capped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must_engine.image_cache import (
    CacheSetting,
    DecodedImageCache,
    ImageSource,
    cache_side,
    default_cache_dir,
    load_preview,
)
from must_engine.images import ImageLoadError, load_rgb, load_rgb_min_side, load_thumbnail
from must_engine.training.data import (
    EpochSampler,
    EvalDataset,
    LoaderPlan,
    TwoViewDataset,
    loader_plan,
    make_loader,
)
from must_engine.views import Preprocess
from tests.file_versions import pad_to_same_size, replace_through_new_file, rewrite_in_place

PP = Preprocess(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
MB = 1024 * 1024


def _photo(path: Path, size=(640, 480), seed=0, exif_orientation: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: JPEG's draft decode differs visibly from a full decode.
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(pixels, "RGB")
    kwargs = {"quality": 90}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, **kwargs)
    return path


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im)


def test_cache_side_covers_the_smallest_strong_crop():
    assert cache_side(224, 0.3) == 416  # 224 / sqrt(0.3) = 409, rounded up to 32
    assert cache_side(224) == 224
    assert cache_side(64, 0.3) * cache_side(64, 0.3) * 0.3 >= 64 * 64


def test_min_side_decode_shrinks_jpeg_in_draft_mode_and_keeps_small_images(tmp_path):
    big = _photo(tmp_path / "big.jpg", (1600, 1200))
    out = load_rgb_min_side(big, 300)
    assert out.mode == "RGB" and min(out.size) == 300 and out.size == (400, 300)
    small = _photo(tmp_path / "small.jpg", (200, 100))
    assert _pixels(load_rgb_min_side(small, 300)).tobytes() == _pixels(load_rgb(small)).tobytes()


def test_min_side_decode_asks_jpeg_for_a_reduced_decode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    asked = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append(size)
        return real(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    load_rgb_min_side(_photo(tmp_path / "big.jpg", (1600, 1200)), 300)
    assert asked == [(300, 300)]


def test_cache_returns_the_same_pixels_as_a_direct_decode(tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", 100 * MB)
    for i, (size, orient) in enumerate([((1600, 1200), None), ((900, 1400), 6),
                                        ((333, 257), None)]):
        path = _photo(tmp_path / f"p{i}.jpg", size, seed=i, exif_orientation=orient)
        direct = _pixels(load_rgb_min_side(path, 256))
        first = cache.load(path, 256)  # miss: decoded and stored
        second = cache.load(path, 256)  # hit: read back
        assert first.mode == second.mode == "RGB"
        np.testing.assert_array_equal(_pixels(first), direct)
        np.testing.assert_array_equal(_pixels(second), direct)
    assert cache.misses == 3 and cache.hits == 3
    # EXIF orientation 6 (rotate 90): the stored 900x1400 picture comes back upright, wide
    width, height = cache.load(tmp_path / "p1.jpg", 256).size
    assert width > height


def test_an_entry_per_decoded_size(tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", 100 * MB)
    path = _photo(tmp_path / "a.jpg", (800, 600))
    assert min(cache.load(path, 128).size) == 128
    assert min(cache.load(path, 256).size) == 256
    assert cache.misses == 2


def test_a_changed_file_is_decoded_again_never_served_stale(tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", 100 * MB)
    path = _photo(tmp_path / "a.jpg", (640, 480), seed=1)
    replacement = _photo(tmp_path / "b.jpg", (640, 480), seed=2)
    in_place = _photo(tmp_path / "c.jpg", (640, 480), seed=4)
    pad_to_same_size(path, replacement)
    pad_to_same_size(path, in_place)
    pad_to_same_size(replacement, in_place)
    old = _pixels(cache.load(path, 200))
    # Replaced through a new file, same length, old mtime put back: the inode tells.
    replace_through_new_file(path, replacement)
    new = _pixels(cache.load(path, 200))
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, _pixels(load_rgb_min_side(path, 200)))
    # Rewritten in place (same inode), same length, old mtime put back (cp -p, touch -r):
    # the change time tells.
    rewrite_in_place(path, in_place.read_bytes())
    rewritten = _pixels(cache.load(path, 200))
    assert not np.array_equal(rewritten, new)
    np.testing.assert_array_equal(rewritten, _pixels(load_rgb_min_side(path, 200)))
    # Edited in place with a new mtime.
    _photo(path, (640, 480), seed=3)
    edited = _pixels(cache.load(path, 200))
    np.testing.assert_array_equal(edited, _pixels(load_rgb_min_side(path, 200)))
    assert not np.array_equal(edited, rewritten)
    assert cache.hits == 0


def test_a_preview_is_shrunk_from_a_cache_entry_never_decoded_into_it(tmp_path, monkeypatch):
    import must_engine.image_cache as ic

    source = ImageSource(256, tmp_path / "cache")
    big = _photo(tmp_path / "big.jpg", (1600, 1200), seed=1)
    small = _photo(tmp_path / "small.jpg", (120, 90), seed=2)
    fresh = _photo(tmp_path / "fresh.jpg", (800, 600), seed=3)
    source.load(big), source.load(small)  # what training or prediction leaves
    entries = sorted((tmp_path / "cache").rglob("*.rgb"))
    decoded: list[str] = []

    def counting(path, max_side):
        decoded.append(Path(path).name)
        return load_thumbnail(path, max_side)

    monkeypatch.setattr(ic, "load_thumbnail", counting)
    for path, wanted in ((big, (160, 120)), (small, (120, 90))):  # small: the whole image
        thumb = load_preview(path, 160, source)
        assert thumb.size == wanted and thumb.mode == "RGB"
    assert load_preview(fresh, 160, source).size == (160, 120)  # no entry: decoded
    assert load_preview(big, 400, source).size == (400, 300)  # entry too small: decoded
    assert load_preview(big, 160, None).size == (160, 120)  # no cache: decoded
    assert decoded == ["fresh.jpg", "big.jpg", "big.jpg"]
    assert sorted((tmp_path / "cache").rglob("*.rgb")) == entries  # nothing was added
    # A file replaced in place is never previewed from its old entry.
    pad_to_same_size(big, fresh)
    rewrite_in_place(big, fresh.read_bytes())
    np.testing.assert_array_equal(_pixels(load_preview(big, 160, source)),
                                  _pixels(load_thumbnail(big, 160)))
    assert decoded[-1] == "big.jpg"


def test_a_deleted_file_is_reported_not_served_from_the_cache(tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", 100 * MB)
    path = _photo(tmp_path / "a.jpg")
    cache.load(path, 200)
    path.unlink()
    with pytest.raises(ImageLoadError, match="file not found"):
        cache.load(path, 200)


def test_training_skips_a_file_that_vanished_after_it_was_cached(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        _photo(root / f"{i}.jpg", (96, 80), seed=i)
    source = ImageSource(cache_side(PP.image_size, 0.3), tmp_path / "cache", 100 * MB)
    ds = TwoViewDataset(root, ["0.jpg", "1.jpg", "2.jpg"], PP, seed=0, source=source)
    ds[1]
    (root / "1.jpg").unlink()
    weak, _, index, reason = ds[1]  # the trainer leaves it out and lists it in run.json
    assert index == 1 and weak.shape == (3, 32, 32)
    assert "could not be read" in reason and not weak.any()


def test_a_damaged_entry_is_decoded_again(tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", 100 * MB)
    path = _photo(tmp_path / "a.jpg")
    expected = _pixels(cache.load(path, 200))
    entry = cache.entry_path(cache.key_for(path, 200))
    entry.write_bytes(entry.read_bytes()[:-10])  # truncated
    np.testing.assert_array_equal(_pixels(cache.load(path, 200)), expected)
    assert cache.hits == 0 and cache.misses == 2


def test_eviction_keeps_the_cap_and_drops_the_least_recently_used(tmp_path):
    entry_bytes = 200 * 150 * 3
    cap = int(entry_bytes * 5.5)  # room for five entries
    cache = DecodedImageCache(tmp_path / "cache", cap)
    paths = [_photo(tmp_path / f"{i}.png", (200, 150), seed=i) for i in range(12)]
    cache.load(paths[0], 150)
    os.utime(cache.entry_path(cache.key_for(paths[0], 150)), (1, 1))  # written long ago
    for i, path in enumerate(paths[1:], start=1):
        cache.load(path, 150)
        # A clock of our own for the writes (older than now, newer than paths[0]'s write),
        # so the order does not hang on the file system's timestamp resolution.
        os.utime(cache.entry_path(cache.key_for(path, 150)), (1000 + i, 1000 + i))
        # paths[0] is read again after every write: only the read keeps it recent.
        cache.load(paths[0], 150)
        assert cache.usage() <= cap
    kept = {p.name for p in paths if cache.entry_path(cache.key_for(p, 150)).exists()}
    assert "0.png" in kept
    assert cache.misses == 12  # paths[0] was never evicted and decoded again
    assert "1.png" not in kept and "11.png" in kept
    assert 3 <= len(kept) <= 5
    cache.clear()
    assert cache.usage() == 0


def test_off_and_folder_settings(tmp_path, monkeypatch):
    assert CacheSetting.parse("off").directory is None
    assert CacheSetting.parse("auto").directory == default_cache_dir()
    # tests never touch the user's cache folder
    assert str(default_cache_dir()).startswith(os.environ["MUST_STUDIO_CACHE_DIR"])
    assert CacheSetting.parse(str(tmp_path / "x"), 2).max_bytes == 2 * 1024**3
    path = _photo(tmp_path / "a.jpg", (400, 300))
    off = ImageSource(128)
    np.testing.assert_array_equal(_pixels(off.load(path)),
                                  _pixels(load_rgb_min_side(path, 128)))
    on = ImageSource(128, tmp_path / "cache")
    on.load(path)
    assert on.cache.usage() > 0


def test_eval_dataset_reads_through_the_cache(tmp_path):
    paths = [_photo(tmp_path / f"{i}.jpg", (300, 200), seed=i) for i in range(2)]
    source = ImageSource(64, tmp_path / "cache")
    ds = EvalDataset(paths, PP, source=source)
    first = torch.stack([ds[i][0] for i in range(2)])
    again = torch.stack([ds[i][0] for i in range(2)])
    assert source.cache.misses == 2 and source.cache.hits == 2
    assert torch.equal(first, again)


def test_loader_plan_per_device():
    cpu2 = loader_plan("cpu", cpus=2)
    assert cpu2.workers == 0 and not cpu2.pin_memory
    assert loader_plan("cpu", cpus=16).workers == 4
    gpu = loader_plan("cuda", cpus=16)
    assert gpu.workers == 8 and gpu.pin_memory and gpu.persistent
    assert loader_plan("cuda", cpus=2).workers == 1
    assert loader_plan("cuda", 3, cpus=16).workers == 3


def test_the_epoch_travels_with_the_index(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    _photo(root / "a.jpg", (96, 80))
    ds = TwoViewDataset(root, ["a.jpg"], PP, seed=3)
    sampler = EpochSampler()
    sampler.set_order(1, [0])
    assert list(sampler) == [(1, 0)] and len(sampler) == 1
    by_tuple = ds[(1, 0)]
    ds.set_epoch(1)
    by_epoch = ds[0]
    assert torch.equal(by_tuple[0], by_epoch[0]) and torch.equal(by_tuple[1], by_epoch[1])
    assert not torch.equal(ds[(0, 0)][1], by_tuple[1])


@pytest.mark.slow  # spawning a worker that imports torch takes ~20 s on two busy cores
def test_one_persistent_loader_gives_each_epoch_its_own_views(tmp_path):
    """Worker processes live across epochs, yet draw exactly what the in-process loader
    draws for each epoch (the epoch travels with each index)."""
    root = tmp_path / "photos"
    root.mkdir()
    files = []
    for i in range(4):
        _photo(root / f"{i}.jpg", (96, 80), seed=i)
        files.append(f"{i}.jpg")

    def epochs(plan: LoaderPlan) -> list[torch.Tensor]:
        ds = TwoViewDataset(root, files, PP, seed=3)
        sampler = EpochSampler()
        loader = make_loader(ds, sampler, 2, plan, drop_last=True)
        out = []
        for epoch in range(2):
            sampler.set_order(epoch, [3, 1, 0, 2])
            out.append(torch.cat([torch.cat([w, s]) for w, s, *_ in loader]))
        return out

    here = epochs(LoaderPlan(0, False))
    spawned = epochs(LoaderPlan(1, False, prefetch_factor=2, persistent=True))
    assert not torch.equal(here[0], here[1])  # a new epoch, new augmentations
    for a, b in zip(here, spawned, strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow  # spawns a loader worker (~20 s on two busy cores)
def test_a_run_with_a_worker_process_equals_one_without_and_ends_it(tmp_path, image_folder,
                                                                     class_names,
                                                                     tiny_model_dir):
    import multiprocessing

    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import Trainer, prepare_run
    from must_engine.weights import read_weights

    def run(name: str, workers: int):
        job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                       templates=["a photo of a {}."],
                       overrides={"epochs": 2, "batch_size": 6, "seed": 3,
                                  "num_workers": workers})
        prepare_run(job, tmp_path / name)
        trainer = Trainer(tmp_path / name)
        list(trainer.run())
        return trainer, read_weights(tmp_path / name / "model.safetensors")[0]

    _, here = run("here", 0)
    kept, spawned = run("spawned", 1)
    # The Trainer is still held (as the app may hold it), yet its worker has ended.
    assert kept.workers == 1 and multiprocessing.active_children() == []
    for key in here:
        assert torch.equal(here[key], spawned[key]), key
