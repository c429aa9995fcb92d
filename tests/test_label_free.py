"""The label-free measure, the refined zero-shot classifier and keep-the-best selection."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from must_engine import quality
from must_engine.classifier_init import balanced_assignment, refine_prototypes
from must_engine.events import ClassifierKept, ClassifierScored, RunWarning
from must_engine.models.source import ModelSpec
from must_engine.quality import (
    QualitySignals,
    _neighbour_agreement,
    classifier_signals,
    cot_error,
    quality_score,
)
from must_engine.runs import TrainJob
from must_engine.selection import (
    REFINED,
    REFINED_TEACHER,
    TEACHER,
    ZERO_SHOT,
    KeepBest,
    ScoredCandidate,
)
from must_engine.training import label_free
from must_engine.training.trainer import train
from must_engine.weights import read_weights


def clusters(n_per: int = 60, classes: int = 4, dim: int = 16, spread: float = 0.35,
             seed: int = 0):
    """Features drawn around ``classes`` orthogonal directions, with their true labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes]
    labels = torch.arange(classes).repeat_interleave(n_per)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return F.normalize(feats, dim=-1), labels, centres


# ---- the refined zero-shot classifier ------------------------------------------------------
def test_refinement_moves_biased_text_prototypes_to_the_clusters():
    feats, labels, centres = clusters()
    # each text prototype leans toward the next class's cluster: zero-shot confuses them
    text = F.normalize(centres.T + 0.8 * torch.roll(centres.T, 1, dims=1), dim=0)
    zero_acc = float(((feats @ text).argmax(1) == labels).float().mean())
    refined = refine_prototypes(feats, text, 20.0, rounds=10, anchor=0.3)
    refined_acc = float(((feats @ refined).argmax(1) == labels).float().mean())
    assert zero_acc < 0.7 and refined_acc > 0.9
    assert torch.allclose(refined.norm(dim=0), torch.ones(4), atol=1e-5)
    # full anchoring keeps the text prototypes; no rounds keeps them too
    assert torch.allclose(refine_prototypes(feats, text, 20.0, anchor=1.0), text, atol=1e-6)
    assert torch.allclose(refine_prototypes(feats, text, 20.0, rounds=0), text, atol=1e-6)


def test_balanced_assignment_spreads_images_over_the_classes():
    logits = torch.zeros(100, 4)
    logits[:, 0] = 5.0  # every image prefers class 0
    logits[:, 1:] += torch.linspace(0, 1, 100)[:, None] * torch.tensor([1.0, 2.0, 3.0])
    q = balanced_assignment(logits, iterations=20)
    assert torch.allclose(q.sum(dim=1), torch.ones(100), atol=1e-5)
    assert torch.allclose(q.sum(dim=0), torch.full((4,), 25.0), atol=0.5)


# ---- the label-free measure ----------------------------------------------------------------
def test_signals_rate_the_true_classifier_above_a_collapsed_one():
    feats, _labels, centres = clusters()
    good = classifier_signals(feats, centres.T, 20.0)
    piled = centres.T.clone()
    piled[:, 0] = 8 * F.normalize(centres.sum(dim=0), dim=0)  # class 0 wins nearly everywhere
    collapsed = classifier_signals(feats, piled, 20.0)
    assert good.balance > 0.99 and collapsed.balance < 0.5
    assert collapsed.confidence > good.confidence  # confidence alone is fooled
    assert good.prototype_agreement > 0.95
    assert good.nuclear > collapsed.nuclear
    assert good.cot > collapsed.cot
    assert quality_score(good) > quality_score(collapsed)
    # balance counts the predicted classes, not the mean probability: near-uniform
    # probabilities that all lean to class 0 are still one predicted class
    unsure = classifier_signals(feats, piled, 0.5)
    assert unsure.certainty < 0.2 and unsure.balance < 0.5
    for value in good.to_dict().values():
        assert 0.0 <= value <= 1.0 + 1e-6


def test_score_prefers_right_but_unsure_to_sure_but_wrong():
    """Self-training makes a classifier surer whether or not it is right: the score must not
    rate confidence. An unsure classifier whose labels follow the clusters beats a very sure
    one whose (equally balanced) labels cut across them."""
    feats, labels, centres = clusters(spread=0.15)
    right = classifier_signals(feats, centres.T, 2.0)
    wrong_head = torch.eye(16)[:, 4:8]  # decides by noise directions, not by cluster
    wrong = classifier_signals(feats, wrong_head, 200.0)
    assert float(((feats @ wrong_head).argmax(1) == labels).float().mean()) < 0.4
    assert wrong.confidence > right.confidence + 0.3 and wrong.cot > right.cot + 0.3
    assert abs(wrong.balance - right.balance) < 0.01
    assert right.neighbour_agreement > 0.95 and wrong.neighbour_agreement < 0.6
    assert quality_score(right) > quality_score(wrong) + 0.3


def test_neighbour_agreement_is_corrected_for_chance(monkeypatch):
    feats, labels, _ = clusters(spread=0.15)
    assert _neighbour_agreement(feats, labels, 4) == pytest.approx(1.0)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))]
    assert _neighbour_agreement(feats, shuffled, 4) < 0.2
    # one class for every image agrees with its neighbours trivially: no credit
    assert _neighbour_agreement(feats, torch.zeros_like(labels), 4) == 0.0
    # computed by chunks of rows, the same as at once
    g = torch.Generator().manual_seed(3)
    big = F.normalize(torch.randn(2500, 8, generator=g), dim=-1)
    noisy = torch.where(torch.rand(2500, generator=g) < 0.3, torch.randint(0, 3, (2500,),
                                                                          generator=g),
                        big[:, :3].argmax(1))
    chunked = _neighbour_agreement(big, noisy, 3)
    monkeypatch.setattr(quality, "_CHUNK", 10_000)
    assert chunked == _neighbour_agreement(big, noisy, 3)


def test_reference_agreement_looks_at_the_reference_features():
    feats, labels, centres = clusters()
    shuffled = feats[torch.randperm(len(feats), generator=torch.Generator().manual_seed(1))]
    own = classifier_signals(feats, centres.T, 20.0, reference_features=feats)
    other = classifier_signals(feats, centres.T, 20.0, reference_features=shuffled)
    assert own.reference_agreement > 0.95
    assert other.reference_agreement < 0.6
    assert own.prototype_agreement == other.prototype_agreement


def test_cot_error_of_sure_balanced_and_of_uniform_predictions():
    sure = torch.eye(5).repeat(20, 1) * 0.98 + 0.004
    assert cot_error(sure) == pytest.approx(0.02, abs=0.01)
    uniform = torch.full((100, 5), 0.2)
    assert cot_error(uniform) == pytest.approx(0.8, abs=0.01)
    # sure but all on one class: transporting onto equal class masses costs ~ 1 - 1/C
    one_class = torch.zeros(100, 5)
    one_class[:, 0] = 1.0
    assert cot_error(one_class) == pytest.approx(0.8, abs=0.02)


def test_score_is_the_weighted_mean_of_the_signals():
    names = list(QualitySignals.__dataclass_fields__)
    s = QualitySignals(**{n: 0.5 for n in names})
    assert quality_score(s) == pytest.approx(0.5)


# ---- keep the best -------------------------------------------------------------------------
def history(scores: list[float], *, mode: str = "best") -> KeepBest:
    """Zero-shot, refined zero-shot, then one teacher per epoch, with made-up scores."""
    sel = KeepBest(mode)
    kinds = [ZERO_SHOT, REFINED] + [TEACHER] * (len(scores) - 2)
    for i, (kind, score) in enumerate(zip(kinds, scores, strict=True)):
        sel.offer(ScoredCandidate(kind, score, epoch=i - 2 if kind == TEACHER else -1,
                                  step=max(0, i - 1) * 10))
    return sel


def test_the_kept_classifier_is_the_best_scored_one():
    sel = history([0.50, 0.55, 0.52, 0.61, 0.66, 0.60, 0.58])
    assert sel.best.kind == TEACHER and sel.best.epoch == 2 and sel.best.score == 0.66
    assert sel.verdict() is None
    assert "teacher after epoch 3" in sel.reason()
    # a tie does not replace the earlier one
    tie = history([0.50, 0.55, 0.55])
    assert tie.best.kind == REFINED
    # the record survives run.json
    again = KeepBest.from_dict(json.loads(json.dumps(sel.to_dict())))
    assert again.best == sel.best and again.to_dict() == sel.to_dict()
    assert sel.to_dict()["kept_score"] == 0.66 and sel.to_dict()["zero_shot_score"] == 0.5
    assert len(sel.to_dict()["candidates"]) == 7


def test_training_rated_below_zero_shot_keeps_zero_shot_and_says_so():
    sel = history([0.60, 0.58, 0.55, 0.57, 0.52])
    assert sel.best.kind == ZERO_SHOT
    assert "did not beat zero-shot" in sel.verdict()
    last = history([0.60, 0.58, 0.55, 0.57, 0.52], mode="last")
    assert last.best.kind == TEACHER and last.best.epoch == 2
    assert "below zero-shot" in last.verdict()


# ---- in a run ------------------------------------------------------------------------------
def make_job(image_folder, class_names, model_dir, **extra):
    # a published row (no probe, so the made-up scores go to the run's own teachers), with
    # keep-the-best on
    overrides = {"epochs": 2, "batch_size": 6, "seed": 3, "mask_ratio": 0.25, "preset": "pets",
                 "keep": "best", **extra}
    return TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                    templates=["a photo of a {}.", "a drawing of a {}."], overrides=overrides)


REAL_SCORE = label_free.score_candidate


def rate_teachers(monkeypatch, teacher_scores: list[float],
                  refined_teacher_scores: list[float] | None = None):
    """Make the measure give the zero-shot classifier 0.5, the refined one 0.4, the
    teachers the given scores, epoch by epoch, and the refined teachers theirs (default
    0.1: never kept). Each refinement tries every anchor: the first one gets the score."""
    original = REAL_SCORE
    given = iter(teacher_scores)
    refined_given = iter(refined_teacher_scores or [])
    anchors = len(label_free.REFINE_ANCHORS)
    calls = {"refined_teacher": 0}

    def fake(kind, *args, **kwargs):
        real = original(kind, *args, **kwargs)
        score = {ZERO_SHOT: 0.5, REFINED: 0.4}.get(kind)
        if kind == TEACHER:
            score = next(given)
        elif kind == REFINED_TEACHER:
            first = calls["refined_teacher"] % anchors == 0
            calls["refined_teacher"] += 1
            score = (next(refined_given, 0.1) if first else 0.0) if refined_teacher_scores \
                else 0.1
        return ScoredCandidate(kind, score, real.signals, real.epoch, real.step)

    monkeypatch.setattr(label_free, "score_candidate", fake)


def test_a_run_keeps_and_exports_its_best_scored_teacher(tmp_path, image_folder, class_names,
                                                          tiny_model_dir, monkeypatch):
    rate_teachers(monkeypatch, [0.7, 0.6, 0.55])
    events = list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3,
                                 refined_teacher=True), tmp_path / "run"))
    scored = [e for e in events if isinstance(e, ClassifierScored)]
    assert [e.kind for e in scored] == [ZERO_SHOT, REFINED, TEACHER, TEACHER, TEACHER,
                                        REFINED_TEACHER]
    assert [e.kept for e in scored][-1] == "teacher after epoch 1"
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert kept.kind == TEACHER and kept.epoch == 0 and kept.score == 0.7
    assert not any(isinstance(e, RunWarning) and e.kind == "below_zero_shot" for e in events)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    sel = info["selection"]
    assert sel["kept_label"] == "teacher after epoch 1" and sel["kept_score"] == 0.7
    assert [c["score"] for c in sel["candidates"]] == [0.5, 0.4, 0.7, 0.6, 0.55, 0.1]
    assert all(set(c["signals"]) == set(QualitySignals.__dataclass_fields__)
               for c in sel["candidates"])
    # what was saved is the epoch-1 teacher, not the last one
    kept_weights, meta = read_weights(tmp_path / "run" / "model.safetensors")
    assert meta["kept"] == "teacher after epoch 1"
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any(e["type"] == "ClassifierKept" for e in last)
    assert not list((tmp_path / "run").glob("best_teacher*"))
    zero, _ = read_weights(tmp_path / "run" / "zero_shot.safetensors")
    assert not torch.equal(kept_weights["classifier"], zero["classifier"])
    # the same run keeping the last teacher hands back different weights
    rate_teachers(monkeypatch, [0.7, 0.6, 0.55])
    list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3, keep="last"),
               tmp_path / "last"))
    last, _ = read_weights(tmp_path / "last" / "model.safetensors")
    assert not torch.equal(kept_weights["classifier"], last["classifier"])


def test_a_run_whose_best_weights_are_gone_keeps_the_last_teacher_and_says_so(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    rate_teachers(monkeypatch, [0.7, 0.6, 0.55])
    real_kept_model = label_free.RunScorer.kept_model

    def lose_the_best(self, *args, **kwargs):  # as if deleted by hand before the end
        for path in self.run_dir.glob("best_teacher*"):
            path.unlink()
        return real_kept_model(self, *args, **kwargs)

    monkeypatch.setattr(label_free.RunScorer, "kept_model", lose_the_best)
    run = tmp_path / "run"
    events = list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3), run))
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert kept.label == "teacher after epoch 3" and kept.score == 0.55
    assert "missing" in kept.reason
    warning = next(e for e in events if isinstance(e, RunWarning)
                   and e.kind == "kept_weights_missing")
    assert "teacher after epoch 1" in warning.message
    sel = json.loads((run / "run.json").read_text())["selection"]
    assert sel["kept_label"] == "teacher after epoch 3" and "missing" in sel["reason"]
    _, meta = read_weights(run / "model.safetensors")
    assert meta["kept"] == "teacher after epoch 3"


def test_a_run_keeps_a_refined_teacher_when_it_scores_best(tmp_path, image_folder, class_names,
                                                          tiny_model_dir, monkeypatch):
    # the last teacher, refined, scores best
    rate_teachers(monkeypatch, [0.6, 0.62, 0.61], refined_teacher_scores=[0.8])
    heads = []  # each epoch's refined teacher head, as offered
    real_refinement = label_free.best_refinement

    def spy(kind, *args, **kwargs):
        out = real_refinement(kind, *args, **kwargs)
        if kind == REFINED_TEACHER:
            heads.append(out[0].clone())
        return out

    monkeypatch.setattr(label_free, "best_refinement", spy)
    events = list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3,
                                 refined_teacher=True), tmp_path / "run"))
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert kept.kind == REFINED_TEACHER and kept.epoch == 2 and kept.score == 0.8
    assert kept.label == "refined teacher after epoch 3"
    weights, meta = read_weights(tmp_path / "run" / "model.safetensors")
    assert meta["kept"] == "refined teacher after epoch 3"
    # the head handed back is the refinement (only the last teacher is refined), not the
    # trained head, on the last teacher's image tower
    assert len(heads) == 1
    assert torch.equal(weights["classifier"], heads[0])
    assert not list((tmp_path / "run").glob("best_teacher*"))
    # keep = last (published) hands back the last teacher and refines nothing
    rate_teachers(monkeypatch, [0.6, 0.62, 0.61], refined_teacher_scores=[0.55, 0.8, 0.59])
    last_events = list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3,
                                      keep="last", refined_teacher=True), tmp_path / "last"))
    assert not any(isinstance(e, ClassifierScored) and e.kind == REFINED_TEACHER
                   for e in last_events)
    last, _ = read_weights(tmp_path / "last" / "model.safetensors")
    assert torch.equal(weights["visual.conv1.weight"], last["visual.conv1.weight"])
    assert not torch.equal(weights["classifier"], last["classifier"])


def test_a_run_rated_below_zero_shot_says_so(tmp_path, image_folder, class_names,
                                             tiny_model_dir, monkeypatch, capsys):
    rate_teachers(monkeypatch, [0.3, 0.2])
    events = list(train(make_job(image_folder, class_names, tiny_model_dir, keep="best",
                                 prototype_init="text"), tmp_path / "run"))
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert kept.kind == ZERO_SHOT
    # the refined teacher is only offered when asked for
    assert not any(isinstance(e, ClassifierScored) and e.kind == REFINED_TEACHER for e in events)
    warning = next(e for e in events if isinstance(e, RunWarning) and e.kind == "below_zero_shot")
    assert warning.kind == "below_zero_shot" and "did not beat zero-shot" in warning.message
    kept_weights, _ = read_weights(tmp_path / "run" / "model.safetensors")
    zero, _ = read_weights(tmp_path / "run" / "zero_shot.safetensors")
    for name in ("classifier", "visual.conv1.weight"):
        assert torch.equal(kept_weights[name], zero[name]), name
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "did not beat zero-shot" in info["selection"]["warning"]

    # the published behaviour (keep the last teacher) hands it back, and says it is worse
    from must_engine.cli import main

    rate_teachers(monkeypatch, [0.3, 0.2])
    code = main(["train", str(image_folder), "--classes", ",".join(class_names),
                 "--model", str(tiny_model_dir), "--epochs", "2", "--batch-size", "6",
                 "--preset", "pets", "--out", str(tmp_path / "last")])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: The kept classifier (teacher after epoch 2) scores 0.200" in err
    assert "below zero-shot (0.500)" in err
    assert not math.isnan(json.loads((tmp_path / "last" / "run.json").read_text())
                          ["selection"]["kept_score"])


# ---- pseudo-labels shared with the refined head ----------------------------------------------
def test_pseudo_labels_share_the_refined_head_and_a_resume_keeps_it(tmp_path, image_folder,
                                                                    class_names, tiny_model_dir):
    from must_engine.events import StepMetrics
    from must_engine.training.control import TrainControl
    from must_engine.training.trainer import Trainer, prepare_run

    # keep = last: the saved model is the last teacher, whatever the scores; every
    # pseudo-label counts, so the head that makes them matters
    job = make_job(image_folder, class_names, tiny_model_dir, refined_pseudo_labels=1.0,
                   keep="last", conf_threshold=0.0, epochs=3)
    prepare_run(job, tmp_path / "run")
    trainer = Trainer(tmp_path / "run")
    zero, _ = read_weights(tmp_path / "run" / "zero_shot.safetensors")
    assert torch.equal(trainer.refined_head, zero["extra.refined_classifier"])
    size = trainer.info.preprocess.image_size
    images = torch.randn(4, 3, size, size)
    teacher = trainer.teacher.module.eval()
    with torch.no_grad():
        refined = (teacher.logit_scale * teacher.embed(images) @ trainer.refined_head)
        alone = teacher(images)
        # all of it from the refined head, then none of it
        assert torch.allclose(trainer._teacher_logits(images).softmax(-1), refined.softmax(-1),
                              atol=1e-5)
        trainer.settings.refined_pseudo_labels = 0.0
        assert torch.equal(trainer._teacher_logits(images), alone.float())
        trainer.settings.refined_pseudo_labels = 0.5
        half = trainer._teacher_logits(images).softmax(-1)
        assert torch.allclose(half, (refined.softmax(-1) + alone.softmax(-1)) / 2, atol=1e-5)
    trainer.settings.refined_pseudo_labels = 1.0
    list(trainer.run())
    # after each epoch the teacher's own refinement takes over
    assert trainer.refined_head is not None
    assert torch.equal(trainer.refined_head, trainer.scorer.last_refined_head)
    assert not torch.equal(trainer.refined_head, zero["extra.refined_classifier"])

    # a run stopped after the first epoch's update resumes with that head, not the first one
    control = TrainControl()
    for e in train(job, tmp_path / "stopped", control=control):
        if isinstance(e, StepMetrics) and e.step == e.steps_per_epoch:  # mid epoch 2
            control.stop()
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert not torch.equal(state["refined_head"], zero["extra.refined_classifier"])
    resumed = Trainer(tmp_path / "stopped")
    assert torch.equal(resumed.refined_head, state["refined_head"])
    list(resumed.run())
    a, _ = read_weights(tmp_path / "run" / "model.safetensors")
    b, _ = read_weights(tmp_path / "stopped" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_command_line_turns_the_refined_teacher_on_and_refuses_a_non_boolean(capsys):
    from must_engine.cli import _overrides, build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "photos", "--classes", "a,b", "--refined-teacher", "true",
                              "--refined-pseudo-labels", "0.5"])
    overrides = _overrides(args)
    assert overrides["refined_teacher"] is True and overrides["refined_pseudo_labels"] == 0.5
    off = _overrides(parser.parse_args(["train", "photos", "--classes", "a,b",
                                        "--refined-teacher", "off"]))
    assert off["refined_teacher"] is False
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "photos", "--classes", "a,b", "--refined-teacher", "maybe"])
    assert "expected true or false" in capsys.readouterr().err
