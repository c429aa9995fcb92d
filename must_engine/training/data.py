"""The training data pipeline: weak and strong views of each unlabelled image.

Randomness is a pure function of (seed, epoch, index) for augmentations and (seed, epoch)
for the shuffle, so a run stopped mid-epoch and resumed sees exactly the same batches as an
uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from must_engine.image_cache import ImageSource, cache_side
from must_engine.images import ImageLoadError
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
    """Returns (weak view, student view, index, reason). Labels are never read.

    ``reason`` is "" for an image that was read; for a file that decoded at scan time but
    fails now (changed on disk) both views are zeros and ``reason`` says why: the trainer
    leaves that sample out of every loss and gives it no pseudo-label. Substituting another
    image instead would record that image's label under the broken file's name.

    Items are asked for by index, or by (epoch, index) as `EpochSampler` yields them, so a
    loader whose worker processes live across epochs still draws each epoch's augmentations.
    Images come from ``source`` (the decoded-image cache), decoded to a shorter side that
    the strong view's smallest crop still covers without enlarging.
    """

    def __init__(self, root: Path, files: list[str], pp: Preprocess, *, seed: int,
                 student_view: str = "strong", randaugment: str = "rand-m9-mstd0.5-inc1",
                 scale_min: float = 0.3, source: ImageSource | None = None):
        self.root = Path(root)
        self.files = list(files)
        self.seed = seed
        self.epoch = 0
        self.image_size = pp.image_size
        self.source = source or ImageSource(cache_side(pp.image_size, scale_min))
        self.weak = weak_view(pp)
        if student_view == "weak":
            self.student = weak_view(pp)
        else:
            self.student = strong_view(pp, randaugment=randaugment or None, scale_min=scale_min)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, item: int | tuple[int, int]):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        try:
            image = self.source.load(self.root / self.files[index])
        except (ImageLoadError, OSError) as exc:
            blank = torch.zeros(3, self.image_size, self.image_size)
            return blank, blank.clone(), index, f"could not be read during training ({exc})"
        s = mix_seed(self.seed, epoch, index)
        # timm and torchvision draw from the global generators; seed them per sample. Only
        # the CPU generator: torch.manual_seed also queues a CUDA reseed, with a formatted
        # stack trace each call (~0.1-1 ms, per sample, measured), and views are made on CPU.
        random.seed(s)
        np.random.seed(s % (2**32))
        torch.default_generator.manual_seed(s)
        return self.weak(image), self.student(image), index, ""


class EvalDataset(Dataset):
    """Resize + centre crop, as evaluation uses; returns (tensor, index, ok)."""

    def __init__(self, paths: list[Path], pp: Preprocess, *, source: ImageSource | None = None):
        self.paths = [Path(p) for p in paths]
        self.transform = eval_view(pp)
        self.size = pp.image_size
        self.source = source or ImageSource(cache_side(pp.image_size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(self.source.load(self.paths[index])), index, True
        except (ImageLoadError, OSError):
            return torch.zeros(3, self.size, self.size), index, False


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g).tolist()


class EpochSampler(Sampler):
    """Yields (epoch, index) for the order set by `set_order`; one sampler serves a loader
    for the whole run, so its worker processes start once, not once per epoch."""

    def __init__(self) -> None:
        self.epoch = 0
        self.order: list[int] = []

    def set_order(self, epoch: int, order: Sequence[int]) -> None:
        self.epoch = epoch
        self.order = list(order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.order])

    def __len__(self) -> int:
        return len(self.order)


def usable_cpus() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n or 1


@dataclass(frozen=True)
class LoaderPlan:
    """How images are fed to the device: worker processes, pinned memory, prefetch."""

    workers: int
    pin_memory: bool
    prefetch_factor: int = 4
    persistent: bool = True


def loader_plan(device: torch.device | str, requested_workers: int = -1,
                cpus: int | None = None) -> LoaderPlan:
    """Defaults per device; ``requested_workers`` >= 0 overrides the worker count.

    A GPU trains far faster than one core decodes, so on CUDA every core but one loads
    images (up to 8) into pinned memory. On the CPU the loader competes with the step for
    the same cores: none on two cores (measured: 2 spawned workers gave 33 images/s against
    167 in-process on 256-px images), else half the cores, up to 4.
    """
    dev = torch.device(device)
    cpus = cpus or usable_cpus()
    if requested_workers >= 0:
        workers = requested_workers
    elif dev.type == "cuda":
        workers = max(1, min(8, cpus - 1))
    elif dev.type == "mps":
        workers = max(0, min(4, cpus - 2))
    else:
        workers = 0 if cpus <= 2 else min(4, cpus // 2)
    return LoaderPlan(workers, pin_memory=dev.type == "cuda")


def auto_workers(requested: int, device: torch.device | str = "cpu") -> int:
    return loader_plan(device, requested).workers


# Signals a terminal sends to its whole foreground process group (Ctrl-C, a closed terminal).
# Loader workers must survive them so the main process can stop cleanly and checkpoint.
TERMINAL_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGHUP") if hasattr(signal, n))


def ignore_terminal_signals(_worker_id: int = 0) -> None:
    """Loader worker start-up: leave Ctrl-C and hang-ups to the main process."""
    for sig in TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # also discards any that arrived while blocked
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINAL_SIGNALS)


@contextlib.contextmanager
def terminal_signals_blocked() -> Iterator[None]:
    """Block terminal signals on this thread while loader workers start: the spawned
    children inherit the mask, so a Ctrl-C during their start-up cannot kill them before
    ``ignore_terminal_signals`` runs. The parent gets the signal when the block lifts."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def batches_until_stop(loader: DataLoader, control, width: int = 4) -> Iterator:
    """The loader's batches until ``control`` asks to stop; then one tuple of ``width``
    Nones, so the trainer reaches its stop check at once instead of waiting for another
    batch. A worker that died while a stop was asked for (a signal sent to the whole process
    group) ends the epoch the same way instead of failing the run."""
    with terminal_signals_blocked():
        batches = iter(loader)
    while True:
        if control.stop_requested:
            yield (None,) * width
            return
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError:
            if control.stop_requested:
                yield (None,) * width
                return
            raise
        yield batch


def make_loader(dataset: Dataset, indices: Sequence[int] | Sampler, batch_size: int,
                workers: int | LoaderPlan, *, drop_last: bool,
                pin_memory: bool = False) -> DataLoader:
    plan = workers if isinstance(workers, LoaderPlan) else LoaderPlan(workers, pin_memory,
                                                                      persistent=False)
    kwargs = {}
    if plan.workers > 0:
        # spawn, not fork: the app trains on a thread of a multi-threaded Qt process, where a
        # forked child can deadlock. Persistent workers pay the spawn once per run.
        kwargs = {"multiprocessing_context": "spawn", "persistent_workers": plan.persistent,
                  "prefetch_factor": plan.prefetch_factor,
                  "worker_init_fn": ignore_terminal_signals}
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=plan.workers,
                      drop_last=drop_last, pin_memory=plan.pin_memory, **kwargs)
