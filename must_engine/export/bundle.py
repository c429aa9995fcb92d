"""The bundle: a folder with the adapted classifier in safetensors, its card and a README.

    BUNDLE/
      model.safetensors  image tower + classifier (MustModel names, no mask token/decoder)
      card.json          classes, prompts, model identity and licence, input, settings,
                         data summary, label-free and spot-check figures, engine version
      README.md          what it is, and a short Python example (run by the tests)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from must_engine.classifier import BUNDLE_MODEL_FILE, CARD_FILE, classifier_state, load_classifier
from must_engine.events import ExportCheck
from must_engine.export.card import build_card, sha256_of
from must_engine.export.common import compare, raise_if_failed
from must_engine.models.must_model import MustModel
from must_engine.predict import Predictions
from must_engine.runs import RunInfo
from must_engine.version import __version__

README_FILE = "README.md"
TOLERANCE = 1e-5  # max abs difference on probabilities (the same weights: expect 0)


def write_bundle(run: RunInfo, model: MustModel, folder: Path, *, name: str,
                 predictions: Predictions | None,
                 spot_check: Mapping[str, Any] | None) -> dict[str, Any]:
    """Write the three files into ``folder`` (a staging folder that will be renamed to
    ``name``); returns the card."""
    tensors = classifier_state(model)
    save_file(tensors, str(folder / BUNDLE_MODEL_FILE),
              metadata={"format": "must-classifier/1", "role": "adapted",
                        "class_names": json.dumps(run.class_names)})
    card = build_card(run, model_file=BUNDLE_MODEL_FILE,
                      model_sha256=sha256_of(folder / BUNDLE_MODEL_FILE),
                      predictions=predictions, spot_check=spot_check)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / README_FILE).write_text(readme_text(card, name), encoding="utf-8")
    return card


def check_bundle(folder: Path, samples: torch.Tensor, expected: np.ndarray, *, final: Path,
                 source: str) -> ExportCheck:
    """Load the staged bundle the way a user would and compare its probabilities."""
    clf = load_classifier(folder, device="cpu")
    got = clf.predict_proba(samples)
    check = compare("bundle", got, expected, TOLERANCE, details={"inputs": source})
    raise_if_failed(check, final)
    return check


def example_code(name: str) -> str:
    """The README's Python example; ``name`` is the bundle's folder name, so the example runs
    as written from the folder that holds the bundle."""
    return "\n".join([
        "from must_engine import load_classifier",
        "",
        f"classifier = load_classifier({json.dumps(name, ensure_ascii=False)})"
        "  # this folder; no network needed",
        "print(classifier.class_names)",
        "",
        'for result in classifier.predict(["photo1.jpg", "photo2.jpg"], top_k=3):',
        '    print(result.label, f"{result.confidence:.3f}", result.top_k)',
        "",
        'probs = classifier.predict_proba(["photo1.jpg"])  # numpy array [images, classes]',
        "print(probs.round(3))",
    ])


def readme_text(card: dict[str, Any], name: str) -> str:
    names = card["class_names"]
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    pp = card["preprocess"]
    model = card["model"]
    label_free = card["figures"]["label_free"]
    kept = card.get("classifier")
    lines = [
        f"# {name}: an image classifier adapted with MUST Studio",
        "",
    ]
    if kept and kept.get("warning"):
        lines += [f"**Warning: this classifier is not better than zero-shot by its own "
                  f"label-free measure.** {kept['warning']}", ""]
    lines += [
        f"Classes ({len(names)}): {shown}.",
        "",
        f"Starting model: {model.get('label', model.get('model', 'unknown'))}. "
        f"{model.get('licence_note', '')}",
        "The adapted weights inherit the licence of the starting model.",
        "",
        "## Use it in Python",
        "",
        "With MUST Studio installed (`pip install must-studio`), from the folder that holds "
        "this bundle:",
        "",
        "```python",
        example_code(name),
        "```",
        "",
        "`predict` accepts PIL images, file paths, or tensors that are already preprocessed "
        f"([3,{pp['image_size']},{pp['image_size']}] or a batch); each result has `label`, "
        "`confidence`, `top_k` and `probabilities`.",
        "",
        "## Input",
        "",
        f"- {pp['resize']}",
        f"- mean {pp['mean']}, std {pp['std']}",
        "",
        "## Files",
        "",
        f"- `{BUNDLE_MODEL_FILE}`: {card['weights']['contents']}",
        f"- `{CARD_FILE}`: classes, prompts, model identity, input settings, training "
        "settings, data summary and figures.",
        "",
    ]
    if kept:
        lines += [
            "## Which classifier this is",
            "",
            f"The run kept the {kept['kept']}: {kept['reason']} (label-free score, 0 to 1, "
            "measured without labels; it ranks classifiers, it is not an accuracy).",
            "",
        ]
    if label_free.get("images_scored"):
        lines += [
            "## Figures without labels",
            "",
            f"- images scored: {label_free['images_scored']}",
            f"- mean confidence: {label_free['mean_confidence']:.3f} "
            f"(zero-shot {label_free['zero_shot_mean_confidence']:.3f})",
            f"- labels changed from zero-shot: {100 * label_free['changed_fraction']:.1f}%",
            "",
            "Confidence is not accuracy: check a sample of images by eye before relying on it.",
            "",
        ]
    lines.append(f"Made with MUST Studio {__version__}.")
    return "\n".join(lines) + "\n"
