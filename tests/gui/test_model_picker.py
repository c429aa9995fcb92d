"""The model picker shows the model that loads, lists the shipped tiny CLIP, and searches."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from must_engine import demo_files
from must_engine.models.catalog import CatalogEntry
from must_gui.widgets.model_picker import SHIPPED_LABEL, ModelCatalog, ModelPicker

pytestmark = pytest.mark.gui

TAGS = [("ViT-B-32", "openai"), ("ViT-B-32", "laion400m_e31"), ("ViT-B-32", "laion2b_e16"),
        ("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-16", "openai"),
        ("ViT-B-16", "laion2b_s34b_b88k"), ("ViT-L-14", "openai")]


def catalog() -> ModelCatalog:
    entries = [CatalogEntry(m, t, f"hub/{m}.{t}", 150.0, 600_000_000, t == "openai",
                            600_000_000 if t == "openai" else 0) for m, t in TAGS]
    return ModelCatalog(entries, ["ViT-B-32", "ViT-B-16", "ViT-L-14"], "/cache")


@pytest.fixture
def picker(qtbot):
    widget = ModelPicker()
    qtbot.addWidget(widget)
    widget.show()
    return widget


def test_the_label_shown_is_the_model_that_loads(picker):
    # The project stores laion2b_s34b_b79k; the list has openai first. The combo showed
    # "ViT-B-32 · openai" while the project loaded the other one.
    picker.set_model("ViT-B-32", "laion2b_s34b_b79k")
    picker._catalog_ready(catalog())
    assert picker.combo.currentText().startswith("ViT-B-32 · laion2b_s34b_b79k")
    assert picker.combo.currentData() == picker.model() == ("ViT-B-32", "laion2b_s34b_b79k")
    for model, tag in TAGS:
        picker.set_model(model, tag)
        assert picker.combo.currentText().startswith(f"{model} · {tag} ")


def test_the_shipped_tiny_clip_is_in_the_list(picker, qtbot):
    picker.set_model("ViT-B-32", "openai")
    picker._catalog_ready(catalog())
    labels = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert labels[0] == SHIPPED_LABEL
    with qtbot.waitSignal(picker.modelChanged) as changed:
        picker.combo.setCurrentIndex(0)
    model, pretrained = changed.args
    assert model.startswith("local-dir:") and pretrained == ""
    assert Path(model[len("local-dir:"):]) == demo_files.demo_model_dir().resolve()
    # The demo project names the folder as installed: still the same entry, not a second one.
    picker.set_model(f"local-dir:{demo_files.demo_model_dir()}", "")
    assert picker.combo.currentText() == SHIPPED_LABEL
    assert picker.combo.count() == len(TAGS) + 1


def test_searching_narrows_the_list_and_keeps_the_current_model(picker, qtbot):
    picker.set_model("ViT-B-32", "laion2b_s34b_b79k")
    picker._catalog_ready(catalog())
    qtbot.keyClicks(picker.search, "b-16 LAION")
    labels = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert [label.split("   ")[0] for label in labels] == [
        "ViT-B-32 · laion2b_s34b_b79k", "ViT-B-16 · laion2b_s34b_b88k"]
    assert picker.model() == ("ViT-B-32", "laion2b_s34b_b79k")  # searching picks nothing
    assert picker.combo.currentData() == picker.model()
    qtbot.keyClicks(picker.search, " cached")
    assert picker.combo.count() == 1
    picker.search.clear()
    assert picker.combo.count() == len(TAGS) + 1
    # From the search box, Enter opens the list to choose from.
    qtbot.keyClicks(picker.search, "tiny")
    qtbot.keyClick(picker.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: picker.combo.view().isVisible(), timeout=2000)
    picker.combo.hidePopup()
