"""A ready-to-use adapted classifier: ``load_classifier(path).predict(images)``.

``path`` is an exported bundle (``card.json`` + ``model.safetensors``) or a finished run
folder. The image tower is rebuilt from the saved architecture, so neither the text tower,
a tokenizer nor a network is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from must_engine.devices import resolve_device
from must_engine.models.must_model import MustModel, must_model_from_config
from must_engine.views import Preprocess, eval_view
from must_engine.weights import EXTRA_PREFIX, read_weights

CARD_FILE = "card.json"
BUNDLE_MODEL_FILE = "model.safetensors"
# Parts of MustModel that only training uses; a bundle leaves them out.
TRAINING_ONLY_KEYS = ("mask_token",)
TRAINING_ONLY_PREFIXES = ("decoder.", "ln_patch.")

class ClassifierError(ValueError):
    """A bundle or run that cannot be loaded, or input that cannot be classified."""


@dataclass(frozen=True)
class ImagePrediction:
    """One image's result: the best class, its probability, the top k and all probabilities."""

    label: str
    confidence: float
    index: int  # position of ``label`` in ``class_names``
    top_k: list[tuple[str, float]]
    probabilities: dict[str, float]


def is_training_only(key: str) -> bool:
    return key in TRAINING_ONLY_KEYS or key.startswith(TRAINING_ONLY_PREFIXES)


def classifier_state(model: MustModel) -> dict[str, torch.Tensor]:
    """The tensors a bundle keeps: MustModel's own names minus the training-only parts."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
            if not is_training_only(k)}


def load_classifier_weights(model: MustModel, path: Path) -> None:
    """Load a full MustModel file or a bundle's classifier-only file into ``model``."""
    tensors, _ = read_weights(path)
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not is_training_only(k)]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise ClassifierError(f"{path} does not match the saved architecture (tensor '{bad}'); "
                              "export the bundle again.")


class Classifier:
    """The adapted image classifier. ``preprocess`` is the evaluation transform (PIL image
    -> normalised tensor); ``input_settings`` says what it does."""

    def __init__(self, model: MustModel, class_names: Sequence[str], input_settings: Preprocess,
                 *, device: str | torch.device = "cpu", info: dict[str, Any] | None = None):
        if model.num_classes != len(class_names):
            raise ClassifierError(f"The model has {model.num_classes} outputs but "
                                  f"{len(class_names)} class names were given.")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.input_settings = input_settings
        self.preprocess = eval_view(input_settings)
        self.info = dict(info or {})

    @property
    def image_size(self) -> int:
        return self.input_settings.image_size

    # ---- input ------------------------------------------------------------------------
    def _to_tensor(self, item: Any) -> torch.Tensor:
        from PIL import Image

        if isinstance(item, torch.Tensor):
            return self._check_tensor(item)
        if isinstance(item, Image.Image):
            return self.preprocess(item)
        if isinstance(item, (str, os.PathLike)):
            from must_engine.images import ImageLoadError, load_rgb

            try:
                return self.preprocess(load_rgb(item))
            except ImageLoadError as exc:
                raise ClassifierError(f"Cannot read {item}: {exc.reason}.") from exc
            except FileNotFoundError as exc:
                raise ClassifierError(f"Image file {item} was not found.") from exc
        raise ClassifierError(f"Cannot classify a {type(item).__name__}; give PIL images, "
                              "file paths or preprocessed tensors.")

    def _check_tensor(self, t: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if t.dim() != 3 or tuple(t.shape) != (3, s, s):
            raise ClassifierError(f"Tensors must be preprocessed images of shape [3,{s},{s}] or "
                                  f"[B,3,{s},{s}], got {list(t.shape)}; pass PIL images or paths "
                                  "to have them resized.")
        if not t.is_floating_point():
            raise ClassifierError("Tensors must be float (normalised with the model's mean/std); "
                                  "pass PIL images or paths for raw pixels.")
        return t

    def _batches(self, images: Any, batch_size: int) -> Iterable[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            if images.dim() != 4:
                raise ClassifierError("A tensor input must be [3,H,W] or [B,3,H,W], got "
                                      f"{list(images.shape)}.")
            for start in range(0, images.shape[0], batch_size):
                chunk = images[start:start + batch_size]
                for t in chunk:
                    self._check_tensor(t)
                yield chunk
            return
        items = [images] if not isinstance(images, (list, tuple)) else list(images)
        for start in range(0, len(items), batch_size):
            yield torch.stack([self._to_tensor(x) for x in items[start:start + batch_size]])

    # ---- output -----------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, images: Any, *, batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities, [number of images, number of classes], float32."""
        outs = [self.model(b.to(self.device, torch.float32)).float().softmax(dim=-1).cpu().numpy()
                for b in self._batches(images, max(1, int(batch_size)))]
        if not outs:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(outs, axis=0)

    def predict(self, images: Any, top_k: int = 5, *, batch_size: int = 32,
                ) -> list[ImagePrediction]:
        """One ``ImagePrediction`` per image (PIL images, paths, or preprocessed tensors)."""
        probs = self.predict_proba(images, batch_size=batch_size)
        k = max(1, min(int(top_k), len(self.class_names)))
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            best = int(order[0])
            results.append(ImagePrediction(
                label=self.class_names[best], confidence=float(row[best]), index=best,
                top_k=[(self.class_names[i], float(row[i])) for i in order[:k]],
                probabilities={n: float(p) for n, p in zip(self.class_names, row, strict=True)},
            ))
        return results

    def __repr__(self) -> str:
        return (f"Classifier({len(self.class_names)} classes, input {self.image_size}px, "
                f"device {self.device})")


def _from_bundle(folder: Path, device: str | torch.device) -> Classifier:
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        arch, names = card["architecture"], card["class_names"]
        pp = Preprocess.from_dict(card["preprocess"])
    except (OSError, ValueError, KeyError) as exc:
        raise ClassifierError(f"The card of {folder} cannot be read ({exc}); export the bundle "
                              "again.") from exc
    weights = folder / BUNDLE_MODEL_FILE
    if not weights.is_file():
        raise ClassifierError(f"{folder} has no {BUNDLE_MODEL_FILE}; export the bundle again.")
    model = must_model_from_config(arch)
    load_classifier_weights(model, weights)
    return Classifier(model, names, pp, device=device, info=card)


def _from_run(folder: Path, device: str | torch.device) -> Classifier:
    from must_engine.runs import MODEL_FILE, open_run

    run = open_run(folder)
    if not run.has_adapted_model:
        raise ClassifierError(f"The run in {folder} has not finished training; train it to the "
                              "end first.")
    model = must_model_from_config(run.architecture)
    load_classifier_weights(model, run.file(MODEL_FILE))
    info = {"class_names": run.class_names, "model": run.data.get("model_identity", {}),
            "architecture": run.architecture, "preprocess": run.data["preprocess"]}
    return Classifier(model, run.class_names, run.preprocess, device=device, info=info)


def load_classifier(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """Load an exported bundle or a finished run folder as a ready classifier."""
    path = Path(path).expanduser()
    if path.is_file() and (path.parent / CARD_FILE).is_file():
        path = path.parent  # the bundle's model.safetensors or card.json was given
    if not path.exists():
        raise ClassifierError(f"{path} was not found; give an exported bundle folder or a run "
                              "folder.")
    if (path / CARD_FILE).is_file():
        return _from_bundle(path, device)
    if (path / "run.json").is_file():
        return _from_run(path, device)
    raise ClassifierError(f"{path} is neither a MUST bundle (no {CARD_FILE}) nor a run folder "
                          "(no run.json).")
