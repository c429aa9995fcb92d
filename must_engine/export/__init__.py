"""Export an adapted run in the formats people deploy, each checked before it is called done.

    export_run(run_dir, "bundle", "out/my-classifier")       # folder: safetensors+card+README
    export_run(run_dir, "torchscript", "out/model.pt")        # + model.pt.json (input spec)
    export_run(run_dir, "onnx", "out/model.onnx")             # + model.onnx.json
    export_run(run_dir, "csv" | "jsonl", "out/predictions.csv")
    export_run(run_dir, "folders", "out/sorted", link="copy" | "symlink" | "hardlink")
    export_predictions(predictions, "csv" | "jsonl" | "folders", out)  # no run folder needed

Model files (bundle, TorchScript, ONNX) take normalised [B,3,H,W] float32 images and give
softmax probabilities [B,C]; right after writing, each is loaded back and run on sample images
of the run, and the export fails (and the file is removed) if its probabilities differ from
PyTorch's by more than the format's tolerance. Everything is written under a temporary name
beside the destination and renamed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from must_engine.events import Event, ExportCheck, ExportProgress, PredictionProgress, Status
from must_engine.export.common import (
    ExportCheckError,
    ExportError,
    file_destination,
    folder_destination,
    input_spec,
    load_adapted_model,
    reference_probs,
    sample_inputs,
    staged_file,
    staged_folder,
)
from must_engine.export.predictions_out import LINK_MODES
from must_engine.io_utils import write_json
from must_engine.predict import Predictions
from must_engine.runs import CHECKPOINT_FILE, RunInfo, open_run
from must_engine.write_errors import write_errors_as

__all__ = [
    "FORMATS",
    "LINK_MODES",
    "DEFAULT_NAMES",
    "TOLERANCES",
    "ExportError",
    "ExportCheckError",
    "ExportResult",
    "export_predictions",
    "export_run",
]

FORMATS = ("bundle", "torchscript", "onnx", "csv", "jsonl", "folders")
MODEL_FORMATS = ("bundle", "torchscript", "onnx")
PREDICTION_FORMATS = ("csv", "jsonl", "folders")
# Names used when ``out`` is an existing folder (file formats) or for the CLI's help.
DEFAULT_NAMES = {"bundle": "classifier", "torchscript": "model.pt", "onnx": "model.onnx",
                 "csv": "predictions.csv", "jsonl": "predictions.jsonl", "folders": "sorted"}
TOLERANCES = {"bundle": 1e-5, "torchscript": 1e-4, "onnx": 1e-4}  # on probabilities
SAMPLE_IMAGES = 8

EventSink = Callable[[Event], None]


@dataclass
class ExportResult:
    """Where the export went, and the checks run on it (model formats)."""

    path: Path
    format: str
    checks: list[ExportCheck] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file written (spec files too)
    summary: dict[str, Any] = field(default_factory=dict)  # e.g. images per class folder

    @property
    def max_abs_diff(self) -> float | None:
        return max((c.max_abs_diff for c in self.checks), default=None)


def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
               predictions: Predictions | None = None, link: str = "copy",
               on_event: EventSink | None = None, device: str = "cpu",
               spot_check: Mapping[str, Any] | None = None, overwrite: bool = False,
               samples: int = SAMPLE_IMAGES,
               should_stop: Callable[[], bool] | None = None) -> ExportResult:
    """Export the finished run in ``run_dir`` as ``fmt`` to ``out``.

    - ``predictions``: the app's cached table; computed with ``predict_run`` when needed and
      not given (csv, jsonl, folders, and the bundle card's figures).
    - ``link``: how ``folders`` places images: copy, symlink or hardlink.
    - ``device``: where predictions are computed; model files are always traced on the CPU.
    - ``spot_check``: optional figures from a labelled spot check, stored in the bundle card.
    - ``overwrite``: replace an existing *file* (single-file formats); folders are never
      written into unless empty.
    Raises ``ExportError`` (one sentence) for anything the user can fix, ``ExportCheckError``
    when a written model file does not reproduce PyTorch's outputs.
    """
    fmt = (fmt or "").strip().lower()
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if link not in LINK_MODES:
        raise ExportError(f"Unknown link mode '{link}'; choose one of {', '.join(LINK_MODES)}.")
    if spot_check is not None and not isinstance(spot_check, Mapping):
        raise ExportError("spot_check must be a mapping of figure names to values.")
    run = open_run(run_dir)
    stopped = not run.has_adapted_model and run.file(CHECKPOINT_FILE).is_file()
    if not run.has_adapted_model and not stopped and (fmt in MODEL_FORMATS
                                                      or predictions is None):
        raise ExportError(f"The run in {run.path} has no adapted model yet (it has neither "
                          "finished nor kept a checkpoint); train it first.")
    if fmt == "onnx":
        from must_engine.export.onnx_export import require_onnx

        require_onnx()

    def emit(event: Event) -> None:
        if on_event is not None:
            on_event(event)

    def stop_check() -> None:
        if should_stop is not None and should_stop():
            raise InterruptedError("The export was cancelled.")

    # Check the destination before any slow work, so a mistake costs nothing.
    if fmt in ("bundle", "folders"):
        dest = folder_destination(out)
    else:
        dest = file_destination(out, DEFAULT_NAMES[fmt], overwrite=overwrite)
        spec = spec_path(dest)
        if fmt in MODEL_FORMATS and spec.exists() and not overwrite:
            raise ExportError(f"{spec} already exists; choose another name or delete it first.")

    def get_predictions(optional: bool = False) -> Predictions | None:
        if predictions is not None:
            return predictions
        if optional and not run.images_root.is_dir():
            emit(Status(f"The images of this run are no longer in {run.images_root}, so the "
                        "export has no prediction figures."))
            return None
        emit(ExportProgress("predicting"))

        def relay(event: Event) -> None:
            if isinstance(event, PredictionProgress):
                emit(ExportProgress("predicting", event.done, event.total))
            elif isinstance(event, Status):  # e.g. that kept predictions are reused
                emit(event)

        return _predict(run, device, relay, should_stop)

    with _destination_errors(dest):
        if fmt in MODEL_FORMATS:
            result = _export_model(run, fmt, dest, emit, stop_check, get_predictions,
                                   spot_check=spot_check, samples=max(2, int(samples)))
        else:
            preds = get_predictions()
            stop_check()
            result = _write_predictions(preds, fmt, dest, link=link, emit=emit,
                                        should_stop=should_stop)
    if stopped:
        # A stopped run exports its checkpoint's teacher; say so wherever the result goes.
        result.summary["stopped_at"] = f"stopped at step {run.step} of {run.total_steps}"
    return result


def export_predictions(predictions: Predictions, fmt: str, out: str | os.PathLike, *,
                       link: str = "copy", overwrite: bool = False,
                       on_event: EventSink | None = None,
                       should_stop: Callable[[], bool] | None = None) -> ExportResult:
    """CSV, JSON lines or sorted folders from a predictions table alone (no run folder
    needed), with the same destination rules as ``export_run``."""
    fmt = (fmt or "").strip().lower()
    if fmt not in PREDICTION_FORMATS:
        raise ExportError(f"Only {', '.join(PREDICTION_FORMATS)} can be made from predictions "
                          "alone; model formats need a finished training run.")
    if link not in LINK_MODES:
        raise ExportError(f"Unknown link mode '{link}'; choose one of {', '.join(LINK_MODES)}.")
    if fmt == "folders":
        dest = folder_destination(out)
    else:
        dest = file_destination(out, DEFAULT_NAMES[fmt], overwrite=overwrite)

    def emit(event: Event) -> None:
        if on_event is not None:
            on_event(event)

    with _destination_errors(dest):
        return _write_predictions(predictions, fmt, dest, link=link, emit=emit,
                                  should_stop=should_stop)


def _destination_errors(dest: Path):
    """A read-only, protected or full destination: one sentence naming it (not the temporary
    name the error happened on)."""
    return write_errors_as(ExportError, dest, f"Cannot write the export {dest}",
                           "choose another place for it")


def _write_predictions(preds: Predictions, fmt: str, dest: Path, *, link: str, emit: EventSink,
                       should_stop: Callable[[], bool] | None) -> ExportResult:
    if preds.failed:  # never drop images silently (deleted or changed since training)
        emit(Status(f"Left out {len(preds.failed)} image(s) that could not be read, e.g. "
                    f"{preds.failed[0].path} ({preds.failed[0].reason})."))
    emit(ExportProgress("writing"))
    if fmt == "csv":
        preds.write_csv(dest)  # atomic: temp file beside dest, then rename
        result = ExportResult(dest, fmt, files=[dest])
    elif fmt == "jsonl":
        preds.write_jsonl(dest)
        result = ExportResult(dest, fmt, files=[dest])
    else:
        from must_engine.export.predictions_out import MAPPING_FILE, sort_into_folders

        with staged_folder(dest) as tmp:
            counts = sort_into_folders(preds, tmp, link=link, on_event=emit,
                                       should_stop=should_stop)
        result = ExportResult(dest, fmt, files=[dest / MAPPING_FILE],
                              summary={"images": len(preds), "link": link,
                                       "per_folder": counts})
    emit(ExportProgress("done", 1, 1))
    return result


def _predict(run: RunInfo, device: str, on_event: EventSink,
             should_stop: Callable[[], bool] | None) -> Predictions:
    from must_engine.predict import predict_run

    return predict_run(run.path, device=device, on_event=on_event, should_stop=should_stop)


def _export_model(run: RunInfo, fmt: str, dest: Path, emit: EventSink,
                  stop_check: Callable[[], None], get_predictions: Callable[..., Predictions | None],
                  *, spot_check: Mapping[str, Any] | None, samples: int) -> ExportResult:
    emit(ExportProgress("loading"))
    model = load_adapted_model(run)
    inputs, source = sample_inputs(run, samples)
    expected = reference_probs(model, inputs)
    stop_check()

    if fmt == "bundle":
        from must_engine.export.bundle import check_bundle, write_bundle

        preds = get_predictions(optional=True)  # for the card's label-free figures
        stop_check()
        with staged_folder(dest) as tmp:
            emit(ExportProgress("writing"))
            write_bundle(run, model, tmp, name=dest.name, predictions=preds,
                         spot_check=spot_check)
            emit(ExportProgress("checking"))
            check = _checked(emit, check_bundle, tmp, inputs, expected, final=dest,
                             source=source)
        files = [dest / n for n in ("model.safetensors", "card.json", "README.md")]
        emit(ExportProgress("done", 1, 1))
        return ExportResult(dest, fmt, [check], files)

    if fmt == "torchscript":
        from must_engine.export.torchscript import check_torchscript as check_file
        from must_engine.export.torchscript import write_torchscript as write_file

        extra: dict[str, Any] = {}
    else:
        from must_engine.export.onnx_export import OPSET
        from must_engine.export.onnx_export import check_onnx as check_file
        from must_engine.export.onnx_export import write_onnx as write_file

        extra = {"opset": OPSET}
    spec_file = spec_path(dest)
    spec_written = False
    try:
        with staged_file(dest) as tmp:
            emit(ExportProgress("writing"))
            write_file(model, tmp, inputs[:2])
            stop_check()
            emit(ExportProgress("checking"))
            check = _checked(emit, check_file, tmp, inputs, expected, final=dest,
                             source=source)
            spec = input_spec(run, fmt=fmt, file_name=dest.name, extra={
                **extra, "check": {"max_abs_diff": check.max_abs_diff,
                                   "tolerance": check.tolerance, "samples": check.samples}})
            # The spec goes first: the model file under its name marks a finished export.
            write_json(spec_file, spec)
            spec_written = True
    except BaseException:
        if spec_written:
            spec_file.unlink(missing_ok=True)
        raise
    emit(ExportProgress("done", 1, 1))
    return ExportResult(dest, fmt, [check], [dest, spec_file])


def spec_path(model_file: Path) -> Path:
    """The input spec written beside a TorchScript/ONNX file: ``<file name>.json``."""
    return model_file.with_name(model_file.name + ".json")


def _checked(emit: EventSink, check_fn: Callable[..., ExportCheck], *args: Any,
             **kwargs: Any) -> ExportCheck:
    """Run a check and emit its result, also when it fails the export (the numbers must
    reach the user)."""
    try:
        check = check_fn(*args, **kwargs)
    except ExportCheckError as exc:
        emit(exc.check)
        raise
    emit(check)
    return check
