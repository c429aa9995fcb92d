"""The sandbox world, the shipped tiny CLIP and the embedded demo files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must_engine.sandbox import build_demo, tiny_clip, world

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
MODEL_DIR = RESOURCES / "models" / "must-tiny-clip"
DEMO_DIR = RESOURCES / "demo"

needs_demo = pytest.mark.skipif(
    not (MODEL_DIR / tiny_clip.CONFIG_FILE).is_file(),
    reason="resources not built: python -m must_engine.sandbox.build_demo",
)


def _digest(img: Image.Image) -> str:
    return hashlib.sha256(img.tobytes()).hexdigest()


def test_class_names_are_distinct_plain_words():
    names = world.CLASS_NAMES
    assert len(names) >= 8
    assert len(set(names)) == len(names)
    assert all(n.isalpha() and n.islower() for n in names)


def test_renderer_is_deterministic_for_a_seed():
    a = world.make_split(2, "target", seed=11)
    b = world.make_split(2, "target", seed=11)
    c = world.make_split(2, "target", seed=12)
    assert [_digest(i) for i, _ in a] == [_digest(i) for i, _ in b]
    assert [_digest(i) for i, _ in a] != [_digest(i) for i, _ in c]
    # A picture depends on (seed, style, class, index), not on how many are drawn.
    more = world.make_split(3, "target", seed=11)
    assert [_digest(i) for i, _ in more[: len(a)]] == [_digest(i) for i, _ in a]


@pytest.mark.parametrize("style", world.style_names())
def test_every_class_renders_in_every_style(style):
    split = world.make_split(2, style, seed=3, image_size=48)
    assert sorted({c for _, c in split}) == list(range(len(world.CLASS_NAMES)))
    for img, _ in split:
        assert img.mode == "RGB" and img.size == (48, 48)
        assert np.asarray(img).std() > 5  # not a blank picture


def test_styles_differ_in_look():
    src = np.stack([np.asarray(i, float) for i, _ in world.make_split(3, "source", seed=1)])
    tgt = np.stack([np.asarray(i, float) for i, _ in world.make_split(3, "target", seed=1)])
    # Target pictures are darker and noisier at the pixel level.
    assert tgt.mean() < src.mean()
    hf = lambda x: np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
    assert hf(tgt) > hf(src)


def _style_stats(style: str) -> dict[str, float]:
    arr = np.stack([np.asarray(i, float) for i, _ in world.make_split(3, style, seed=1)])
    lum = arr @ np.array([0.299, 0.587, 0.114])
    return {
        "chroma": float((arr.max(-1) - arr.min(-1)).mean()),
        "warmth": float((arr[..., 0] - arr[..., 2]).mean()),
        "dark_floor": float(np.percentile(lum.reshape(len(arr), -1), 5, axis=1).mean()),
        "detail": float(np.abs(np.diff(arr, axis=2)).mean()),
    }


def test_extra_styles_have_their_own_look():
    source, target = _style_stats("source"), _style_stats("target")
    faded = _style_stats("faded")
    assert faded["chroma"] < 0.7 * source["chroma"]  # washed-out colour
    assert faded["warmth"] > source["warmth"] + 15  # warm cast
    assert faded["dark_floor"] > source["dark_floor"] + 20  # lifted blacks
    assert _style_stats("sketch")["chroma"] < 0.4 * source["chroma"]  # pencil on paper
    assert _style_stats("noisy-blur")["detail"] > 1.5 * target["detail"]  # heavy grain
    pastel = _style_stats("pastel")
    assert pastel["dark_floor"] > source["dark_floor"] + 30  # nothing dark
    assert pastel["detail"] > 2 * source["detail"]  # textured


def test_outline_keeps_only_the_edge_of_a_shape():
    from PIL import ImageDraw

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((12, 12, 52, 52), fill=255)
    band = np.asarray(world._outline(mask, 4.0))
    assert band[32, 32] == 0 and band[2, 2] == 0  # inside and outside are empty
    assert band[32, 12] == 255 and band[12, 32] == 255  # the rim is drawn
    assert 0.05 < (band > 0).mean() < 0.25


def test_source_and_target_pictures_are_unchanged_by_the_extra_styles():
    # The shipped demo was rendered before the extra looks existed; pictures in the original
    # styles must not draw any of their random numbers (the demo rebuild would differ).
    demo = RESOURCES / "demo"
    if not (demo / "answer_key.csv").is_file():
        pytest.skip("resources not built: python -m must_engine.sandbox.build_demo")
    recipe = build_demo.DemoRecipe()
    n = recipe.demo_per_class * len(world.CLASS_NAMES)
    order = np.arange(n)
    np.random.default_rng([recipe.demo_split_seed, world._style_key("target"), 0xF11E]).shuffle(order)
    for name_index in range(12):
        k = int(order[name_index])
        i, c = divmod(k, len(world.CLASS_NAMES))
        img = world.render(c, "target", world.image_rng(recipe.demo_split_seed, "target", c, i))
        with Image.open(demo / "images" / f"{name_index + 1:04d}.png") as shipped:
            assert np.array_equal(np.asarray(shipped.convert("RGB")), np.asarray(img))


def test_shifted_style_checks_its_ranges():
    style = world.shifted_style((0.2, 0.6), palette=0.5, name="half")
    assert style.severity == (0.2, 0.6)
    assert world.render(0, style, np.random.default_rng(0)).size == (64, 64)
    with pytest.raises(ValueError, match="Severity"):
        world.shifted_style((0.8, 0.2))


def test_unknown_style_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown sandbox style"):
        world.render(0, "watercolour", np.random.default_rng(0))


def test_write_folder_layouts(tmp_path):
    rows = world.write_folder(tmp_path / "by_class", 1, "source", 0, by_class_subfolders=True)
    for rel, label in rows:
        assert rel.split("/")[0] == label
        assert (tmp_path / "by_class" / rel).is_file()

    key = tmp_path / "key.csv"
    rows = world.write_folder(
        tmp_path / "flat", 2, "target", 0, by_class_subfolders=False, answer_key=key
    )
    files = sorted(p.name for p in (tmp_path / "flat").iterdir())
    assert files == sorted(rel for rel, _ in rows)
    assert world.read_answer_key(key) == dict(rows)
    with pytest.raises(ValueError, match="outside the image folder"):
        world.write_folder(
            tmp_path / "flat2", 1, "target", 0, by_class_subfolders=False,
            answer_key=tmp_path / "flat2" / "key.csv",
        )


def test_tiny_clip_config_registers_with_open_clip():
    import open_clip

    name = tiny_clip.register_tiny_clip()
    assert name in open_clip.list_models()
    model = open_clip.create_model(name)
    assert model.visual.image_size == (64, 64)
    assert model.visual.patch_size == (8, 8)


@pytest.mark.parametrize("size", tiny_clip.TINY_CLIP_SIZES)
def test_pretraining_runs_and_is_deterministic(size):
    data = world.make_split(2, "source", seed=5)
    settings = tiny_clip.PretrainSettings(epochs=1, batch_size=10, warmup_steps=1)
    cfg = tiny_clip.tiny_clip_config(size)
    a = tiny_clip.pretrain_tiny_clip(data, world.CLASS_NAMES, seed=1, settings=settings,
                                     config=cfg)
    b = tiny_clip.pretrain_tiny_clip(data, world.CLASS_NAMES, seed=1, settings=settings,
                                     config=cfg)
    assert a.visual.transformer.width == tiny_clip.TINY_CLIP_SIZES[size].width
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and va.equal(vb), ka


def test_tiny_clip_sizes_differ_and_base_is_the_shipped_config():
    import json

    widths = {k: (v.width, v.layers) for k, v in tiny_clip.TINY_CLIP_SIZES.items()}
    assert len(set(widths.values())) == len(widths) >= 3
    assert tiny_clip.tiny_clip_config() == tiny_clip.tiny_clip_config("base")
    shipped = MODEL_DIR / tiny_clip.CONFIG_FILE
    if shipped.is_file():
        doc = json.loads(shipped.read_text(encoding="utf-8"))
        assert doc["model_cfg"] == tiny_clip.tiny_clip_config()
    with pytest.raises(ValueError, match="Unknown tiny CLIP size"):
        tiny_clip.tiny_clip_config("huge")


def test_save_local_dir_round_trip(tmp_path):
    import open_clip
    import torch

    tiny_clip.register_tiny_clip()
    model = open_clip.create_model(tiny_clip.TINY_CLIP_NAME)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    tiny_clip.save_local_dir(model, tiny_clip.tiny_clip_config(), tmp_path / "m")
    loaded, preprocess, tokenizer = tiny_clip.load_local_dir(tmp_path / "m")
    assert float(loaded.logit_scale.detach()) == pytest.approx(3.0)
    assert tokenizer(["a photo of a star."]).shape == (1, 32)
    x = preprocess(world.make_split(1, "source", seed=0)[0][0])
    assert x.shape == (3, 64, 64)


@needs_demo
def test_shipped_model_loads_and_is_well_above_chance():
    import open_clip
    import torch

    name = "local-dir:" + str(MODEL_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    names = world.CLASS_NAMES
    with torch.inference_mode():
        source = tiny_clip.zero_shot_accuracy(
            model, tokenizer, preprocess, world.make_split(10, "source", seed=4242), names
        )
        target = tiny_clip.zero_shot_accuracy(
            model, tokenizer, preprocess, world.make_split(10, "target", seed=4242), names
        )
        scale = float(model.logit_scale.exp())
    chance = 1 / len(names)
    assert source > 0.75, source
    # The shift leaves room to adapt: clearly above chance, clearly below source.
    assert chance + 0.15 < target < source - 0.15, (source, target)
    assert 1.0 < scale <= 100.0


@needs_demo
def test_shipped_files_stay_small():
    assert build_demo.tree_size(MODEL_DIR) <= 20 * 1024 * 1024
    assert build_demo.tree_size(DEMO_DIR / "images") <= 5 * 1024 * 1024


@needs_demo
def test_demo_answer_key_covers_exactly_the_images():
    key = world.read_answer_key(DEMO_DIR / "answer_key.csv")
    files = {p.name for p in (DEMO_DIR / "images").iterdir() if p.is_file()}
    assert set(key) == files
    classes = (DEMO_DIR / "classes.txt").read_text(encoding="utf-8").split()
    assert tuple(classes) == world.CLASS_NAMES
    assert set(key.values()) == set(classes)
    assert not (DEMO_DIR / "images" / "answer_key.csv").exists()


@pytest.mark.slow
def test_demo_rebuilds_bit_for_bit(tmp_path):
    build_demo.build(tmp_path, seed=0, log=lambda m: None)
    ours = build_demo.tree_hashes(tmp_path)
    shipped = build_demo.tree_hashes(RESOURCES)
    for rel, digest in ours.items():
        assert shipped.get(rel) == digest, rel
