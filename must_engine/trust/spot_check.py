"""Spot-check: estimate accuracy from a few answers given by a person.

The images are split into strata by adapted predicted class and confidence band (three
bands, cut at the confidence tertiles). Each new question goes to the stratum furthest below
its proportional share, so after any number of answers the sample is close to proportional
and every class and confidence level is represented. An answer weighs ``N_h / n_h`` (images
in its stratum over answers from it), which makes the accuracy estimate unbiased for the
stratified design.

The 95 % interval is a Wilson score interval on the weighted estimate with an effective
sample size from the stratified variance (strata collapsed to confidence bands, where they
hold enough answers to estimate a variance), capped at the number of answers: a Wald interval
collapses to zero width when every answer so far is right, and a Wilson interval on the raw
count ignores the weights. The coverage is measured in tests/test_trust_spot_check.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NONE_OF_THESE = -1  # the answer "none of these classes"
Z95 = 1.959963984540054
CONFIDENCE_BANDS = 3
MIN_ANSWERS = 30  # the app shows the estimate from this many answers on


def confidence_bands(confidences: np.ndarray, bands: int = CONFIDENCE_BANDS) -> np.ndarray:
    """Band index per image (0 = least confident), cut at the confidence quantiles."""
    conf = np.asarray(confidences, dtype=np.float64)
    if len(conf) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(conf, np.linspace(0, 1, bands + 1)[1:-1])
    return np.searchsorted(edges, conf, side="right").astype(np.int64)


def stratum_ids(labels: np.ndarray, confidences: np.ndarray,
                bands: int = CONFIDENCE_BANDS) -> np.ndarray:
    """Stratum per image: ``label * bands + confidence band``."""
    return np.asarray(labels, dtype=np.int64) * bands + confidence_bands(confidences, bands)


@dataclass
class SpotCheckPlan:
    """Which images may be asked about, their strata, and the order within each stratum.

    ``paths`` is the population (images the user already labelled are left out by the
    caller); ``strata`` the stratum of each; ``seed`` fixes the order of questions, so a plan
    saved and reloaded asks the same images in the same order.
    """

    paths: list[str]
    strata: list[int]
    seed: int = 0
    bands: int = CONFIDENCE_BANDS

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.strata):
            raise ValueError("A spot-check plan needs one stratum per image.")
        self._index = {p: i for i, p in enumerate(self.paths)}
        strata = np.asarray(self.strata, dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        self._queues: dict[int, list[int]] = {}
        for h in np.unique(strata):
            members = np.flatnonzero(strata == h)
            self._queues[int(h)] = rng.permutation(members).tolist()

    @classmethod
    def build(cls, paths: list[str], labels: np.ndarray, confidences: np.ndarray, *,
              exclude: set[str] | frozenset[str] = frozenset(), seed: int = 0,
              bands: int = CONFIDENCE_BANDS) -> SpotCheckPlan:
        keep = [i for i, p in enumerate(paths) if p not in exclude]
        strata = stratum_ids(np.asarray(labels)[keep], np.asarray(confidences)[keep], bands)
        return cls([paths[i] for i in keep], strata.tolist(), seed, bands)

    def __len__(self) -> int:
        return len(self.paths)

    def stratum_of(self, path: str) -> int:
        return self.strata[self._index[path]]

    def sizes(self) -> dict[int, int]:
        return {h: len(q) for h, q in self._queues.items()}

    def next_question(self, asked: set[str] | list[str],
                      answered_per_stratum: dict[int, int]) -> str | None:
        """The next image to show: from the stratum furthest below its proportional share
        (skipped images count as asked but not answered, so their stratum is asked again).
        None when every image has been asked."""
        asked = set(asked)
        total = len(self.paths)
        answered = sum(answered_per_stratum.values())
        best, best_deficit = None, -math.inf
        for h, queue in self._queues.items():
            if all(self.paths[i] in asked for i in queue):
                continue
            deficit = len(queue) / total * (answered + 1) - answered_per_stratum.get(h, 0)
            if deficit > best_deficit + 1e-12:
                best, best_deficit = h, deficit
        if best is None:
            return None
        return next(self.paths[i] for i in self._queues[best] if self.paths[i] not in asked)

    def to_dict(self) -> dict:
        return {"paths": list(self.paths), "strata": [int(s) for s in self.strata],
                "seed": self.seed, "bands": self.bands}

    @classmethod
    def from_dict(cls, data: dict) -> SpotCheckPlan:
        return cls(list(data["paths"]), [int(s) for s in data["strata"]], int(data["seed"]),
                   int(data.get("bands", CONFIDENCE_BANDS)))


@dataclass(frozen=True)
class Interval:
    """An estimated accuracy with its 95 % interval; ``answers`` behind it and the
    effective sample size the interval used."""

    value: float
    low: float
    high: float
    answers: int
    effective_answers: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def more_answers_to_halve(self) -> int:
        """Answers to add (at the same estimate and design effect) to halve the width."""
        if self.answers == 0 or not math.isfinite(self.value):
            return 0
        target = self.width / 2
        ratio = self.effective_answers / self.answers

        def width(n: int) -> float:
            low, high = wilson(self.value, n * ratio)
            return high - low

        lo, hi = self.answers, self.answers * 2
        while width(hi) > target and hi < 10_000_000:
            lo, hi = hi, hi * 2
        while lo < hi:  # smallest n whose interval is at most half as wide
            mid = (lo + hi) // 2
            if width(mid) <= target:
                hi = mid
            else:
                lo = mid + 1
        return hi - self.answers


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` seen over ``n`` (possibly fractional)
    trials."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def stratified_interval(correct: np.ndarray, strata: np.ndarray, sizes: dict[int, int],
                        bands: int = CONFIDENCE_BANDS) -> Interval:
    """Weighted accuracy and 95 % interval of 0/1 ``correct`` answers drawn from ``strata``
    of the given population ``sizes``.

    Strata with no answer yet are left out of the population the estimate speaks for (with
    proportional allocation they are the smallest ones, under 1/n of the images together).
    """
    correct = np.asarray(correct, dtype=np.float64)
    strata = np.asarray(strata, dtype=np.int64)
    n = len(correct)
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0, 0.0)
    counts = {int(h): int(c) for h, c in zip(*np.unique(strata, return_counts=True),
                                             strict=True)}
    weights = np.array([sizes[int(h)] / counts[int(h)] for h in strata])
    total = weights.sum()
    p = float((weights * correct).sum() / total)
    # Variance: strata collapsed to their confidence band (a class x band cell rarely holds
    # two answers); within a band, the weighted variance of the answers.
    band = strata % bands
    var = 0.0
    for b in np.unique(band):
        m = band == b
        n_b = int(m.sum())
        big_b = float(weights[m].sum())
        if n_b < 2:
            var = math.nan  # one answer cannot say how much the band varies
            break
        p_b = float((weights[m] * correct[m]).sum() / big_b)
        s2 = float((weights[m] * (correct[m] - p_b) ** 2).sum() / big_b) * n_b / (n_b - 1)
        fpc = max(0.0, 1 - n_b / big_b)
        var += (big_b / total) ** 2 * s2 / n_b * fpc
    if math.isnan(var) or var <= 0 or p in (0.0, 1.0):
        n_eff = float(n)
    else:
        n_eff = min(float(n), p * (1 - p) / var)
    low, high = wilson(p, n_eff)
    return Interval(p, low, high, n, n_eff)


def ratio_interval(correct: np.ndarray, weights: np.ndarray) -> Interval:
    """Weighted share correct among a subset (one true class), Wilson on Kish's effective
    sample size of the weights."""
    correct = np.asarray(correct, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    n = len(correct)
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0, 0.0)
    p = float((weights * correct).sum() / weights.sum())
    n_eff = float(weights.sum() ** 2 / (weights ** 2).sum())
    low, high = wilson(p, n_eff)
    return Interval(p, low, high, n, n_eff)


@dataclass(frozen=True)
class ClassifierEstimate:
    overall: Interval
    per_class: list[Interval]  # per true class: share of its images classified right


@dataclass(frozen=True)
class SpotCheckEstimate:
    """Estimated accuracy of both classifiers from ``answers`` spot-check answers."""

    answers: int
    none_of_these: int
    adapted: ClassifierEstimate
    zero_shot: ClassifierEstimate
    class_names: list[str] = field(default_factory=list)

    @property
    def more_answers_to_halve(self) -> int:
        return self.adapted.overall.more_answers_to_halve()


def estimate(plan: SpotCheckPlan, answers: dict[str, int], adapted: dict[str, int],
             zero_shot: dict[str, int], class_names: list[str]) -> SpotCheckEstimate:
    """Estimate both classifiers' accuracy.

    ``answers`` maps each answered path to its true class index (or ``NONE_OF_THESE``: wrong
    for both); ``adapted`` and ``zero_shot`` map paths to predicted class indices. Answers
    for paths outside the plan are ignored (they were not drawn by it).
    """
    paths = [p for p in answers if p in plan._index]
    truth = np.array([answers[p] for p in paths], dtype=np.int64)
    strata = np.array([plan.stratum_of(p) for p in paths], dtype=np.int64)
    sizes = plan.sizes()
    results = []
    for predicted in (adapted, zero_shot):
        pred = np.array([predicted[p] for p in paths], dtype=np.int64)
        correct = (pred == truth) & (truth != NONE_OF_THESE)
        overall = stratified_interval(correct, strata, sizes, plan.bands)
        if len(paths):
            counts = {int(h): int(c) for h, c in zip(*np.unique(strata, return_counts=True),
                                                     strict=True)}
            w = np.array([sizes[int(h)] / counts[int(h)] for h in strata])
        else:
            w = np.zeros(0)
        per_class = [ratio_interval(correct[truth == c], w[truth == c])
                     for c in range(len(class_names))]
        results.append(ClassifierEstimate(overall, per_class))
    return SpotCheckEstimate(len(paths), int((truth == NONE_OF_THESE).sum()), results[0],
                             results[1], list(class_names))
