"""Keep the best classifier, not the last: every candidate a run produces (the zero-shot
classifier, the refined zero-shot classifier, the EMA teacher at each epoch's end and that teacher's head refined on its own
features) is scored
by the label-free measure (``must_engine.quality``), and the run keeps the best-scored one.

The record is plain data saved in ``run.json`` under ``"selection"``, so a resumed run keeps
comparing against the same history and a finished run says what it kept and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ZERO_SHOT = "zero_shot"
REFINED = "refined"
# The zero-shot classifier on centred image embeddings: the target folder's mean embedding
# subtracted before they are normalised and compared with the text prototypes.
CENTRED = "centred_zero_shot"
TEACHER = "teacher"
# The teacher after an epoch with its head replaced by the refinement of that head on the
# teacher's own features (the soft k-means that makes refined zero-shot, seeded by the head).
REFINED_TEACHER = "refined_teacher"
TRAINED_KINDS = (TEACHER, REFINED_TEACHER)
KEEP_MODES = ("best", "last")


@dataclass(frozen=True)
class ScoredCandidate:
    """One classifier the run could hand back, with its label-free score."""

    kind: str  # ZERO_SHOT, REFINED, TEACHER or REFINED_TEACHER
    score: float
    signals: dict[str, float] = field(default_factory=dict)
    epoch: int = -1  # 0-based epoch after which a teacher was scored; -1 before training
    step: int = 0

    @property
    def label(self) -> str:
        if self.kind == TEACHER:
            return f"teacher after epoch {self.epoch + 1}"
        if self.kind == REFINED_TEACHER:
            return f"refined teacher after epoch {self.epoch + 1}"
        return {ZERO_SHOT: "zero-shot", REFINED: "refined zero-shot",
                CENTRED: "centred zero-shot"}.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoredCandidate:
        return cls(kind=data["kind"], score=float(data["score"]),
                   signals=dict(data.get("signals", {})), epoch=int(data.get("epoch", -1)),
                   step=int(data.get("step", 0)))


@dataclass
class KeepBest:
    """The score history of a run and which candidate it keeps.

    With ``mode="best"`` the kept candidate is the highest-scored one (the earliest on a
    tie: a later classifier must do strictly better to replace it). With ``mode="last"``
    (the published method) it is the last teacher, and the history only serves to warn.
    """

    mode: str = "best"
    candidates: list[ScoredCandidate] = field(default_factory=list)
    kept: int = -1  # index into candidates
    fallback: str = ""  # why the kept one is not the best-scored (its weights were lost)

    def __post_init__(self) -> None:
        if self.mode not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES} (got '{self.mode}').")

    def offer(self, candidate: ScoredCandidate) -> bool:
        """Record a candidate; True when it becomes the kept one."""
        self.candidates.append(candidate)
        index = len(self.candidates) - 1
        if self.kept < 0:
            self.kept = index
            return True
        if self.mode == "last":
            if candidate.kind == TEACHER:
                self.kept = index
                return True
            return False
        if candidate.score > self.best.score:
            self.kept = index
            return True
        return False

    @property
    def best(self) -> ScoredCandidate:
        if self.kept < 0:
            raise ValueError("No classifier has been scored yet.")
        return self.candidates[self.kept]

    def first(self, kind: str) -> ScoredCandidate | None:
        return next((c for c in self.candidates if c.kind == kind), None)

    @property
    def zero_shot(self) -> ScoredCandidate | None:
        return self.first(ZERO_SHOT)

    def best_of(self, *kinds: str) -> ScoredCandidate | None:
        pool = [c for c in self.candidates if c.kind in kinds]
        return max(pool, key=lambda c: c.score) if pool else None

    def verdict(self) -> str | None:
        """A plain sentence when the run hands back nothing better than zero-shot by its own
        measure; None when the kept classifier beats zero-shot."""
        zero = self.zero_shot
        if zero is None or self.kept < 0:
            return None
        kept = self.best
        trained = self.best_of(*TRAINED_KINDS)
        if kept.kind == ZERO_SHOT and trained is not None:
            return (f"Training did not beat zero-shot by the label-free measure (best trained "
                    f"score {trained.score:.3f}, zero-shot {zero.score:.3f}), so the run keeps "
                    f"the zero-shot classifier.")
        if kept.score < zero.score:
            return (f"The kept classifier ({kept.label}) scores {kept.score:.3f} by the "
                    f"label-free measure, below zero-shot ({zero.score:.3f}): it is probably "
                    "worse than the model you started from.")
        return None

    def fall_back_to(self, candidate: ScoredCandidate, why: str) -> None:
        """Keep ``candidate`` instead of the best-scored one, and say why."""
        self.kept = self.candidates.index(candidate)
        self.fallback = why

    def reason(self) -> str:
        kept = self.best
        if self.fallback:
            return self.fallback
        if self.mode == "last":
            return f"kept the last {kept.label} (keep = last, as published)"
        others = [c for i, c in enumerate(self.candidates) if i != self.kept]
        if not others:
            return f"{kept.label} is the only classifier scored"
        runner = max(others, key=lambda c: c.score)
        return (f"{kept.label} has the best label-free score ({kept.score:.3f}; next best "
                f"{runner.label}, {runner.score:.3f})")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "kept": self.kept,
                               "candidates": [c.to_dict() for c in self.candidates]}
        if self.fallback:
            out["fallback"] = self.fallback
        if self.kept >= 0:
            zero = self.zero_shot
            out.update(kept_label=self.best.label, kept_kind=self.best.kind,
                       kept_epoch=self.best.epoch, kept_score=self.best.score,
                       zero_shot_score=zero.score if zero is not None else None,
                       reason=self.reason(), warning=self.verdict())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeepBest:
        return cls(mode=data.get("mode", "best"),
                   candidates=[ScoredCandidate.from_dict(c) for c in data.get("candidates", [])],
                   kept=int(data.get("kept", -1)), fallback=data.get("fallback", ""))
