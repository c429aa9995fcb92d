"""A run in which no image passes the confidence threshold for a whole epoch says so: a
RunWarning in the events and the metrics log, printed by `must train`."""

from __future__ import annotations

import json

from must_engine import cli
from must_engine.events import EpochSummary, RunWarning
from must_engine.models.source import ModelSpec
from must_engine.runs import METRICS_FILE, TrainJob
from must_engine.training.learning_check import (
    NO_CONFIDENT_LABELS,
    NoConfidentLabelsWatch,
    threshold_passing,
)
from must_engine.training.trainer import train


def summary(confident: list[int], histogram: list[int], epoch: int = 0) -> EpochSummary:
    return EpochSummary(epoch=epoch, epochs=3, pseudo_label_counts=[5, 5],
                        confident_counts=confident,
                        confidence_bin_edges=[i / 10 for i in range(11)],
                        confidence_histogram=histogram, mean_confidence=0.28,
                        confident_fraction=sum(confident) / 10, seconds=1.0)


def test_suggested_threshold_lets_a_tenth_through():
    # 100 images: 80 in [0.2, 0.3), 15 in [0.3, 0.4), 5 in [0.4, 0.5)
    hist = [0, 0, 80, 15, 5, 0, 0, 0, 0, 0]
    assert threshold_passing(summary([0, 0], hist)) == 0.3


def test_warns_once_and_only_when_nothing_passed():
    watch = NoConfidentLabelsWatch(threshold=0.7)
    hist = [0, 0, 80, 15, 5, 0, 0, 0, 0, 0]
    assert watch.update(summary([1, 0], hist)) == []
    (warning,) = watch.update(summary([0, 0], hist, epoch=1), step=20)
    assert warning.kind == NO_CONFIDENT_LABELS and warning.step == 20
    assert "No image passed the confidence threshold (0.7) in epoch 2" in warning.message
    assert "mean teacher confidence 0.28" in warning.message
    assert "Lower the threshold (about 10% of the images are above 0.30)" in warning.suggestion
    assert "class names" in warning.suggestion and "model" in warning.suggestion
    assert watch.update(summary([0, 0], hist, epoch=2)) == []


def _job(image_folder, class_names, model_dir, threshold):
    return TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                    templates=["a photo of a {}."],
                    overrides={"epochs": 2, "batch_size": 6, "seed": 3,
                               "conf_threshold": threshold})


def test_run_that_never_self_trains_warns_and_logs_it(tmp_path, image_folder, class_names,
                                                      tiny_model_dir):
    run_dir = tmp_path / "run"
    events = list(train(_job(image_folder, class_names, tiny_model_dir, 0.999999), run_dir))
    warnings = [e for e in events if isinstance(e, RunWarning) and e.kind == NO_CONFIDENT_LABELS]
    assert len(warnings) == 1
    logged = [json.loads(line) for line in
              (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()]
    assert [e["kind"] for e in logged if e.get("type") == "RunWarning"
            and e["kind"] == NO_CONFIDENT_LABELS] == [NO_CONFIDENT_LABELS]


def test_run_that_self_trains_does_not_warn(tmp_path, image_folder, class_names,
                                            tiny_model_dir):
    events = list(train(_job(image_folder, class_names, tiny_model_dir, 0.3), tmp_path / "r"))
    assert not [e for e in events if isinstance(e, RunWarning)
                and e.kind == NO_CONFIDENT_LABELS]


def test_must_train_prints_the_warning(tmp_path, image_folder, class_names, tiny_model_dir,
                                       capsys):
    code = cli.main(["train", str(image_folder), "--classes", ",".join(class_names),
                     "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
                     "--epochs", "1", "--batch-size", "6", "--threshold", "0.999999"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: No image passed the confidence threshold (0.999999)" in err
    assert "Lower the threshold" in err
