"""What models a user can pick: open_clip's pretrained ViTs, their approximate download
size, and which are already in the local cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CatalogEntry:
    model: str
    pretrained: str
    hf_repo: str  # "" for URL-only weights
    params_millions: float
    download_bytes: int  # approximate (fp32 weights of both towers)
    cached: bool
    cached_bytes: int

    @property
    def label(self) -> str:
        return f"{self.model} ({self.pretrained})"


def is_vit_config(cfg: dict | None) -> bool:
    if not cfg:
        return False
    v = cfg.get("vision_cfg", {})
    return not ("timm_model_name" in v or "hf_model_name" in v
                or isinstance(v.get("layers"), (list, tuple)) or v.get("attentional_pool"))


def approx_params(cfg: dict) -> int:
    """Parameter count from the config (both towers), close enough to size a download."""
    v, t = cfg["vision_cfg"], cfg.get("text_cfg", {})
    w, layers = v.get("width", 768), v.get("layers", 12)
    mlp = v.get("mlp_ratio", 4.0)
    patch, size = v.get("patch_size", 16), v.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    grid = (size // patch) ** 2
    vision = layers * (4 + 2 * mlp) * w * w + 3 * patch * patch * w + (grid + 1) * w
    vision += w * cfg.get("embed_dim", 512)
    tw, tl = t.get("width", 512), t.get("layers", 12)
    text = 0
    if "hf_model_name" not in t:
        text = tl * 12 * tw * tw + t.get("vocab_size", 49408) * tw
        text += t.get("context_length", 77) * tw + tw * cfg.get("embed_dim", 512)
    return int(vision + text)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_repos() -> dict[str, int]:
    """Hugging Face model repos in the local cache and their size on disk (bytes)."""
    root = hf_cache_dir()
    out: dict[str, int] = {}
    if not root.is_dir():
        return out
    for entry in root.iterdir():
        if not entry.name.startswith("models--"):
            continue
        repo = entry.name[len("models--"):].replace("--", "/")
        blobs = entry / "blobs"
        size = sum(f.stat().st_size for f in blobs.iterdir() if f.is_file()
                   and not f.name.endswith(".incomplete")) if blobs.is_dir() else 0
        if size:
            out[repo] = size
    return out


def pretrained_vits() -> list[CatalogEntry]:
    import open_clip

    cached = cached_repos()
    entries = []
    for name, tag in open_clip.list_pretrained():
        cfg = open_clip.get_model_config(name)
        if not is_vit_config(cfg):
            continue
        pcfg = open_clip.get_pretrained_cfg(name, tag) or {}
        hub = pcfg.get("hf_hub", "")
        repo = hub.rstrip("/").split("/")
        repo_id = "/".join(repo[:2]) if len(repo) >= 2 else ""
        params = approx_params(cfg)
        size = cached.get(repo_id, 0)
        entries.append(CatalogEntry(name, tag, repo_id, params / 1e6, params * 4, size > 0, size))
    return entries


def cache_location() -> str:
    """Where downloads go, for the README and the app's model page."""
    return os.fspath(hf_cache_dir())
