"""TorchScript file of the whole preprocess-free classifier (probabilities out), checked by
loading the written file back and running it on sample images."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from must_engine.events import ExportCheck
from must_engine.export.common import compare, plain_attention, probability_head, raise_if_failed
from must_engine.models.must_model import MustModel

TOLERANCE = 1e-4  # max abs difference on probabilities


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch.jit warns it is deprecated on every call; the format is still what users load,
    and the warning would only alarm them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def write_torchscript(model: MustModel, tmp: Path, example: torch.Tensor) -> None:
    """Trace the probability head on ``example`` (two or more images, so the batch size is
    not baked in as a constant) and save it to ``tmp``."""
    head = probability_head(model.to("cpu"))
    with quiet_jit(), plain_attention(), torch.no_grad():
        traced = torch.jit.trace(head, example, check_trace=False)
        # Through memory, then a Python write: torch.jit.save straight to a path aborts the
        # whole process (C++ terminate) when the disk fills; a Python write raises ENOSPC.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    tmp.write_bytes(buffer.getbuffer())


def check_torchscript(tmp: Path, samples: torch.Tensor, expected: np.ndarray, *, final: Path,
                      source: str) -> ExportCheck:
    """Load the written file as a user would and compare it on a batch and on one image."""
    with quiet_jit(), torch.no_grad():
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        batch = loaded(samples).float().numpy()
        single = loaded(samples[:1]).float().numpy()
    check = compare("torchscript", np.concatenate([batch, single]),
                    np.concatenate([expected, expected[:1]]), TOLERANCE,
                    details={"inputs": source, "batch_sizes": [len(samples), 1]})
    raise_if_failed(check, final)
    return check
