"""The bundle's ``card.json``: everything someone needs to use, judge and credit the model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from must_engine.predict import Predictions
from must_engine.runs import METRICS_FILE, RunInfo, now
from must_engine.version import __version__

CARD_FORMAT = "must-bundle/1"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def last_epoch_summary(run: RunInfo) -> dict[str, Any] | None:
    """The teacher's pseudo-label figures of the last epoch, from the run's event log."""
    path = run.file(METRICS_FILE)
    if not path.is_file():
        return None
    last = None
    with path.open(encoding="utf-8") as f:
        for line in f:
            if '"EpochSummary"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if event.get("type") == "EpochSummary":
                last = event
    return last


def label_free_figures(run: RunInfo, predictions: Predictions | None) -> dict[str, Any]:
    """Figures that need no labels: confidence, how many labels changed from zero-shot,
    class histograms before and after, and the teacher's last-epoch pseudo-label figures."""
    figures: dict[str, Any] = {}
    threshold = run.settings.conf_threshold
    if predictions is not None and len(predictions) > 0:
        conf = predictions.confidences()
        zconf = predictions.zero_shot_confidences()
        figures.update({
            "images_scored": len(predictions),
            "mean_confidence": round(float(conf.mean()), 6),
            "zero_shot_mean_confidence": round(float(zconf.mean()), 6),
            "confident_fraction": round(float((conf > threshold).mean()), 6),
            "zero_shot_confident_fraction": round(float((zconf > threshold).mean()), 6),
            "confidence_threshold": threshold,
            "changed_fraction": round(float(np.mean(predictions.changed())), 6),
            "class_counts": dict(zip(predictions.class_names, predictions.class_counts(),
                                     strict=True)),
            "zero_shot_class_counts": dict(zip(predictions.class_names,
                                               predictions.class_counts(zero_shot=True),
                                               strict=True)),
        })
    epoch = last_epoch_summary(run)
    if epoch is not None:
        figures["last_epoch_teacher"] = {
            "epoch": epoch.get("epoch"),
            "mean_confidence": epoch.get("mean_confidence"),
            "confident_fraction": epoch.get("confident_fraction"),
            "pseudo_label_counts": dict(zip(run.class_names,
                                            epoch.get("pseudo_label_counts", []), strict=False)),
        }
    return figures


def kept_classifier(run: RunInfo) -> dict[str, Any] | None:
    """Which classifier the run kept (label-free keep-best) and why, with every candidate's
    score and the settings probe's choice, from ``run.json``; None for a run that kept
    nothing (stopped before the end, or made before runs kept the best)."""
    selection = run.data.get("selection") or {}
    if not run.has_adapted_model or "kept_label" not in selection:
        return None
    scores = [{"classifier": c.get("label", c.get("kind")), "score": c.get("score")}
              for c in selection.get("candidates", [])]
    refined = next((c["score"] for c in selection.get("candidates", [])
                    if c.get("kind") == "refined"), None)
    out: dict[str, Any] = {
        "kept": selection.get("kept_label"),
        "kind": selection.get("kept_kind"),
        "label_free_score": selection.get("kept_score"),
        "zero_shot_score": selection.get("zero_shot_score"),
        "refined_zero_shot_score": refined,
        "reason": selection.get("reason"),
        # A sentence when the kept classifier is not better than zero-shot by the run's own
        # label-free measure; null otherwise.
        "warning": selection.get("warning"),
        "keep": selection.get("mode"),
        "scores": scores,
        "meaning": "label-free score in [0, 1], higher is better, measured without labels on "
                   "a fixed sample of the images; it ranks classifiers, it is not an accuracy",
    }
    probe = run.data.get("probe")
    if probe:
        out["settings_probe"] = {
            "chosen": probe.get("chosen"),
            "chosen_settings": probe.get("chosen_settings"),
            "images": probe.get("images"),
            "candidates": [{"name": c.get("name"), "score": c.get("score"),
                            "settings": c.get("settings")} for c in probe.get("candidates", [])],
            "expected_seconds": probe.get("expected_seconds"),
        }
    return out


def _model_description(run: RunInfo, kept: dict[str, Any] | None) -> str:
    if not run.has_adapted_model:
        return (f"the EMA teacher of the checkpoint, stopped at step {run.step} of "
                f"{run.total_steps}")
    if kept is None:
        return "the EMA teacher at the end of training"
    return f"the {kept['kept']} classifier, kept by the label-free score ({kept['reason']})"


def _threshold_note(settings) -> dict[str, Any]:
    """Which pseudo-labels taught the student (settings.threshold_mode)."""
    mode = settings.threshold_mode
    note: dict[str, Any] = {"threshold_mode": mode, "conf_threshold": settings.conf_threshold}
    if mode == "quantile":
        note.update(threshold_share=settings.threshold_share,
                    meaning="during training, a pseudo-label taught the student when its "
                            "teacher confidence was among the most confident threshold_share "
                            "of its class over the last epoch's images (conf_threshold: for a "
                            "class with none there)")
    elif mode == "adaptive":
        note.update(threshold_momentum=settings.threshold_momentum,
                    meaning="during training, pseudo-labels taught the student above "
                            "self-adaptive per-class thresholds (FreeMatch): the running mean "
                            "teacher confidence scaled by each class's running mean "
                            "probability (conf_threshold unused)")
    else:
        note["meaning"] = ("during training, only pseudo-labels whose teacher confidence was "
                           "above conf_threshold taught the student")
    return note


def build_card(run: RunInfo, *, model_file: str, model_sha256: str,
               predictions: Predictions | None,
               spot_check: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = run.settings
    pp = run.preprocess
    data = run.data.get("data", {})
    skipped = data.get("skipped", [])
    identity = dict(run.data.get("model_identity", {}))
    kept = kept_classifier(run)
    return {
        "format": CARD_FORMAT,
        "engine_version": __version__,
        "exported": now(),
        "class_names": run.class_names,
        "templates": run.templates,
        "model": {
            **identity,
            "licence_note": identity.get("license_note", ""),
            "adapted_with": "MUST (Masked Unsupervised Self-Training, ICLR 2023) in MUST Studio "
                            f"{__version__}; the adapted weights inherit the licence of the "
                            "starting model.",
        },
        "architecture": run.architecture,
        "preprocess": {
            **pp.to_dict(),
            "resize": f"shorter side to {pp.image_size} px ({pp.interpolation}), then a centre "
                      f"crop of {pp.image_size}x{pp.image_size}; RGB; (pixel / 255 - mean) / std",
        },
        "weights": {
            "file": model_file,
            "sha256": model_sha256,
            "contents": "MustModel state dict (visual.*, classifier, logit_scale, center) "
                        "without the training-only mask_token and decoder.*; rebuild with "
                        "must_model_from_config(card['architecture']) and load_state_dict("
                        "strict=False).",
            "outputs": "MustModel.forward gives logits (logit_scale * cosine similarity between "
                       "the classifier and the normalised image embedding minus center, "
                       "normalised again; center is zero unless the run centred); "
                       "load_classifier and the TorchScript/ONNX exports give softmax "
                       "probabilities.",
        },
        "thresholds": _threshold_note(settings),
        "training": {
            "settings": settings.to_dict(),
            "steps": run.step,
            "total_steps": run.total_steps,
            "status": run.status,
            "model": _model_description(run, kept),
            "started": run.data.get("created"),
            "finished": run.data.get("updated"),
            "run_engine_version": run.data.get("engine_version"),
        },
        "classifier": kept,
        "data": {
            "num_images": int(data.get("num_images", 0)),
            "num_skipped": len(skipped),
            "folder_name": run.images_root.name,
        },
        "figures": {
            "label_free": label_free_figures(run, predictions),
            "spot_check": dict(spot_check) if spot_check else None,
        },
    }
