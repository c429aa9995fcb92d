"""The trainer: events, pause/resume/stop, and resume equality on the CPU."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from must_engine.events import (
    CheckpointSaved,
    EpochSummary,
    Paused,
    Resumed,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from must_engine.models.source import ModelSpec
from must_engine.runs import TrainJob
from must_engine.training.control import TrainControl
from must_engine.training.trainer import Trainer, prepare_run, train
from must_engine.weights import read_weights


def make_job(image_folder, class_names, model_dir, **extra):
    # the published method (auto would probe settings first and change them)
    overrides = {"epochs": 2, "batch_size": 6, "seed": 3, "mask_ratio": 0.25, "preset": "pets",
                 **extra}
    return TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                    templates=["a photo of a {}.", "a drawing of a {}."], overrides=overrides)


def test_events_of_a_full_run(tmp_path, image_folder, class_names, tiny_model_dir):
    events = list(train(make_job(image_folder, class_names, tiny_model_dir), tmp_path / "run"))
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert [s.step for s in steps] == list(range(8))  # 24 images // 6 = 4 steps * 2 epochs
    s = steps[0]
    for name in ("loss_st", "loss_fair", "loss_mim", "loss_align", "loss_total",
                 "confident_fraction", "teacher_confidence", "lr", "images_per_second"):
        assert isinstance(getattr(s, name), float), name
    assert s.loss_mim > 0 and s.loss_align > 0 and s.loss_fair > 0
    assert s.loss_total == pytest.approx(s.loss_st + 1.0 * s.loss_fair + s.loss_mim
                                         + 0.2 * s.loss_align, rel=1e-5)
    assert steps[0].lr > steps[-1].lr  # cosine decay
    assert steps[-1].eta_seconds == 0
    epochs = [e for e in events if isinstance(e, EpochSummary)]
    assert len(epochs) == 2
    assert sum(epochs[0].pseudo_label_counts) == 24
    assert sum(epochs[0].confidence_histogram) == 24
    assert len(epochs[0].confidence_bin_edges) == len(epochs[0].confidence_histogram) + 1
    assert any(isinstance(e, CheckpointSaved) for e in events)
    finished = events[-1]
    assert not finished.stopped and finished.step == 8
    run = tmp_path / "run"
    pseudo = json.loads((run / "pseudo_labels.json").read_text())
    assert len(pseudo["images"]) == 24
    assert all(0 <= r["label"] < 3 for r in pseudo["images"])
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["type"] == "RunStarted"


def test_switching_losses_off(tmp_path, image_folder, class_names, tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir, use_mim=False, use_align=False,
                   use_fair=False, epochs=1)
    steps = [e for e in train(job, tmp_path / "run") if isinstance(e, StepMetrics)]
    assert all(s.loss_mim == 0 and s.loss_align == 0 and s.loss_fair == 0 for s in steps)
    assert all(s.loss_total == pytest.approx(s.loss_st) for s in steps)


def test_batch_without_confident_sample_trains(tmp_path, image_folder, class_names,
                                               tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir, conf_threshold=0.999999, epochs=1)
    steps = [e for e in train(job, tmp_path / "run") if isinstance(e, StepMetrics)]
    assert all(s.confident_fraction == 0 and s.loss_st == 0 for s in steps)


def _teacher(run_dir):
    tensors, _ = read_weights(run_dir / "model.safetensors")
    return tensors


def test_stop_and_resume_equals_uninterrupted(tmp_path, image_folder, class_names,
                                              tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir)
    list(train(job, tmp_path / "a"))

    control = TrainControl()
    events = []
    for e in train(job, tmp_path / "b", control=control):
        events.append(e)
        if isinstance(e, StepMetrics) and e.step == 5:  # mid-epoch stop
            control.stop()
    assert isinstance(events[-1], RunFinished) and events[-1].stopped
    assert events[-1].step == 6
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["status"] == "stopped" and info["step"] == 6
    assert (tmp_path / "b" / "checkpoint.pt").is_file()

    resumed = list(Trainer(tmp_path / "b").run())
    steps = [e.step for e in resumed if isinstance(e, StepMetrics)]
    assert steps == [6, 7]
    a, b = _teacher(tmp_path / "a"), _teacher(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pause_and_resume_from_another_thread(tmp_path, image_folder, class_names,
                                              tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir, epochs=1)
    control = TrainControl()
    seen = []

    def resume_later():
        control.resume()

    for e in train(job, tmp_path / "run", control=control):
        seen.append(type(e))
        if isinstance(e, StepMetrics) and e.step == 0:
            control.pause()
        if isinstance(e, Paused):
            threading.Timer(0.2, resume_later).start()
    assert Paused in seen and Resumed in seen
    assert seen.index(Paused) < seen.index(Resumed)
    assert seen[-1] is RunFinished


def test_stop_while_paused(tmp_path, image_folder, class_names, tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir, epochs=1)
    control = TrainControl()
    last = None
    for e in train(job, tmp_path / "run", control=control):
        last = e
        if isinstance(e, StepMetrics) and e.step == 0:
            control.pause()
        if isinstance(e, Paused):
            threading.Timer(0.1, control.stop).start()
    assert isinstance(last, RunFinished) and last.stopped


def test_prepare_refuses_an_existing_run_and_keeps_it(tmp_path, image_folder, class_names,
                                                      tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir)
    prepare_run(job, tmp_path / "run")
    before = (tmp_path / "run" / "run.json").read_text()
    with pytest.raises(ValueError, match="already holds a run"):
        prepare_run(job, tmp_path / "run")
    assert (tmp_path / "run" / "run.json").read_text() == before


def test_prototype_init_from_target_features(tmp_path, image_folder, class_names,
                                             tiny_model_dir):
    job = make_job(image_folder, class_names, tiny_model_dir, prototype_init="text+target")
    prepare_run(job, tmp_path / "run")
    tensors, _ = read_weights(tmp_path / "run" / "zero_shot.safetensors")
    start = tensors["extra.start_classifier"]
    assert start.shape == tensors["classifier"].shape
    assert torch.allclose(start.norm(dim=0), torch.ones(3), atol=1e-5)
    assert not torch.allclose(start, tensors["classifier"])


def test_image_unreadable_at_training_time_is_skipped_for_real(tmp_path, image_folder,
                                                               class_names, tiny_model_dir):
    """A file that decoded at scan time but breaks before training: no pseudo-label of its
    own or of another image under its name, listed with the reason in run.json, warned about
    once, and stop/resume still equals an uninterrupted run."""
    import shutil

    from must_engine.events import RunWarning

    folder = tmp_path / "photos"
    shutil.copytree(image_folder, folder)
    job = make_job(folder, class_names, tiny_model_dir)
    prepare_run(job, tmp_path / "a")
    prepare_run(job, tmp_path / "b")
    broken = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))[5]
    (folder / broken).write_bytes(b"not an image any more")

    events = list(Trainer(tmp_path / "a").run())
    warnings = [e for e in events if isinstance(e, RunWarning) and e.kind == "unreadable_image"]
    assert len(warnings) == 1
    assert broken in warnings[0].message
    epochs = [e for e in events if isinstance(e, EpochSummary)]
    assert all(sum(e.pseudo_label_counts) == 23 for e in epochs)  # 24 images, one unreadable
    pseudo = json.loads((tmp_path / "a" / "pseudo_labels.json").read_text())
    paths = [r["path"] for r in pseudo["images"]]
    assert broken not in paths and len(paths) == 23
    assert all(0 <= r["label"] < 3 for r in pseudo["images"])
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    skipped = info["data"]["skipped_in_training"]
    assert [s["path"] for s in skipped] == [broken]
    assert "could not be read" in skipped[0]["reason"]

    control = TrainControl()
    for e in Trainer(tmp_path / "b").run(control):
        if isinstance(e, StepMetrics) and e.step == 5:
            control.stop()
    list(Trainer(tmp_path / "b").run())
    a, b = _teacher(tmp_path / "a"), _teacher(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    info_b = json.loads((tmp_path / "b" / "run.json").read_text())
    assert [s["path"] for s in info_b["data"]["skipped_in_training"]] == [broken]
