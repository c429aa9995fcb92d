"""Image embeddings on the evaluation view (resize + centre crop), for the label-free steps
that look at the target images as a whole: prototype refinement and classifier scoring."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from must_engine.models.must_model import MustModel
from must_engine.training.data import EvalDataset, make_loader, mix_seed
from must_engine.views import Preprocess


@torch.no_grad()
def embed_files(model: MustModel, paths: Sequence[Path], pp: Preprocess, *,
                device: torch.device | str = "cpu", batch_size: int = 64,
                autocast=None, source=None) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, D] L2-normalised embeddings (float32, on ``device``) of the images that decode,
    [len(paths)] bool: which ones did); unreadable images are left out of the embeddings."""
    was_training = model.training
    model.eval()
    ds = EvalDataset(list(paths), pp, source=source)
    loader = make_loader(ds, list(range(len(ds))), batch_size, 0, drop_last=False)
    out = []
    decoded = torch.zeros(len(ds), dtype=torch.bool)
    for images, index, ok in loader:
        decoded[index] = ok
        if not bool(ok.any()):
            continue
        images = images[ok].to(device, non_blocking=True)
        if autocast is not None:
            with autocast():
                out.append(model.embed(images).float())
        else:
            out.append(model.embed(images).float())
    model.train(was_training)
    if not out:
        return torch.zeros(0, model.classifier.shape[0], device=device), decoded
    return torch.nn.functional.normalize(torch.cat(out), dim=-1), decoded


def image_subset(num_images: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded subset of image indices (sorted). Subsets of the same run and seed
    nest: the smaller is always inside the larger (both are prefixes of one permutation)."""
    if num_images <= size:
        return list(range(num_images))
    g = torch.Generator().manual_seed(mix_seed(seed, 0x5C0E))
    return sorted(torch.randperm(num_images, generator=g)[:size].tolist())
