"""Shared fixtures: a tiny random open_clip model and made-up images (no network).

Tests never touch the user's real settings, caches or the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from must_engine.testing import write_image_folder, write_tiny_model  # noqa: E402

CLASSES = ["red circle", "green square", "blue circle"]


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("MUST_STUDIO_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("MUST_STUDIO_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("MUST_STUDIO_DATA_DIR", str(base / "data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def class_names():
    return list(CLASSES)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Class-named subfolders, 8 images each (labels only used for `must eval`)."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "photos", CLASSES, 8)
