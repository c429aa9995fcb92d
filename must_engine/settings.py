"""Every knob of a MUST run in one typed dataclass, the published presets, and the rules
that pick defaults from the folder size and the model.

Settings are saved with each run (``run.json``) so a run describes itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STUDENT_VIEWS = ("strong", "weak")
PROTOTYPE_INITS = ("text", "text+target", "refined", "auto")
KEEP_MODES = ("best", "last")
PATCH_NORMS = ("new", "ln_post")
ALIGN_CLS_GRADIENTS = ("stop", "flow")
THRESHOLD_MODES = ("fixed", "adaptive", "quantile")


@dataclass
class MustSettings:
    """All settings of one MUST run. Defaults follow the paper's small-folder rows."""

    # Schedule
    epochs: int = 20
    batch_size: int = 64
    base_lr: float = 1e-5  # scaled by batch_size / 256, as published
    min_lr: float = 1e-6  # scaled the same way
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    # EMA teacher
    ema_decay_init: float = 0.99
    ema_decay_final: float = 0.9998
    ema_warm_it: int = 100
    conf_threshold: float = 0.7
    # Which pseudo-labels count: "fixed", those above conf_threshold (as published);
    # "quantile", each class's most confident threshold_share of the images the teacher gave
    # it over the last epoch's worth of images (conf_threshold for a class with none there;
    # losses.QuantileThreshold); or "adaptive", above FreeMatch's self-adaptive per-class
    # thresholds: the EMA (momentum threshold_momentum per step) of the teacher's mean
    # confidence, scaled per class by its mean class probability (losses.AdaptiveThreshold).
    threshold_mode: str = "fixed"
    threshold_share: float = 0.5
    threshold_momentum: float = 0.9
    # Masking (mask_patch_size 0 = choose from the model: see masking.choose_mask_patch_size)
    mask_ratio: float = 0.1
    mask_patch_size: int = 0
    # Loss weights; a weight of 0 or use_* False turns that term off
    w_fair: float = 1.0
    w_mim: float = 1.0
    w_align: float = 0.2
    use_fair: bool = True
    use_mim: bool = True
    use_align: bool = True
    fair_running_average_classes: int = 512  # >= this many classes: running class prior
    # Patch tokens for MIM/alignment: a new LayerNorm ("new", as the reference code) or the
    # tower's pretrained ln_post; gradient into the [CLS] target of alignment: "stop" or
    # "flow" (the reference). README "Where this differs from the reference code" says why.
    patch_norm: str = "ln_post"
    align_cls_gradient: str = "stop"
    # Views
    student_view: str = "strong"
    randaugment: str = "rand-m9-mstd0.5-inc1"  # "" = none
    strong_scale_min: float = 0.3
    # Classifier initialisation: text prototypes; text mixed half-and-half with prototypes
    # re-estimated from the target images' own features; the refined zero-shot classifier
    # (soft k-means anchored by the text); or auto: refined where the label-free measure
    # rates it above the text prototypes (see classifier_init.py, quality.py).
    prototype_init: str = "text"
    # Which classifier the run hands back: the best by the label-free measure among
    # zero-shot, refined zero-shot and the teacher and refined teacher after each epoch, or
    # the last teacher (as published).
    keep: str = "best"
    # Offer the last teacher with its head refined on its own features (label_free.py) as one
    # more candidate for keep = best. Off by default: the score rates it above the teacher and
    # refined zero-shot even where it is less accurate (README, "Refined zero-shot...").
    refined_teacher: bool = False
    # Share of a refined head's probabilities in the teacher's pseudo-labels (0 = the
    # teacher's head alone, as published): the refined zero-shot classifier to start, then
    # after each epoch the teacher's head refined on the teacher's own features (label_free).
    refined_pseudo_labels: float = 0.0
    center: float = 0.0  # share of the target images' mean embedding subtracted (0 = off)
    score_images: int = 512  # images the label-free measure looks at each epoch
    # Runtime
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = -1  # -1 = auto
    image_cache: str = "auto"  # decoded-image cache: "auto" (user cache folder), "off", a folder
    image_cache_gb: float = 4.0  # its size cap; least recently used images go first
    log_every: int = 0  # 0 = auto: every step on CPU/MPS, every 10 on CUDA
    preset: str = "auto"

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first bad value."""
        check_values(asdict(self))
        if not 0 <= self.min_lr <= self.base_lr:
            raise ValueError("min_lr must be between 0 and base_lr.")
        if not self.ema_decay_init <= self.ema_decay_final:
            raise ValueError("EMA decays must satisfy 0 <= ema_decay_init <= ema_decay_final < 1.")

    # The effective weights, folding the on/off switches in.
    @property
    def fair_weight(self) -> float:
        return self.w_fair if self.use_fair else 0.0

    @property
    def mim_weight(self) -> float:
        return self.w_mim if self.use_mim else 0.0

    @property
    def align_weight(self) -> float:
        return self.w_align if self.use_align else 0.0

    @property
    def uses_mask(self) -> bool:
        return self.mask_ratio > 0 and (self.mim_weight > 0 or self.align_weight > 0)

    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def final_lr(self) -> float:
        return self.min_lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MustSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown setting(s): {', '.join(unknown)}.")
        return cls(**data)


# One rule per setting that needs one: (test, what a valid value is). Each looks at one
# value only, so front ends can check what the user typed before anything heavy loads.
_RULES: dict[str, tuple[Any, str]] = {
    "epochs": (lambda v: v >= 1, "epochs must be at least 1"),
    "batch_size": (lambda v: v >= 1, "batch size must be at least 1"),
    "base_lr": (lambda v: v > 0, "learning rate must be positive"),
    "min_lr": (lambda v: v >= 0, "min_lr must not be negative"),
    "weight_decay": (lambda v: v >= 0, "weight decay must not be negative"),
    "layer_decay": (lambda v: 0 < v <= 1, "layer_decay must be in (0, 1]; use 1 for a uniform "
                    "rate"),
    "ema_decay_init": (lambda v: 0 <= v < 1, "ema_decay_init must be in [0, 1)"),
    "ema_decay_final": (lambda v: 0 <= v < 1, "ema_decay_final must be in [0, 1)"),
    "ema_warm_it": (lambda v: v >= 1, "ema_warm_it must be at least 1"),
    "conf_threshold": (lambda v: 0 <= v < 1, "threshold must be in [0, 1)"),
    "threshold_mode": (lambda v: v in THRESHOLD_MODES,
                       f"threshold_mode must be one of {THRESHOLD_MODES}"),
    "threshold_momentum": (lambda v: 0 <= v < 1, "threshold_momentum must be in [0, 1)"),
    "threshold_share": (lambda v: 0 < v <= 1, "threshold_share must be in (0, 1]"),
    "refined_pseudo_labels": (lambda v: 0 <= v <= 1, "refined_pseudo_labels must be in [0, 1]"),
    "mask_ratio": (lambda v: 0 <= v < 1, "mask ratio must be in [0, 1)"),
    "mask_patch_size": (lambda v: v >= 0, "mask patch size must be 0 (automatic) or positive"),
    "w_fair": (lambda v: v >= 0, "w_fair must not be negative"),
    "w_mim": (lambda v: v >= 0, "w_mim must not be negative"),
    "w_align": (lambda v: v >= 0, "w_align must not be negative"),
    "fair_running_average_classes": (lambda v: v >= 1,
                                     "fair_running_average_classes must be at least 1"),
    "student_view": (lambda v: v in STUDENT_VIEWS, f"student_view must be one of {STUDENT_VIEWS}"),
    "precision": (lambda v: v in PRECISIONS, f"precision must be one of {PRECISIONS}"),
    "prototype_init": (lambda v: v in PROTOTYPE_INITS,
                       f"prototype_init must be one of {PROTOTYPE_INITS}"),
    "strong_scale_min": (lambda v: 0 < v <= 1, "strong_scale_min must be in (0, 1]"),
    "keep": (lambda v: v in KEEP_MODES, f"keep must be one of {KEEP_MODES}"),
    "center": (lambda v: 0 <= v <= 1, "center must be in [0, 1]"),
    "score_images": (lambda v: v >= 2, "score_images must be at least 2"),
    "patch_norm": (lambda v: v in PATCH_NORMS, f"patch_norm must be one of {PATCH_NORMS}"),
    "align_cls_gradient": (lambda v: v in ALIGN_CLS_GRADIENTS,
                           f"align_cls_gradient must be one of {ALIGN_CLS_GRADIENTS}"),
    "image_cache_gb": (lambda v: v > 0, "image_cache_gb must be positive; use image_cache 'off' "
                       "to turn the decoded-image cache off"),
    "num_workers": (lambda v: v >= -1, "num_workers must be -1 (automatic) or more"),
    "log_every": (lambda v: v >= 0, "log_every must be 0 (automatic) or more"),
}


def check_values(values: dict[str, Any]) -> None:
    """Check each given setting on its own (type, finite, range); ValueError with one
    sentence for the first bad one. Needs no model, folder or heavy import."""
    types = {f.name: str(f.type) for f in fields(MustSettings)}
    for name, value in values.items():
        kind = types.get(name)
        if kind is None:
            raise ValueError(f"Unknown setting(s): {name}.")
        if kind == "float":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value))
            if not ok:
                raise ValueError(f"{name} must be a finite number (got {value!r}).")
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number (got {value!r}).")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false (got {value!r}).")
        elif kind == "str" and not isinstance(value, str):
            raise ValueError(f"{name} must be text (got {value!r}).")
        rule = _RULES.get(name)
        if rule is not None and not rule[0](value):
            raise ValueError(f"{rule[1]} (got {value!r}).")


@dataclass(frozen=True)
class Preset:
    """A published row of the MUST paper (ViT-B/16 unless noted)."""

    name: str
    description: str
    values: dict[str, Any]
    # Size of the training split the row was tuned on, to scale the EMA warm-up by steps.
    dataset_size: int
    published_batch: int = 1024
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def published_steps(self) -> int:
        # drop_last, as the reference loader does
        return max(1, self.dataset_size // self.published_batch) * self.values["epochs"]


def _row(mask_patch, ratio, w_align, w_fair, thr, lr, epochs, ema_init, warm_it):
    return dict(
        mask_patch_size=mask_patch, mask_ratio=ratio, w_align=w_align, w_fair=w_fair,
        conf_threshold=thr, base_lr=lr, epochs=epochs, ema_decay_init=ema_init,
        ema_warm_it=warm_it,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("imagenet", "ImageNet, ViT-B/16", _row(32, 0.3, 0.2, 1, 0.7, 2e-5, 30, 0.999, 2000),
               1_281_167),
        Preset("imagenet-vit-l", "ImageNet, ViT-L/14",
               _row(56, 0.3, 0.5, 1, 0.5, 4e-5, 20, 0.999, 2000), 1_281_167),
        Preset("sun397", "SUN397 scenes", _row(32, 0.1, 1, 0.2, 0.4, 1e-4, 20, 0.99, 500), 19_850),
        Preset("food101", "Food-101", _row(32, 0.1, 0.1, 1, 0.7, 2e-5, 40, 0.999, 2000), 75_750),
        Preset("gtsrb", "GTSRB traffic signs", _row(32, 0.5, 0.5, 1, 0.3, 2e-5, 20, 0.99, 500),
               26_640),
        Preset("dtd", "DTD textures", _row(32, 0.1, 0.2, 1, 0.4, 2e-5, 60, 0.99, 100), 3_760),
        Preset("ucf101", "UCF101 video frames", _row(16, 0.1, 0.5, 1, 0.5, 1e-5, 60, 0.99, 500),
               9_537),
        Preset("pets", "Oxford Pets / Caltech101", _row(32, 0.1, 0.2, 1, 0.7, 1e-5, 60, 0.99, 100),
               3_680),
    )
}
PRESET_NAMES = ("auto", *PRESETS)

# The published rows reproduce the paper: text prototypes, and the last EMA teacher.
PUBLISHED_BEHAVIOUR: dict[str, Any] = {"prototype_init": "text", "keep": "last"}

# What ``auto`` starts from before its probe (see probe.py): a short schedule with a fast
# EMA teacher, a uniform learning rate, a weak student view, self-training + fairness, the
# text prototypes to start from (starting from the refined classifier trained worse: demo
# 57.8% against 67.5%), and the best-scored classifier kept (refined zero-shot included).
# Chosen on the development shifts of the benchmark (README, "Benchmarks").
LABEL_FREE_RECIPE: dict[str, Any] = {
    "epochs": 10, "batch_size": 32, "base_lr": 3e-3, "min_lr": 1e-6, "layer_decay": 1.0,
    "ema_decay_init": 0.9, "ema_decay_final": 0.99, "conf_threshold": 0.7,
    "student_view": "weak", "mask_ratio": 0.1, "use_mim": False, "use_align": False,
    "w_align": 1.0, "prototype_init": "text", "keep": "best", "center": 1.0,
}
AUTO_WARM_SHARE = 0.55  # the EMA decay ramps up over this share of the steps
# Models at CLIP's own input sizes (224 px and up) start from a learning rate in the published
# range (the SUN397 row's) rather than the tiny models' 3e-3; the probe still tries / 10.
LARGE_INPUT = 160
LARGE_MODEL_BASE_LR = 1e-4


def preset_for_folder(num_images: int) -> Preset:
    """The published row closest to a folder of this size: small folders behave like
    DTD/Pets, mid-sized like SUN397/Food-101, very large like ImageNet."""
    if num_images <= 10_000:
        return PRESETS["pets"]
    if num_images <= 200_000:
        return PRESETS["food101"]
    return PRESETS["imagenet"]


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Training drops the last partial batch, as the reference does; never fewer than one."""
    return max(1, num_images // max(1, min(batch_size, num_images)))


def resolve_settings(
    *,
    num_images: int,
    image_size: int,
    patch_size: int,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
    model_name: str = "",
) -> MustSettings:
    """Settings for a run: preset row, then the model-dependent choices, then the user's
    overrides, which always win.

    - ``auto`` picks the row from the folder size (and the ViT-L row for ViT-L models on
      large folders);
    - the EMA warm-up is scaled by the ratio of this run's steps to the row's published steps;
    - the mask block is taken from the model (a multiple of its patch that divides the grid)
      unless the row's block fits this model.
    """
    from must_engine.masking import choose_mask_patch_size

    overrides = dict(overrides or {})
    if preset not in PRESET_NAMES:
        raise ValueError(f"Unknown preset '{preset}'; choose one of: {', '.join(PRESET_NAMES)}.")
    if preset == "auto":
        values = dict(LABEL_FREE_RECIPE)
        if image_size >= LARGE_INPUT:
            values["base_lr"] = LARGE_MODEL_BASE_LR
        settings = MustSettings(**{**values, "preset": preset})
    else:
        row = PRESETS[preset]
        values = {**row.values, **PUBLISHED_BEHAVIOUR}
        settings = MustSettings(**{**values, "preset": preset})
    check_values(overrides)  # before the clamp below, so 0 or -3 is refused, not made 1
    batch = int(overrides.get("batch_size", settings.batch_size))
    batch = min(batch, max(1, num_images))
    epochs = int(overrides.get("epochs", settings.epochs))
    total = steps_per_epoch(num_images, batch) * epochs
    if preset == "auto":
        warm = max(1, round(AUTO_WARM_SHARE * total))
        block = choose_mask_patch_size(image_size, patch_size)
    else:
        warm = max(1, round(values["ema_warm_it"] * total / row.published_steps()))
        block = values["mask_patch_size"]
        grid = image_size // patch_size
        if block % patch_size != 0 or grid % (block // patch_size) != 0 or image_size != 224:
            block = choose_mask_patch_size(image_size, patch_size)
    settings = replace(settings, batch_size=batch, ema_warm_it=warm, mask_patch_size=block)

    if overrides:
        settings = replace(settings, **{**overrides, "batch_size": batch})
    settings.validate()
    return settings


# One line per knob, for the command line's --help and the app's tooltips.
FIELD_HELP: dict[str, str] = {
    "epochs": "passes over the folder",
    "batch_size": "images per step (the learning rate scales with it)",
    "base_lr": "learning rate for a batch of 256",
    "min_lr": "final learning rate of the cosine schedule, for a batch of 256",
    "weight_decay": "AdamW weight decay (not on biases, norms, tokens, embeddings)",
    "layer_decay": "layer-wise lr decay; 1 = the same rate for every layer",
    "ema_decay_init": "EMA teacher decay at the first step",
    "ema_decay_final": "EMA teacher decay after the warm-up",
    "ema_warm_it": "steps over which the EMA decay ramps up",
    "conf_threshold": "teacher confidence a pseudo-label needs to count",
    "threshold_mode": "which pseudo-labels count: fixed (above the threshold), quantile (each "
                      "class's most confident share) or adaptive (FreeMatch's per-class "
                      "thresholds)",
    "threshold_share": "quantile mode: share of each class's pseudo-labels that count",
    "threshold_momentum": "adaptive mode: EMA momentum per step of the thresholds' statistics",
    "mask_ratio": "share of image blocks masked in the student's view",
    "mask_patch_size": "mask block size in pixels (0 = chosen from the model)",
    "w_fair": "weight of the fairness (uniform class prior) loss",
    "w_mim": "weight of the masked image modelling loss",
    "w_align": "weight of the global-local feature alignment loss",
    "use_fair": "use the fairness loss",
    "use_mim": "use masked image modelling",
    "use_align": "use global-local feature alignment",
    "fair_running_average_classes": "from this many classes on, use a running class prior",
    "patch_norm": "LayerNorm of the patch tokens for MIM/alignment: new, or the tower's ln_post",
    "align_cls_gradient": "alignment's [CLS] target: stop (no gradient) or flow (reference)",
    "student_view": "student augmentation: strong (RandAugment) or weak (crop only)",
    "randaugment": "timm RandAugment policy for the strong view ('' = none)",
    "strong_scale_min": "smallest RandomResizedCrop area of the strong view",
    "prototype_init": "start from text prototypes, mix in image prototypes, the refined "
                      "zero-shot classifier, or auto (refined where the measure rates it higher)",
    "keep": "hand back the best classifier by the label-free measure, or the last teacher",
    "score_images": "images the label-free measure scores each epoch",
    "center": "share of the folder's mean image embedding subtracted before classifying "
              "(offers centred zero-shot; training uses it where that scores above zero-shot)",
    "refined_teacher": "also offer the last teacher with its head refined on its own features "
                       "(keep best)",
    "refined_pseudo_labels": "share of the refined head's probabilities in the pseudo-labels "
                             "(0 = the teacher's head alone)",
    "precision": "auto, fp32, fp16 or bf16 (mixed precision on CUDA)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "seed": "random seed (a fixed seed reproduces a CPU run exactly)",
    "num_workers": "image loading processes (-1 = automatic)",
    "image_cache": "decoded-image cache folder: auto (user cache folder), off, or a path",
    "image_cache_gb": "size cap of the decoded-image cache in GB",
    "log_every": "read metrics from the device every N steps (0 = automatic)",
    "preset": "published settings row to start from",
}
