"""The training data pipeline: weak and strong views of each unlabelled image.

Randomness is a pure function of (seed, epoch, index) for augmentations and (seed, epoch)
for the shuffle, so a run stopped mid-epoch and resumed sees exactly the same batches as an
uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from must_engine.images import ImageLoadError, load_rgb
from must_engine.views import Preprocess, eval_view, strong_view, weak_view


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing; stable across runs)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class TwoViewDataset(Dataset):
    """Returns (weak view, student view, index). Labels are never read."""

    def __init__(self, root: Path, files: list[str], pp: Preprocess, *, seed: int,
                 student_view: str = "strong", randaugment: str = "rand-m9-mstd0.5-inc1",
                 scale_min: float = 0.3):
        self.root = Path(root)
        self.files = list(files)
        self.seed = seed
        self.epoch = 0
        self.weak = weak_view(pp)
        if student_view == "weak":
            self.student = weak_view(pp)
        else:
            self.student = strong_view(pp, randaugment=randaugment or None, scale_min=scale_min)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _load(self, index: int):
        # A file that decoded at scan time but fails now (changed on disk) must not end the
        # run: fall back to the next image and say so.
        for k in range(len(self.files)):
            path = self.root / self.files[(index + k) % len(self.files)]
            try:
                return load_rgb(path)
            except (ImageLoadError, OSError) as exc:
                warnings.warn(f"Skipping {path} in training: {exc}", stacklevel=2)
        raise RuntimeError("No image in the folder could be read any more.")

    def __getitem__(self, index: int):
        image = self._load(index)
        s = mix_seed(self.seed, self.epoch, index)
        # timm and torchvision draw from the global generators; seed them per sample. Only
        # the CPU generator: torch.manual_seed also queues a CUDA reseed, with a formatted
        # stack trace each call (~0.1-1 ms, per sample, measured), and views are made on CPU.
        random.seed(s)
        np.random.seed(s % (2**32))
        torch.default_generator.manual_seed(s)
        return self.weak(image), self.student(image), index


class EvalDataset(Dataset):
    """Resize + centre crop, as evaluation uses; returns (tensor, index, ok)."""

    def __init__(self, paths: list[Path], pp: Preprocess):
        self.paths = [Path(p) for p in paths]
        self.transform = eval_view(pp)
        self.size = pp.image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(load_rgb(self.paths[index])), index, True
        except (ImageLoadError, OSError):
            return torch.zeros(3, self.size, self.size), index, False


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g).tolist()


def auto_workers(requested: int) -> int:
    if requested >= 0:
        return requested
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    # On two cores, worker processes cost more than they give; beyond that, leave one core
    # to the training loop.
    return 0 if cpus <= 2 else min(8, cpus - 1)


def make_loader(dataset: Dataset, indices: list[int], batch_size: int, workers: int,
                *, drop_last: bool, pin_memory: bool = False) -> DataLoader:
    kwargs = {}
    if workers > 0:
        # spawn, not fork: the app trains on a thread of a multi-threaded Qt process, where a
        # forked child can deadlock.
        kwargs = {"multiprocessing_context": "spawn", "persistent_workers": False,
                  "prefetch_factor": 4}
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                      drop_last=drop_last, pin_memory=pin_memory, **kwargs)
