"""Tiny models and made-up images for tests, examples and smoke checks (no network).

``write_tiny_model`` saves a randomly initialised open_clip ViT image-text model in
open_clip's ``local-dir`` layout, so it loads through exactly the path a real model takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_model(out_dir: Path, *, seed: int = 0, cfg: dict | None = None,
                     logit_scale: float = 30.0) -> Path:
    """A random tiny open_clip model folder; returns its path."""
    import open_clip
    from safetensors.torch import save_file

    cfg = json.loads(json.dumps(cfg or TINY_MODEL_CFG))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model("local-dir:" + str(out_dir), load_weights=False)
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(logit_scale)))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "open_clip_model.safetensors"))
    return out_dir


def write_image_folder(root: Path, class_names: list[str], per_class: int, *, size: int = 40,
                       seed: int = 0, subfolders: bool = True) -> Path:
    """Coloured shapes, one colour per class, on noisy backgrounds: made-up photos."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    palette = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (220, 200, 40), (180, 60, 200),
               (40, 200, 200), (240, 140, 40), (120, 120, 120)]
    for c, name in enumerate(class_names):
        folder = root / name if subfolders else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
            img = Image.fromarray(bg, "RGB")
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(size // 5, size // 3))
            cx, cy = rng.integers(r, size - r, size=2)
            colour = palette[c % len(palette)]
            if c % 2 == 0:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
            stem = f"{name}_{i:03d}" if subfolders else f"img_{c}_{i:03d}"
            img.save(folder / f"{stem}.png")
    return root
