"""Settings found from the data: the ``auto`` preset's short label-free probe.

Before the real run trains, each candidate setting (a variation of the label-free recipe in
``settings.LABEL_FREE_RECIPE``: learning rate, layer decay, student view, masking) trains
briefly on the run's scoring subset, starting from the same classifier, and its EMA teacher
is scored by the label-free measure on the same images. The best-scored candidate's settings
are what the run trains with. Knobs the user set are never varied.

The probe runs also measure the device's speed, which sizes the schedule (``size_schedule``)
and gives the expected training time before training starts.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from must_engine.events import Event, SettingsProbed, Status, StepMetrics, TimeEstimate
from must_engine.io_utils import read_json, write_json
from must_engine.settings import MustSettings, steps_per_epoch

PROBE_DIR = "probe"
# Seconds a default run may train for: minutes on a CPU, up to an hour on an accelerator.
TIME_BUDGET = {"cpu": 10 * 60, "other": 60 * 60}
MAX_AUTO_EPOCHS = 10
MIN_AUTO_EPOCHS = 2
# The probe may cost at most this share of the run's own training steps.
PROBE_SHARE = 0.5
PROBE_MARGIN = 0.01
MAX_PROBE_EPOCHS = 2


@dataclass(frozen=True)
class ProbeCandidate:
    name: str
    overrides: dict[str, Any]


@dataclass
class ProbeOutcome:
    name: str
    overrides: dict[str, Any]
    score: float
    signals: dict[str, float]
    seconds: float
    steps: int
    seconds_per_step: float


@dataclass
class ProbeReport:
    """What the probe tried, what it chose, and the schedule it sized (saved in run.json)."""

    outcomes: list[ProbeOutcome]
    chosen: str
    chosen_overrides: dict[str, Any]
    images: int
    epochs: int
    seconds_per_step: float
    expected_seconds: float
    varied: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen, "chosen_settings": self.chosen_overrides,
            "images": self.images, "varied": self.varied, "epochs": self.epochs,
            "seconds_per_step": self.seconds_per_step,
            "expected_seconds": self.expected_seconds,
            "candidates": [{"name": o.name, "settings": o.overrides, "score": o.score,
                            "signals": o.signals, "seconds": round(o.seconds, 3),
                            "steps": o.steps} for o in self.outcomes],
        }


def probe_candidates(base: MustSettings, user_set: set[str]) -> list[ProbeCandidate]:
    """The recipe, then one variation per knob the user left to ``auto``."""
    out = [ProbeCandidate("recipe", {})]
    if "base_lr" not in user_set:
        out.append(ProbeCandidate("lr / 10", {"base_lr": base.base_lr / 10,
                                              "min_lr": base.min_lr / 10}))
    if "layer_decay" not in user_set:
        out.append(ProbeCandidate("layer decay 0.65", {"layer_decay": 0.65}))
    if "student_view" not in user_set:
        other = "strong" if base.student_view == "weak" else "weak"
        out.append(ProbeCandidate(f"{other} student view", {"student_view": other}))
    if not ({"mask_ratio", "use_mim", "use_align"} & user_set):
        if base.uses_mask:
            out.append(ProbeCandidate("no masking", {"use_mim": False, "use_align": False}))
        else:
            out.append(ProbeCandidate("masking 10% + MIM + alignment",
                                      {"mask_ratio": 0.1, "use_mim": True, "use_align": True}))
    return out if len(out) > 1 else []


def size_schedule(seconds_per_step: float, num_images: int, settings: MustSettings,
                  device_type: str, score_seconds: float = 0.0) -> int:
    """Epochs that fit the device's time budget (between MIN and MAX_AUTO_EPOCHS)."""
    budget = TIME_BUDGET["cpu" if device_type == "cpu" else "other"]
    per_epoch = steps_per_epoch(num_images, settings.batch_size) * seconds_per_step + score_seconds
    fit = math.floor(budget / max(1e-9, per_epoch))
    return max(MIN_AUTO_EPOCHS, min(MAX_AUTO_EPOCHS, fit))


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def run_probe(run_dir: Path, candidates: list[ProbeCandidate], *, probe_epochs: int = 2,
              on_event: Callable[[Event], None] | None = None) -> list[ProbeOutcome]:
    """Train each candidate briefly on the run's scoring subset (a throwaway run folder
    under ``run_dir/probe``) and score its last teacher. The folder is removed after."""
    from must_engine.runs import IMAGES_FILE, RUN_FILE, ZERO_SHOT_FILE
    from must_engine.selection import TEACHER
    from must_engine.training.trainer import Trainer
    from must_engine.weights import read_weights, save_model_weights

    run_dir = Path(run_dir)
    data = read_json(run_dir / RUN_FILE)
    files = read_json(run_dir / IMAGES_FILE)
    tensors, _ = read_weights(run_dir / ZERO_SHOT_FILE)
    indices = tensors["extra.score_indices"].tolist()
    subset = [files[i] for i in indices]
    root = run_dir / PROBE_DIR
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # One starting model for every candidate, with the subset's own indices.
    from must_engine.models.must_model import must_model_from_config
    from must_engine.weights import load_model_weights

    model = must_model_from_config(data["architecture"])
    extra = load_model_weights(run_dir / ZERO_SHOT_FILE, model)
    extra["score_indices"] = extra["score_indices"].new_tensor(list(range(len(subset))))
    shared = root / ZERO_SHOT_FILE
    save_model_weights(shared, model, extra=extra, metadata={"role": "zero-shot"})
    base = MustSettings.from_dict(data["settings"])
    outcomes: list[ProbeOutcome] = []
    try:
        for k, cand in enumerate(candidates):
            if on_event is not None:
                on_event(Status(f"Probing settings {k + 1}/{len(candidates)}: {cand.name}"))
            settings = replace(base, **cand.overrides, epochs=probe_epochs, keep="last")
            batch = min(settings.batch_size, len(subset))
            total = steps_per_epoch(len(subset), batch) * probe_epochs
            settings = replace(settings, batch_size=batch,
                               ema_warm_it=max(1, round(total * _warm_share(base, data))))
            folder = root / f"c{k}"
            folder.mkdir()
            _link_or_copy(shared, folder / ZERO_SHOT_FILE)
            write_json(folder / IMAGES_FILE, subset)
            sub = {**data, "settings": settings.to_dict(), "status": "prepared", "step": 0,
                   "total_steps": total}
            sub["selection"] = {key: value for key, value in data["selection"].items()}
            write_json(folder / RUN_FILE, sub)
            trainer = Trainer(folder)
            started = time.perf_counter()
            speeds = [e.images_per_second for e in trainer.run()
                      if isinstance(e, StepMetrics)]
            seconds = time.perf_counter() - started
            last = [c for c in trainer.scorer.selection.candidates if c.kind == TEACHER][-1]
            # the first steps warm up (allocations, caches): the median speed is the rate
            per_step = batch / max(1e-9, statistics.median(speeds)) if speeds else \
                seconds / max(1, total)
            outcomes.append(ProbeOutcome(cand.name, dict(cand.overrides), last.score,
                                         dict(last.signals), seconds, total, per_step))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


def _warm_share(base: MustSettings, data: dict) -> float:
    total = max(1, int(data.get("total_steps", 1)))
    return min(1.0, base.ema_warm_it / total)


def choose_settings(run_dir: Path, user_set: set[str], device_type: str, *,
                    on_event: Callable[[Event], None] | None = None) -> ProbeReport | None:
    """Probe, pick the best-scored candidate, size the schedule to the device and write the
    chosen settings, the probe's scores and the expected time into ``run.json``. None (and
    nothing changed) for a run too short to be worth probing."""
    from must_engine.runs import open_run

    run = open_run(run_dir)
    base = run.settings
    candidates = probe_candidates(base, user_set)
    subset = _subset_size(run)
    probe_epochs = _probe_epochs(run.total_steps, len(candidates),
                                 steps_per_epoch(subset, min(base.batch_size, subset)))
    # with nothing to vary (or no time to), one short recipe run still measures the speed,
    # unless that would cost half the run itself: a run that short needs no estimate
    timing_only = not candidates or probe_epochs == 0
    if timing_only:
        subset_steps = steps_per_epoch(subset, min(base.batch_size, subset))
        if subset_steps > run.total_steps * PROBE_SHARE:
            return None
        candidates, probe_epochs = [], 1
    outcomes = run_probe(run.path, candidates or [ProbeCandidate("recipe", {})],
                         probe_epochs=probe_epochs, on_event=on_event)
    # A candidate must beat the recipe by more than the score's noise (candidates after one
    # short epoch were measured within 0.01 of each other) to replace it.
    best = outcomes[0]
    for o in outcomes[1:]:
        if o.score > max(best.score, outcomes[0].score + PROBE_MARGIN):
            best = o
    settings = replace(base, **best.overrides)
    n = len(run.image_files())
    per_step = best.seconds_per_step
    score_seconds = max(0.0, best.seconds - best.steps * per_step) / probe_epochs
    if "epochs" not in user_set:
        settings = replace(settings, epochs=size_schedule(per_step, n, settings, device_type,
                                                          score_seconds))
    total = steps_per_epoch(n, settings.batch_size) * settings.epochs
    old_total = max(1, run.total_steps)
    if "ema_warm_it" not in user_set:
        settings = replace(settings, ema_warm_it=max(1, round(base.ema_warm_it * total
                                                              / old_total)))
    settings.validate()
    expected = total * per_step + settings.epochs * score_seconds
    report = ProbeReport([] if timing_only else outcomes, best.name if not timing_only else "",
                         dict(best.overrides), subset, settings.epochs, per_step, expected,
                         sorted({k for c in candidates for k in c.overrides}))
    run.data.update(settings=settings.to_dict(), total_steps=total, probe=report.to_dict())
    run.save()
    return report


def _probe_epochs(run_steps: int, candidates: int, subset_steps: int) -> int:
    """Epochs over the scored subset each candidate trains for: up to MAX_PROBE_EPOCHS, and
    all candidates together at most PROBE_SHARE of the run's own steps (0: no probe)."""
    if candidates == 0:
        return 0
    budget = int(run_steps * PROBE_SHARE) // candidates
    return min(MAX_PROBE_EPOCHS, budget // max(1, subset_steps))


def _subset_size(run) -> int:
    from must_engine.runs import ZERO_SHOT_FILE
    from must_engine.weights import read_weights

    tensors, _ = read_weights(run.file(ZERO_SHOT_FILE))
    return int(tensors["extra.score_indices"].numel())


def probe_events(data: dict, device: str) -> list[Event]:
    """The probe's choice and the expected time, from ``run.json``, for the event log."""
    probe = data.get("probe")
    if not probe:
        return []
    out: list[Event] = []
    if probe["candidates"]:
        out.append(SettingsProbed(chosen=probe["chosen"], settings=probe["chosen_settings"],
                                  images=probe["images"],
                                  candidates=[{"name": c["name"], "score": c["score"],
                                               "settings": c["settings"]}
                                              for c in probe["candidates"]]))
    out.append(TimeEstimate(seconds=probe["expected_seconds"], epochs=probe["epochs"],
                            total_steps=int(data.get("total_steps", 0)),
                            seconds_per_step=probe["seconds_per_step"], device=device))
    return out
