"""Where the embedded offline demo lives (shared by the CLI and the app; extend, don't
replace): target-style images, class names, answer key and the project's tiny CLIP model,
all shipped under ``resources/`` and found with importlib.resources."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any


def _resource_dir(*parts: str) -> Path:
    return Path(str(resources.files("resources").joinpath(*parts)))


def demo_dir() -> Path:
    return _resource_dir("demo")


def demo_images_dir() -> Path:
    return demo_dir() / "images"


def demo_answer_key() -> Path:
    """path,label CSV kept beside (never inside) the images folder: only for scoring."""
    return demo_dir() / "answer_key.csv"


def demo_model_dir() -> Path:
    return _resource_dir("models", "must-tiny-clip")


def demo_class_names() -> list[str]:
    lines = (demo_dir() / "classes.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def demo_templates() -> list[str]:
    """The prompts the tiny CLIP was trained with, if it ships them; else the default set."""
    path = demo_model_dir() / "templates.txt"
    if path.is_file():
        return [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    return []


def demo_available() -> bool:
    return (demo_images_dir().is_dir() and (demo_dir() / "classes.txt").is_file()
            and (demo_model_dir() / "open_clip_config.json").is_file())


def demo_settings_overrides() -> dict[str, Any]:
    """Settings for the tiny demo model, chosen by the ablation benchmark (README,
    'Benchmarks'): short run, small batches, CPU friendly."""
    return {"epochs": 10, "batch_size": 32}
