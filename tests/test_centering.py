"""Centred image embeddings (``center``): the target images' mean embedding, subtracted before
the classifier compares an image with the class prototypes, is a candidate the label-free
score chooses, a fixed part of the trained model, and reaches predict and every export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must_engine.classifier import load_classifier, load_classifier_weights
from must_engine.events import ClassifierKept, ClassifierScored
from must_engine.export import export_run
from must_engine.features import embed_files
from must_engine.models.must_model import MustModel, build_vision_tower, must_model_from_config
from must_engine.models.source import ModelSpec
from must_engine.predict import predict_run
from must_engine.runs import MODEL_FILE, ZERO_SHOT_FILE, TrainJob, open_run
from must_engine.selection import CENTRED, REFINED, TEACHER, ZERO_SHOT, ScoredCandidate
from must_engine.settings import LABEL_FREE_RECIPE, MustSettings
from must_engine.testing import TINY_MODEL_CFG
from must_engine.training import label_free
from must_engine.training.trainer import train
from must_engine.weights import load_model_weights, read_weights, save_model_weights


@pytest.fixture
def model():
    torch.manual_seed(0)
    visual = build_vision_tower(32, TINY_MODEL_CFG["vision_cfg"], False)
    w = F.normalize(torch.randn(32, 4), dim=0)
    return MustModel(visual, w, 42.0).eval()


def test_the_centre_is_subtracted_before_the_embedding_is_normalised(model):
    x = torch.randn(3, 3, 32, 32)
    emb = F.normalize(model.visual(x), dim=-1)
    with torch.no_grad():
        plain = model(x)
        assert torch.allclose(plain, 42.0 * emb @ model.classifier, atol=1e-5)  # no centre
        centre = 0.6 * emb.mean(dim=0)
        model.center.copy_(centre)
        want = 42.0 * F.normalize(emb - centre, dim=-1) @ model.classifier
        assert torch.allclose(model(x), want, atol=1e-5)
        assert torch.allclose(model.embed(x), F.normalize(emb - centre, dim=-1), atol=1e-6)
        train_out = model.forward_train(x, None, reconstruct=False)
        assert torch.allclose(train_out.logits, want, atol=1e-5)
        assert not torch.allclose(want, plain, atol=1e-2)


def test_weights_saved_without_a_centre_still_load(model, tmp_path):
    """Runs and bundles written before the centre existed load with no centre."""
    path = tmp_path / "old.safetensors"
    save_model_weights(path, model)
    tensors, meta = read_weights(path)
    del tensors["center"]
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)
    fresh = MustModel(build_vision_tower(32, TINY_MODEL_CFG["vision_cfg"], False),
                      torch.zeros(32, 4), 42.0)
    fresh.center.fill_(1.0)  # whatever it holds, a file without a centre leaves it alone
    load_model_weights(path, fresh)
    load_classifier_weights(fresh, path)
    assert torch.equal(fresh.classifier, model.classifier)


def test_the_label_free_recipe_centres():
    assert LABEL_FREE_RECIPE["center"] == 1.0
    assert MustSettings().center == 0.0  # the published rows do not
    with pytest.raises(ValueError, match="center"):
        MustSettings(center=1.5).validate()


# ---- in a run ------------------------------------------------------------------------------
def job(image_folder, class_names, model_dir, **extra):
    overrides = {"epochs": 2, "batch_size": 6, "seed": 3, "mask_ratio": 0.25, "preset": "pets",
                 "keep": "best", "center": 1.0, **extra}
    return TrainJob(image_folder, class_names, ModelSpec.parse(str(model_dir)),
                    templates=["a photo of a {}.", "a drawing of a {}."], overrides=overrides)


def scores(monkeypatch, given: dict[str, float]):
    real = label_free.score_candidate

    def fake(kind, *args, **kwargs):
        cand = real(kind, *args, **kwargs)
        return ScoredCandidate(kind, given[kind], cand.signals, cand.epoch, cand.step)

    monkeypatch.setattr(label_free, "score_candidate", fake)


def test_a_centred_run_trains_on_centred_embeddings_and_hands_them_on(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    # centred zero-shot scores above zero-shot: training subtracts the centre
    scores(monkeypatch, {ZERO_SHOT: 0.5, REFINED: 0.4, CENTRED: 0.55, TEACHER: 0.7})
    run_dir = tmp_path / "run"
    events = list(train(job(image_folder, class_names, tiny_model_dir), run_dir))
    assert [e.kind for e in events if isinstance(e, ClassifierScored)] == \
        [ZERO_SHOT, REFINED, CENTRED, TEACHER, TEACHER]
    assert next(e for e in events if isinstance(e, ClassifierKept)).kind == TEACHER
    run = open_run(run_dir)
    assert run.data["centred_training"] is True
    zero_file, _ = read_weights(run_dir / ZERO_SHOT_FILE)
    centre = zero_file["extra.center"]
    # the zero-shot model itself is not centred; the centre is the mean zero-shot embedding
    # of the images (every image here: fewer than the refinement's sample)
    assert not zero_file["center"].any()
    zero = must_model_from_config(run.architecture)
    load_model_weights(run_dir / ZERO_SHOT_FILE, zero)
    feats, _ = embed_files(zero, [run.images_root / f for f in run.image_files()],
                           run.preprocess)
    assert torch.allclose(centre, feats.mean(dim=0), atol=1e-5) and centre.norm() > 0.1
    # the kept teacher carries it, and predict uses it; zero-shot predictions do not
    kept, _ = read_weights(run_dir / MODEL_FILE)
    assert torch.equal(kept["center"], centre)
    preds = predict_run(run_dir, device="cpu")
    model = must_model_from_config(run.architecture)
    load_model_weights(run_dir / MODEL_FILE, model)
    uncentred = must_model_from_config(run.architecture)
    load_model_weights(run_dir / MODEL_FILE, uncentred)
    uncentred.center.zero_()
    from must_engine.predict import predict_probs

    paths = [run.images_root / f for f in preds.paths]
    (centred_probs, plain_probs), _ = predict_probs([model, uncentred], paths, run.preprocess)
    assert np.abs(preds.probs - centred_probs).max() < 1e-5
    assert np.abs(preds.probs - plain_probs).max() > 1e-3
    (zero_probs,), _ = predict_probs([zero], paths, run.preprocess)
    assert np.abs(preds.zero_shot_probs - zero_probs).max() < 1e-5

    # every model format reproduces the centred predictions
    probs = {}
    bundle = export_run(run_dir, "bundle", tmp_path / "bundle", predictions=preds).path
    probs["bundle"] = load_classifier(bundle).predict_proba([str(p) for p in paths])
    from must_engine.images import load_rgb
    from must_engine.views import eval_view

    view = eval_view(run.preprocess)
    x = torch.stack([view(load_rgb(p)) for p in paths])
    script = export_run(run_dir, "torchscript", tmp_path / "model.pt", predictions=preds).path
    with torch.no_grad():
        probs["torchscript"] = torch.jit.load(str(script))(x).numpy()
    onnx_path = export_run(run_dir, "onnx", tmp_path / "model.onnx", predictions=preds).path
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probs["onnx"] = sess.run(["probabilities"], {"images": x.numpy()})[0]
    for fmt, got in probs.items():
        assert np.abs(np.asarray(got) - preds.probs).max() < 1e-4, fmt
    card = json.loads((bundle / "card.json").read_text())
    assert card["training"]["settings"]["center"] == 1.0
    assert "center" in card["weights"]["contents"]


def test_a_run_keeps_centred_zero_shot_when_it_scores_best(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    scores(monkeypatch, {ZERO_SHOT: 0.5, REFINED: 0.4, CENTRED: 0.8, TEACHER: 0.6})
    run_dir = tmp_path / "run"
    events = list(train(job(image_folder, class_names, tiny_model_dir), run_dir))
    kept = next(e for e in events if isinstance(e, ClassifierKept))
    assert kept.kind == CENTRED and kept.label == "centred zero-shot" and kept.score == 0.8
    weights, meta = read_weights(run_dir / MODEL_FILE)
    zero, _ = read_weights(run_dir / ZERO_SHOT_FILE)
    assert meta["kept"] == "centred zero-shot"
    # the zero-shot model (tower and text prototypes) with the centre
    for name in ("classifier", "visual.conv1.weight"):
        assert torch.equal(weights[name], zero[name]), name
    assert torch.equal(weights["center"], zero["extra.center"]) and weights["center"].any()
    sel = json.loads((run_dir / "run.json").read_text())["selection"]
    assert sel["kept_label"] == "centred zero-shot"


def test_training_is_not_centred_where_centring_scores_below_zero_shot(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    scores(monkeypatch, {ZERO_SHOT: 0.5, REFINED: 0.4, CENTRED: 0.45, TEACHER: 0.6})
    run_dir = tmp_path / "run"
    events = list(train(job(image_folder, class_names, tiny_model_dir), run_dir))
    # still offered (and scored), but the teacher trains and is kept without the centre
    assert CENTRED in [e.kind for e in events if isinstance(e, ClassifierScored)]
    assert open_run(run_dir).data["centred_training"] is False
    weights, _ = read_weights(run_dir / MODEL_FILE)
    assert not weights["center"].any()


def test_an_uncentred_run_offers_no_centred_candidate(tmp_path, image_folder, class_names,
                                                      tiny_model_dir, monkeypatch):
    scores(monkeypatch, {ZERO_SHOT: 0.5, REFINED: 0.4, TEACHER: 0.6})
    run_dir = tmp_path / "run"
    events = list(train(job(image_folder, class_names, tiny_model_dir, center=0.0), run_dir))
    assert CENTRED not in [e.kind for e in events if isinstance(e, ClassifierScored)]
    weights, _ = read_weights(run_dir / MODEL_FILE)
    zero, _ = read_weights(run_dir / ZERO_SHOT_FILE)
    assert not weights["center"].any() and "extra.center" not in zero


def test_shared_pseudo_labels_take_the_teacher_as_it_predicts_when_centred(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    from must_engine.training.trainer import Trainer, prepare_run

    scores(monkeypatch, {ZERO_SHOT: 0.5, REFINED: 0.4, CENTRED: 0.55, TEACHER: 0.6})
    prepare_run(job(image_folder, class_names, tiny_model_dir, refined_pseudo_labels=0.5),
                tmp_path / "run")
    trainer = Trainer(tmp_path / "run")
    teacher = trainer.teacher.module.eval()
    assert teacher.center.any()
    size = trainer.info.preprocess.image_size
    images = torch.randn(4, 3, size, size)
    with torch.no_grad():
        own = teacher(images).softmax(-1)  # the centre subtracted once, as predict does
        refined = (teacher.logit_scale * teacher.embed(images) @ trainer.refined_head)
        want = (0.5 * own + 0.5 * refined.softmax(-1)).log()
        assert torch.allclose(trainer._teacher_logits(images), want, atol=1e-5)
