"""The project's own tiny CLIP: a small open_clip ViT image-text model, pretrained here.

Pretrained CLIP weights cannot be downloaded everywhere the project is built and tested, so
the project makes its own: a ViT of a few layers at 64x64 pixels with a small text tower,
trained with CLIP's contrastive loss on source-style sandbox pictures and prompt captions.
It keeps open_clip's default tokenizer and is saved in open_clip's ``local-dir`` layout, so it
loads through exactly the path a real checkpoint takes:

    open_clip.create_model_and_transforms("local-dir:" + path)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from PIL import Image

TINY_CLIP_NAME = "must-tiny-vit"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

# Templates used to report zero-shot accuracy (and a sensible default for the demo).
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "a picture of a {}.",
    "a photo of the {}.",
    "a rendering of a {}.",
    "a {} shape.",
    "itap of a {}.",
)


def _pretrain_templates() -> tuple[str, ...]:
    """Captions seen in pretraining: ours plus open_clip's ImageNet prompt sets.

    Seeing many phrasings teaches the text tower that the class word is what matters, so
    whatever prompt templates a user picks later still give a sensible classifier.
    """
    out: list[str] = list(ZERO_SHOT_TEMPLATES) + ["{}", "a {}.", "the {}.", "an image of a {}."]
    for fn in (*OPENAI_IMAGENET_TEMPLATES, *SIMPLE_IMAGENET_TEMPLATES):
        out.append(fn("{}"))
    return tuple(dict.fromkeys(out))  # dedupe, keep order


PRETRAIN_TEMPLATES: tuple[str, ...] = _pretrain_templates()


@dataclass(frozen=True)
class TinyClipSize:
    """The widths and depths of one tiny CLIP; everything else is shared."""

    width: int  # image tower width, also the embedding size
    layers: int  # image tower blocks
    text_width: int
    text_layers: int


# "base" is the shipped model (resources/models/must-tiny-clip). The others exist to test
# defaults on models of other capacities; the benchmark builds them, nothing ships them.
TINY_CLIP_SIZES: dict[str, TinyClipSize] = {
    "small": TinyClipSize(width=32, layers=2, text_width=32, text_layers=2),
    "base": TinyClipSize(width=64, layers=4, text_width=64, text_layers=3),
    "large": TinyClipSize(width=96, layers=6, text_width=64, text_layers=3),
}


def tiny_clip_config(size: str = "base") -> dict:
    """The open_clip model config (``model_cfg``) of the tiny CLIP of ``size``."""
    try:
        dims = TINY_CLIP_SIZES[size]
    except KeyError:
        raise ValueError(
            f"Unknown tiny CLIP size {size!r}; use one of: {', '.join(TINY_CLIP_SIZES)}."
        ) from None
    return {
        "embed_dim": dims.width,
        "vision_cfg": {
            "image_size": 64,
            "patch_size": 8,
            "layers": dims.layers,
            # Narrow on purpose: on two CPU cores a width-64 ViT learns these shapes about
            # as fast per step as width 128, at well under half the cost per step.
            "width": dims.width,
            "head_width": 32,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            # open_clip's default BPE tokenizer, so no tokenizer files need shipping; a short
            # context is plenty for prompt captions and keeps the text tower cheap.
            "context_length": 32,
            "vocab_size": 49408,
            "width": dims.text_width,
            "heads": 2,
            "layers": dims.text_layers,
        },
    }


def tiny_clip_preprocess_config() -> dict:
    """The ``preprocess_cfg`` saved beside the model (the usual CLIP normalisation)."""
    return {
        "size": 64,
        "mode": "RGB",
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


def register_tiny_clip(name: str = TINY_CLIP_NAME) -> str:
    """Make ``name`` a built-in open_clip architecture for this process; returns the name.

    Calling it again is harmless.
    """
    from open_clip import factory

    # open_clip keeps its built-in configs in this dict; add_model_config() would need a file.
    factory._MODEL_CONFIGS[name] = tiny_clip_config()
    return name


@dataclass(frozen=True)
class PretrainSettings:
    """Settings of :func:`pretrain_tiny_clip` (defaults: a few minutes on two CPU cores)."""

    epochs: int = 24
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    # One thread: results then do not depend on the machine's core count, and on a busy
    # two-core machine one thread ran faster than two.
    threads: int = 1
    # Small random shifts and flips; the world itself supplies pose, size and colour.
    augment: bool = True
    # Blank the patch embeddings of random mask_block-pixel blocks, up to this share of the
    # picture (drawn per picture, uniformly). Large CLIPs shrug off masked patches and MUST's
    # masked views rely on it; a tiny ViT that never saw a blank patch does not.
    mask_ratio_max: float = 0.4
    mask_block: int = 16
    max_logit_scale: float = 100.0


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[torch.Generator]:
    """Seed torch, fix the thread count and ask for deterministic kernels; restore after.

    Yields a CPU generator to draw every random number of the run from.
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_rng = torch.random.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        gen = torch.Generator().manual_seed(seed)
        yield gen
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        torch.random.set_rng_state(old_rng)


def images_to_tensor(images: Sequence[Image.Image], image_size: int = 64) -> torch.Tensor:
    """Stack PIL images as a uint8 tensor [N, 3, S, S] (bicubic resize when sizes differ)."""
    arrs = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        arrs.append(np.asarray(img, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def normalise(batch_u8: torch.Tensor, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD):
    x = batch_u8.float() / 255.0
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random flips and shifts of up to ``pad`` pixels, one draw per image."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[i, :, int(dy):int(dy) + h, int(dx):int(dx) + w] for i, (dy, dx) in enumerate(offs)]
    )


def clip_loss_one_caption_per_class(
    image_features: torch.Tensor,
    class_text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """CLIP's symmetric contrastive loss when a step writes one caption per class.

    A batch of sandbox pictures holds several of each class, and all of them match their
    class's caption: image-to-text is plain cross-entropy over the captions, and each
    caption's target is spread evenly over its class's pictures (captions of classes absent
    from the batch are left out).
    """
    logits = logit_scale * image_features @ class_text_features.T  # [B, C]
    loss_image = F.cross_entropy(logits, labels)
    num_classes = class_text_features.shape[0]
    member = (labels[None, :] == torch.arange(num_classes, device=labels.device)[:, None])
    present = member.any(dim=1)
    target = member[present].float()
    target = target / target.sum(dim=1, keepdim=True)
    loss_text = F.cross_entropy(logits.T[present], target)
    return 0.5 * (loss_image + loss_text)


def pretrain_tiny_clip(
    images_with_labels: Sequence[tuple[Image.Image, int]],
    class_names: Sequence[str],
    *,
    seed: int,
    epochs: int | None = None,
    settings: PretrainSettings | None = None,
    templates: Sequence[str] = PRETRAIN_TEMPLATES,
    config: dict | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[int, torch.nn.Module], None] | None = None,
) -> torch.nn.Module:
    """Train a tiny CLIP from scratch on labelled pictures with prompt captions.

    Every step draws one template per class and pairs each picture with its class's
    caption ``template.format(class_name)``. The run is deterministic for a seed on a given
    machine (fixed thread count, deterministic kernels, one generator). Returns the model in
    eval mode, float32.
    """
    settings = settings or PretrainSettings()
    if epochs is not None:
        settings = PretrainSettings(**{**settings.__dict__, "epochs": epochs})
    if not images_with_labels:
        raise ValueError("pretrain_tiny_clip needs at least one labelled picture.")
    cfg = deepcopy(config) if config is not None else tiny_clip_config()
    size = cfg["vision_cfg"]["image_size"]
    tokenizer = open_clip.get_tokenizer(
        context_length=cfg["text_cfg"].get("context_length", 77)
    )

    with deterministic_torch(seed, settings.threads) as gen:
        model = open_clip.model.CLIP(**cfg).to(device)
        model.train()
        images = images_to_tensor([im for im, _ in images_with_labels], size)
        labels = torch.tensor([int(c) for _, c in images_with_labels], dtype=torch.long)
        # All (class, template) captions, tokenised once: [classes, templates, context].
        texts = [t.format(c) for c in class_names for t in templates]
        caption_tokens = tokenizer(texts).view(len(class_names), len(templates), -1)

        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr, betas=(0.9, 0.98), eps=1e-6,
        )
        n = len(images)
        steps_per_epoch = max(1, n // settings.batch_size)
        total = steps_per_epoch * settings.epochs
        max_log_scale = math.log(settings.max_logit_scale)
        step = 0
        patch = cfg["vision_cfg"]["patch_size"]
        blank: list[torch.Tensor | None] = [None]  # the current step's patch mask, or None

        def blank_patches(_module, _inputs, output):
            # conv1 has no bias, so zeroed patch embeddings match MUST's near-zero [MASK] init.
            return output if blank[0] is None else output * (~blank[0]).unsqueeze(1)

        hook = model.visual.conv1.register_forward_hook(blank_patches)
        for epoch in range(settings.epochs):
            perm = torch.randperm(n, generator=gen)
            running = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * settings.batch_size:(b + 1) * settings.batch_size]
                x = images[idx]
                y = labels[idx]
                if settings.augment:
                    x = _augment(x, gen)
                x = normalise(x).to(device)
                blank[0] = _block_mask(len(idx), size, patch, settings, gen)
                if blank[0] is not None:
                    blank[0] = blank[0].to(device)
                # One fresh template per class each step: the text batch stays tiny.
                tpl = torch.randint(0, len(templates), (len(class_names),), generator=gen)
                tokens = caption_tokens[torch.arange(len(class_names)), tpl].to(device)
                y = y.to(device)

                lr = _lr_at(step, total, settings)
                for group in opt.param_groups:
                    group["lr"] = lr
                img_f = model.encode_image(x, normalize=True)
                txt_f = model.encode_text(tokens, normalize=True)
                loss = clip_loss_one_caption_per_class(img_f, txt_f, y, model.logit_scale.exp())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    # As in CLIP: the learned temperature is kept at or below 100.
                    model.logit_scale.clamp_(0, max_log_scale)
                running += float(loss.detach())
                step += 1
            if log is not None:
                log(
                    f"epoch {epoch + 1}/{settings.epochs}: loss {running / steps_per_epoch:.4f}, "
                    f"logit scale {float(model.logit_scale.detach().exp()):.1f}"
                )
            if on_epoch_end is not None:
                # The callback may evaluate; it must not change the training state.
                blank[0] = None
                model.eval()
                rng_state = torch.random.get_rng_state()
                on_epoch_end(epoch, model)
                torch.random.set_rng_state(rng_state)
                model.train()
        hook.remove()
        model.eval()
    return model


def _block_mask(
    n: int, size: int, patch: int, s: PretrainSettings, gen: torch.Generator
) -> torch.Tensor | None:
    """Per picture, a random share in [0, mask_ratio_max) of mask_block blocks, as a bool
    grid of patches [n, size/patch, size/patch]; None when masking is off."""
    if s.mask_ratio_max <= 0:
        return None
    per = max(1, s.mask_block // patch)
    blocks = size // (per * patch)
    ratio = torch.rand(n, 1, generator=gen) * s.mask_ratio_max
    chosen = torch.rand(n, blocks * blocks, generator=gen) < ratio
    grid = chosen.view(n, blocks, blocks)
    return grid.repeat_interleave(per, dim=1).repeat_interleave(per, dim=2)


def _lr_at(step: int, total: int, s: PretrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, total - s.warmup_steps)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def save_local_dir(
    model: torch.nn.Module,
    config: dict,
    out_dir: str | os.PathLike,
    *,
    preprocess_cfg: dict | None = None,
    half: bool = True,
) -> Path:
    """Write ``out_dir/open_clip_config.json`` and ``out_dir/open_clip_model.safetensors``.

    The layout is open_clip's ``local-dir``. With ``half`` the weight matrices are stored in
    float16 (half the size); the logit scale stays float32 so the temperature is exact.
    Files are byte-identical for identical weights.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "model_cfg": deepcopy(config),
        "preprocess_cfg": deepcopy(preprocess_cfg or tiny_clip_preprocess_config()),
    }
    _write_text(out / CONFIG_FILE, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tensors = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu()
        if half and t.is_floating_point() and t.numel() > 1 and not key.startswith("logit_"):
            t = t.to(torch.float16)
        tensors[key] = t.contiguous().clone()
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS_FILE)
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def load_local_dir(path: str | os.PathLike):
    """Load a saved tiny CLIP the way any user model loads: ``(model, preprocess, tokenizer)``.

    ``preprocess`` is open_clip's evaluation transform.
    """
    name = "local-dir:" + str(path)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module,
    tokenizer,
    preprocess: Callable[[Image.Image], torch.Tensor],
    images_with_labels: Sequence[tuple[Image.Image, int]],
    class_names: Sequence[str],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of the template-averaged text classifier, computed with open_clip."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    model.eval()
    device = next(model.parameters()).device
    weights = build_zero_shot_classifier(
        model, tokenizer, list(class_names), list(templates), num_classes_per_batch=None,
        device=device,
    )
    correct = 0
    for start in range(0, len(images_with_labels), batch_size):
        chunk = images_with_labels[start:start + batch_size]
        x = torch.stack([preprocess(im) for im, _ in chunk]).to(device)
        y = torch.tensor([c for _, c in chunk], device=device)
        feats = model.encode_image(x, normalize=True)
        correct += int((feats @ weights).argmax(dim=1).eq(y).sum())
    return correct / max(1, len(images_with_labels))
