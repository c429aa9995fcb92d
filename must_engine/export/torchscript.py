"""TorchScript file of the whole preprocess-free classifier (probabilities out), checked by
loading the written file back and running it on sample images."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from must_engine.events import ExportCheck
from must_engine.export.common import compare, plain_attention, probability_head, raise_if_failed
from must_engine.models.must_model import MustModel

TOLERANCE = 1e-4  # max abs difference on probabilities


def _quiet_jit():
    # torch.jit warns that it is deprecated on every call; the file format is still what
    # the issue asks for, and the warning would only alarm the user.
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    return ctx


def write_torchscript(model: MustModel, tmp: Path, example: torch.Tensor) -> None:
    """Trace the probability head on ``example`` (two or more images, so the batch size is
    not baked in as a constant) and save it to ``tmp``."""
    head = probability_head(model.to("cpu"))
    ctx = _quiet_jit()
    try:
        with plain_attention(), torch.no_grad():
            traced = torch.jit.trace(head, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
    finally:
        ctx.__exit__(None, None, None)


def check_torchscript(tmp: Path, samples: torch.Tensor, expected, *, final: Path,
                      source: str) -> ExportCheck:
    """Load the file as a user would and compare it on a batch and on a single image."""
    ctx = _quiet_jit()
    try:
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        with torch.no_grad():
            batch = loaded(samples).float().numpy()
            single = loaded(samples[:1]).float().numpy()
    finally:
        ctx.__exit__(None, None, None)
    import numpy as np

    got = np.concatenate([batch, single])
    want = np.concatenate([expected, expected[:1]])
    check = compare("torchscript", got, want, TOLERANCE,
                    details={"inputs": source, "batch_sizes": [len(samples), 1]})
    raise_if_failed(check, final)
    return check
