"""ONNX file of the whole preprocess-free classifier (probabilities out, dynamic batch),
checked by running the written file in ONNX Runtime on sample images.

Needs the optional extra: ``pip install 'must-studio[onnx]'`` (onnx + onnxruntime).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from must_engine.events import ExportCheck
from must_engine.export.common import (
    ExportError,
    compare,
    plain_attention,
    probability_head,
    raise_if_failed,
)
from must_engine.models.must_model import MustModel

TOLERANCE = 1e-4  # max abs difference on probabilities
# Opset 17 has LayerNormalization as one op (every ViT block uses it) and is run by every
# ONNX Runtime since 1.12 (2022), so files work with older runtimes on phones and servers too.
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
MISSING_EXTRA = ("ONNX export needs the onnx extra; install it with "
                 "pip install 'must-studio[onnx]' (onnx and onnxruntime).")


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(MISSING_EXTRA) from exc


def write_onnx(model: MustModel, tmp: Path, example: torch.Tensor) -> None:
    """Export with the TorchScript-based exporter (works offline and needs no onnxscript)."""
    import onnx

    head = probability_head(model.to("cpu"))
    with warnings.catch_warnings(), plain_attention(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer notes about this exporter
        torch.onnx.export(
            head, (example,), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(tmp))


def check_onnx(tmp: Path, samples: torch.Tensor, expected: np.ndarray, *, final: Path,
               source: str) -> ExportCheck:
    """Run the written file in ONNX Runtime (CPU) on a batch and on one image."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    x = samples.numpy().astype(np.float32)
    batch = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    single = session.run([OUTPUT_NAME], {INPUT_NAME: x[:1]})[0]
    check = compare("onnx", np.concatenate([batch, single]),
                    np.concatenate([expected, expected[:1]]), TOLERANCE,
                    details={"inputs": source, "batch_sizes": [len(x), 1], "opset": OPSET,
                             "onnxruntime": ort.__version__})
    raise_if_failed(check, final)
    return check
