"""Predict and export from a run stopped early: the checkpoint's EMA teacher, marked as
"stopped at step N of M", never a silent fall-back to zero-shot labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from must_engine.cli import main
from must_engine.events import StepMetrics
from must_engine.export import export_run
from must_engine.models.must_model import must_model_from_config
from must_engine.models.source import ModelSpec
from must_engine.predict import Predictions, StoppedAt, predict_run
from must_engine.runs import TrainJob, open_run
from must_engine.training.control import TrainControl
from must_engine.training.trainer import train


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, image_folder, class_names, tiny_model_dir):
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"epochs": 2, "batch_size": 6, "seed": 3, "base_lr": 0.05,
                              "num_workers": 0})
    control = TrainControl()
    for e in train(job, run_dir, control=control):
        if isinstance(e, StepMetrics) and e.step == 4:
            control.stop()
    return run_dir


def test_predict_uses_the_checkpoints_teacher(stopped_run):
    info = open_run(stopped_run)
    assert info.status == "stopped" and not info.has_adapted_model
    preds = predict_run(stopped_run, device="cpu")
    assert preds.stopped_at == StoppedAt(5, 8)
    assert str(preds.stopped_at) == "stopped at step 5 of 8"
    assert preds.probs is not None
    assert not np.allclose(preds.probs, preds.zero_shot_probs, atol=1e-4)
    # exactly the teacher saved in the checkpoint
    state = torch.load(stopped_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    teacher = must_model_from_config(info.architecture)
    teacher.load_state_dict(state["teacher"])
    again = predict_run(stopped_run, device="cpu")
    np.testing.assert_array_equal(preds.probs, again.probs)
    from must_engine.predict import predict_probs

    paths = [info.images_root / p for p in preds.paths]
    (direct,), _ok = predict_probs([teacher.eval()], paths, info.preprocess, device="cpu")
    np.testing.assert_allclose(preds.probs, direct, atol=1e-6)


def test_the_mark_survives_the_apps_cache(stopped_run, tmp_path):
    preds = predict_run(stopped_run, device="cpu")
    back = Predictions.load_npz(preds.save_npz(tmp_path / "p.npz"), preds.root)
    assert back.stopped_at == StoppedAt(5, 8)
    np.testing.assert_allclose(back.probs, preds.probs)


def test_cli_predict_says_where_the_run_stopped(stopped_run, tmp_path, image_folder, capsys):
    code = main(["predict", str(stopped_run), str(image_folder), "--out",
                 str(tmp_path / "p.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "stopped at step 5 of 8" in err and "teacher" in err
    assert "zero-shot predictions" not in err


def test_export_bundle_of_a_stopped_run(stopped_run, tmp_path, capsys):
    result = export_run(stopped_run, "bundle", tmp_path / "bundle")
    assert result.summary["stopped_at"] == "stopped at step 5 of 8"
    card = json.loads((tmp_path / "bundle" / "card.json").read_text())
    assert "stopped at step 5 of 8" in card["training"]["model"]
    code = main(["export", str(stopped_run), "--format", "torchscript", "--out",
                 str(tmp_path / "model.pt")])
    err = capsys.readouterr().err
    assert code == 0 and "stopped at step 5 of 8" in err
