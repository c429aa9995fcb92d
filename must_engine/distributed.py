"""Data-parallel training under PyTorch's launcher (``torchrun``).

torchrun starts one process per device and tells each its place through the environment
(RANK, WORLD_SIZE, LOCAL_RANK, plus the rendezvous address); this module reads that, joins
the process group (NCCL for CUDA tensors, gloo for CPU ones) and offers the few collectives
the trainer needs. One process, or WORLD_SIZE=1, means no process group at all: the
single-process path does not change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits among those torchrun started."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_launcher(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The torchrun placement, or None when running as one plain process."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ or "RANK" not in environ:
        return None
    world = int(environ["WORLD_SIZE"])
    if world <= 1:
        return None
    return DistEnv(int(environ["RANK"]), world, int(environ.get("LOCAL_RANK", "0")))


class Distributed:
    """A joined process group and the collectives training uses.

    ``gather`` concatenates a tensor from every rank *with* gradient: every rank computes the
    same loss from the gathered batch, so backward sums their gradients for the local slice;
    DistributedDataParallel then averages over ranks, giving the one-device gradient.
    """

    def __init__(self, env: DistEnv):
        self.env = env
        self.rank = env.rank
        self.world_size = env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    def device_for(self, device: torch.device) -> torch.device:
        """Each process drives its own GPU (LOCAL_RANK); CPU runs share the CPU."""
        if device.type == "cuda":
            return torch.device("cuda", self.env.local_rank)
        if device.type == "mps":
            raise ValueError("Several processes cannot share Apple's MPS device; run one process "
                             "on MPS, or train with --device cpu under torchrun.")
        return device

    # ---- collectives ---------------------------------------------------------------------
    def barrier(self) -> None:
        # A CPU all-reduce, not dist.barrier(): it goes through gloo whatever the GPU backend.
        dist.all_reduce(torch.zeros(1))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """[world * B, ...] from every rank's [B, ...], with gradient."""
        return _GatherWithGradient.apply(t)

    def gather_values(self, t: torch.Tensor) -> torch.Tensor:
        """[world * B, ...] without gradient; bool tensors go as bytes (gloo has no bool)."""
        is_bool = t.dtype == torch.bool
        src = (t.to(torch.uint8) if is_bool else t).contiguous()
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        dist.all_gather(parts, src)
        out = torch.cat(parts)
        return out.bool() if is_bool else out

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In place: ``t`` becomes the sum of every rank's ``t``."""
        dist.all_reduce(t)
        return t

    def broadcast_(self, t: torch.Tensor) -> torch.Tensor:
        """In place: ``t`` becomes rank 0's ``t`` on every rank."""
        dist.broadcast(t, src=0)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        out = t.detach().clone()
        dist.all_reduce(out)
        return out / self.world_size

    def global_means(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Per-rank losses rescaled so that DDP's average over ranks is the mean over the
        whole global batch: each ``(loss, count)`` is a local sum / max(count, 1); ranks with
        more confident or masked samples weigh more, as in one process."""
        counts = torch.stack([c.detach().float() for _, c in pairs])
        totals = counts.clone()
        dist.all_reduce(totals)
        factors = counts.clamp(min=1) * self.world_size / totals.clamp(min=1)
        return [loss * f for (loss, _), f in zip(pairs, factors, strict=True)]

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when any rank says so (so all stop at the same step)."""
        return self.flags([flag], device)[0]

    def flags(self, flags: Sequence[bool], device: torch.device) -> list[bool]:
        """Each flag True on every rank when any rank says so, in one collective."""
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v > 0) for v in t.tolist()]

    # ---- data ----------------------------------------------------------------------------
    def shard_batches(self, order: Sequence[int], global_batch: int) -> list[int]:
        """This rank's part of each global batch of ``order``: rank r takes the r-th slice
        of every ``global_batch`` consecutive indices, so one process or N see the same
        global batches, and each image keeps its per-(seed, epoch, index) augmentation."""
        per_rank = global_batch // self.world_size
        lo = self.rank * per_rank
        out: list[int] = []
        for start in range(0, len(order) - global_batch + 1, global_batch):
            out.extend(order[start + lo: start + lo + per_rank])
        return out

    def wrap(self, student: nn.Module, device: torch.device) -> nn.Module:
        """The student's training forward inside DistributedDataParallel."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # find_unused_parameters: the decoder and projection sit idle when a loss is off.
        return DistributedDataParallel(_TrainForward(student), device_ids=ids,
                                       find_unused_parameters=True)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def start(env: DistEnv) -> Distributed:
    """Join the process group torchrun set up (address and port from its environment)."""
    if not dist.is_available():
        raise RuntimeError("This PyTorch build has no torch.distributed; install a standard "
                           "PyTorch wheel to train with several processes.")
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return Distributed(env)


class _TrainForward(nn.Module):
    """DDP hooks ``forward``; the student trains through ``forward_train``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.forward_train(*args, **kwargs)


class _GatherWithGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.world, ctx.rank = world, rank
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(ctx.world)[ctx.rank]
