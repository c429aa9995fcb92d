"""The MUST trainer, driven step by step.

``prepare_run`` turns a job (folder, classes, model) into a run folder holding the starting
model; ``Trainer(run_dir).run(control)`` is a generator that trains, yielding typed events
(``must_engine.events``) and checking the control's pause/stop flags between steps. A
stopped run keeps its checkpoint; a new ``Trainer`` on the same folder resumes it, and on
the CPU with a fixed seed the result equals that of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from must_engine.classes import check_class_names, check_templates, default_templates
from must_engine.classifier_init import text_classifier
from must_engine.devices import resolve_device
from must_engine.distributed import Distributed, env_from_launcher
from must_engine.distributed import start as start_distributed
from must_engine.events import (
    CheckpointSaved,
    EpochSummary,
    Event,
    Paused,
    Resumed,
    RunFinished,
    RunStarted,
    RunWarning,
    Status,
    StepMetrics,
)
from must_engine.image_cache import CacheSetting, cache_side, image_source
from must_engine.images import confirm_readable, is_folder, scan_folder
from must_engine.io_utils import atomic_write, write_json
from must_engine.masking import (
    MaskSpec,
    choose_mask_patch_size,
    patch_mask_to_pixels,
    sample_block_masks,
)
from must_engine.models.must_model import MustModel, architecture_of, must_model_from_config
from must_engine.models.source import load_clip
from must_engine.probe import probe_events
from must_engine.run_lock import run_lock
from must_engine.runs import (
    CHECKPOINT_FILE,
    IMAGES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PSEUDO_FILE,
    ZERO_SHOT_FILE,
    RunError,
    RunInfo,
    TrainJob,
    new_run_data,
    open_run,
)
from must_engine.selection import KeepBest
from must_engine.settings import MustSettings, resolve_settings, steps_per_epoch
from must_engine.training.control import CONTROL_FILE, POLL_SECONDS, TrainControl
from must_engine.training.data import (
    EpochSampler,
    TwoViewDataset,
    batches_until_stop,
    epoch_order,
    loader_plan,
    make_loader,
    mix_seed,
)
from must_engine.training.ema import EmaTeacher, ema_decay
from must_engine.training.event_log import open_event_log
from must_engine.training.label_free import RunScorer, starting_classifiers
from must_engine.training.learning_check import NoConfidentLabelsWatch
from must_engine.training.losses import (
    AdaptiveThreshold,
    FairnessLoss,
    QuantileThreshold,
    global_local_alignment_loss,
    masked_image_modelling_loss,
    pseudo_labels,
    self_training_loss,
)
from must_engine.training.optim import build_optimizer, cosine_lr, param_groups, set_lr
from must_engine.training.resume import apply_resume
from must_engine.trust.collapse import CollapseWatch
from must_engine.trust.corrections import FixedLabels
from must_engine.trust.user_labels import read_run_labels, training_files
from must_engine.weights import load_model_weights, save_model_weights
from must_engine.write_errors import write_errors_as

EventSink = Callable[[Event], None]
CONFIDENCE_BINS = 20
# threshold_mode "quantile": the window is the last epoch's images, at most this many.
QUANTILE_WINDOW = 65_536
METRIC_NAMES = ("loss_st", "loss_fair", "loss_mim", "loss_align", "loss_total",
                "confident_fraction", "teacher_confidence")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


def _torch_save(obj, path: Path) -> None:
    # Through a Python file: a full disk then raises OSError(ENOSPC) instead of a chain of
    # C++ stream errors.
    with open(path, "wb") as f:
        torch.save(obj, f)


def _log_line(event: Event) -> str:
    return json.dumps(event.to_dict()) + "\n"


def _emit(on_event: EventSink | None, event: Event) -> None:
    if on_event is not None:
        on_event(event)


def prepare_run(job: TrainJob, run_dir: str | Path, *, on_event: EventSink | None = None,
                device: str | None = None) -> RunInfo:
    """Scan the folder, load the pretrained model, build the starting MUST model and write
    the run folder. Nothing is trained yet."""
    with write_errors_as(RunError, Path(run_dir), f"Cannot create the run folder {run_dir}",
                         "choose a project folder you can write to"):
        return _prepare_run(job, run_dir, on_event=on_event, device=device)


def _prepare_run(job: TrainJob, run_dir: str | Path, *, on_event: EventSink | None,
                 device: str | None) -> RunInfo:
    run_dir = Path(run_dir)
    if (run_dir / "run.json").exists():
        raise RunError(f"{run_dir} already holds a run; resume it, or choose a new --out folder.")
    names = check_class_names([n.strip() for n in job.class_names])
    templates = check_templates(job.templates) if job.templates else default_templates()
    images = Path(job.images).expanduser()
    if not is_folder(images):
        raise RunError(f"Image folder {images} was not found; check the path.")
    _emit(on_event, Status(f"Scanning {images}"))
    # Listed, not decoded: files are checked as the first epoch decodes them (and fills the
    # image cache), so a folder of 100,000 photos starts in seconds.
    scan = confirm_readable(scan_folder(images, verify=False))
    if len(scan.files) == 0:
        raise RunError(f"No readable images in {images} (looked for jpg, png, webp, bmp, tiff, "
                       "gif, in subfolders too).")
    if len(scan.files) < 2:
        raise RunError(f"Only one readable image in {images}; adaptation needs a folder of them.")
    clip = load_clip(job.model, device="cpu", on_event=on_event)
    vision = clip.model_cfg["vision_cfg"]
    patch = int(vision.get("patch_size", clip.model.visual.conv1.kernel_size[0]))
    if job.settings is not None:
        settings = job.settings
        settings.validate()
    else:
        overrides = dict(job.overrides)
        preset = overrides.pop("preset", "auto")
        settings = resolve_settings(num_images=len(scan.files),
                                    image_size=clip.preprocess.image_size, patch_size=patch,
                                    preset=preset, overrides=overrides,
                                    model_name=job.model.model)
    if device is not None:
        settings.device = device
    # The learning rate scales with the batch the run really takes, so record that one.
    settings.batch_size = min(settings.batch_size, len(scan.files))
    mask_spec(clip.preprocess.image_size, patch, settings)  # validates the block

    _emit(on_event, Status(f"Building the zero-shot classifier from {len(templates)} prompts"))
    torch.manual_seed(settings.seed)  # the [MASK] token and decoder start the same each time
    dev = resolve_device(settings.device)
    if job.synonyms:
        from must_engine.trust.prompts import class_texts

        weights = class_texts(clip.model, clip.tokenizer,
                              [[n, *job.synonyms.get(n, [])] for n in names], templates).weights
    else:
        weights = text_classifier(clip.model, clip.tokenizer, names, templates, "cpu")
    student = MustModel(clip.model.visual, weights, clip.logit_scale)
    arch = architecture_of(clip.model_cfg, clip.quick_gelu, len(names), clip.logit_scale)
    del clip.model  # the text tower is not needed any more
    _emit(on_event, Status("Scoring the zero-shot and refined zero-shot classifiers"))
    start = starting_classifiers(student, images, scan.files, clip.preprocess, settings, dev,
                                 source=_image_source(settings, clip.preprocess))

    run_dir.mkdir(parents=True, exist_ok=True)
    save_model_weights(run_dir / ZERO_SHOT_FILE, student, extra=start.extra,
                       metadata={"role": "zero-shot"})
    write_json(run_dir / IMAGES_FILE, scan.files)
    job_for_file = TrainJob(images.resolve(), names, job.model, templates,
                            synonyms={n: list(job.synonyms[n]) for n in names
                                      if job.synonyms.get(n)})
    data = new_run_data(job_for_file, settings, architecture=arch, preprocess=clip.preprocess,
                        identity=clip.identity, num_images=len(scan.files),
                        skipped=[{"path": s.path, "reason": s.reason} for s in scan.skipped])
    spe = steps_per_epoch(len(scan.files), settings.batch_size)
    data.update(status="prepared", total_steps=spe * settings.epochs,
                selection=start.selection.to_dict(), start_classifier=start.start,
                refined_anchor=start.refined_anchor, centred_training=start.centred_training)
    run = RunInfo(run_dir, data)
    run.save()
    if settings.preset == "auto" and job.settings is None:
        from must_engine.probe import choose_settings

        _emit(on_event, Status("Probing settings on a subset of the images"))
        choose_settings(run_dir, set(job.overrides), dev.type, on_event=on_event)
        run = open_run(run_dir)
    return run


def _image_source(settings: MustSettings, pp):
    """Images decoded once to what the views need, shared with prediction (same side)."""
    return image_source(CacheSetting.parse(settings.image_cache, settings.image_cache_gb),
                        cache_side(pp.image_size, settings.strong_scale_min))


def _rank_batch(global_batch: int, world_size: int) -> int:
    """Each process's share of the global batch, which a resumed run keeps whatever the
    process count (the learning rate and the schedule depend on it)."""
    if global_batch % world_size:
        raise RunError(f"The batch of {global_batch} images does not split evenly over "
                       f"{world_size} processes; use a process count that divides it.")
    return global_batch // world_size


def accumulation_passes(rank_batch: int, limit: int) -> int:
    """The fewest passes that split ``rank_batch`` evenly into parts of at most ``limit``."""
    limit = max(1, limit)
    return next(k for k in range(1, rank_batch + 1)
                if rank_batch % k == 0 and rank_batch // k <= limit)


def mask_spec(image_size: int, patch_size: int, settings: MustSettings) -> MaskSpec:
    """The run's block masks; ``mask_patch_size`` 0 means chosen from the model."""
    block = settings.mask_patch_size or choose_mask_patch_size(image_size, patch_size)
    return MaskSpec(image_size, patch_size, block, settings.mask_ratio)


def _precision(settings: MustSettings, device: torch.device) -> torch.dtype | None:
    p = settings.precision
    if p == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[p]


class Trainer:
    """Trains (or resumes) the run in ``run_dir``. Create it on the thread that will train."""

    def __init__(self, run_dir: str | Path, *, device: str | None = None,
                 distributed: Distributed | None = None, max_process_batch: int = 0):
        # Under torchrun: one of several data-parallel processes; rank 0 alone writes files.
        self.dist = distributed
        self.is_main = distributed is None or distributed.is_main
        self.info = open_run(run_dir)
        if not (self.info.path / ZERO_SHOT_FILE).is_file():
            raise RunError(f"{run_dir} has no starting model ({ZERO_SHOT_FILE}); prepare it again.")
        self.settings = self.info.settings
        if device is not None:
            self.settings.device = device
        self.device = resolve_device(self.settings.device)
        if distributed is not None:
            self.device = distributed.device_for(self.device)
        run_labels = read_run_labels(self.info.path, self.info.class_names)
        self.files = training_files(self.info.image_files(), run_labels)
        self.root = self.info.images_root
        missing = [f for f in self.files[:50] if not (self.root / f).exists()]
        if missing:
            raise RunError(f"The image folder {self.root} has changed ({missing[0]} is gone); "
                           "point the run at the original folder or start a new run.")
        s = self.settings
        self.num_classes = len(self.info.class_names)
        # Settings written by hand may ask for more images than the folder has: train with the
        # folder's size, and scale the learning rate by that batch, not the asked one.
        s.batch_size = min(s.batch_size, len(self.files))
        self.batch_size = s.batch_size
        self.steps_per_epoch = steps_per_epoch(len(self.files), self.batch_size)
        self.total_steps = self.steps_per_epoch * s.epochs
        self.amp_dtype = _precision(s, self.device)
        self.fixed_labels = FixedLabels(run_labels, self.files, self.device)
        self.watch = CollapseWatch(self.info.class_names)
        self.learning_watch = NoConfidentLabelsWatch(self.settings.conf_threshold)

        student = must_model_from_config(self.info.architecture)
        extra = load_model_weights(self.info.path / ZERO_SHOT_FILE, student)
        # the head that shares the pseudo-labels (refined_pseudo_labels): refined zero-shot to
        # start, the refined teacher after each epoch (None in runs made before it existed)
        self.refined_head = extra["refined_classifier"].float().to(self.device) \
            if "refined_classifier" in extra else None
        if "start_classifier" in extra:
            with torch.no_grad():
                student.classifier.copy_(extra["start_classifier"])
        # the run trains on centred embeddings where the centred zero-shot classifier scored
        # above zero-shot (settings.center; label_free.starting_classifiers)
        if self.info.data.get("centred_training") and "center" in extra:
            with torch.no_grad():
                student.center.copy_(extra["center"])
        self.student = student.to(self.device).train()
        self.teacher = EmaTeacher(self.student)
        layers = len(self.student.visual.transformer.resblocks)
        self.optimizer = build_optimizer(self.student, lr=s.lr(), weight_decay=s.weight_decay,
                                         layer_decay=s.layer_decay, num_layers=layers,
                                         device=self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.fair = FairnessLoss(self.num_classes, s.fair_running_average_classes,
                                 gather=distributed.gather if distributed else None)
        # Per-class pseudo-label thresholds (threshold_mode); None: conf_threshold, as published.
        self.thresholds = None
        if s.threshold_mode == "adaptive":
            self.thresholds = AdaptiveThreshold(self.num_classes, s.threshold_momentum,
                                                self.device)
        elif s.threshold_mode == "quantile":
            window = max(self.batch_size, min(self.steps_per_epoch * self.batch_size,
                                              QUANTILE_WINDOW))
            self.thresholds = QuantileThreshold(self.num_classes, s.threshold_share, window,
                                                s.conf_threshold, self.device)
        pp = self.info.preprocess
        self.mask_spec = mask_spec(pp.image_size, self.student.patch_size, s)
        self.dataset = TwoViewDataset(self.root, self.files, pp, seed=s.seed,
                                      student_view=s.student_view, randaugment=s.randaugment,
                                      scale_min=s.strong_scale_min,
                                      source=_image_source(s, pp))
        self.loader_plan = loader_plan(self.device, s.num_workers)
        self.workers = self.loader_plan.workers
        # One loader for the whole run: worker processes start once, not every epoch.
        self.sampler = EpochSampler()
        self.rank_batch = self.batch_size
        self.ddp = None
        if distributed is not None:
            self.rank_batch = _rank_batch(self.batch_size, distributed.world_size)
            self.ddp = distributed.wrap(self.student, self.device)
        # The most images one process has put through the model at once in this run (its
        # first session's share): a resume on fewer processes keeps the global batch by
        # accumulating gradients over passes of at most that many.
        limit = max_process_batch or int(self.info.data.get("process_batch") or
                                         self.rank_batch)
        self.info.data.setdefault("process_batch", min(limit, self.rank_batch))
        self.accumulation = accumulation_passes(self.rank_batch, limit)
        self.micro_batch = self.rank_batch // self.accumulation
        self.loader = self._new_loader()
        self.log_every = s.log_every or (10 if self.device.type == "cuda" else 1)
        self.step = 0
        self._reset_epoch_stats()
        n = len(self.files)
        self.last_label = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self.last_confidence = torch.zeros(n, device=self.device)
        # Files that failed to load during training: path -> reason (kept in run.json).
        self.unreadable: dict[str, str] = {
            r["path"]: r["reason"] for r in self.info.data.get("data", {}).get(
                "skipped_in_training", [])}
        # scored images are indices into the run's full image list (before any exclusions)
        self.scorer = RunScorer(self.info.path, self.info.image_files(), self.root, pp, s,
                                self.info.data.get("selection"), extra, self.device,
                                self._autocast, source=self.dataset.source)
        self.kept_events: list[Event] = []
        if (self.info.path / CHECKPOINT_FILE).is_file():
            self._load_checkpoint()
            # A resume may change the weight decay; the loaded groups carry the saved one.
            fresh = param_groups(self.student, weight_decay=s.weight_decay,
                                 layer_decay=s.layer_decay, num_layers=layers)
            for group, want in zip(self.optimizer.param_groups, fresh, strict=True):
                group["weight_decay"] = want["weight_decay"]
        # Only what run() keeps of the log: epochs after the checkpoint are done again and
        # must count once (a death during the epoch-end scoring left one in the log).
        self.watch.replay(self.info.path / METRICS_FILE, self._kept_log_bytes())

    # ---- state -------------------------------------------------------------------------
    def _reset_epoch_stats(self) -> None:
        d = self.device
        self.ep_counts = torch.zeros(self.num_classes, dtype=torch.long, device=d)
        self.ep_confident = torch.zeros(self.num_classes, dtype=torch.long, device=d)
        self.ep_hist = torch.zeros(CONFIDENCE_BINS, dtype=torch.long, device=d)
        self.ep_conf_sum = torch.zeros((), device=d)
        self.ep_seconds = 0.0

    def _checkpoint_state(self, log_bytes: int | None = None) -> dict:
        return {
            "format": 1,
            "step": self.step,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "fair": self.fair.state_dict(),
            "epoch_stats": {
                "counts": self.ep_counts, "confident": self.ep_confident, "hist": self.ep_hist,
                "conf_sum": self.ep_conf_sum, "seconds": self.ep_seconds,
            },
            "last_label": self.last_label,
            "last_confidence": self.last_confidence,
            # The scores of the epochs this checkpoint has trained: run.json is written after
            # it, and a resume must not lose an epoch's candidate if that write failed.
            "selection": self.scorer.selection.to_dict(),
            # Where the event log ends with this checkpoint's line, for the same reason: a
            # resume cuts the log back to it (None: a process that writes no log).
            "metrics_bytes": log_bytes,
            **({"refined_head": self.refined_head} if self.refined_head is not None else {}),
            **({"thresholds": self.thresholds.state_dict()}
               if self.thresholds is not None else {}),
        }

    def _record_unreadable(self) -> None:
        self.info.data.setdefault("data", {})["skipped_in_training"] = [
            {"path": f, "reason": r} for f, r in self.unreadable.items()]

    def save_checkpoint(self, log_bytes: int | None = None) -> Path:
        path = self.info.path / CHECKPOINT_FILE
        if not self.is_main:
            return path
        state = self._checkpoint_state(log_bytes)
        atomic_write(path, lambda p: _torch_save(state, p))
        self.info.data.update(step=self.step, total_steps=self.total_steps)
        self._record_unreadable()
        self.info.save()
        return path

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.info.path / CHECKPOINT_FILE, map_location=self.device,
                               weights_only=True)
        except Exception as exc:  # a damaged file: say so instead of a pickle traceback
            raise RunError(f"The checkpoint in {self.info.path} cannot be read ({exc}); delete "
                           f"{CHECKPOINT_FILE} to start this run over.") from exc
        self.step = int(state["step"])
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when saved without loss scaling (precision may change)
            self.scaler.load_state_dict(state["scaler"])
        self.fair.load_state_dict(state["fair"])
        st = state["epoch_stats"]
        self.ep_counts, self.ep_confident, self.ep_hist = st["counts"], st["confident"], st["hist"]
        self.ep_conf_sum, self.ep_seconds = st["conf_sum"], float(st["seconds"])
        self.last_label = state["last_label"]
        self.last_confidence = state["last_confidence"]
        if "selection" in state:
            self.scorer.selection = KeepBest.from_dict(state["selection"])
            self.scorer.selection.mode = self.settings.keep
            self.info.data["selection"] = self.scorer.selection.to_dict()
        if state.get("metrics_bytes") is not None:  # older checkpoints: run.json's
            self.info.data["metrics_bytes"] = int(state["metrics_bytes"])
        if "refined_head" in state:  # absent from checkpoints made before it existed
            self.refined_head = state["refined_head"]
        if self.thresholds is not None and "thresholds" in state:
            self.thresholds.load_state_dict(state["thresholds"])

    # ---- training ----------------------------------------------------------------------
    def _note_unreadable(self, index: torch.Tensor, reasons) -> tuple[torch.Tensor,
                                                                      list[RunWarning]]:
        """[B] bool, False for the images the loader could not read, and a warning for each
        newly broken file; those files are recorded (path and reason) in run.json, and get
        no pseudo-label."""
        valid = torch.tensor([not r for r in reasons], dtype=torch.bool)
        news = []
        for i, reason in zip(index.tolist(), reasons, strict=True):
            if reason and self.files[i] not in self.unreadable:
                self.unreadable[self.files[i]] = reason
                news.append(RunWarning(
                    "unreadable_image", f"{self.files[i]} {reason}; it is left out of training.",
                    "Check the file, or restore it from a copy; the run goes on without it.",
                    step=self.step))
        return valid, news

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _teacher_logits(self, weak: torch.Tensor) -> torch.Tensor:
        """The teacher's pseudo-label logits; with ``refined_pseudo_labels`` > 0, the log of
        its probabilities mixed with those of the refined head on the teacher's features."""
        share = self.settings.refined_pseudo_labels
        teacher = self.teacher.module
        if share <= 0 or self.refined_head is None:
            return teacher(weak).float()
        emb = teacher.embed(weak).float()  # normalised, and centred when the run centres
        probs = (teacher.logit_scale * emb @ teacher.classifier.float()).softmax(dim=-1)
        refined = (teacher.logit_scale * emb @ self.refined_head).softmax(dim=-1)
        return ((1 - share) * probs + share * refined).clamp_min(1e-12).log()

    def _update_refined_head(self) -> None:
        """After an epoch: the scorer's refinement of the teacher's head becomes the head that
        shares the pseudo-labels (on every process: only the main one scores)."""
        head = self.scorer.last_refined_head if self.is_main else None
        head = self.refined_head if head is None else head.float().to(self.device)
        if self.dist is not None:
            head = self.dist.broadcast_(head.clone())
        self.refined_head = head

    def train_step(self, weak: torch.Tensor, student_view: torch.Tensor,
                   index: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step; returns the step's metrics as one tensor on the device.

        ``valid`` [B] bool marks the images that could be read; the others (zeros) take part
        in no loss and get no pseudo-label. Nothing here reads a value back from the device.
        """
        s = self.settings
        step = self.step
        if step % self.steps_per_epoch == 0:
            self.fair.reset()  # the running class prior starts afresh each epoch (reference)
        lr = cosine_lr(step, self.total_steps, s.lr(), s.final_lr())
        set_lr(self.optimizer, lr)
        decay = ema_decay(step, s.ema_decay_init, s.ema_decay_final, s.ema_warm_it)
        weak = weak.to(self.device, non_blocking=True)
        student_view = student_view.to(self.device, non_blocking=True)
        index = index.to(self.device, non_blocking=True)
        batch = weak.shape[0]
        if valid is None:
            valid = torch.ones(batch, dtype=torch.bool)
        valid = valid.to(self.device, non_blocking=True)

        mask = None
        if s.uses_mask:
            g = torch.Generator().manual_seed(mix_seed(s.seed, step, 0x3A5C))
            if self.dist is None:
                mask = sample_block_masks(self.mask_spec, batch, g)
            else:  # this rank's rows of the global batch's masks, as one process draws them
                lo = self.dist.rank * batch
                mask = sample_block_masks(self.mask_spec, self.batch_size, g)[lo:lo + batch]
            mask = mask.to(self.device, non_blocking=True)

        # The teacher runs in fp32 outside autocast, as in the reference code: at a logit
        # scale of 100, bf16 logits moved confidences by up to 0.084 and flipped argmaxes.
        with torch.no_grad():
            teacher_logits = self._teacher_logits(weak)
        threshold = s.conf_threshold
        # Per-class thresholds: updated with the global batch's statistics first.
        if isinstance(self.thresholds, AdaptiveThreshold):
            self.thresholds.update(teacher_logits.softmax(dim=-1), valid,
                                   reduce=self.dist.sum_ if self.dist is not None else None)
            threshold = self.thresholds.thresholds()
        elif isinstance(self.thresholds, QuantileThreshold):
            conf_all, labels_all = teacher_logits.softmax(dim=-1).max(dim=-1)
            valid_all = valid
            if self.dist is not None:
                conf_all, labels_all, valid_all = (self.dist.gather_values(t) for t in
                                                   (conf_all, labels_all, valid))
            self.thresholds.update(conf_all, labels_all, valid_all)
            threshold = self.thresholds.thresholds()
        labels, confidence, confident = pseudo_labels(teacher_logits, threshold)
        confident = confident & valid
        st_labels, st_weight = self.fixed_labels.apply(index, labels, confident)
        st_weight = st_weight * valid  # an unreadable image (zeros) teaches nothing

        reconstruct = mask is not None and s.mim_weight > 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.accumulation == 1:
            loss_st, loss_fair, loss_mim, loss_align, total = self._losses(
                student_view, mask, st_labels, st_weight, valid, reconstruct)
            self.scaler.scale(total).backward()
        else:
            loss_st, loss_fair, loss_mim, loss_align, total = self._accumulate(
                student_view, mask, st_labels, st_weight, valid, reconstruct)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.teacher.update(self.student, decay)

        if self.dist is not None:  # statistics of the global batch, the same on every rank
            index, labels, confidence, confident, valid = (
                self.dist.gather_values(t) for t in (index, labels, confidence, confident, valid))
        with torch.no_grad():
            w = valid.long()
            # scatter_add, not bincount or boolean indexing: those read sizes back to the host.
            self.ep_counts.scatter_add_(0, labels, w)
            self.ep_confident.scatter_add_(0, labels, confident.long())
            bins = (confidence * CONFIDENCE_BINS).long().clamp(0, CONFIDENCE_BINS - 1)
            self.ep_hist.scatter_add_(0, bins, w)
            self.ep_conf_sum += (confidence * valid).sum()
            self.last_label.index_copy_(
                0, index, torch.where(valid, labels, self.last_label[index]))
            self.last_confidence.index_copy_(
                0, index, torch.where(valid, confidence, self.last_confidence[index]))
            seen = valid.sum().clamp(min=1)
            metrics = torch.stack([
                loss_st.detach().float(), loss_fair.detach().float(), loss_mim.detach().float(),
                loss_align.detach().float(), total.detach().float(),
                confident.sum() / seen, (confidence * valid).sum() / seen,
            ])
            if self.dist is not None:
                metrics = self.dist.mean(metrics)
        self.step += 1
        return metrics

    def run(self, control: TrainControl | None = None) -> Iterator[Event]:
        """Train to the end, or until ``control`` asks to stop; yields events."""
        control = control or TrainControl()
        if self.is_main:  # requests from another program (the app's torchrun child)
            control.watch(self.info.path / CONTROL_FILE)
        s = self.settings
        started = time.perf_counter()
        self.info.data["status"] = "running"
        if self.is_main:
            self.info.save()
        log = (open_event_log(self.info.path / METRICS_FILE,  # noqa: SIM115
                              self._kept_log_bytes())
               if self.is_main else None)

        def checkpoint(epoch: int) -> CheckpointSaved:
            """Save the checkpoint, with where the log will end once its event is written."""
            event = CheckpointSaved(str(self.info.path / CHECKPOINT_FILE), self.step, epoch)
            ends = (log.tell() + len(_log_line(event).encode("utf-8"))
                    if log is not None else None)
            self.save_checkpoint(ends)
            if self.is_main:
                self.scorer.prune()  # the checkpoint now names the kept teacher
            return event

        def out(event: Event) -> Event:
            if log is not None:
                log.write(_log_line(event))
                if isinstance(event, CheckpointSaved):  # where a resume from it trims the log
                    self.info.data["metrics_bytes"] = log.tell()
                    self.info.save()
            return event

        try:
            yield from (out(e) for e in self._process_count_note())
            yield out(RunStarted(str(self.info.path), s.epochs, self.steps_per_epoch, self.step,
                                 len(self.files), self.info.class_names, str(self.device)))
            if self.step == 0:
                for event in self.scorer.starting_events() + probe_events(self.info.data,
                                                                          str(self.device)):
                    yield out(event)
            pending: list[tuple[int, torch.Tensor]] = []
            window_start = time.perf_counter()
            step_seconds = None
            while self.step < self.total_steps:
                epoch = self.step // self.steps_per_epoch
                in_epoch = self.step % self.steps_per_epoch
                order = epoch_order(len(self.files), s.seed, epoch)
                order = order[: self.steps_per_epoch * self.batch_size]
                self.dataset.set_epoch(epoch)
                order = order[in_epoch * self.batch_size:]
                if self.dist is not None:
                    order = self.dist.shard_batches(order, self.batch_size)
                self.sampler.set_order(epoch, order)
                loader = self.loader
                epoch_t0 = time.perf_counter()
                for weak, strong, index, reasons in batches_until_stop(loader, control):
                    pause, stop = self._requests(control)
                    if pause and not stop:
                        yield from self._flush(pending, window_start, step_seconds, out)
                        pending = []
                        yield out(Paused(self.step))
                        pause_t0 = time.perf_counter()
                        stop = self._wait_while_paused(control)
                        paused_for = time.perf_counter() - pause_t0
                        window_start += paused_for
                        epoch_t0 += paused_for
                        yield out(Resumed(self.step))
                    if stop:
                        yield from self._flush(pending, window_start, step_seconds, out)
                        self.ep_seconds += time.perf_counter() - epoch_t0
                        self.check_weights_finite()
                        yield out(checkpoint(epoch))
                        self.info.data["status"] = "stopped"
                        if self.is_main:
                            self.info.save()
                        self._save_pseudo_labels()
                        yield out(RunFinished(str(self.info.path), self.step, self.total_steps,
                                              True, time.perf_counter() - started))
                        return
                    valid, news = self._note_unreadable(index, reasons)
                    for warning in news:
                        yield out(warning)
                    pending.append((self.step, self.train_step(weak, strong, index, valid)))
                    end_of_epoch = self.step % self.steps_per_epoch == 0
                    if len(pending) >= self.log_every or end_of_epoch:
                        now = time.perf_counter()
                        per_step = (now - window_start) / len(pending)
                        step_seconds = per_step if step_seconds is None else (
                            0.7 * step_seconds + 0.3 * per_step)
                        yield from self._flush(pending, window_start, step_seconds, out)
                        pending = []
                        window_start = time.perf_counter()
                    if end_of_epoch:
                        break
                self.ep_seconds += time.perf_counter() - epoch_t0
                summary = self._epoch_summary(epoch)
                yield out(summary)
                for warning in (*self.watch.update(summary, self.step),
                                *self.learning_watch.update(summary, self.step)):
                    yield out(warning)
                scored = self.scorer.score_teacher(self.teacher.module, epoch, self.step,
                                                   final=self.step >= self.total_steps) \
                    if self.is_main else []  # only the main process saves what is kept
                for event in scored:
                    yield out(event)
                if s.refined_pseudo_labels > 0 and self.refined_head is not None:
                    self._update_refined_head()
                self.info.data["selection"] = self.scorer.selection.to_dict()
                self._reset_epoch_stats()
                self._save_pseudo_labels()
                self.check_weights_finite()
                if self.step < self.total_steps:
                    yield out(checkpoint(epoch))
            self.check_weights_finite()
            model_path = self._finish()
            for event in self.kept_events:
                yield out(event)
            yield out(RunFinished(str(self.info.path), self.step, self.total_steps, False,
                                  time.perf_counter() - started, str(model_path)))
        except BaseException:
            if self.info.data.get("status") == "running" and self.is_main:
                self.info.data["status"] = "failed" if self.step == 0 else "stopped"
                with contextlib.suppress(Exception):
                    self.info.save()
            raise
        finally:
            control.unwatch()
            if log is not None:
                log.close()
            # The persistent workers belong to the old loader's iterator: dropping it ends
            # them now, not whenever this Trainer is collected (the app may keep it).
            self.loader = self._new_loader()

    def _kept_log_bytes(self) -> int | None:
        """How much of the event log a run from the current step keeps (None: all of it,
        for runs that did not record it)."""
        return self.info.data.get("metrics_bytes") if self.step else 0

    def _new_loader(self):
        """One loader for the whole run: its worker processes start once, not every epoch."""
        return make_loader(self.dataset, self.sampler, self.rank_batch, self.loader_plan,
                           drop_last=True)

    def check_weights_finite(self) -> None:
        """A non-finite weight can hide behind a finite loss (a term switched off, a batch
        with no confident label); never checkpoint or keep such a model."""
        for name, module in (("student", self.student), ("teacher", self.teacher.module)):
            for pname, p in module.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise TrainingError(
                        f"The {name} model's weights became non-finite ({pname}) at step "
                        f"{self.step}; lower the learning rate or weight decay, or set "
                        "precision to fp32, and resume.")

    def _flush(self, pending, window_start, step_seconds, out) -> Iterator[Event]:
        """Read the pending steps' metrics from the device in one transfer."""
        if not pending:
            return
        values = torch.stack([m for _, m in pending]).cpu().tolist()
        s = self.settings
        elapsed = max(1e-9, time.perf_counter() - window_start)
        ips = len(pending) * self.batch_size / elapsed
        per_step = step_seconds if step_seconds is not None else elapsed / len(pending)
        for (step, _), row in zip(pending, values, strict=True):
            if not all(math.isfinite(v) for v in row[:5]):
                raise TrainingError(f"The loss became {row[4]} at step {step + 1}; lower the "
                                    "learning rate, or set precision to fp32, and resume.")
            named = dict(zip(METRIC_NAMES, row, strict=True))
            lr = cosine_lr(step, self.total_steps, s.lr(), s.final_lr())
            decay = ema_decay(step, s.ema_decay_init, s.ema_decay_final, s.ema_warm_it)
            yield out(StepMetrics(
                step=step, epoch=step // self.steps_per_epoch,
                epoch_step=step % self.steps_per_epoch, steps_per_epoch=self.steps_per_epoch,
                total_steps=self.total_steps, lr=lr, ema_decay=decay,
                images_per_second=ips,
                eta_seconds=max(0.0, (self.total_steps - step - 1) * per_step), **named))

    def _epoch_summary(self, epoch: int) -> EpochSummary:
        counts = self.ep_counts.cpu().tolist()
        seen = max(1, sum(counts))
        return EpochSummary(
            epoch=epoch, epochs=self.settings.epochs, pseudo_label_counts=counts,
            confident_counts=self.ep_confident.cpu().tolist(),
            confidence_bin_edges=[i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)],
            confidence_histogram=self.ep_hist.cpu().tolist(),
            mean_confidence=float(self.ep_conf_sum.item()) / seen,
            confident_fraction=sum(self.ep_confident.cpu().tolist()) / seen,
            seconds=self.ep_seconds)

    def _losses(self, view, mask, st_labels, st_weight, valid, reconstruct, *,
                forward=None, totals=None, rest=None):
        """(self-training, fairness, MIM, alignment, total) of a forward on ``view``.

        ``totals`` (gradient accumulation): the step's denominators over every pass and
        process, so the passes' losses add up to the global batch's means; ``rest``: the
        fairness term's sums over the other passes (see ``FairnessLoss``)."""
        s = self.settings
        zero = torch.zeros((), device=self.device)
        forward = forward or (self.student.forward_train if self.ddp is None else self.ddp)
        with self._autocast():
            out = forward(view, mask, reconstruct=reconstruct, patch_norm=s.patch_norm)
            loss_st = self_training_loss(out.logits, st_labels, st_weight)
            loss_fair = (self.fair(out.logits, valid, rest=rest) if s.fair_weight > 0
                         else zero)
            loss_mim = zero
            loss_align = zero
            if reconstruct:
                pixels = patch_mask_to_pixels(mask, self.student.patch_size)
                loss_mim = masked_image_modelling_loss(out.reconstruction, view, pixels, valid)
            if mask is not None and s.align_weight > 0:
                loss_align = global_local_alignment_loss(
                    out.patch_embeddings, out.cls_embedding, mask,
                    detach_cls=s.align_cls_gradient == "stop", valid=valid)
            if totals is not None:
                counts = self._loss_counts(st_weight, mask, valid, reconstruct)
                world = 1 if self.dist is None else self.dist.world_size
                # DDP averages the ranks' gradients: hence x world
                f = counts.clamp(min=1) * world / totals.clamp(min=1)
                loss_st, loss_mim, loss_align = loss_st * f[0], loss_mim * f[1], loss_align * f[2]
            elif self.dist is not None:  # means over the global batch, as one process takes
                counts = self._loss_counts(st_weight, mask, valid, reconstruct)
                loss_st, loss_mim, loss_align = self.dist.global_means(
                    (loss_st, counts[0]), (loss_mim, counts[1]), (loss_align, counts[2]))
            total = (loss_st + s.fair_weight * loss_fair + s.mim_weight * loss_mim
                     + s.align_weight * loss_align)
        return loss_st, loss_fair, loss_mim, loss_align, total

    def _loss_counts(self, st_weight, mask, valid, reconstruct) -> torch.Tensor:
        """[3] the losses' own denominators: confident samples, masked pixels x channels,
        masked patches."""
        n = torch.zeros((), device=self.device)
        mim_n = align_n = n
        if mask is not None:
            per_sample = mask.flatten(1).float().sum(dim=1) * valid
            align_n = per_sample.sum()
            # masked pixels x channels, as the MIM loss divides by
            mim_n = align_n * self.student.patch_size ** 2 * 3 if reconstruct else n
        return torch.stack([st_weight.float().sum(), mim_n, align_n])

    def _accumulate(self, view, mask, st_labels, st_weight, valid, reconstruct):
        """One step in ``self.accumulation`` passes, each holding at most the per-process
        batch the run was sized for; gradients add up to one pass over the whole batch.

        The losses are divided by the whole step's denominators; the fairness term, a
        function of the batch's mean prediction, gets the other passes' predictions from a
        first pass without gradient, so each pass gives exactly its share of the gradient
        (an extra forward, paid only while accumulating)."""
        s = self.settings
        parts = [slice(i, i + self.micro_batch)
                 for i in range(0, view.shape[0], self.micro_batch)]
        totals = self._loss_counts(st_weight, mask, valid, reconstruct)
        if self.dist is not None:
            self.dist.sum_(totals)
        rests = [None] * len(parts)
        if s.fair_weight > 0:
            sums, counts = [], []
            with torch.no_grad(), self._autocast():
                for p in parts:
                    logits = self.student.forward_train(
                        view[p], None if mask is None else mask[p], reconstruct=False,
                        patch_norm=s.patch_norm).logits
                    w = valid[p].float()
                    sums.append((logits.float().softmax(dim=-1) * w.unsqueeze(1)).sum(dim=0))
                    counts.append(w.sum())
            sums, counts = torch.stack(sums), torch.stack(counts)
            if self.dist is not None:  # the other processes' passes count too
                self.dist.sum_(sums)
                self.dist.sum_(counts)
            rests = [(sums.sum(dim=0) - sums[j], counts.sum() - counts[j])
                     for j in range(len(parts))]
        previous = self.fair.previous
        acc = None
        for j, p in enumerate(parts):
            self.fair.previous = previous  # each pass sees the step's running prior
            last = j == len(parts) - 1
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            with sync:
                losses = self._losses(view[p], None if mask is None else mask[p],
                                      st_labels[p], st_weight[p], valid[p], reconstruct,
                                      totals=totals, rest=rests[j])
                self.scaler.scale(losses[-1]).backward()
            values = [t.detach() for t in losses]
            acc = values if acc is None else [a + v for a, v in zip(acc, values, strict=True)]
        loss_st, _fair, loss_mim, loss_align, _total = acc
        loss_fair = values[1]  # the same value in every pass: the whole batch's
        total = (loss_st + s.fair_weight * loss_fair + s.mim_weight * loss_mim
                 + s.align_weight * loss_align)
        return loss_st, loss_fair, loss_mim, loss_align, total

    def _process_count_note(self) -> list[Event]:
        """Record how many processes train; a resume on another count says so."""
        now = 1 if self.dist is None else self.dist.world_size
        before = int(self.info.data.get("processes", 1))
        if now != before or now > 1:  # a one-process run's run.json stays as it was
            self.info.data["processes"] = now
        if self.accumulation > 1:
            self.info.data["accumulation"] = self.accumulation
        else:
            self.info.data.pop("accumulation", None)
        if self.step == 0 or before == now:
            return []
        passes = (f", in {self.accumulation} passes of {self.micro_batch} with gradient "
                  "accumulation, no more at once than before" if self.accumulation > 1 else "")
        return [Status(f"Resuming a run trained by {before} process(es) with {now}: the "
                       f"global batch stays {self.batch_size} images ({self.rank_batch} per "
                       f"process{passes}), so the schedule and learning rate are unchanged.")]

    def _requests(self, control: TrainControl) -> tuple[bool, bool]:
        """(pause, stop) before this step. Under torchrun every rank gets the same answer
        (a request on any rank, e.g. rank 0's control file, counts for all), so all pause
        and stop at the same step; otherwise the others would wait in a collective."""
        if self.dist is None:
            return control.pause_requested, control.stop_requested
        pause, stop = self.dist.flags([control.pause_requested, control.stop_requested],
                                      self.device)
        return pause, stop

    def _wait_while_paused(self, control: TrainControl) -> bool:
        """Hold until resumed or stopped; True when stopped."""
        if self.dist is None:
            control.wait_until_resumed()
            return control.stop_requested
        # Every rank asks again every poll: a collective left waiting through a long pause
        # would hit the process group's timeout.
        while True:
            time.sleep(POLL_SECONDS)
            pause, stop = self._requests(control)
            if stop or not pause:
                return stop

    def _save_pseudo_labels(self) -> None:
        if not self.is_main:
            return
        labels = self.last_label.cpu().tolist()
        conf = self.last_confidence.cpu().tolist()
        thr = self.settings.conf_threshold
        per_class = (self.thresholds.thresholds().cpu().tolist()
                     if self.thresholds is not None else [thr] * self.num_classes)
        # A file that could not be read during training has no pseudo-label.
        rows = [{"path": f, "label": lab, "confidence": c,
                 "passed": lab >= 0 and c > per_class[lab]}
                for f, lab, c in zip(self.files, labels, conf, strict=True)
                if f not in self.unreadable]
        extra = ({"class_thresholds": per_class, "threshold_mode": self.settings.threshold_mode}
                 if self.thresholds is not None else {})
        write_json(self.info.path / PSEUDO_FILE, {"threshold": thr, "step": self.step,
                                                  **extra, "images": rows})

    def _finish(self) -> Path:
        """Save the kept classifier (the best by the label-free measure, see selection.py)
        as the adapted model."""
        path = self.info.path / MODEL_FILE
        if not self.is_main:
            return path
        self._record_unreadable()
        model, self.kept_events = self.scorer.kept_model(self.teacher.module,
                                                         self.info.architecture)
        save_model_weights(path, model, metadata={"role": "adapted", "step": str(self.step),
                                                  "kept": self.scorer.selection.best.label
                                                  if self.scorer.selection.candidates else ""})
        self.info.data.update(status="finished", step=self.step, total_steps=self.total_steps,
                              selection=self.scorer.selection.to_dict())
        self.info.save()
        (self.info.path / CHECKPOINT_FILE).unlink(missing_ok=True)
        self.scorer.cleanup()
        return path


def train(job: TrainJob, run_dir: str | Path, *, control: TrainControl | None = None,
          resume: bool = False, device: str | None = None,
          on_event: EventSink | None = None) -> Iterator[Event]:
    """Prepare (or resume) a run and train it: the one call the CLI and the app make."""
    run_dir = Path(run_dir)
    env = env_from_launcher()
    if env is None:
        with run_lock(run_dir):
            _prepare_or_check(job, run_dir, resume=resume, device=device, on_event=on_event)
            trainer = Trainer(run_dir, device=device)
            yield from trainer.run(control)
        return
    # Under torchrun: rank 0 prepares the run folder while the others wait for it; only
    # rank 0's events come out (the others train silently alongside). Rank 0 holds the lock.
    group = start_distributed(env)
    try:
        with run_lock(run_dir) if group.is_main else contextlib.nullcontext():
            if group.is_main:
                _prepare_or_check(job, run_dir, resume=resume, device=device,
                                  on_event=on_event)
            group.barrier()
            trainer = Trainer(run_dir, device=device, distributed=group)
            events = trainer.run(control)
            if group.is_main:
                yield from events
            else:
                for _ in events:
                    pass
    finally:
        group.close()


def _prepare_or_check(job: TrainJob, run_dir: Path, *, resume: bool, device: str | None,
                      on_event: EventSink | None) -> None:
    if resume and (run_dir / "run.json").exists():
        info = open_run(run_dir)
        if info.status == "finished":
            raise RunError(f"The run in {run_dir} has already finished; start a new one.")
        overrides = job.settings.to_dict() if job.settings is not None else job.overrides
        apply_resume(info, overrides, job)
    else:
        prepare_run(job, run_dir, on_event=on_event, device=device)
