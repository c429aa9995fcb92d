"""Made-up results for the results-browser tests: real small images, random probabilities
and a pseudo_labels.json, so every count a test checks can be recomputed with numpy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from must_engine.predict import Predictions
from must_engine.runs import PSEUDO_FILE
from must_engine.testing import write_image_folder
from must_gui.pyside_fix import protect_singletons

# PySide6 6.12 on Python 3.11 drops a reference to None on every Python override that C++
# calls (paint, slots, data) and to True on every emit; a test session paints thousands of
# cells. Without this the session crashes at random (see must_gui/pyside_fix.py).
protect_singletons()

CLASSES = ["red circle", "green square", "blue circle", "yellow square"]


def random_probs(rng: np.random.Generator, n: int, c: int, sharpness: float = 2.0) -> np.ndarray:
    logits = rng.normal(0.0, sharpness, size=(n, c))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def make_predictions(tmp: Path, *, per_class: int = 6, n_rows: int | None = None,
                     seed: int = 0, size: int = 48, adapted: bool = True,
                     distinct: bool = False) -> Predictions:
    """A table over real images. With ``n_rows`` the few files are named again and again,
    or with ``distinct`` each row gets its own name (a hard link to one of the files)."""
    root = write_image_folder(tmp / "photos", CLASSES, per_class, size=size, seed=seed)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    if n_rows is not None and distinct:
        links = root / "many"
        links.mkdir()
        names = []
        for i in range(n_rows):
            name = f"many/img_{i:05d}.png"
            os.link(root / files[i % len(files)], root / name)
            names.append(name)
        files = names
    elif n_rows is not None:
        files = [files[i % len(files)] for i in range(n_rows)]
    rng = np.random.default_rng(seed)
    zero = random_probs(rng, len(files), len(CLASSES))
    # Adapted: mostly the zero-shot answer made surer, sometimes a different one.
    after = random_probs(rng, len(files), len(CLASSES), sharpness=1.0)
    keep = rng.random(len(files)) < 0.7
    after[keep] = (0.4 * after[keep] + 0.6 * zero[keep])
    after /= after.sum(axis=1, keepdims=True)
    return Predictions(root, files, list(CLASSES), zero, after if adapted else None)


def write_pseudo_labels(run_dir: Path, pred: Predictions, threshold: float = 0.6) -> dict:
    """A pseudo_labels.json like the trainer's; the first image was not seen (-1)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probs = pred.final_probs
    rows = []
    for i, path in enumerate(pred.paths):
        label = -1 if i == 0 else int(probs[i].argmax())
        conf = float(probs[i].max())
        rows.append({"path": path, "label": label, "confidence": conf,
                     "passed": label >= 0 and conf > threshold})
    data = {"threshold": threshold, "step": 42, "images": rows}
    (run_dir / PSEUDO_FILE).write_text(json.dumps(data), encoding="utf-8")
    return data
