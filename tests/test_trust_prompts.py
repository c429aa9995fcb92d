"""The class-name workbench: synonyms averaged into the class embedding, near-identical
classes, per-class template agreement, and a preview from cached image embeddings that gives
the same zero-shot probabilities as the run's starting model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must_engine.classifier_init import text_classifier
from must_engine.models.source import ModelSpec, load_clip
from must_engine.trust.prompts import (
    ClassTexts,
    ZeroShotWorkbench,
    class_texts,
    prompt_embeddings,
    similar_classes,
    split_synonyms,
    template_agreement,
)

TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module")
def clip(tiny_model_dir):
    return load_clip(ModelSpec.parse(str(tiny_model_dir)), device="cpu")


def test_split_synonyms():
    assert split_synonyms("cab; taxi") == ["cab", "taxi"]
    assert split_synonyms(" cab ;; Cab ; yellow   cab ") == ["cab", "yellow cab"]
    assert split_synonyms(" ; ") == []


def test_single_names_give_the_usual_classifier_and_synonyms_are_averaged(clip):
    names = ["red circle", "green square", "blue circle"]
    texts = class_texts(clip.model, clip.tokenizer, [[n] for n in names], TEMPLATES)
    usual = text_classifier(clip.model, clip.tokenizer, names, TEMPLATES)
    assert torch.allclose(texts.weights, usual, atol=1e-5)
    both = class_texts(clip.model, clip.tokenizer, [["cab", "taxi"], ["bus"]], TEMPLATES)
    emb = prompt_embeddings(clip.model, clip.tokenizer, ["cab", "taxi"], TEMPLATES)
    cab, taxi = (F.normalize(emb[i].mean(dim=0), dim=-1) for i in range(2))
    assert torch.allclose(both.weights[:, 0], F.normalize(cab + taxi, dim=-1), atol=1e-5)
    assert not torch.allclose(both.weights[:, 0], cab, atol=1e-3)


def test_near_identical_classes_are_flagged():
    w = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 0.0, 1.0]]), dim=1).T
    pairs = similar_classes(w, ["cat", "kitty", "truck"])
    assert [(a, b) for a, b, _ in pairs] == [("cat", "kitty")]
    assert pairs[0][2] == pytest.approx(0.99 / math.hypot(0.99, 0.1), abs=1e-6)
    assert similar_classes(w, ["cat", "kitty", "truck"], threshold=0.999) == []


def test_template_agreement_per_class():
    # two classes along x and y; template 0 agrees with the set, template 1 alone sends the
    # class-1 images to class 0
    per_template = torch.tensor([[[1.0, 0.0], [0.2, 1.0]],
                                 [[0.0, 1.0], [0.0, 0.9]]])  # [C=2, T=2, D=2]
    weights = F.normalize(per_template.mean(dim=1), dim=-1).T
    feats = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.1, 1.0], [0.0, 1.0]])
    texts = ClassTexts(per_template, weights)
    agreement = template_agreement(feats, texts)
    assert agreement == pytest.approx([1.0, 0.5])
    none = template_agreement(feats[:2], texts)
    assert none[0] == pytest.approx(1.0) and math.isnan(none[1])


def test_preview_from_cached_embeddings_matches_the_runs_zero_shot(tmp_path, clip, image_folder,
                                                                  class_names, tiny_model_dir):
    from must_engine.predict import load_run_models, predict_probs
    from must_engine.runs import TrainJob, open_run
    from must_engine.training.trainer import prepare_run

    paths = sorted(image_folder.rglob("*.png"))
    bench = ZeroShotWorkbench.from_images(clip, paths)
    result = bench.preview(class_names, TEMPLATES)
    run = tmp_path / "run"
    prepare_run(TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                         TEMPLATES), run)
    info = open_run(run)
    zero, _ = load_run_models(info)
    (probs,), _ = predict_probs([zero], paths, info.preprocess)
    np.testing.assert_allclose(result.probs, probs, atol=1e-4)
    assert sum(result.class_counts()) == len(paths)
    assert len(result.agreement) == 3
    # a synonym changes the scores without embedding the images again
    again = bench.preview(["red circle; crimson disc", "green square", "blue circle"],
                          TEMPLATES)
    assert again.class_names[0] == "red circle"
    assert not np.allclose(again.probs, result.probs)
    with pytest.raises(ValueError, match="needs a name"):
        bench.preview(["red", " ; "], TEMPLATES)


def test_synonyms_enter_the_runs_zero_shot_classifier(tmp_path, clip, image_folder, class_names,
                                                      tiny_model_dir):
    import json

    from must_engine.models.must_model import must_model_from_config
    from must_engine.project import Project
    from must_engine.runs import open_run
    from must_engine.training.trainer import prepare_run
    from must_engine.weights import load_model_weights

    project = Project(name="p", image_folder=str(image_folder), class_names=list(class_names),
                      templates=TEMPLATES, model=str(tiny_model_dir),
                      synonyms={"red circle": ["crimson disc"], "gone": ["x"]})
    project.save(tmp_path / "p.mustproj")
    again = Project.load(tmp_path / "p.mustproj")
    assert again.synonyms == project.synonyms
    job = again.train_job()
    assert job.synonyms == {"red circle": ["crimson disc"]}
    run = tmp_path / "run"
    prepare_run(job, run)
    info = open_run(run)
    assert json.loads((run / "run.json").read_text())["job"]["synonyms"] == {
        "red circle": ["crimson disc"]}
    model = must_model_from_config(info.architecture)
    load_model_weights(run / "zero_shot.safetensors", model)
    expected = class_texts(clip.model, clip.tokenizer,
                           [["red circle", "crimson disc"], ["green square"], ["blue circle"]],
                           TEMPLATES).weights
    assert torch.allclose(model.classifier.detach().float(), expected, atol=1e-5)
