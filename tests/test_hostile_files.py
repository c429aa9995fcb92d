"""Random bytes, truncations and edits thrown at the image loader and at ``load_classifier``
(1,000 cases each): no crash, no hang, only the errors they promise."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from must_engine.classifier import ClassifierError, load_classifier
from must_engine.images import ImageLoadError, load_rgb, load_thumbnail

CASES = 1000
SECONDS_PER_CASE = 20  # far above any real case; a hang ends the test instead of the suite


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    if os.name != "posix":
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _encoded(fmt: str, **kwargs) -> bytes:
    image = Image.new("RGB", (24, 17), (10, 120, 200))
    for x in range(0, 24, 3):
        image.putpixel((x, x % 17), (250, 20, 20))
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


VALID_IMAGES = {name: _encoded(fmt) for name, fmt in
                [("a.png", "PNG"), ("a.jpg", "JPEG"), ("a.gif", "GIF"), ("a.webp", "WEBP"),
                 ("a.bmp", "BMP"), ("a.tiff", "TIFF")]}


@st.composite
def hostile_image(draw):
    name = draw(st.sampled_from(sorted(VALID_IMAGES)))
    good = VALID_IMAGES[name]
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "header+random"]))
    if kind == "random":
        data = draw(st.binary(max_size=2048))
    elif kind == "truncated":
        data = good[:draw(st.integers(0, len(good) - 1))]
    elif kind == "flipped":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        data = bytes(data)
    else:
        data = good[:draw(st.integers(1, 64))] + draw(st.binary(max_size=512))
    return name, data


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt EXIF and tags
@settings(max_examples=CASES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=hostile_image())
def test_the_image_loader_only_raises_image_load_error(case, tmp_path):
    name, data = case
    path = tmp_path / name
    path.write_bytes(data)
    for load in (load_rgb, lambda p: load_thumbnail(p, 16)):
        with time_limit(SECONDS_PER_CASE):
            try:
                image = load(path)
            except ImageLoadError as exc:
                assert exc.reason
                continue
        assert image.mode == "RGB" and image.width > 0 and image.height > 0


# ---- load_classifier -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_model_dir, image_folder, class_names):
    from must_engine.export import export_run
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import train

    base = tmp_path_factory.mktemp("hostile")
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8})
    list(train(job, base / "run"))
    return export_run(base / "run", "bundle", base / "bundle").path


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=8)
CARD_FIELDS = [("format",), ("class_names",), ("preprocess", "image_size"), ("preprocess", "mean"),
               ("preprocess",), ("architecture", "embed_dim"), ("architecture", "num_classes"),
               ("architecture", "vision_cfg", "width"), ("architecture", "vision_cfg", "layers"),
               ("architecture", "vision_cfg", "patch_size"),
               ("architecture", "vision_cfg", "image_size"),
               ("architecture", "vision_cfg", "mlp_ratio"), ("architecture", "vision_cfg"),
               ("architecture",), ("weights", "sha256")]


@st.composite
def damage(draw):
    target = draw(st.sampled_from(["card.json", "model.safetensors"]))
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "field"]
                                if target == "card.json" else
                                ["random", "truncated", "flipped", "header"]))
    return target, kind, draw(st.data())


def _apply(folder: Path, target: str, kind: str, data) -> None:
    path = folder / target
    raw = path.read_bytes()
    if kind == "random":
        path.write_bytes(data.draw(st.binary(max_size=4096)))
    elif kind == "truncated":
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    elif kind == "flipped":
        body = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 16))):
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(body))
    elif kind == "header":  # the safetensors header: an 8-byte length, then JSON
        n = int.from_bytes(raw[:8], "little")
        header = bytearray(raw[8:8 + n])
        i = data.draw(st.integers(0, len(header) - 1))
        header[i] = data.draw(st.sampled_from(list(b'0123456789{}[]",:ab ')))
        path.write_bytes(raw[:8] + bytes(header) + raw[8 + n:])
    else:  # one field of the card replaced by any JSON value
        card = json.loads(raw)
        keys = data.draw(st.sampled_from(CARD_FIELDS))
        node = card
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = data.draw(JSON_VALUES)
        path.write_text(json.dumps(card), encoding="utf-8")


@settings(max_examples=CASES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=damage())
def test_load_classifier_only_raises_classifier_error(case, bundle):
    target, kind, data = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        shutil.copytree(bundle, folder)
        _apply(folder, target, kind, data)
        with time_limit(SECONDS_PER_CASE):
            try:
                clf = load_classifier(folder)
            except ClassifierError as exc:
                assert str(exc)
                return
        # Loaded: then it must be the intact model (an edit that changed nothing that matters)
        probs = clf.predict_proba(__import__("torch").zeros(1, 3, clf.image_size,
                                                            clf.image_size))
        assert probs.shape == (1, len(clf.class_names))


def test_a_card_claiming_a_huge_input_is_refused_at_once(bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle, folder)
    card = json.loads((folder / "card.json").read_text())
    card["preprocess"]["image_size"] = 100000
    card["architecture"]["vision_cfg"]["image_size"] = 100000
    (folder / "card.json").write_text(json.dumps(card))
    with time_limit(10), pytest.raises(ClassifierError, match="out of range"):
        load_classifier(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda card: card.update(format="must-bundle/2"), "newer than this MUST Studio"),
    (lambda card: card.update(class_names=card["class_names"][::-1]), "class names"),
    (lambda card: card["weights"].update(sha256="0" * 64), "sha256 differs"),
])
def test_newer_or_tampered_bundles_are_refused(edit, message, bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle, folder)
    card = json.loads((folder / "card.json").read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ClassifierError, match=message):
        load_classifier(folder)
