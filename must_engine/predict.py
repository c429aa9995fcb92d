"""Zero-shot ("before") and adapted ("after") class probabilities for every image.

``predict_run`` loads a run's two models and scores a folder (by default the run's own);
the result is a ``Predictions`` table that writes the CSV of ``must predict`` and feeds the
app's results browser.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from must_engine import prediction_cache
from must_engine.devices import resolve_device
from must_engine.distributed import Distributed
from must_engine.events import Event, PredictionProgress, Status
from must_engine.image_cache import ImageSource, run_image_source
from must_engine.images import SkippedFile, is_folder, scan_folder, unreadable_reason
from must_engine.io_utils import atomic_write, from_spreadsheet_safe, spreadsheet_safe
from must_engine.models.must_model import MustModel, must_model_from_config
from must_engine.runs import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    ZERO_SHOT_FILE,
    RunError,
    RunInfo,
    open_run,
)
from must_engine.training.data import EvalDataset, LoaderPlan, loader_plan, make_loader
from must_engine.views import Preprocess
from must_engine.weights import load_model_weights, load_state_checked

EventSink = Callable[[Event], None]
FIXED_COLUMNS = ("path", "label", "confidence", "zero_shot_label", "zero_shot_confidence")
PROB_PREFIX = "p_"


@dataclass(frozen=True)
class StoppedAt:
    """Where a run that has not finished stands: its checkpoint's step of the total."""

    step: int
    total_steps: int

    def __str__(self) -> str:
        return f"stopped at step {self.step} of {self.total_steps}"


@dataclass
class Predictions:
    """Per image (``paths`` relative to ``root``): adapted and zero-shot probabilities.

    ``probs`` is None for a run that has neither finished nor kept a checkpoint; for a run
    that was stopped it comes from the checkpoint's teacher, and ``stopped_at`` says where.
    """

    root: Path
    paths: list[str]
    class_names: list[str]
    zero_shot_probs: np.ndarray  # [N, C]
    probs: np.ndarray | None = None  # [N, C]
    failed: list[SkippedFile] = field(default_factory=list)
    stopped_at: StoppedAt | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def final_probs(self) -> np.ndarray:
        return self.probs if self.probs is not None else self.zero_shot_probs

    def labels(self) -> np.ndarray:
        return self.final_probs.argmax(axis=1)

    def confidences(self) -> np.ndarray:
        return self.final_probs.max(axis=1)

    def zero_shot_labels(self) -> np.ndarray:
        return self.zero_shot_probs.argmax(axis=1)

    def zero_shot_confidences(self) -> np.ndarray:
        return self.zero_shot_probs.max(axis=1)

    def changed(self) -> np.ndarray:
        """Images whose label differs from the zero-shot one."""
        return self.labels() != self.zero_shot_labels()

    def top_k(self, index: int, k: int = 5, *, zero_shot: bool = False) -> list[tuple[str, float]]:
        row = (self.zero_shot_probs if zero_shot else self.final_probs)[index]
        order = np.argsort(-row, kind="stable")[:k]
        return [(self.class_names[i], float(row[i])) for i in order]

    def class_counts(self, *, zero_shot: bool = False) -> list[int]:
        labels = self.zero_shot_labels() if zero_shot else self.labels()
        return np.bincount(labels, minlength=len(self.class_names)).tolist()

    def rows(self) -> list[dict[str, object]]:
        labels, conf = self.labels(), self.confidences()
        zl, zc = self.zero_shot_labels(), self.zero_shot_confidences()
        final = self.final_probs
        out = []
        for i, path in enumerate(self.paths):
            row: dict[str, object] = {
                "path": path,
                "label": self.class_names[labels[i]],
                "confidence": f"{conf[i]:.6f}",
                "zero_shot_label": self.class_names[zl[i]],
                "zero_shot_confidence": f"{zc[i]:.6f}",
            }
            for c, name in enumerate(self.class_names):
                row[PROB_PREFIX + name] = f"{final[i, c]:.6f}"
            out.append(row)
        return out

    def columns(self) -> list[str]:
        return [*FIXED_COLUMNS, *(PROB_PREFIX + n for n in self.class_names)]

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        text_cols = ("path", "label", "zero_shot_label")
        rows = [{k: spreadsheet_safe(v) if k in text_cols else v for k, v in row.items()}
                for row in self.rows()]
        cols = [spreadsheet_safe(c) for c in self.columns()]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=cols)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)
        return path

    def write_jsonl(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        zero = self.zero_shot_probs
        final = self.final_probs
        lines = []
        for i, row in enumerate(self.rows()):
            lines.append(json.dumps({
                "path": row["path"], "label": row["label"],
                "confidence": float(row["confidence"]),
                "zero_shot_label": row["zero_shot_label"],
                "zero_shot_confidence": float(row["zero_shot_confidence"]),
                "probabilities": {n: float(final[i, c]) for c, n in enumerate(self.class_names)},
                "zero_shot_probabilities": {n: float(zero[i, c])
                                            for c, n in enumerate(self.class_names)},
            }))
        atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))
        return path

    def save_npz(self, path: str | Path) -> Path:
        """Compact cache for the app (probabilities as float32)."""
        path = Path(path)
        arrays = {"zero_shot": self.zero_shot_probs.astype(np.float32)}
        if self.probs is not None:
            arrays["adapted"] = self.probs.astype(np.float32)
        if self.stopped_at is not None:
            arrays["stopped_at"] = np.array([self.stopped_at.step, self.stopped_at.total_steps])

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez_compressed(f, paths=np.array(self.paths, dtype=object).astype(str),
                                    classes=np.array(self.class_names).astype(str), **arrays)

        atomic_write(path, write)
        return path

    @classmethod
    def load_npz(cls, path: str | Path, root: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as data:
            stopped = data.get("stopped_at")
            return cls(Path(root), data["paths"].tolist(), data["classes"].tolist(),
                       data["zero_shot"], data.get("adapted"),
                       stopped_at=StoppedAt(*map(int, stopped)) if stopped is not None else None)


def read_predictions_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(class names, rows) of a CSV written by ``must predict``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file {path} was not found.")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in FIXED_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"{path} is not a `must predict` CSV (missing column "
                             f"'{missing[0]}').")
        classes = [from_spreadsheet_safe(c)[len(PROB_PREFIX):] for c in cols
                   if from_spreadsheet_safe(c).startswith(PROB_PREFIX)]
        rows = [{from_spreadsheet_safe(k): from_spreadsheet_safe(v) if isinstance(v, str) else v
                 for k, v in row.items()} for row in reader]
        return classes, rows


def adapted_model(run: RunInfo) -> tuple[MustModel | None, StoppedAt | None]:
    """The run's adapted model: the finished one, or for a run stopped early the EMA teacher
    of its checkpoint with where it stopped; (None, None) when there is neither."""
    if run.has_adapted_model:
        model = must_model_from_config(run.architecture)
        load_model_weights(run.file(MODEL_FILE), model)
        return model.eval(), None
    path = run.file(CHECKPOINT_FILE)
    if not path.is_file():
        return None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = must_model_from_config(run.architecture)
        load_state_checked(model, state["teacher"], path)
    except Exception as exc:  # a damaged or foreign file: say so, not a pickle traceback
        raise RunError(f"The checkpoint in {run.path} cannot be read ({exc}); resume the run "
                       f"to write a new one, or delete {CHECKPOINT_FILE}.") from exc
    return model.eval(), StoppedAt(int(state["step"]), run.total_steps)


def load_run_models(run: RunInfo) -> tuple[MustModel, MustModel | None]:
    """The run's zero-shot model and its adapted model (see ``adapted_model``)."""
    zero = must_model_from_config(run.architecture)
    load_model_weights(run.file(ZERO_SHOT_FILE), zero)
    adapted, _ = adapted_model(run)
    return zero.eval(), adapted


def default_batch_size(device: torch.device | str) -> int:
    """Images per prediction batch: a GPU is only kept busy by large batches; on the CPU
    64 already amortises the per-batch overhead and keeps memory small."""
    kind = torch.device(device).type
    return {"cuda": 256, "mps": 128}.get(kind, 64)


@torch.no_grad()
def predict_probs(models: Sequence[MustModel], paths: Sequence[Path], pp: Preprocess, *,
                  device: str | torch.device = "cpu", batch_size: int = 0,
                  on_event: EventSink | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  source: ImageSource | None = None, workers: int = -1,
                  distributed: Distributed | None = None,
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Softmax probabilities of each model on each image, and a per-image ``ok`` flag
    (False where the file could not be decoded). ``batch_size`` 0 and ``workers`` -1 are
    chosen from the device; ``source`` decodes the images (the decoded-image cache).

    ``distributed`` (under torchrun): each process scores every world-size-th image and
    every process ends with the whole table."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if batch_size < 0:
        raise ValueError(f"batch size must be positive (got {batch_size}).")
    batch_size = batch_size or default_batch_size(dev)
    models = [m.to(dev).eval() for m in models]
    ds = EvalDataset(list(paths), pp, source=source)
    plan = loader_plan(dev, workers)
    # One pass over the folder: workers that outlive it would only hold memory.
    plan = LoaderPlan(min(plan.workers, max(0, len(ds) // batch_size)), plan.pin_memory,
                      plan.prefetch_factor, persistent=False)
    mine = list(range(len(ds)))
    world = 1
    if distributed is not None:
        world = distributed.world_size
        mine = mine[distributed.rank::world]
    loader = make_loader(ds, mine, batch_size, plan, drop_last=False)
    outs = [np.zeros((len(ds), m.num_classes), dtype=np.float32) for m in models]
    ok = np.zeros(len(ds), dtype=bool)
    done = 0
    for images, index, good in loader:
        if should_stop is not None and should_stop():
            raise InterruptedError("Prediction was cancelled.")
        images = images.to(dev, non_blocking=True)
        for out, model in zip(outs, models, strict=True):
            out[index.numpy()] = model(images).float().softmax(dim=-1).cpu().numpy()
        ok[index.numpy()] = good.numpy()
        done += len(index)
        if on_event is not None:  # the other processes advance alike
            on_event(PredictionProgress(min(len(ds), done * world), len(ds)))
    if distributed is not None:
        outs, ok = _combine_shards(distributed, outs, ok)
    return outs, ok


def _combine_shards(distributed: Distributed, outs: list[np.ndarray], ok: np.ndarray,
                    rows: int = 65536) -> tuple[list[np.ndarray], np.ndarray]:
    """Every process's rows in one table: each image is scored by one process and is zero
    elsewhere, so a sum over processes is exact. CPU tensors (gloo, also beside NCCL)."""
    for out in outs:
        for lo in range(0, len(out), rows):
            distributed.sum_(torch.from_numpy(out[lo:lo + rows]))
    flags = torch.from_numpy(ok.astype(np.uint8))
    distributed.sum_(flags)
    return outs, flags.numpy() > 0


def predict_run(run_dir: str | Path, images: str | Path | None = None, *,
                files: Sequence[str] | None = None, device: str = "auto",
                batch_size: int = 0, on_event: EventSink | None = None,
                should_stop: Callable[[], bool] | None = None,
                image_cache: str | None = None, reuse: bool = True,
                distributed: Distributed | None = None) -> Predictions:
    """Score ``images`` (default: the run's own folder) with the run's models.

    Images are decoded through the decoded-image cache the run trained with (or
    ``image_cache``: 'auto', 'off' or a folder), so a folder decoded for training or the
    zero-shot preview is not decoded again. Files are checked as they are decoded, not in a
    separate pass; those that fail are listed in ``failed`` with the reason.

    ``reuse``: return the predictions kept in the run folder when neither the run's models
    nor the images changed since (must_engine.prediction_cache), and keep these for next time.

    ``distributed`` (under torchrun): the images are shared out among the processes and
    every process returns the whole table; only the first process keeps it in the run.
    """
    run = open_run(run_dir)
    root = Path(images) if images is not None else run.images_root
    if not is_folder(root):
        raise RunError(f"Image folder {root} was not found; check the path.")
    skipped: list[SkippedFile] = []
    if files is None:
        if images is None:
            files = run.image_files()
        else:
            scan = scan_folder(root, verify=False)
            files, skipped = scan.files, list(scan.skipped)
    if not files:
        raise RunError(f"No readable images in {root}.")
    key = prediction_cache.prediction_key(run, root, files) if reuse else ""
    cached = prediction_cache.load_cached(run, root, key) if reuse else None
    if distributed is not None and distributed.any(cached is None, torch.device("cpu")):
        cached = None  # every process scores its share, or none does
    if cached is not None:
        if on_event is not None:
            on_event(Status(f"Reusing the predictions kept in {run.path} (the run's models "
                            "and the images are unchanged)"))
            on_event(PredictionProgress(len(files), len(files)))
        cached.failed = sorted(skipped + cached.failed, key=lambda s: s.path)
        return cached
    zero = must_model_from_config(run.architecture)
    load_model_weights(run.file(ZERO_SHOT_FILE), zero)
    adapted, stopped_at = adapted_model(run)
    models = [zero.eval()] + ([adapted] if adapted is not None else [])
    settings = run.settings
    dev = resolve_device(device)
    if distributed is not None:
        dev = distributed.device_for(dev)
    source = run_image_source(run, image_cache)
    outs, ok = predict_probs(models, [root / f for f in files], run.preprocess,
                             device=dev, batch_size=batch_size,
                             on_event=on_event, should_stop=should_stop, source=source,
                             workers=settings.num_workers, distributed=distributed)
    keep = [i for i, good in enumerate(ok) if good]
    undecoded = [SkippedFile(files[i], unreadable_reason(root / files[i]) or "could not be "
                             "decoded") for i, good in enumerate(ok) if not good]
    result = Predictions(root, [files[i] for i in keep], run.class_names, outs[0][keep],
                         outs[1][keep] if adapted is not None else None, undecoded,
                         stopped_at=stopped_at)
    if reuse and (distributed is None or distributed.is_main):
        prediction_cache.store(run, root, key, result)
    result.failed = sorted(skipped + undecoded, key=lambda s: s.path)
    return result
