"""Corrections that count: user labels enter the self-training loss as fixed labels with their
own weight, whatever the teacher says, in this run and in every later one; excluded images
are not trained on."""

from __future__ import annotations

import pytest
import torch

from must_engine.models.source import ModelSpec
from must_engine.runs import TrainJob
from must_engine.training import trainer as trainer_module
from must_engine.training.trainer import Trainer, prepare_run
from must_engine.trust.corrections import FixedLabels
from must_engine.trust.user_labels import RunLabels, UserLabels, write_run_labels


def test_fixed_labels_replace_pseudo_labels_with_their_weight():
    fixed = FixedLabels(RunLabels({"b": 2, "d": 0}, 3.0, frozenset()), ["a", "b", "c", "d"],
                        "cpu")
    labels, weights = fixed.apply(torch.tensor([3, 0, 1]), torch.tensor([1, 1, 1]),
                                  torch.tensor([False, True, False]))
    assert labels.tolist() == [0, 1, 2]
    assert weights.tolist() == [3.0, 1.0, 3.0]
    none = FixedLabels(RunLabels({}, 3.0, frozenset()), ["a", "b"], "cpu")
    conf = torch.tensor([True, False])
    assert none.apply(torch.tensor([0, 1]), torch.tensor([1, 0]), conf)[1] is conf


def job(folder, names, model_dir):
    # threshold 0.99: the random tiny model is never that sure, so without corrections the
    # self-training loss is 0 on every step (uncentred: centring its embeddings sharpens it)
    return TrainJob(folder, names, ModelSpec.parse(str(model_dir)), templates=["a {}."],
                    overrides={"epochs": 1, "batch_size": 6, "seed": 1, "conf_threshold": 0.99,
                               "use_mim": False, "use_align": False, "center": 0.0})


def capture_losses(monkeypatch):
    seen = []
    real = trainer_module.self_training_loss

    def spy(logits, labels, weight):
        seen.append((labels.clone(), weight.clone()))
        return real(logits, labels, weight)

    monkeypatch.setattr(trainer_module, "self_training_loss", spy)
    return seen


def test_corrected_labels_enter_the_loss_and_stay_fixed(tmp_path, monkeypatch, image_folder,
                                                        class_names, tiny_model_dir):
    store = UserLabels()
    red = [f"red circle/red circle_{i:03d}.png" for i in range(8)]
    for path in red:  # deliberately "wrong": whatever the teacher thinks, these stay blue
        store.set_label(path, "blue circle")
    store.set_excluded({"green square/green square_000.png"})
    store.correction_weight = 2.0

    plain = tmp_path / "plain"
    prepare_run(job(image_folder, class_names, tiny_model_dir), plain)
    seen = capture_losses(monkeypatch)
    events = list(Trainer(plain).run())
    losses = [e.loss_st for e in events if type(e).__name__ == "StepMetrics"]
    assert losses and all(v == 0 for v in losses)  # nothing confident, nothing to learn from
    seen.clear()

    for name in ("run-1", "run-2"):  # the project's labels go into every later run
        run = tmp_path / name
        prepare_run(job(image_folder, class_names, tiny_model_dir), run)
        write_run_labels(run, store, class_names)
        trainer = Trainer(run)
        assert "green square/green square_000.png" not in trainer.files
        assert len(trainer.files) == 23
        index = {f: i for i, f in enumerate(trainer.files)}
        red_rows = {index[p] for p in red}
        seen.clear()
        events = list(trainer.run())
        losses = [e.loss_st for e in events if type(e).__name__ == "StepMetrics"]
        assert any(v > 0 for v in losses)
        # each step's batch: the corrected images carry their fixed label and weight
        order = trainer_module.epoch_order(23, 1, 0)[: len(seen) * 6]
        batches = [order[k * 6:(k + 1) * 6] for k in range(len(seen))]
        checked = 0
        for rows, (labels, weight) in zip(batches, seen, strict=True):
            for j, row in enumerate(rows):
                if row in red_rows:
                    assert labels[j].item() == 2 and weight[j].item() == 2.0
                    checked += 1
                else:
                    assert weight[j].item() == 0.0
        assert checked >= 4


def test_too_many_excluded_images_is_a_clear_error(tmp_path, image_folder, class_names,
                                                   tiny_model_dir):
    run = tmp_path / "run"
    prepare_run(job(image_folder, class_names, tiny_model_dir), run)
    store = UserLabels()
    files = [p.relative_to(image_folder).as_posix() for p in sorted(image_folder.rglob("*.png"))]
    store.set_excluded(set(files[1:]))
    write_run_labels(run, store, class_names)
    with pytest.raises(ValueError, match="include more images again"):
        Trainer(run)
