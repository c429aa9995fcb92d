"""The image views of MUST: weak (teacher), strong (student) and evaluation transforms.

All three are built from the model's own preprocess settings (input size, mean, std,
interpolation), so a model with other statistics than OpenAI CLIP is fed correctly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageOps
from timm.data import auto_augment as timm_aa
from timm.data import create_transform
from torchvision import transforms as T

from .images import to_rgb

DEFAULT_RANDAUGMENT = "rand-m9-mstd0.5-inc1"

_INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "box": T.InterpolationMode.BOX,
    "hamming": T.InterpolationMode.HAMMING,
    "lanczos": T.InterpolationMode.LANCZOS,
}


@dataclass(frozen=True)
class Preprocess:
    """How the model expects its input: square size, per-channel mean/std, resampling."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(
                f"image_size must be a positive whole number, got {self.image_size!r}."
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must each hold three numbers, one per RGB channel.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be above zero, got {tuple(self.std)}.")
        if self.interpolation not in _INTERPOLATIONS:
            names = ", ".join(sorted(_INTERPOLATIONS))
            raise ValueError(f"Unknown interpolation {self.interpolation!r}; use one of {names}.")
        # Normalise sequences (lists from JSON) to float tuples so equality and hashing work.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        """Read our own dict or an open_clip `preprocess_cfg` (which says `size`, not `image_size`)."""
        size = data.get("image_size", data.get("size"))
        if size is None:
            raise ValueError("The preprocess settings name no image size ('image_size' or 'size').")
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or int(size[0]) != int(size[1]):
                raise ValueError(f"Only square model inputs are supported, got size {list(size)}.")
            size = size[0]
        return cls(
            image_size=int(size),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=str(data.get("interpolation", "bicubic")),
        )


class EnsureRGB:
    """First step of every view: images not already RGB go through the engine's converter."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else to_rgb(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _normalize(pp: Preprocess) -> T.Normalize:
    return T.Normalize(mean=pp.mean, std=pp.std)


def weak_view(pp: Preprocess) -> T.Compose:
    """Teacher view: shorter side to the input size, random crop. No flips, no colour changes."""
    return T.Compose(
        [
            EnsureRGB(),
            T.Resize(pp.image_size, interpolation=_INTERPOLATIONS[pp.interpolation]),
            T.RandomCrop(pp.image_size),
            T.ToTensor(),
            _normalize(pp),
        ]
    )


def eval_view(pp: Preprocess) -> T.Compose:
    """Evaluation/prediction view: shorter side to the input size, centre crop."""
    return T.Compose(
        [
            EnsureRGB(),
            T.Resize(pp.image_size, interpolation=_INTERPOLATIONS[pp.interpolation]),
            T.CenterCrop(pp.image_size),
            T.ToTensor(),
            _normalize(pp),
        ]
    )


def strong_view(
    pp: Preprocess,
    *,
    randaugment: str | None = DEFAULT_RANDAUGMENT,
    scale_min: float = 0.3,
) -> T.Compose:
    """Student view: RandomResizedCrop(scale_min..1) + flip + timm RandAugment, no colour jitter.

    randaugment=None leaves RandAugment out (crop and flip only). Posterize ops are guarded
    (see `guard_posterize`).
    """
    if not 0.0 < scale_min <= 1.0:
        raise ValueError(f"scale_min must be in (0, 1], got {scale_min}.")
    built = create_transform(
        pp.image_size,
        is_training=True,
        scale=(scale_min, 1.0),
        auto_augment=randaugment or None,
        interpolation=pp.interpolation,
        color_jitter=None,
        re_prob=0.0,
        mean=pp.mean,
        std=pp.std,
    )
    guard_posterize(built)
    return T.Compose([EnsureRGB(), *built.transforms])


# --- the posterize guard ------------------------------------------------------------------
# timm's increasing posterize maps magnitude 10 to "keep 0 bits" (and plain posterize maps
# magnitude < 2.5 to 0). Pillow 13 refuses bits outside 1..8 with ValueError, which with
# "rand-m9-mstd0.5-inc1" hits about one image in 700 and kills a long run mid-epoch. The
# guard swaps the op's function for one that clamps the bit count into Pillow's range.


def safe_posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize with bits clamped to Pillow's accepted 1..8 (8 or more = no change)."""
    bits = int(bits_to_keep)
    if bits >= 8:
        return img
    return ImageOps.posterize(img, max(1, bits))


def iter_augment_ops(transform: Any) -> Iterator[timm_aa.AugmentOp]:
    """Every timm AugmentOp inside a transform (Compose, RandAugment, AutoAugment, AugMix...)."""
    stack = [transform]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, timm_aa.AugmentOp):
            yield obj
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        # Compose/RandomApply keep children in .transforms, RandAugment/AugMix in .ops,
        # AutoAugment in .policy (a list of sub-policies).
        for attr in ("transforms", "ops", "policy"):
            child = getattr(obj, attr, None)
            if isinstance(child, (list, tuple)):
                stack.extend(child)


def _is_posterize(op: timm_aa.AugmentOp) -> bool:
    return op.aug_fn is timm_aa.posterize or op.name.startswith("Posterize")


def guard_posterize(transform: Any) -> int:
    """Replace the function of every posterize op in `transform`; returns how many were guarded."""
    count = 0
    for op in iter_augment_ops(transform):
        if _is_posterize(op):
            op.aug_fn = safe_posterize
            count += 1
    return count


# --- showing tensors ----------------------------------------------------------------------


def denormalize(tensor: torch.Tensor, pp: Preprocess, *, clamp: bool = True) -> torch.Tensor:
    """Undo Normalize on a [3,H,W] or [B,3,H,W] tensor, giving 0..1 RGB (clamped by default)."""
    if tensor.dim() not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(
            f"Expected a [3,H,W] or [B,3,H,W] tensor, got shape {tuple(tensor.shape)}."
        )
    mean = torch.tensor(pp.mean, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    out = tensor * std + mean
    return out.clamp(0.0, 1.0) if clamp else out
