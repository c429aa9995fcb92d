"""Data the speed benchmarks share, made once in a folder outside the repository.

- ``photos_12mp``: 200 JPEGs of 4000x3000 (12 megapixels), upscaled from real flower photos
  when a folder of them is given (``--photos``), else synthesised (smooth shapes + grain);
- ``photos_256``: the same pictures at 256x256;
- ``vit_b32``: an open_clip ViT-B-32 with random weights in the ``local-dir`` layout (the
  architecture of the published model; no download).

    python tests/bench/speed_data.py --data /tmp/must-speed [--photos ../shared/data/flowers5]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

VIT_B32_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                 "layers": 12},
}
CLASSES = ["daisy", "dandelion", "rose", "sunflower", "tulip"]


def one_thread() -> None:
    """The machine is shared: benchmarks run torch on one thread."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _sources(photos: Path | None, n: int) -> list:
    from PIL import Image, ImageDraw

    if photos is not None and photos.is_dir():
        files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        step = max(1, len(files) // n)
        return [Image.open(f).convert("RGB") for f in files[::step][:n]]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        base = rng.integers(0, 255, size=(3,))
        im = Image.fromarray(np.clip(rng.normal(0, 40, (60, 80, 3)) + base, 0, 255)
                             .astype(np.uint8), "RGB").resize((800, 600))
        d = ImageDraw.Draw(im)
        for _ in range(8):
            x, y, r = rng.integers(0, 700), rng.integers(0, 500), int(rng.integers(30, 200))
            d.ellipse([x, y, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        out.append(im)
    return out


def _fit(im, size: tuple[int, int]):
    """Centre-crop to the aspect ratio of ``size`` and resize (bicubic)."""
    from PIL import Image, ImageOps

    return ImageOps.fit(im, size, Image.Resampling.BICUBIC)


def make_photos(out: Path, size: tuple[int, int], n: int, photos: Path | None) -> Path:
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    rng = np.random.default_rng(1)
    # Grain, as a real sensor has (without it an upscaled JPEG is unrealistically small and
    # quick to decode): one tile of noise, repeated, is enough for the entropy coder.
    tile = rng.integers(-4, 5, size=(256, 256, 3), dtype=np.int16)
    reps = (size[1] // 256 + 1, size[0] // 256 + 1, 1)
    grain = np.tile(tile, reps)[: size[1], : size[0]]
    for i, im in enumerate(_sources(photos, n)):
        big = np.asarray(_fit(im, size), dtype=np.int16) + grain
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8), "RGB").save(
            out / f"{CLASSES[i % 5]}_{i:03d}.jpg", quality=90)
    done.touch()
    return out


def vit_b32(data: Path) -> Path:
    from must_engine.testing import write_tiny_model

    out = data / "vit-b-32-random"
    if not (out / "open_clip_model.safetensors").exists():
        write_tiny_model(out, cfg=VIT_B32_CFG, logit_scale=100.0)
    return out


def tiny_clip() -> Path:
    from must_engine.demo_files import demo_model_dir

    return demo_model_dir()


def photos_12mp(data: Path, photos: Path | None = None) -> Path:
    return make_photos(data / "photos-12mp", (4000, 3000), 200, photos)


def photos_256(data: Path, photos: Path | None = None) -> Path:
    return make_photos(data / "photos-256", (256, 256), 200, photos)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True,
                   help="folder for the generated photos and models (outside the repository)")
    p.add_argument("--photos", type=Path, default=None,
                   help="a folder of real JPEG photos to upscale (default: synthesised)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    args = p.parse_args()
    one_thread()
    print(photos_12mp(args.data, args.photos))
    print(photos_256(args.data, args.photos))
    print(vit_b32(args.data))


if __name__ == "__main__":
    main()
