"""What may change when a stopped run is resumed.

Settings that only steer the remaining steps (learning rates, weight decay, threshold, loss
weights, precision, runtime knobs) apply from the resumed step and are recorded in
``run.json`` under ``resumes``. What the saved state was built from (classes, model,
prompts, images, batch size, schedule length, masking, views, seed) cannot change: asking
for it is refused, naming each.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from must_engine.runs import RunError, RunInfo, TrainJob, now
from must_engine.settings import MustSettings

SAFE_ON_RESUME = frozenset({
    "base_lr", "min_lr", "weight_decay", "conf_threshold", "w_fair", "w_mim", "w_align",
    "use_fair", "use_mim", "use_align", "precision", "device", "num_workers", "log_every",
})
_NOT_SETTINGS = frozenset({"preset"})  # how the settings were first chosen, not a setting


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _job_differences(info: RunInfo, job: TrainJob | None) -> list[str]:
    if job is None:
        return []
    differ = []
    if job.class_names and [n.strip() for n in job.class_names] != info.class_names:
        differ.append("the class names")
    if job.templates and list(job.templates) != info.templates:
        differ.append("the prompt templates")
    if job.model is not None and job.model.to_dict() != info.model_spec.to_dict():
        a, b = job.model, info.model_spec
        local = a.kind == b.kind == "local-dir"
        if not (local and _same_path(a.model.split(":", 1)[1], b.model.split(":", 1)[1])):
            differ.append("the model")
    if job.images and not _same_path(job.images, info.images_root):
        differ.append("the image folder")
    return differ


def resume_changes(info: RunInfo, overrides: dict[str, Any],
                   job: TrainJob | None = None) -> dict[str, tuple[Any, Any]]:
    """{setting: (old, new)} for the settings a resume would change; raises ``RunError``
    naming everything that cannot change, or for a value the settings refuse."""
    current = info.settings
    known = {f.name for f in fields(MustSettings)}
    num_images = int(info.data.get("data", {}).get("num_images", 0) or 0)
    changes: dict[str, tuple[Any, Any]] = {}
    fixed = _job_differences(info, job)
    for name, value in overrides.items():
        if name in _NOT_SETTINGS or value is None:
            continue
        if name not in known:
            raise RunError(f"Unknown setting '{name}'.")
        old = getattr(current, name)
        if name == "batch_size" and num_images and isinstance(value, int) and value >= 1:
            value = min(value, num_images)  # as the run's settings were resolved
        if name == "mask_patch_size" and value == 0:
            continue  # 0 means "chosen from the model", which the run already did
        if _same(old, value):
            continue
        if name in SAFE_ON_RESUME:
            changes[name] = (old, value)
        else:
            fixed.append(name)
    if fixed:
        raise RunError(f"A resumed run cannot change {', '.join(fixed)} (its saved state was "
                       f"built with them); resume without them, or start a new run.")
    replace(current, **{k: new for k, (_old, new) in changes.items()}).validate()
    return changes


def apply_resume(info: RunInfo, overrides: dict[str, Any], job: TrainJob | None = None,
                 ) -> dict[str, tuple[Any, Any]]:
    """Check and write the resume's setting changes into ``run.json`` (with a record of the
    step they apply from); returns them."""
    changes = resume_changes(info, overrides, job)
    settings = replace(info.settings, **{k: new for k, (_old, new) in changes.items()})
    info.data["settings"] = settings.to_dict()
    info.data.setdefault("resumes", []).append({
        "at": now(), "from_step": info.step,
        "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.items()},
    })
    info.save()
    return changes
