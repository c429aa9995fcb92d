"""A label-free measure of how good a classifier is on the target images.

Nothing here reads a label. Each signal looks at the classifier's predictions on a fixed
subset of the target images (evaluation view), and at the image features, and maps to [0, 1]
with higher meaning better:

- ``confidence``: mean top probability;
- ``certainty``: 1 - mean prediction entropy / log C;
- ``nuclear``: nuclear norm of the prediction matrix over its upper bound, high when
  predictions are both confident and spread over the classes (Deng et al., 2023);
- ``balance``: entropy of the predicted-class histogram / log C (the fairness prior);
- ``cot``: 1 - the confidence-optimal-transport error estimate against a uniform label
  prior (Lu et al., 2023): the cost of moving the predictions onto one-hot labels with
  equal mass per class;
- ``prototype_agreement``: how often the classifier agrees with the nearest class mean of
  its own features under its own labels (cluster consistency, corrected for chance);
- ``reference_agreement``: the same, but on the *zero-shot* model's features, which
  training does not change: a trained head whose labels no longer follow the pretrained
  feature clusters loses here even when it grows more confident;
- ``separation``: mean margin between an image's own class mean and the nearest other one;
- ``neighbour_agreement``: how often an image's predicted class is the majority of its
  nearest neighbours' (in the classifier's own features), corrected for chance.

ATC (Garg et al., 2022) needs labelled source data to set its threshold, which a user does
not have, so it is not among them. ``quality_score`` combines the signals with the weights in
``ScoreWeights``; how they were chosen is in the README ("Benchmarks").

The score leaves out the signals that grow with confidence (``confidence``, ``certainty``,
``nuclear``, ``cot``): self-training sharpens the teacher's predictions whether or not they
are right, so on the benchmark's shifts they rated every late teacher above a refined
classifier that was more accurate. It keeps what depends on the predicted labels only: their
spread (``balance``) and how well they follow the structure of the features
(``prototype_agreement``, ``neighbour_agreement``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class QualitySignals:
    confidence: float
    certainty: float
    nuclear: float
    balance: float
    cot: float
    prototype_agreement: float
    reference_agreement: float
    separation: float
    neighbour_agreement: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) + 0.0 for k, v in asdict(self).items()}  # no -0.0

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> QualitySignals:
        return cls(**{f.name: float(data[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of each signal in the score (they need not sum to 1; the score is their
    weighted mean). Chosen on development shifts by regret: the accuracy keep-the-best loses
    against the truly best classifier of a run (tests/bench/bench_score.py)."""

    confidence: float = 0.0
    certainty: float = 0.0
    nuclear: float = 0.0
    balance: float = 1.0
    cot: float = 0.0
    prototype_agreement: float = 1.0
    reference_agreement: float = 0.0
    separation: float = 0.0
    neighbour_agreement: float = 1.0


def quality_score(signals: QualitySignals, weights: ScoreWeights | None = None) -> float:
    w = asdict(weights or ScoreWeights())
    s = asdict(signals)
    total = sum(w.values())
    return sum(w[k] * s[k] for k in w) / total if total > 0 else 0.0


def _kappa(labels: torch.Tensor, other: torch.Tensor, classes: int) -> float:
    """Agreement between two labelings corrected for chance (Cohen's kappa, clipped to
    [0, 1]): labels piled onto one class agree with anything derived from them trivially,
    and score 0 here, not 1."""
    n = len(labels)
    observed = float((other == labels).float().mean())
    expected = float((torch.bincount(labels, minlength=classes).float() / n)
                     @ (torch.bincount(other, minlength=classes).float() / n))
    if expected >= 1.0 - 1e-9:
        return 0.0
    return min(1.0, max(0.0, (observed - expected) / (1 - expected)))


def _nearest_mean_agreement(features: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Agreement between the labels and each image's nearest class mean (cosine), corrected
    for chance."""
    onehot = F.one_hot(labels, classes).float()
    counts = onehot.sum(dim=0)
    means = F.normalize(features.T @ onehot, dim=0)  # [D, C]; empty classes stay zero
    sims = features @ means
    sims[:, counts == 0] = -2.0
    return _kappa(labels, sims.argmax(dim=1), classes)


NEIGHBOURS = 10
_CHUNK = 1024  # rows of the similarity matrix at a time, so memory stays O(n * chunk)


def _neighbour_agreement(features: torch.Tensor, labels: torch.Tensor, classes: int,
                         k: int = NEIGHBOURS) -> float:
    """Agreement between each image's label and the majority label of its ``k`` nearest
    other images (cosine), corrected for chance: high when the predictions follow the
    neighbourhoods of the feature space rather than cutting through them."""
    n = len(labels)
    k = min(k, n - 1)
    if k < 1:
        return 0.0
    onehot = F.one_hot(labels, classes).float()
    majority = torch.empty_like(labels)
    for start in range(0, n, _CHUNK):
        sims = features[start:start + _CHUNK] @ features.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -3.0  # an image is not its own neighbour
        nearest = sims.topk(k, dim=1).indices
        majority[start:start + _CHUNK] = onehot[nearest].sum(dim=1).argmax(dim=1)
    return _kappa(labels, majority, classes)


def _separation(features: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    onehot = F.one_hot(labels, classes).float()
    counts = onehot.sum(dim=0)
    if int((counts > 0).sum()) < 2:
        return 0.0
    means = F.normalize(features.T @ onehot, dim=0)
    sims = features @ means
    own = sims.gather(1, labels[:, None]).squeeze(1)
    sims.scatter_(1, labels[:, None], -2.0)
    sims[:, counts == 0] = -2.0
    margin = (own - sims.max(dim=1).values).mean()
    return float(((margin + 1) / 2).clamp(0, 1))


def cot_error(probs: torch.Tensor, *, epsilon: float = 0.01, iterations: int = 200) -> float:
    """Confidence optimal transport error estimate with a uniform label prior: entropic OT
    (log-domain Sinkhorn) between the n predictions (mass 1/n each) and the C one-hot
    labels (mass 1/C each), cost the L-infinity distance between a prediction and a label."""
    n, c = probs.shape
    p = probs.double()
    top_other = torch.where(torch.eye(c, dtype=torch.bool)[None], -1.0, p[:, None, :]).amax(-1)
    cost = torch.maximum(1 - p, top_other)  # [n, C]: ||p - e_c||_inf
    log_a = torch.full((n,), -math.log(n), dtype=p.dtype)
    log_b = torch.full((c,), -math.log(c), dtype=p.dtype)
    k = -cost / epsilon
    f = torch.zeros(n, dtype=p.dtype)
    g = torch.zeros(c, dtype=p.dtype)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(k + g[None, :], dim=1)
        g = log_b - torch.logsumexp(k + f[:, None], dim=0)
    plan = (k + f[:, None] + g[None, :]).exp()
    return float((plan * cost).sum() / plan.sum())


@torch.no_grad()
def classifier_signals(features: torch.Tensor, classifier: torch.Tensor, logit_scale: float,
                       reference_features: torch.Tensor | None = None) -> QualitySignals:
    """Signals of the classifier ``[D, C]`` (used as the model uses it: logits =
    scale * features @ classifier) on L2-normalised ``features [n, D]``. ``reference_features``
    are the zero-shot model's features of the same images (default: ``features``)."""
    feats = features.float().cpu()
    ref = feats if reference_features is None else reference_features.float().cpu()
    w = classifier.detach().float().cpu()
    n, c = feats.shape[0], w.shape[1]
    if n == 0:
        raise ValueError("No image features to score the classifier on.")
    probs = (logit_scale * feats @ w).softmax(dim=-1)
    labels = probs.argmax(dim=1)
    log_c = math.log(c)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean()
    hist = torch.bincount(labels, minlength=c).float() / n
    hist_entropy = -(hist * hist.clamp_min(1e-12).log()).sum()
    nuclear = torch.linalg.svdvals(probs).sum() / math.sqrt(n * min(n, c))
    return QualitySignals(
        confidence=float(probs.max(dim=1).values.mean()),
        certainty=float(1 - entropy / log_c),
        nuclear=float(nuclear),
        balance=float(hist_entropy / log_c),
        cot=1 - cot_error(probs),
        prototype_agreement=_nearest_mean_agreement(feats, labels, c),
        reference_agreement=_nearest_mean_agreement(ref, labels, c),
        separation=_separation(feats, labels, c),
        neighbour_agreement=_neighbour_agreement(feats, labels, c),
    )
