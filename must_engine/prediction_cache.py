"""Predictions kept in the run folder, so that `must export` right after `must predict` (or a
second export) does not score every image again (~100 s for 4,317 images on two CPU cores).

An entry is used only when everything its probabilities depend on is unchanged: the run's
model files (size, modification time and inode: training or a resume rewrites them), class
names, architecture and preprocessing, the engine version, and the image folder with every
file's name, size and modification time. Anything else recomputes. The cache is an
optimisation: a folder it cannot be written to (read-only, full) only costs the reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from must_engine.images import SkippedFile
from must_engine.io_utils import atomic_write
from must_engine.runs import CHECKPOINT_FILE, MODEL_FILE, ZERO_SHOT_FILE, RunInfo
from must_engine.version import __version__

CACHE_FOLDER = "prediction-cache"
FORMAT = "must-prediction-cache/1"

log = logging.getLogger(__name__)


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def prediction_key(run: RunInfo, root: Path, files: Sequence[str]) -> str:
    """A digest of everything the predictions of ``files`` under ``root`` depend on."""
    digest = hashlib.sha256()

    def add(value: object) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\0")

    add([FORMAT, __version__])
    # A stopped run predicts with its checkpoint's teacher: a resume rewrites the checkpoint.
    add([_stat_key(run.file(ZERO_SHOT_FILE)), _stat_key(run.file(MODEL_FILE)),
         _stat_key(run.file(CHECKPOINT_FILE))])
    add([run.class_names, run.architecture, run.data.get("preprocess")])
    root = Path(root).expanduser().resolve()
    add(str(root))
    for name in files:
        st = _stat_key(root / name)
        add([name, st[:2] if st else None])
    return digest.hexdigest()


def cache_file(run: RunInfo, root: Path) -> Path:
    """One entry per image folder a run has scored (a later prediction replaces it)."""
    folder_id = hashlib.sha256(str(Path(root).expanduser().resolve()).encode("utf-8"))
    return run.path / CACHE_FOLDER / f"{folder_id.hexdigest()[:16]}.npz"


def load_cached(run: RunInfo, root: Path, key: str):
    """The cached ``Predictions`` for ``key``, or None (absent, stale or unreadable)."""
    from must_engine.predict import Predictions, StoppedAt

    path = cache_file(run, root)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            failed = [SkippedFile(str(p), str(r))
                      for p, r in zip(data["failed_paths"], data["failed_reasons"], strict=True)]
            adapted = data["adapted"] if "adapted" in data.files else None
            stopped = (StoppedAt(*map(int, data["stopped_at"]))
                       if "stopped_at" in data.files else None)
            return Predictions(Path(root), data["paths"].tolist(), data["classes"].tolist(),
                               data["zero_shot"], adapted, failed, stopped_at=stopped)
    except (OSError, ValueError, KeyError) as exc:  # a damaged entry is recomputed
        log.info("prediction cache %s not used: %s", path, exc)
        return None


def store(run: RunInfo, root: Path, key: str, predictions) -> Path | None:
    """Save ``predictions`` under ``key``; None (and a log line) if the run folder refuses."""
    path = cache_file(run, root)
    arrays = {"zero_shot": np.asarray(predictions.zero_shot_probs, dtype=np.float32)}
    if predictions.probs is not None:
        arrays["adapted"] = np.asarray(predictions.probs, dtype=np.float32)
    if predictions.stopped_at is not None:
        arrays["stopped_at"] = np.array([predictions.stopped_at.step,
                                         predictions.stopped_at.total_steps])

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez_compressed(
                f, key=np.array(key), paths=np.array(predictions.paths, dtype=str),
                classes=np.array(predictions.class_names, dtype=str),
                failed_paths=np.array([s.path for s in predictions.failed], dtype=str),
                failed_reasons=np.array([s.reason for s in predictions.failed], dtype=str),
                **arrays)

    try:
        os.makedirs(path.parent, exist_ok=True)
        atomic_write(path, write)
    except OSError as exc:
        log.warning("Predictions not cached in %s (%s); the next export computes them again.",
                    path.parent, exc.strerror or exc)
        return None
    return path
