"""Self-adaptive, class-aware pseudo-label thresholds (threshold_mode "adaptive")."""

from __future__ import annotations

import json

import pytest
import torch

from must_engine.events import StepMetrics
from must_engine.models.source import ModelSpec
from must_engine.runs import TrainJob
from must_engine.settings import MustSettings
from must_engine.training.control import TrainControl
from must_engine.training.losses import AdaptiveThreshold, QuantileThreshold, pseudo_labels
from must_engine.training.trainer import Trainer, train
from must_engine.weights import read_weights
from tests.host_reads import record_host_reads


def test_pseudo_labels_with_per_class_thresholds():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.2, 0.5]]))
    labels, conf, ok = pseudo_labels(logits, torch.tensor([0.5, 0.7, 0.5]))
    assert labels.tolist() == [0, 1, 2]
    # each sample against its own predicted class's threshold
    assert ok.tolist() == [True, False, False]  # 0.5 is not > 0.5


def test_adaptive_thresholds_by_hand():
    t = AdaptiveThreshold(2, momentum=0.5)
    assert t.thresholds().tolist() == pytest.approx([0.5, 0.5])  # 1 / C, as published
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])
    t.update(probs)
    # tau: 0.5 * 0.5 + 0.5 * mean(0.9, 0.7, 0.6); class means: 0.5 * 0.5 + 0.5 * mean column
    tau = 0.25 + 0.5 * (0.9 + 0.7 + 0.6) / 3
    p = [0.25 + 0.5 * 2.0 / 3, 0.25 + 0.5 * 1.0 / 3]
    assert t.tau.item() == pytest.approx(tau)
    # the class the teacher predicts less gets the lower bar
    assert t.thresholds().tolist() == pytest.approx([tau, tau * p[1] / p[0]])
    # an image that could not be read counts for nothing; a batch of none changes nothing
    before = t.state_dict()
    t.update(probs, torch.zeros(3, dtype=torch.bool))
    assert torch.equal(t.tau, before["tau"]) and torch.equal(t.class_mean, before["class_mean"])
    u = AdaptiveThreshold(2, momentum=0.5)
    u.load_state_dict(before)
    u.update(probs, torch.tensor([True, True, False]))
    v = AdaptiveThreshold(2, momentum=0.5)
    v.load_state_dict(before)
    v.update(probs[:2])
    assert torch.allclose(u.thresholds(), v.thresholds())


def test_adaptive_thresholds_use_the_global_batch():
    """Under torchrun each process sums its share (``reduce``): every process then holds the
    thresholds one process would compute from the whole batch."""
    probs = torch.rand(8, 3).softmax(dim=-1)
    whole = AdaptiveThreshold(3, momentum=0.8)
    whole.update(probs)
    halves = []
    for mine, other in ((probs[:4], probs[4:]), (probs[4:], probs[:4])):
        rank = AdaptiveThreshold(3, momentum=0.8)
        ref = AdaptiveThreshold(3, momentum=0.8)
        captured = {}

        def other_sums(t, other=other, ref=ref, captured=captured):
            ref.update(other, reduce=lambda s: captured.setdefault("s", s.clone()))
            return t + captured["s"]

        rank.update(mine, reduce=other_sums)
        halves.append(rank.thresholds())
    assert torch.allclose(halves[0], whole.thresholds())
    assert torch.allclose(halves[1], whole.thresholds())


def test_quantile_thresholds_by_hand():
    q = QuantileThreshold(3, share=0.5, window=6, fallback=0.7)
    q.update(torch.tensor([0.9, 0.8, 0.5, 0.6]), torch.tensor([0, 0, 0, 1]))
    # class 0: 0.5 0.8 0.9 -> 0.8 (0.9 passes); class 1: 0.6 alone; class 2: none -> fallback
    assert q.thresholds().tolist() == pytest.approx([0.8, 0.6, 0.7])
    # the window keeps the last 6 images; an unreadable image takes a slot but no class
    q.update(torch.tensor([0.3, 0.4, 0.99, 0.2]), torch.tensor([2, 2, 1, 0]),
             torch.tensor([True, True, True, False]))
    # window now: 0.5 (0), 0.6 (1), 0.3 (2), 0.4 (2), 0.99 (1), unreadable
    assert q.thresholds().tolist() == pytest.approx([0.5, 0.6, 0.3])
    labels, _conf, ok = pseudo_labels(torch.log(torch.tensor([[0.55, 0.4, 0.05],
                                                              [0.2, 0.3, 0.5]])), q.thresholds())
    assert labels.tolist() == [0, 2] and ok.tolist() == [True, True]
    r = QuantileThreshold(3, share=0.5, window=6, fallback=0.7)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.thresholds(), q.thresholds()) and r.position == q.position


def test_adaptive_thresholds_read_nothing_back_from_the_device(monkeypatch):
    calls = record_host_reads(monkeypatch, ("item", "__bool__", "tolist", "nonzero"))
    t = AdaptiveThreshold(3, momentum=0.9)
    logits = torch.randn(4, 3)
    t.update(logits.softmax(dim=-1), torch.tensor([True, False, True, True]))
    pseudo_labels(logits, t.thresholds())
    q = QuantileThreshold(3, share=0.5, window=5, fallback=0.7)
    conf, labels = logits.softmax(dim=-1).max(dim=-1)
    q.update(conf, labels, torch.tensor([True, False, True, True]))
    pseudo_labels(logits, q.thresholds())
    monkeypatch.undo()
    assert calls == []


def test_threshold_mode_is_validated_and_has_a_flag():
    with pytest.raises(ValueError, match="threshold_mode must be one of"):
        MustSettings(threshold_mode="sometimes").validate()
    with pytest.raises(ValueError, match="threshold_momentum"):
        MustSettings(threshold_momentum=1.0).validate()
    assert MustSettings().threshold_mode == "fixed"  # the published selection by default
    from must_engine.cli import _overrides, build_parser

    args = build_parser().parse_args(["train", "photos", "--classes", "a,b",
                                      "--threshold-mode", "adaptive",
                                      "--threshold-momentum", "0.8"])
    overrides = _overrides(args)
    assert overrides["threshold_mode"] == "adaptive"
    assert overrides["threshold_momentum"] == 0.8


def test_every_preset_keeps_the_fixed_threshold_by_default():
    from must_engine.settings import PRESET_NAMES, resolve_settings

    for name in PRESET_NAMES:  # auto too, until measured to help on every development set
        row = resolve_settings(num_images=500, image_size=64, patch_size=8, preset=name)
        assert row.threshold_mode == "fixed", name
    chosen = resolve_settings(num_images=500, image_size=64, patch_size=8,
                              overrides={"threshold_mode": "quantile"})
    assert chosen.threshold_mode == "quantile" and chosen.threshold_share == 0.5


def _job(image_folder, class_names, model_dir, **extra):
    overrides = {"epochs": 2, "batch_size": 6, "seed": 3, "mask_ratio": 0.25, "preset": "pets",
                 "threshold_momentum": 0.5, "threshold_share": 0.3, "base_lr": 0.05,
                 "ema_decay_init": 0.8, "ema_decay_final": 0.8, **extra}
    return TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                    templates=["a photo of a {}.", "a drawing of a {}."], overrides=overrides)


def _teacher(run):
    return read_weights(run / "model.safetensors")[0]


@pytest.mark.parametrize("mode", ["adaptive", "quantile"])
def test_run_with_class_thresholds_resumes_exactly(tmp_path, image_folder, class_names,
                                                   tiny_model_dir, mode):
    """The thresholds' statistics are part of the checkpoint: a run stopped mid-epoch and
    resumed ends with the weights of an uninterrupted one."""
    job = _job(image_folder, class_names, tiny_model_dir, threshold_mode=mode)
    list(train(job, tmp_path / "a"))
    control = TrainControl()
    for e in train(job, tmp_path / "b", control=control):
        if isinstance(e, StepMetrics) and e.step == 5:
            control.stop()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["step"] == 6
    list(Trainer(tmp_path / "b").run())
    a, b = _teacher(tmp_path / "a"), _teacher(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    saved = json.loads((tmp_path / "a" / "pseudo_labels.json").read_text())
    assert saved["threshold_mode"] == mode and len(saved["class_thresholds"]) == len(class_names)
    assert all(r["passed"] == (r["confidence"] > saved["class_thresholds"][r["label"]])
               for r in saved["images"])


@pytest.mark.parametrize("mode", ["quantile", "adaptive"])
def test_two_processes_select_like_one(tmp_path, image_folder, class_names, tiny_model_dir,
                                       mode):
    """Under torchrun the thresholds come from the global batch: 2 processes pass the same
    pseudo-labels, with the same per-class thresholds, as one process."""
    import subprocess
    import sys

    from must_engine.cli import main
    from tests.test_distributed import TOLERANCE, _args

    extra = ["--threshold-mode", mode, "--threshold-share", "0.3", "--threshold-momentum", "0.5"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *_args(image_folder, class_names, tiny_model_dir, one), *extra]) == 0
    done = subprocess.run([sys.executable, "-m", "must_engine", "train", "--nproc", "2",
                           *_args(image_folder, class_names, tiny_model_dir, two), *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = [json.loads((r / "pseudo_labels.json").read_text()) for r in (one, two)]
    assert saved[0]["threshold_mode"] == mode
    assert saved[0]["class_thresholds"] == pytest.approx(saved[1]["class_thresholds"], abs=1e-5)
    assert [(r["path"], r["label"], r["passed"]) for r in saved[0]["images"]] == \
        [(r["path"], r["label"], r["passed"]) for r in saved[1]["images"]]
    events = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    passed = [e["confident_counts"] for e in events if e["type"] == "EpochSummary"]
    events = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert passed == [e["confident_counts"] for e in events if e["type"] == "EpochSummary"]
    a, b = _teacher(one), _teacher(two)
    for k in a:
        if not k.endswith("attn.in_proj_bias"):  # see test_distributed.KEY_BIAS_TOLERANCE
            assert (a[k] - b[k]).abs().max() < TOLERANCE, k


def test_the_card_says_which_selection_trained_the_model():
    from must_engine.export.card import _threshold_note

    fixed = _threshold_note(MustSettings())
    assert fixed["threshold_mode"] == "fixed" and fixed["conf_threshold"] == 0.7
    quantile = _threshold_note(MustSettings(threshold_mode="quantile", threshold_share=0.4))
    assert quantile["threshold_share"] == 0.4 and "most confident" in quantile["meaning"]
    adaptive = _threshold_note(MustSettings(threshold_mode="adaptive"))
    assert adaptive["threshold_momentum"] == 0.9 and "FreeMatch" in adaptive["meaning"]
