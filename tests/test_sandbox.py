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


def test_pretraining_runs_and_is_deterministic():
    data = world.make_split(2, "source", seed=5)
    settings = tiny_clip.PretrainSettings(epochs=1, batch_size=10, warmup_steps=1)
    a = tiny_clip.pretrain_tiny_clip(data, world.CLASS_NAMES, seed=1, settings=settings)
    b = tiny_clip.pretrain_tiny_clip(data, world.CLASS_NAMES, seed=1, settings=settings)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and va.equal(vb), ka


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
