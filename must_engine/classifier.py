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

# Inputs beyond these are damage, not a model: the largest open_clip ViTs take 448 px.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048


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


def load_classifier_weights(model: MustModel, path: Path,
                            class_names: Sequence[str] | None = None) -> None:
    """Load a full MustModel file or a bundle's classifier-only file into ``model``; the
    class names stored in the file's metadata, if any, must be ``class_names``."""
    try:
        tensors, meta = read_weights(path)
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise ClassifierError(f"The weights file {path} is damaged or not a safetensors file "
                              f"({_short(exc)}); export the model again.") from exc
    if class_names is not None and "class_names" in meta:
        try:
            stored = json.loads(meta["class_names"])
        except ValueError:
            stored = None
        if stored != list(class_names):
            raise ClassifierError(f"The class names in {path} do not match its card or run; "
                                  "the files come from different exports, or one was edited.")
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise ClassifierError(f"{path} does not match the saved architecture "
                              f"({_short(exc)}); export the bundle again.") from exc
    bad_values = [k for k, v in state.items() if v.is_floating_point() and
                  not bool(torch.isfinite(v).all())]
    if bad_values:
        raise ClassifierError(f"{path} holds non-finite weights ('{bad_values[0]}'); the model "
                              "is broken: train and export it again.")
    # a bundle written before a part existed (the centre) loads without it
    optional = tuple(model.optional_state_prefixes)
    missing = [k for k in result.missing_keys
               if not is_training_only(k) and not k.startswith(optional)]
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
            if item.width < 1 or item.height < 1:
                raise ClassifierError(f"Cannot classify an empty {item.width}x{item.height} "
                                      "image.")
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_format(value: Any, family: str, what: str) -> None:
    """``family/1`` is what this engine writes; a later version is refused with a reason."""
    if value == f"{family}/1":
        return
    if isinstance(value, str) and value.startswith(f"{family}/"):
        raise ClassifierError(f"{what} has format {value}, newer than this MUST Studio reads "
                              f"({family}/1); upgrade MUST Studio to load it.")
    raise ClassifierError(f"{what} is not a MUST {family.split('-')[1]} (format {value!r}); "
                          "give a folder that MUST Studio exported or trained.")


def _checked_names(names: Any, what: str) -> list[str]:
    if (not isinstance(names, list) or len(names) < 2
            or not all(isinstance(n, str) and n.strip() for n in names)
            or len(set(names)) != len(names)):
        raise ClassifierError(f"The class names in {what} are damaged (they must be two or more "
                              "distinct names); export the model again.")
    return list(names)


def _checked_preprocess(data: Any, what: str) -> Preprocess:
    try:
        pp = Preprocess.from_dict(data)
        ok = (MIN_IMAGE_SIZE <= pp.image_size <= MAX_IMAGE_SIZE
              and len(pp.mean) == 3 and len(pp.std) == 3
              and all(np.isfinite(v) for v in (*pp.mean, *pp.std))
              and all(v > 0 for v in pp.std))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ClassifierError(f"The input settings in {what} are damaged ({_short(exc)}); "
                              "export the model again.") from exc
    if not ok:
        raise ClassifierError(f"The input settings in {what} are out of range (image size "
                              f"{pp.image_size}, {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} px, three "
                              "finite means and positive stds expected); export it again.")
    return pp


def _weight_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], int]:
    """Tensor shapes from a safetensors header (no tensor is read) and the number of
    transformer blocks they hold."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise ClassifierError(f"The weights file {path} is damaged or not a safetensors file "
                              f"({_short(exc)}); export the model again.") from exc
    prefix = "visual.transformer.resblocks."
    blocks = {k[len(prefix):].split(".", 1)[0] for k in shapes if k.startswith(prefix)}
    return shapes, len(blocks)


def _checked_model(arch: Any, names: list[str], pp: Preprocess, what: str,
                   weights: Path) -> MustModel:
    """Build the image tower, refusing architectures that are damaged or absurdly large
    (a card saying image_size 100000 would otherwise allocate for minutes)."""
    try:
        vision = arch["vision_cfg"]
        width, layers = int(vision["width"]), int(vision["layers"])
        size, patch = int(vision["image_size"]), int(vision["patch_size"])
        embed_dim, num_classes = int(arch["embed_dim"]), int(arch["num_classes"])
        tokens = (size // patch) ** 2 if patch > 0 else -1
        mlp_width = int(width * float(vision.get("mlp_ratio", 4.0)))
        ok = (0 < width <= 8192 and 0 < layers <= 128 and 0 < embed_dim <= 8192
              and size == pp.image_size and 0 < patch <= size and 0 < tokens <= 16384
              and num_classes == len(names))
    except (TypeError, ValueError, KeyError, OverflowError, ZeroDivisionError,
            AttributeError) as exc:
        raise ClassifierError(f"The architecture in {what} is damaged ({_short(exc)}); export "
                              "the model again.") from exc
    if not ok:
        raise ClassifierError(f"The architecture in {what} does not fit its input settings or "
                              "class names, or is out of range; export the model again.")
    if vision.get("attentional_pool"):
        raise ClassifierError(f"The architecture in {what} is not a MUST image tower; export "
                              "the model again.")
    expected = {"visual.conv1.weight": (width, 3, patch, patch),
                "visual.positional_embedding": (tokens + 1, width),
                "visual.transformer.resblocks.0.mlp.c_fc.weight": (mlp_width, width),
                "classifier": (embed_dim, num_classes)}
    shapes, blocks = _weight_shapes(weights)
    wrong = [k for k, shape in expected.items() if shapes.get(k) != shape]
    if wrong or blocks != layers:
        # Checked before building: the model is then no larger than its weights file.
        raise ClassifierError(f"The architecture in {what} does not match {weights.name} "
                              f"({wrong[0] if wrong else f'{blocks} blocks, not {layers}'}); "
                              "the files come from different exports, or one was edited.")
    try:
        return must_model_from_config(arch)
    except Exception as exc:  # open_clip raises assorted types for configs it cannot build
        raise ClassifierError(f"The architecture in {what} cannot be built ({_short(exc)}); "
                              "export the model again.") from exc


def _read_card(folder: Path) -> dict[str, Any]:
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClassifierError(f"The card of {folder} cannot be read ({_short(exc)}); export "
                              "the bundle again.") from exc
    if not isinstance(card, dict):
        raise ClassifierError(f"The card of {folder} is damaged (not a JSON object); export the "
                              "bundle again.")
    return card


def _check_sha256(card: dict[str, Any], weights: Path) -> None:
    recorded = card.get("weights", {}).get("sha256") if isinstance(card.get("weights"),
                                                                    dict) else None
    if not recorded:
        return
    import hashlib

    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != recorded:
        raise ClassifierError(f"{weights} is not the file its card describes (sha256 differs): "
                              "it was changed or damaged; export the bundle again.")


def _from_bundle(folder: Path, device: str | torch.device) -> Classifier:
    card = _read_card(folder)
    what = f"the card of {folder}"
    _check_format(card.get("format"), "must-bundle", f"The bundle {folder}")
    names = _checked_names(card.get("class_names"), what)
    pp = _checked_preprocess(card.get("preprocess"), what)
    weights = folder / BUNDLE_MODEL_FILE
    if not weights.is_file():
        raise ClassifierError(f"{folder} has no {BUNDLE_MODEL_FILE}; export the bundle again.")
    _check_sha256(card, weights)
    model = _checked_model(card.get("architecture"), names, pp, what, weights)
    load_classifier_weights(model, weights, names)
    return Classifier(model, names, pp, device=device, info=card)


def _from_run(folder: Path, device: str | torch.device) -> Classifier:
    from must_engine.runs import MODEL_FILE, RunError, open_run

    try:
        run = open_run(folder)
        data = run.data
        _check_format(data.get("format"), "must-run", f"The run {folder}")
        names = _checked_names(data.get("job", {}).get("class_names"), f"{folder}/run.json")
        pp = _checked_preprocess(data.get("preprocess"), f"{folder}/run.json")
        arch = data.get("architecture")
    except RunError as exc:
        raise ClassifierError(str(exc)) from exc
    except (AttributeError, TypeError) as exc:
        raise ClassifierError(f"{folder}/run.json is damaged ({_short(exc)}).") from exc
    if not run.has_adapted_model:
        raise ClassifierError(f"The run in {folder} has not finished training; train it to the "
                              "end first.")
    model = _checked_model(arch, names, pp, f"{folder}/run.json", run.file(MODEL_FILE))
    load_classifier_weights(model, run.file(MODEL_FILE), names)
    info = {"class_names": names, "model": data.get("model_identity", {}),
            "architecture": arch, "preprocess": data["preprocess"]}
    return Classifier(model, names, pp, device=device, info=info)


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
