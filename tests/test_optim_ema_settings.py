"""Layer-decay groups, the cosine schedule, the EMA ramp and teacher, and settings."""

from __future__ import annotations

import pytest
import torch

from must_engine.models.must_model import MustModel, build_vision_tower
from must_engine.settings import (
    AUTO_WARM_SHARE,
    LABEL_FREE_RECIPE,
    PRESETS,
    MustSettings,
    resolve_settings,
)
from must_engine.testing import TINY_MODEL_CFG
from must_engine.training.ema import EmaTeacher, ema_decay
from must_engine.training.optim import build_optimizer, cosine_lr, layer_id, param_groups


@pytest.fixture
def model():
    torch.manual_seed(0)
    visual = build_vision_tower(TINY_MODEL_CFG["embed_dim"], TINY_MODEL_CFG["vision_cfg"], False)
    return MustModel(visual, torch.nn.functional.normalize(torch.randn(32, 3), dim=0), 50.0)


def test_layer_ids_follow_beit():
    assert layer_id("visual.conv1.weight", 2) == 0
    assert layer_id("visual.positional_embedding", 2) == 0
    assert layer_id("mask_token", 2) == 0
    assert layer_id("visual.ln_pre.weight", 2) == 0
    assert layer_id("visual.transformer.resblocks.0.attn.in_proj_weight", 2) == 1
    assert layer_id("visual.transformer.resblocks.1.mlp.c_fc.bias", 2) == 2
    assert layer_id("visual.ln_post.weight", 2) == 3
    assert layer_id("classifier", 2) == 3
    assert layer_id("decoder.0.weight", 2) == 3


def test_param_groups_scale_and_decay(model):
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.65, num_layers=2)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["visual.conv1.weight"]["lr_scale"] == pytest.approx(0.65 ** 3)
    assert by_name["visual.transformer.resblocks.0.attn.in_proj_weight"]["lr_scale"] == \
        pytest.approx(0.65 ** 2)
    assert by_name["visual.transformer.resblocks.1.attn.in_proj_weight"]["lr_scale"] == \
        pytest.approx(0.65)
    assert by_name["classifier"]["lr_scale"] == 1.0
    # no weight decay on 1-D parameters, biases, tokens and embeddings
    for name in ("visual.class_embedding", "visual.positional_embedding", "mask_token",
                 "visual.ln_post.weight", "visual.transformer.resblocks.0.attn.in_proj_bias",
                 "decoder.0.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("visual.conv1.weight", "visual.proj", "classifier", "decoder.0.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name
    # every trainable parameter is in exactly one group
    assert sorted(by_name) == sorted(n for n, p in model.named_parameters())
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.65, num_layers=2)
    assert len(opt.param_groups) == len(groups)


def test_cosine_schedule_endpoints_and_shape():
    assert cosine_lr(0, 100, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert cosine_lr(99, 100, 1e-3, 1e-6) == pytest.approx(1e-6)
    mid = cosine_lr(49.5, 100, 1e-3, 1e-6)
    assert mid == pytest.approx((1e-3 + 1e-6) / 2)
    values = [cosine_lr(s, 100, 1e-3, 1e-6) for s in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_ema_decay_ramps_linearly_then_holds():
    assert ema_decay(0, 0.99, 0.9998, 100) == pytest.approx(0.99)
    assert ema_decay(50, 0.99, 0.9998, 100) == pytest.approx(0.99 + 0.5 * 0.0098)
    assert ema_decay(100, 0.99, 0.9998, 100) == pytest.approx(0.9998)
    assert ema_decay(10_000, 0.99, 0.9998, 100) == pytest.approx(0.9998)


def test_ema_teacher_update_is_exact(model):
    teacher = EmaTeacher(model)
    before = teacher.module.classifier.detach().clone()
    with torch.no_grad():
        model.classifier.add_(1.0)
    teacher.update(model, 0.9)
    expected = 0.9 * before + 0.1 * model.classifier.detach()
    assert torch.allclose(teacher.module.classifier, expected, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.module.parameters())


def test_settings_validation_messages():
    with pytest.raises(ValueError, match="threshold"):
        MustSettings(conf_threshold=1.5).validate()
    with pytest.raises(ValueError, match="Unknown setting"):
        MustSettings.from_dict({"epochs": 3, "bogus": 1})
    s = MustSettings(batch_size=128, base_lr=2e-5, min_lr=1e-6)
    assert s.lr() == pytest.approx(1e-5) and s.final_lr() == pytest.approx(5e-7)
    assert MustSettings(use_mim=False).mim_weight == 0.0


def test_resolve_settings_picks_rows_and_model_choices():
    small = resolve_settings(num_images=500, image_size=224, patch_size=16)
    # auto: the label-free recipe, its EMA warm-up a fixed share of the steps
    assert small.mask_patch_size == 32 and small.preset == "auto" and small.base_lr == 1e-4
    assert small.layer_decay == LABEL_FREE_RECIPE["layer_decay"] and small.keep == "best"
    assert small.ema_warm_it == round(AUTO_WARM_SHARE * (500 // 32) * 10)
    pets = resolve_settings(num_images=500, image_size=224, patch_size=16, preset="pets")
    assert pets.conf_threshold == PRESETS["pets"].values["conf_threshold"]
    assert pets.keep == "last" and pets.prototype_init == "text"  # the published method
    # warm-up scaled by steps: 500 images // 64 = 7 steps * 60 epochs = 420 steps, against
    # the Pets row's 3680 // 1024 = 3 steps * 60 epochs = 180
    assert pets.ema_warm_it == round(100 * 420 / 180)
    big = resolve_settings(num_images=500_000, image_size=224, patch_size=14,
                           model_name="ViT-L-14", preset="imagenet-vit-l")
    assert big.mask_patch_size == 56 and big.w_align == 0.5
    tiny = resolve_settings(num_images=10, image_size=32, patch_size=8,
                            overrides={"batch_size": 64, "epochs": 2, "mask_ratio": 0.2})
    assert tiny.batch_size == 10 and tiny.epochs == 2 and tiny.mask_ratio == 0.2
    assert tiny.base_lr == LABEL_FREE_RECIPE["base_lr"]  # a small-input model: the tiny rate
    assert 32 % tiny.mask_patch_size == 0 and tiny.mask_patch_size % 8 == 0
    dtd = resolve_settings(num_images=3760, image_size=224, patch_size=16, preset="dtd",
                           overrides={"batch_size": 1024})
    assert dtd.ema_warm_it == 100 and dtd.epochs == 60  # the published row, unscaled
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_settings(num_images=10, image_size=32, patch_size=8, preset="nope")
