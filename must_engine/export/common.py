"""What every exporter shares: safe destinations, write-then-rename, sample inputs for the
after-export check, and the comparison that turns a difference into an ``ExportCheck``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from must_engine.events import Event, ExportCheck
from must_engine.io_utils import (
    disk_full_as_error,
    make_part_file,
    make_part_folder,
    plain_file_mode,
    plain_folder_mode,
)
from must_engine.models.must_model import MustModel
from must_engine.runs import RunError, RunInfo
from must_engine.version import __version__

EventSink = Callable[[Event], None]


class ExportError(ValueError):
    """An export that cannot be made; the message says what to do."""


class ExportCheckError(ExportError):
    """The exported file does not reproduce the PyTorch outputs; it has been removed."""

    def __init__(self, message: str, check: ExportCheck):
        super().__init__(message)
        self.check = check


# ---- destinations -------------------------------------------------------------------------

def file_destination(out: str | os.PathLike, default_name: str, *, overwrite: bool) -> Path:
    """The file an export writes: ``out`` itself, or ``default_name`` inside ``out`` when
    ``out`` is an existing folder. An existing file is kept unless ``overwrite``."""
    path = Path(out).expanduser()
    if path.is_dir():
        path = path / default_name
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; choose another name or delete it first.")
    if path.exists() and not path.is_file():
        raise ExportError(f"{path} exists and is not a file; choose another name.")
    _check_parent(path)
    return path


def folder_destination(out: str | os.PathLike) -> Path:
    """A folder an export creates: it must not exist yet, or be an empty folder."""
    path = Path(out).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"{path} is a file; choose a new folder name for the export.")
        if any(path.iterdir()):
            raise ExportError(f"The folder {path} is not empty; choose a new or empty folder "
                              "(nothing in it is ever overwritten).")
    _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"{parent} is a file, so {path} cannot be created; choose "
                                  "another place.")
            return


def make_parent(path: Path) -> None:
    """Create the destination's missing parent folders (checked by the functions above)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"Cannot create the folder {path.parent} ({exc.strerror or exc}); "
                          "choose another place.") from exc


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; rename it to ``path`` only if the block ends
    normally, so an interrupted export never leaves a half file under the final name."""
    make_parent(path)
    with disk_full_as_error(path):
        tmp_path = make_part_file(path)
        try:
            yield tmp_path
            os.chmod(tmp_path, plain_file_mode(path if path.exists() else None))
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(path: Path) -> Iterator[Path]:
    """Like ``staged_file`` for a folder: build it under a temporary name, then rename."""
    make_parent(path)
    with disk_full_as_error(path):
        tmp = make_part_folder(path)
    try:
        with disk_full_as_error(path):
            yield tmp
        os.chmod(tmp, plain_folder_mode())  # mkdtemp makes it owner-only
        if path.is_dir():
            path.rmdir()  # only ever empty here (checked); Windows cannot rename onto a folder
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            # rmtree removes links, never what they point to.
            shutil.rmtree(tmp, ignore_errors=True)


# ---- the model and sample inputs ----------------------------------------------------------

def load_adapted_model(run: RunInfo) -> MustModel:
    """The finished model, or the checkpoint's teacher of a run stopped early."""
    from must_engine.predict import adapted_model

    model, _ = adapted_model(run)
    if model is None:
        raise RunError(f"The run in {run.path} has no adapted model yet; train it first.")
    return model


class ProbabilityHead(torch.nn.Module):
    """The whole preprocess-free classifier as one module: normalised [B,3,H,W] float32 in,
    softmax probabilities [B,C] out. TorchScript and ONNX files hold this."""

    def __init__(self, model: MustModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).softmax(dim=-1)


def probability_head(model: MustModel) -> ProbabilityHead:
    head = ProbabilityHead(model).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


@contextlib.contextmanager
def plain_attention() -> Iterator[None]:
    """Turn off PyTorch's fused attention fast path while exporting: its op has no ONNX form,
    and a trace of the plain path runs the same everywhere."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def sample_inputs(run: RunInfo, count: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Up to ``count`` of the run's own images through the evaluation transform, and where
    they came from. If the folder has moved, seeded noise in the normalised range stands in."""
    from must_engine.images import ImageLoadError, load_rgb
    from must_engine.views import eval_view

    pp = run.preprocess
    view = eval_view(pp)
    tensors = []
    try:
        files = run.image_files()
    except OSError:
        files = []
    for name in files:
        if len(tensors) >= count:
            break
        try:
            tensors.append(view(load_rgb(run.images_root / name)))
        except (ImageLoadError, OSError):
            continue
    if tensors:
        batch, source = torch.stack(tensors), "run images"
    else:
        g = torch.Generator().manual_seed(seed)
        batch = torch.randn(count, 3, pp.image_size, pp.image_size, generator=g)
        source = "random noise"
    if len(batch) < 2:  # a trace on one image could fix the batch size at 1
        batch = torch.cat([batch, batch.flip(-1)])
    return batch, source


@torch.no_grad()
def reference_probs(model: MustModel, images: torch.Tensor) -> np.ndarray:
    """PyTorch probabilities of the in-memory model, as ``predict_run`` computes them."""
    return model(images).float().softmax(dim=-1).cpu().numpy()


def compare(fmt: str, got: np.ndarray, want: np.ndarray, tolerance: float, *,
            details: dict[str, Any] | None = None) -> ExportCheck:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return ExportCheck(fmt, float("inf"), tolerance, False, int(want.shape[0]),
                           {**(details or {}), "shape": list(got.shape),
                            "expected_shape": list(want.shape)})
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    same_labels = bool((got.argmax(1) == want.argmax(1)).all()) if got.size else True
    ok = bool(np.isfinite(diff) and diff <= tolerance)
    return ExportCheck(fmt, diff, tolerance, ok, int(want.shape[0]),
                       {**(details or {}), "same_labels": same_labels})


def raise_if_failed(check: ExportCheck, path: Path) -> None:
    if check.passed:
        return
    raise ExportCheckError(
        f"The exported {check.format} file does not reproduce the PyTorch outputs (max abs "
        f"difference {check.max_abs_diff:.3g} on {check.samples} images, tolerance "
        f"{check.tolerance:g}), so {path.name} was not written; please report this.", check)


def input_spec(run: RunInfo, *, fmt: str, file_name: str, output: str = "probabilities",
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a deployed file expects and returns: written beside it as ``<file name>.json``."""
    pp = run.preprocess
    s = pp.image_size
    return {
        "format": f"must-{fmt}/1",
        "file": file_name,
        "engine_version": __version__,
        "input": {
            "name": "images",
            "shape": ["batch", 3, s, s],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "normalisation": "(pixel / 255 - mean) / std, per channel",
        },
        "preprocess": {
            **pp.to_dict(),
            "resize": f"shorter side to {s} px ({pp.interpolation}), then a centre crop of "
                      f"{s}x{s}",
        },
        "output": {
            "name": output,
            "shape": ["batch", len(run.class_names)],
            "meaning": "softmax probabilities over class_names, in this order",
        },
        "class_names": run.class_names,
        "model": run.data.get("model_identity", {}),
        **(extra or {}),
    }
