"""The MUST model: the mask token enters before positions, decoder shape, logit scale."""

from __future__ import annotations

import pytest
import torch

from must_engine.models.must_model import MustModel, build_vision_tower
from must_engine.models.source import ModelError, ModelSpec, check_is_vit, load_clip
from must_engine.testing import TINY_MODEL_CFG


@pytest.fixture
def model():
    torch.manual_seed(0)
    visual = build_vision_tower(32, TINY_MODEL_CFG["vision_cfg"], False)
    w = torch.nn.functional.normalize(torch.randn(32, 4), dim=0)
    return MustModel(visual, w, 42.0).eval()


def test_forward_matches_open_clip_tower(model):
    x = torch.randn(2, 3, 32, 32)
    emb = model.visual(x)  # open_clip's own forward
    expected = 42.0 * torch.nn.functional.normalize(emb, dim=-1) @ model.classifier
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_train_outputs_shapes_and_masking(model):
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    out = model.forward_train(x, mask)
    assert out.logits.shape == (2, 4)
    assert out.patch_embeddings.shape == (2, 16, 32)
    assert out.reconstruction.shape == (2, 3, 32, 32)
    assert torch.allclose(out.logits, model(x), atol=1e-5)  # empty mask = no change
    mask[0, :2, :2] = True
    masked = model.forward_train(x, mask)
    assert not torch.allclose(masked.logits[0], out.logits[0])
    assert torch.allclose(masked.logits[1], out.logits[1], atol=1e-5)
    # a masked patch's content is ignored: change the pixels under it, same output
    y = x.clone()
    y[0, :, :8, :8] = torch.randn(3, 8, 8)
    again = model.forward_train(y, mask)
    assert torch.allclose(again.logits, masked.logits, atol=1e-5)
    assert model.mask_token.std().item() == pytest.approx(0.02, rel=0.5)


def test_logit_scale_comes_from_the_model(tiny_model_dir):
    clip = load_clip(ModelSpec.parse(str(tiny_model_dir)))
    assert clip.logit_scale == pytest.approx(30.0, rel=1e-4)  # not a hard-coded 100
    assert clip.preprocess.image_size == 32
    assert clip.preprocess.mean == (0.5, 0.5, 0.5)


def test_non_vit_towers_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="ResNet"):
        check_is_vit({"vision_cfg": {"layers": [3, 4, 6, 3]}}, "RN50")
    with pytest.raises(ModelError, match="timm"):
        check_is_vit({"vision_cfg": {"timm_model_name": "convnext_base"}}, "convnext")


def test_model_spec_parsing(tmp_path, tiny_model_dir):
    spec = ModelSpec.parse(str(tiny_model_dir))
    assert spec.kind == "local-dir" and spec.model.startswith("local-dir:")
    assert ModelSpec.parse("hf-hub:org/repo").kind == "hf-hub"
    assert ModelSpec.parse("ViT-B-32", "laion2b_s34b_b79k").kind == "builtin"
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"x")
    assert ModelSpec.parse("ViT-B-32", str(ckpt)).kind == "checkpoint"
    with pytest.raises(ModelError, match="architecture"):
        ModelSpec.parse(str(ckpt))
    with pytest.raises(ModelError, match="open_clip_config.json"):
        ModelSpec.parse(str(tmp_path))


def test_mask_token_enters_before_the_positional_embedding(model):
    """The tokens entering the transformer (ln_pre's input), computed by hand: a masked patch
    is mask_token + its own position, so masked patches still differ by position."""
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    mask[1, 0, :] = True
    seen = []
    handle = model.visual.ln_pre.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model.forward_train(x, mask)
    finally:
        handle.remove()
    v = model.visual
    with torch.no_grad():
        patches = v.conv1(x).flatten(2).transpose(1, 2)  # [2, 16, width]
        w = mask.flatten(1).unsqueeze(-1).float()
        patches = patches * (1 - w) + model.mask_token * w
        cls = v.class_embedding.expand(2, 1, -1)
        expected = torch.cat([cls, patches], dim=1) + v.positional_embedding
    assert torch.allclose(seen[0], expected, atol=1e-6)
    masked = seen[0][0, 1:][mask[0].flatten()]  # the 4 masked tokens of image 0
    assert not torch.allclose(masked[0], masked[1])  # position still tells them apart
