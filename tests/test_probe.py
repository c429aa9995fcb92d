"""The auto preset's label-free probe and the schedule sized to the device."""

from __future__ import annotations

import json

from must_engine import probe
from must_engine.cli import main
from must_engine.events import SettingsProbed, StepMetrics, TimeEstimate
from must_engine.models.source import ModelSpec
from must_engine.runs import TrainJob
from must_engine.settings import LABEL_FREE_RECIPE, MustSettings
from must_engine.training.trainer import train

CANDIDATE_SCORES = {"recipe": 0.50, "lr / 10": 0.52, "layer decay 0.65": 0.61,
                    "strong student view": 0.55, "masking 10% + MIM + alignment": 0.40}


def fake_scores(monkeypatch):
    """Give each probe candidate a made-up score (the real probe still trains each one)."""
    real = probe.run_probe

    def scored(run_dir, candidates, **kwargs):
        outcomes = real(run_dir, candidates, **kwargs)
        for o in outcomes:
            o.score = CANDIDATE_SCORES[o.name]
        return outcomes

    monkeypatch.setattr(probe, "run_probe", scored)


def test_probe_candidates_vary_only_what_the_user_left_to_auto():
    base = MustSettings(**LABEL_FREE_RECIPE)
    names = [c.name for c in probe.probe_candidates(base, set())]
    assert names == list(CANDIDATE_SCORES)
    fewer = probe.probe_candidates(base, {"base_lr", "student_view"})
    assert [c.name for c in fewer] == ["recipe", "layer decay 0.65",
                                       "masking 10% + MIM + alignment"]
    everything = {"base_lr", "layer_decay", "student_view", "mask_ratio"}
    assert probe.probe_candidates(base, everything) == []


def test_schedule_fits_the_device_budget():
    s = MustSettings(batch_size=32)
    fast = probe.size_schedule(0.01, 3000, s, "cpu")
    slow = probe.size_schedule(2.0, 3000, s, "cpu")  # 93 steps an epoch at 2 s: 186 s
    assert fast == probe.MAX_AUTO_EPOCHS
    assert slow == 600 // 186 and probe.TIME_BUDGET["cpu"] >= 3 * 186
    assert probe.size_schedule(60.0, 3000, s, "cpu") == probe.MIN_AUTO_EPOCHS
    assert probe.size_schedule(2.0, 3000, s, "cuda") == probe.MAX_AUTO_EPOCHS


def test_the_probe_costs_at_most_half_the_run():
    assert probe._probe_epochs(1000, 5, 16) == probe.MAX_PROBE_EPOCHS
    assert probe._probe_epochs(40, 5, 4) == 1  # 5 candidates x 4 steps <= 20
    assert probe._probe_epochs(39, 5, 4) == 0
    assert probe._probe_epochs(1000, 0, 16) == 0


def test_auto_trains_with_the_best_scored_candidate_and_saves_the_probe(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch, capsys):
    fake_scores(monkeypatch)
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."], overrides={"batch_size": 6, "seed": 1})
    events = list(train(job, tmp_path / "run"))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    saved = info["probe"]
    assert saved["chosen"] == "layer decay 0.65"
    assert saved["chosen_settings"] == {"layer_decay": 0.65}
    assert {c["name"]: c["score"] for c in saved["candidates"]} == CANDIDATE_SCORES
    assert saved["images"] == 24 and saved["expected_seconds"] > 0
    assert info["settings"]["layer_decay"] == 0.65
    assert info["settings"]["base_lr"] == LABEL_FREE_RECIPE["base_lr"]
    assert info["settings"]["epochs"] == saved["epochs"]
    assert info["total_steps"] == (24 // 6) * saved["epochs"]
    assert not (tmp_path / "run" / probe.PROBE_DIR).exists()
    kinds = [type(e) for e in events]
    probed = events[kinds.index(SettingsProbed)]
    assert probed.chosen == "layer decay 0.65" and len(probed.candidates) == 5
    assert kinds.index(SettingsProbed) < kinds.index(TimeEstimate) < kinds.index(StepMetrics)
    estimate = events[kinds.index(TimeEstimate)]
    assert estimate.epochs == saved["epochs"] and estimate.seconds == saved["expected_seconds"]

    # the command line shows the probe and the expected time before training
    code = main(["train", str(image_folder), "--classes", ",".join(class_names),
                 "--model", str(tiny_model_dir), "--batch-size", "6", "--base-lr", "0.001",
                 "--epochs", "10", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 0
    assert "Probe on 24 images (label-free score): recipe 0.500, layer decay 0.65 0.610" in err
    assert "Training with: layer decay 0.65 (layer_decay=0.65)" in err
    assert "lr / 10" not in err  # the user set the learning rate
    assert "Expected training time: about" in err
    assert err.index("Expected training time") < err.index("epoch 1/10")
    cli = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert cli["settings"]["epochs"] == 10 and cli["settings"]["base_lr"] == 0.001


def test_a_run_too_short_to_probe_trains_as_asked(tmp_path, image_folder, class_names,
                                                  tiny_model_dir):
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."], overrides={"batch_size": 6, "epochs": 1})
    events = list(train(job, tmp_path / "run"))
    assert not any(isinstance(e, SettingsProbed | TimeEstimate) for e in events)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "probe" not in info and info["settings"]["epochs"] == 1


def test_a_published_preset_does_not_probe(tmp_path, image_folder, class_names,
                                           tiny_model_dir):
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"batch_size": 6, "epochs": 1, "preset": "pets"})
    events = list(train(job, tmp_path / "run"))
    assert not any(isinstance(e, SettingsProbed | TimeEstimate) for e in events)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "probe" not in info and info["settings"]["keep"] == "last"
