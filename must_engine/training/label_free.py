"""The label-free side of a run: the starting classifiers (zero-shot and refined zero-shot),
their scores, the teacher's score at each epoch's end, and the classifier the run keeps.

``starting_classifiers`` runs once when a run is prepared; ``RunScorer`` lives in the
trainer and is called at each epoch's end and when the run finishes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from must_engine.classifier_init import refine_prototypes, target_prototypes
from must_engine.events import ClassifierKept, ClassifierScored, RunWarning
from must_engine.features import embed_files, image_subset
from must_engine.models.must_model import MustModel, must_model_from_config
from must_engine.quality import classifier_signals, quality_score
from must_engine.selection import (
    CENTRED,
    REFINED,
    REFINED_TEACHER,
    TEACHER,
    TRAINED_KINDS,
    ZERO_SHOT,
    KeepBest,
    ScoredCandidate,
)
from must_engine.settings import MustSettings
from must_engine.weights import load_model_weights, read_weights, save_model_weights

BEST_FILE = "best_teacher.safetensors"  # one file for every step, as runs made it before


def best_file(step: int) -> str:
    """The best teacher's weights are named by the step they hold: they are saved before the
    checkpoint records the selection, and a run that dies in between and redoes the epoch
    must not leave other weights under the name the selection points to."""
    return f"best_teacher_step{step}.safetensors"


BEST_FILES = "best_teacher_step*.safetensors"  # every step's, for a glob


KEPT_HEAD = "kept_head"  # the refined teacher's head, stored beside the teacher it refines
# Soft k-means needs no more than this many images to place the prototypes.
REFINE_IMAGES = 5000
# Text prototype shares tried by the refinement; the best-scored one is used.
REFINE_ANCHORS = (0.5, 0.3, 0.1)


@dataclass
class StartingClassifiers:
    """What ``prepare_run`` saves beside the zero-shot model and in ``run.json``."""

    extra: dict[str, torch.Tensor]  # tensors stored in zero_shot.safetensors
    selection: KeepBest
    start: str  # which classifier training starts from: "text", "text+target" or "refined"
    refined_anchor: float  # the text prototype's share the refinement used
    centred_training: bool = False  # training subtracts the centre (extra "center")


def score_candidate(kind: str, features: torch.Tensor, classifier: torch.Tensor,
                    logit_scale: float, reference: torch.Tensor, *, epoch: int = -1,
                    step: int = 0) -> ScoredCandidate:
    signals = classifier_signals(features, classifier, logit_scale, reference)
    return ScoredCandidate(kind, round(quality_score(signals), 6), signals.to_dict(), epoch,
                           step)


@torch.no_grad()
def best_refinement(kind: str, feats: torch.Tensor, seed: torch.Tensor, scale: float,
                    score_feats: torch.Tensor, score_reference: torch.Tensor, *, epoch: int = -1,
                    step: int = 0) -> tuple[torch.Tensor, ScoredCandidate, float]:
    """Refine the classifier ``seed`` on ``feats`` with each anchor of ``REFINE_ANCHORS`` (the
    seed's pull is itself chosen by the label-free score) and return the best-scored
    prototypes, their scored candidate and the anchor used."""
    best = None
    for a in REFINE_ANCHORS:
        protos = refine_prototypes(feats, seed, scale, anchor=a)
        cand = score_candidate(kind, score_feats, protos, scale, score_reference,
                               epoch=epoch, step=step)
        if best is None or cand.score > best[1].score:
            best = (protos, cand, a)
    return best


@torch.no_grad()
def starting_classifiers(model: MustModel, root: Path, files: list[str], pp,
                         settings: MustSettings, device, source=None) -> StartingClassifiers:
    """Embed (a sample of) the images once with the zero-shot model, refine the prototypes
    on them, score zero-shot and refined zero-shot, and pick the starting classifier."""
    model = model.to(device).eval()
    refine_idx = image_subset(len(files), REFINE_IMAGES, settings.seed)
    score_idx = image_subset(len(files), settings.score_images, settings.seed)
    feats, decoded = embed_files(model, [root / files[i] for i in refine_idx], pp,
                                 device=device, batch_size=settings.batch_size, source=source)
    feats = feats.cpu()
    if len(feats) == 0:
        raise ValueError("None of the images could be decoded.")
    # row of each decoded image in ``feats``; subsets nest, so every scored image was embedded
    row = {i: r for r, i in enumerate(i for i, ok in zip(refine_idx, decoded.tolist(),
                                                           strict=True) if ok)}
    scored = [i for i in score_idx if i in row]
    reference = feats[[row[i] for i in scored]]
    text = model.classifier.detach().float().cpu()
    scale = float(model.logit_scale)
    refined, ref, anchor = best_refinement(REFINED, feats, text, scale, reference,
                                           reference)
    zero = score_candidate(ZERO_SHOT, reference, text, scale, reference)
    extra = {"refined_classifier": refined, "score_reference": reference,
             "score_indices": torch.tensor(scored, dtype=torch.long)}
    centred_training = False
    if settings.center > 0:
        # Under a shift the image embeddings share an offset; subtracting the folder's mean
        # embedding (a share ``center`` of it) before comparing with the text prototypes is
        # the centred zero-shot classifier, offered like refined zero-shot. Where the score
        # rates it above zero-shot, training uses the same fixed centre (a part of the model
        # from then on, like the head); the zero-shot model itself stays uncentred.
        center = settings.center * feats.mean(dim=0)
        centred = score_candidate(CENTRED, F.normalize(reference - center, dim=-1), text,
                                  scale, reference)
        extra["center"] = center
        centred_training = centred.score > zero.score
    selection = KeepBest(settings.keep)
    selection.offer(zero)
    selection.offer(ref)
    if settings.center > 0:
        selection.offer(centred)
    start = settings.prototype_init
    if start == "auto":
        start = "refined" if ref.score > zero.score else "text"
    if start == "refined":
        extra["start_classifier"] = refined.clone()
    elif start == "text+target":
        extra["start_classifier"] = target_prototypes_from_features(feats, text, scale)
    model.to("cpu")
    return StartingClassifiers(extra, selection, start, anchor, centred_training)


def target_prototypes_from_features(feats: torch.Tensor, text: torch.Tensor,
                                    scale: float) -> torch.Tensor:
    """The half-and-half text + image prototypes of ``classifier_init.target_prototypes``,
    from features already computed."""
    probe = _FeatureModel(text, scale)
    return target_prototypes(probe, [feats])


class _FeatureModel:
    """Duck-types the two things ``target_prototypes`` reads from a model, for features
    that are already embedded."""

    def __init__(self, classifier: torch.Tensor, logit_scale: float):
        self.classifier = classifier
        self.logit_scale = logit_scale

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


class RunScorer:
    """Scores the EMA teacher at each epoch's end, keeps the best-scored classifier's
    weights on disk and builds the model the run hands back."""

    def __init__(self, run_dir: Path, files: list[str], root: Path, pp, settings: MustSettings,
                 selection: dict | None, extra: dict[str, torch.Tensor], device, autocast,
                 source=None):
        self.run_dir = Path(run_dir)
        self.pp = pp
        self.settings = settings
        self.device = device
        self.autocast = autocast
        self.source = source
        self.extra = extra
        self.selection = KeepBest.from_dict(selection) if selection else KeepBest(settings.keep)
        self.selection.mode = settings.keep
        indices = extra.get("score_indices")
        idx = indices.tolist() if indices is not None else image_subset(
            len(files), settings.score_images, settings.seed)
        self.paths = [root / files[i] for i in idx]
        self.reference = extra.get("score_reference")
        # the published behaviour (keep = last) hands back a teacher as trained
        self.refine_teacher = settings.keep == "best" and settings.refined_teacher
        self.last_refined_head: torch.Tensor | None = None  # the latest teacher's, refined

    @property
    def active(self) -> bool:
        return self.reference is not None and len(self.paths) > 0

    def _scored_event(self, cand: ScoredCandidate,
                      best: ScoredCandidate | None = None) -> ClassifierScored:
        best = best or self.selection.best
        zero = self.selection.zero_shot
        return ClassifierScored(kind=cand.kind, label=cand.label, epoch=cand.epoch,
                                step=cand.step, score=cand.score, signals=cand.signals,
                                kept=best.label, kept_score=best.score,
                                zero_shot_score=zero.score if zero else cand.score)

    def starting_events(self) -> list[ClassifierScored]:
        """The scores of the starting classifiers, for the run's event log (each with the
        classifier kept at that point)."""
        replay = KeepBest(self.selection.mode)
        out = []
        for c in self.selection.candidates:
            if c.kind not in TRAINED_KINDS:
                replay.offer(c)
                out.append(self._scored_event(c, replay.best))
        return out

    def score_teacher(self, teacher: MustModel, epoch: int, step: int, *,
                      final: bool = True) -> list:
        """Score the teacher (and, after the last epoch, the refined teacher); save its
        weights when it becomes the kept one. Returns the events to report."""
        if not self.active:
            return []
        feats, decoded = embed_files(teacher, self.paths, self.pp, device=self.device,
                                     batch_size=self.settings.batch_size,
                                     autocast=self.autocast, source=self.source)
        # an image that stopped decoding since the run was prepared drops out of both sides
        reference = self.reference[decoded]
        feats = feats.cpu()
        scale = float(teacher.logit_scale)
        head = teacher.classifier.detach().float().cpu()
        cand = score_candidate(TEACHER, feats, head, scale, reference, epoch=epoch, step=step)
        events = []
        if self.selection.offer(cand):
            save_model_weights(self.run_dir / best_file(step), teacher,
                               metadata={"role": "best-teacher", "epoch": str(epoch)})
        events.append(self._scored_event(cand))
        # Training moves the features; refining the head on them, as refined zero-shot does
        # on the zero-shot features, costs no training. The refinement feeds the next epoch's
        # pseudo-labels (refined_pseudo_labels), and the last teacher's is offered as a
        # candidate. Only the last one: refined mid-run teachers scored in spikes that did not
        # follow accuracy (flowers: kept after epoch 2-3, 2-6 points below the teacher).
        offer = final and self.refine_teacher
        if offer or self.settings.refined_pseudo_labels > 0:
            protos, refined, _ = best_refinement(REFINED_TEACHER, feats, head, scale, feats,
                                                 reference, epoch=epoch, step=step)
            self.last_refined_head = protos
            if offer:
                if self.selection.offer(refined):
                    save_model_weights(self.run_dir / best_file(step), teacher,
                                       extra={KEPT_HEAD: protos},
                                       metadata={"role": "best-teacher", "epoch": str(epoch)})
                events.append(self._scored_event(refined))
        return events

    def kept_model(self, teacher: MustModel, architecture: dict) -> tuple[MustModel, list]:
        """The model to save as the run's result, and the events that explain it."""
        if not self.selection.candidates:
            return teacher, []
        best = self.selection.best
        missing = None
        if best.kind in TRAINED_KINDS:
            last = max((c for c in self.selection.candidates if c.kind == TEACHER),
                       key=lambda c: c.step)
            model = teacher
            path = self._best_path(best)
            if best is not last and path is None:
                # its weights are gone (deleted by hand, or a run from an older version):
                # hand back the last teacher and say so, rather than name one and save another
                missing = best
                self.selection.fall_back_to(
                    last, f"kept {last.label}: the weights of {best.label}, the best-scored "
                          f"classifier ({best.score:.3f}), were missing from the run folder")
                best = last
            elif best is not last:
                model = must_model_from_config(architecture)
                extra = load_model_weights(path, model)
                if best.kind == REFINED_TEACHER:
                    with torch.no_grad():
                        model.classifier.copy_(extra[KEPT_HEAD])
        else:
            from must_engine.runs import ZERO_SHOT_FILE

            model = must_model_from_config(architecture)
            extra = load_model_weights(self.run_dir / ZERO_SHOT_FILE, model)
            with torch.no_grad():
                if best.kind == REFINED:
                    model.classifier.copy_(extra["refined_classifier"])
                elif best.kind == CENTRED:
                    model.center.copy_(extra["center"])
        zero = self.selection.zero_shot
        events: list = [ClassifierKept(kind=best.kind, label=best.label, epoch=best.epoch,
                                       score=best.score,
                                       zero_shot_score=zero.score if zero else best.score,
                                       reason=self.selection.reason())]
        if missing is not None:
            events.append(RunWarning(
                "kept_weights_missing",
                f"The weights of {missing.label}, the best-scored classifier, were missing "
                f"from the run folder, so the run keeps {best.label} instead.",
                "Predictions and exports use that classifier; train again to keep the "
                "best-scored one.", step=best.step))
        warning = self.selection.verdict()
        if warning is not None:
            events.append(RunWarning(
                "below_zero_shot", warning,
                "Check a few predictions by eye; try the refined zero-shot start "
                "(--prototype-init refined), a shorter run or a lower --base-lr.",
                step=best.step))
        return model, events

    def _best_path(self, best: ScoredCandidate) -> Path | None:
        path = self.run_dir / best_file(best.step)
        if path.is_file():
            return path
        legacy = self.run_dir / BEST_FILE  # a run resumed from before the files had steps
        if legacy.is_file() and read_weights(legacy)[1].get("epoch") == str(best.epoch):
            return legacy
        return None

    def prune(self) -> None:
        """Delete the best-teacher files the selection no longer names; call once the
        checkpoint (which records the selection) is written."""
        keep = (best_file(self.selection.best.step) if self.selection.candidates
                and self.selection.best.kind in TRAINED_KINDS else None)
        for path in self.run_dir.glob(BEST_FILES):
            if path.name != keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    def cleanup(self) -> None:
        for path in (self.run_dir / BEST_FILE, *self.run_dir.glob(BEST_FILES)):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
