"""Where a pretrained model comes from, and loading it through open_clip.

A model is named the way open_clip names it:

- a built-in architecture with a pretrained tag: ``ViT-B-32`` + ``laion2b_s34b_b79k``;
- ``hf-hub:ORG/REPO`` (an open_clip repository on the Hugging Face Hub);
- ``local-dir:PATH``, or a plain directory holding ``open_clip_config.json`` and weights;
- a built-in architecture with a checkpoint *file* as the pretrained value.

Downloads go through open_clip / huggingface_hub into their usual cache, so ``HF_HOME`` and
``HF_HUB_OFFLINE`` are honoured; progress is reported as ``DownloadProgress`` events.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from must_engine.events import DownloadProgress, Event, Status
from must_engine.models.hub_probe import HubProbe
from must_engine.views import Preprocess

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"

EventSink = Callable[[Event], None]


class ModelError(ValueError):
    """A model that cannot be used, with a sentence saying what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for, normalised. ``pretrained`` is a tag or a checkpoint path."""

    model: str
    pretrained: str = ""

    @property
    def kind(self) -> str:
        if self.model.startswith(HF_PREFIX):
            return "hf-hub"
        if self.model.startswith(LOCAL_PREFIX):
            return "local-dir"
        if self.pretrained and os.path.isfile(self.pretrained):
            return "checkpoint"
        return "builtin"

    @property
    def open_clip_name(self) -> str:
        return self.model

    @property
    def label(self) -> str:
        if self.kind == "builtin" and self.pretrained:
            return f"{self.model} ({self.pretrained})"
        if self.kind == "checkpoint":
            return f"{self.model} ({Path(self.pretrained).name})"
        return self.model

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, "pretrained": self.pretrained}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> ModelSpec:
        return cls(model=data["model"], pretrained=data.get("pretrained", "") or "")

    @classmethod
    def parse(cls, model: str, pretrained: str | None = None) -> ModelSpec:
        """Normalise user input: a plain directory with an open_clip config becomes
        ``local-dir:``; relative local paths become absolute so a run can be reopened from
        anywhere."""
        model = (model or "").strip()
        pretrained = (pretrained or "").strip()
        if not model:
            raise ModelError("No model given; name one, e.g. --model ViT-B-32 --pretrained "
                             "laion2b_s34b_b79k, or a local folder.")
        if model.startswith(LOCAL_PREFIX):
            path = Path(model[len(LOCAL_PREFIX):]).expanduser().resolve()
            return cls(LOCAL_PREFIX + str(path))
        if model.startswith(HF_PREFIX):
            return cls(model)
        candidate = Path(model).expanduser()
        if candidate.is_dir():
            if not (candidate / CONFIG_NAME).is_file():
                raise ModelError(f"The folder {candidate} has no {CONFIG_NAME}; point to an "
                                 "open_clip model folder (config + weights).")
            return cls(LOCAL_PREFIX + str(candidate.resolve()))
        if candidate.suffix in {".pt", ".pth", ".bin", ".safetensors"} and not pretrained:
            raise ModelError(f"{model} looks like a checkpoint file; name its architecture too, "
                             f"e.g. --model ViT-B-16 --pretrained {model}.")
        if pretrained and (Path(pretrained).expanduser().exists() or "/" in pretrained
                           or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ModelError(f"Checkpoint file {pretrained} was not found.")
            return cls(model, str(path.resolve()))
        return cls(model, pretrained)


@dataclass
class LoadedClip:
    """A pretrained image-text model ready to build a MUST model from."""

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: Any
    preprocess: Preprocess
    model_cfg: dict[str, Any]
    quick_gelu: bool
    logit_scale: float
    identity: dict[str, Any] = field(default_factory=dict)


def _open_clip():
    import open_clip

    return open_clip


def builtin_model_config(name: str) -> dict[str, Any] | None:
    return _open_clip().get_model_config(name)


def read_model_config(spec: ModelSpec, on_event: EventSink | None = None,
                      hub: HubProbe | None = None) -> dict[str, Any]:
    """The open_clip model config (``model_cfg``) of a spec, without building the model.
    hub: the reachability probe to share with a following prefetch_weights (else a new one)."""
    oc = _open_clip()
    if spec.kind == "local-dir":
        path = Path(spec.model[len(LOCAL_PREFIX):]) / CONFIG_NAME
        if not path.is_file():
            raise ModelError(f"No {CONFIG_NAME} in {path.parent}; point to an open_clip model "
                             "folder.")
        if not local_weight_files(path.parent):
            raise ModelError(f"The model folder {path.parent} has a {CONFIG_NAME} but no weights "
                             "(open_clip_model.safetensors, or a .bin/.pth file); copy the "
                             "weights file into it.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{path} cannot be read as JSON ({exc}); copy the model folder "
                             "again.") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{path} is not an open_clip model config; copy the model folder "
                             "again.")
        return data.get("model_cfg", data)
    if spec.kind == "hf-hub":
        repo = spec.model[len(HF_PREFIX):]
        cfg_path = _hub_download(repo, CONFIG_NAME, on_event, required=True,
                                 hub=hub or HubProbe())
        data = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
        return data.get("model_cfg", data)
    cfg = oc.get_model_config(spec.model)
    if cfg is None:
        raise ModelError(f"Unknown model '{spec.model}'. Run `must models` for the names open_clip "
                         "knows, or give hf-hub:ORG/REPO or a local model folder.")
    return cfg


def local_weight_files(folder: Path) -> list[Path]:
    """The weight files open_clip would look for in a local model folder (it silently builds
    a randomly initialised model when there are none)."""
    return sorted(p for pattern in ("*.safetensors", "*.bin", "*.pth")
                  for p in Path(folder).glob(pattern) if p.is_file())


def check_is_vit(model_cfg: dict[str, Any], name: str) -> None:
    """MUST masks image patches, so it needs open_clip's own ViT image tower."""
    vision = model_cfg.get("vision_cfg", {})
    if "timm_model_name" in vision:
        raise ModelError(f"{name} uses a timm image tower ({vision['timm_model_name']}); MUST Studio "
                         "needs open_clip's own ViT tower: pick a ViT-* model such as ViT-B-16.")
    if "hf_model_name" in vision:
        raise ModelError(f"{name} uses a Hugging Face image tower; pick an open_clip ViT-* model.")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise ModelError(f"{name} has a ResNet image tower, not a ViT; MUST masks image patches, "
                         "so it needs a ViT: pick a ViT-* model such as ViT-B-16.")
    if vision.get("attentional_pool"):
        raise ModelError(f"{name} pools image tokens with attention (CoCa style); MUST Studio "
                         "needs a ViT that pools with its class token or the token mean.")


def _progress_tqdm(what: str, on_event: EventSink):
    """A tqdm class that reports bytes as events instead of drawing a bar."""
    from tqdm.auto import tqdm

    class _Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)
            on_event(DownloadProgress(what, 0, int(self.total or 0)))

        def update(self, n=1):
            out = super().update(n)
            on_event(DownloadProgress(what, int(self.n), int(self.total or 0)))
            return out

        def close(self):
            fp = self.fp
            super().close()
            with contextlib.suppress(Exception):
                fp.close()

    return _Reporter


def _hub_download(repo: str, filename: str, on_event: EventSink | None, *, required: bool,
                  hub: HubProbe):
    """Fetch one file into the Hugging Face cache, reporting progress; None if absent and
    not required. With the Hub unreachable, only the cache is looked at (no retries)."""
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {}
    if not hub.reachable():
        kwargs["local_files_only"] = True
    if on_event is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = _progress_tqdm(f"{repo}/{filename}", on_event)
    try:
        return hf_hub_download(repo_id=repo, filename=filename, **kwargs)
    except Exception as exc:  # huggingface_hub raises many types; sort them for the user
        if not required:
            return None
        raise ModelError(_describe_download_failure(f"{repo}/{filename}", exc)) from exc


def _describe_download_failure(what: str, exc: Exception) -> str:
    from huggingface_hub import constants

    text = f"{type(exc).__name__}: {exc}"
    if constants.HF_HUB_OFFLINE or "offline" in text.lower() or "LocalEntryNotFound" in text:
        return (f"{what} is not in the model cache and downloads are off or unreachable; "
                "connect once to download it, or choose a local model folder.")
    if "404" in text or "RepositoryNotFound" in text or "EntryNotFound" in text:
        return f"{what} does not exist on the Hugging Face Hub; check the name."
    return f"Could not download {what} ({text.splitlines()[0][:200]}); check the connection."


def prefetch_weights(spec: ModelSpec, on_event: EventSink | None = None,
                     hub: HubProbe | None = None) -> None:
    """Download a model's weights into the cache with progress events, so that open_clip's
    own (silent) download finds them there."""
    probe = hub or HubProbe()
    if spec.kind == "hf-hub":
        repo = spec.model[len(HF_PREFIX):]
        if _hub_download(repo, "open_clip_model.safetensors", on_event, required=False,
                         hub=probe) is None:
            _hub_download(repo, "open_clip_pytorch_model.bin", on_event, required=True,
                          hub=probe)
        return
    if spec.kind != "builtin" or not spec.pretrained:
        return
    oc = _open_clip()
    cfg = oc.get_pretrained_cfg(spec.model, spec.pretrained)
    if not cfg:
        tags = oc.list_pretrained_tags_by_model(spec.model)
        hint = f" Known tags: {', '.join(tags)}." if tags else ""
        raise ModelError(f"'{spec.pretrained}' is not a pretrained tag of {spec.model}.{hint}")
    hub = cfg.get("hf_hub", "")
    if not hub:
        return  # URL-only weights: open_clip downloads them itself
    repo, filename = os.path.split(hub.rstrip("/") if hub.endswith("/") else hub)
    if hub.endswith("/"):
        repo, filename = hub.rstrip("/"), "open_clip_pytorch_model.bin"
    safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else (
        filename.rsplit(".", 1)[0] + ".safetensors")
    if _hub_download(repo, safe, on_event, required=False, hub=probe) is None:
        _hub_download(repo, filename, on_event, required=True, hub=probe)


def _uses_quick_gelu(visual: torch.nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in visual.modules())


def load_clip(
    spec: ModelSpec,
    *,
    device: str | torch.device = "cpu",
    on_event: EventSink | None = None,
) -> LoadedClip:
    """Load a pretrained open_clip model (image and text towers) for building a classifier."""
    oc = _open_clip()
    emit = on_event or (lambda _e: None)
    hub = HubProbe()  # asked at most once for this load, only if a download is needed
    model_cfg = read_model_config(spec, on_event, hub)
    check_is_vit(model_cfg, spec.label)
    if spec.kind == "builtin" and not spec.pretrained:
        raise ModelError(f"{spec.model} needs a pretrained tag (random weights cannot classify): "
                         f"one of {', '.join(oc.list_pretrained_tags_by_model(spec.model)) or 'none'}"
                         ", or a checkpoint file.")
    emit(Status(f"Fetching {spec.label}"))
    prefetch_weights(spec, on_event, hub)
    emit(Status(f"Loading {spec.label}"))
    try:
        if spec.kind in ("hf-hub", "local-dir"):
            model = oc.create_model(spec.model, device="cpu")
        else:
            model = oc.create_model(spec.model, pretrained=spec.pretrained, device="cpu")
        tokenizer = oc.get_tokenizer(spec.model)
    except ModelError:
        raise
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise ModelError(f"Could not load {spec.label}: {str(exc).splitlines()[0][:300]}") from exc
    except SafetensorError as exc:  # a cut-short download or a damaged file, not a bug
        raise ModelError(f"The weights file of {spec.label} is damaged "
                         f"({str(exc).splitlines()[0][:200]}); delete it (a cached download: "
                         "see `must models` for the cache) so that it is fetched again.") from exc
    except Exception as exc:  # noqa: BLE001 - pickled non-weights raise assorted types
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"Could not load {spec.label}: {text} (are the weights damaged, or not "
                         "an open_clip checkpoint?)") from exc
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise ModelError(f"{spec.label}'s image tower is a {type(visual).__name__}, not an "
                         "open_clip VisionTransformer; pick a ViT-* model.")
    if getattr(visual, "attn_pool", None) is not None:
        check_is_vit({"vision_cfg": {"attentional_pool": True}}, spec.label)
    pp = getattr(visual, "preprocess_cfg", None) or {}
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    preprocess = Preprocess(
        image_size=int(size),
        mean=tuple(float(v) for v in pp.get("mean", visual.image_mean)),
        std=tuple(float(v) for v in pp.get("std", visual.image_std)),
        interpolation=str(pp.get("interpolation", "bicubic")),
    )
    scale = float(model.logit_scale.detach().exp().clamp(max=100).item())
    model.eval().to(device)
    identity = {
        **spec.to_dict(),
        "kind": spec.kind,
        "label": spec.label,
        "license_note": license_note(spec),
        "open_clip_version": oc.__version__,
    }
    return LoadedClip(spec, model, tokenizer, preprocess, model_cfg, _uses_quick_gelu(visual),
                      scale, identity)


def license_note(spec: ModelSpec) -> str:
    if spec.kind == "builtin":
        tag = (spec.pretrained or "").lower()
        if tag == "openai":
            return "OpenAI CLIP weights: MIT licence (see the CLIP repository's model card)."
        if tag.startswith(("laion", "datacomp", "commonpool", "dfn", "metaclip")):
            return (f"open_clip weights '{spec.pretrained}': see the model card on the Hugging Face "
                    "Hub for the licence and the data it was trained on.")
    if spec.kind == "hf-hub":
        return f"See the model card of {spec.model[len(HF_PREFIX):]} for its licence."
    return "Local weights: the licence is whatever their author gave them."
