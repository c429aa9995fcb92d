"""What a run chose and kept, in the user's words: the expected training time, the settings
probe, the label-free score of each classifier the run could hand back, and which one it
kept and why. Built from the engine's events (``TimeEstimate``, ``SettingsProbed``,
``ClassifierScored``, ``ClassifierKept``, the ``below_zero_shot`` ``RunWarning``), live or
read back from a run's ``metrics.jsonl``, so a finished run opened later reads the same as
it did live. Plain data and text: no Qt here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from must_engine.events import (
    ClassifierKept,
    ClassifierScored,
    RunFinished,
    RunStarted,
    RunWarning,
    SettingsProbed,
    TimeEstimate,
)

# The probe replaces the recipe only with a candidate ahead by more than PROBE_MARGIN; the
# probe's summary says so when a candidate scored higher but not enough.
from must_engine.probe import PROBE_MARGIN

METRICS_FILE = "metrics.jsonl"  # as must_engine.runs names it (that module imports torch)
BELOW_ZERO_SHOT = "below_zero_shot"
# as must_engine.selection names them
ZERO_SHOT, REFINED, CENTRED, TEACHER = "zero_shot", "refined", "centred_zero_shot", "teacher"
_LOGGED = {cls.__name__: cls for cls in (TimeEstimate, SettingsProbed, ClassifierScored,
                                         ClassifierKept, RunWarning, RunFinished, RunStarted)}


@dataclass
class RunReport:
    """Fed events with ``handle``; every text helper below reads it."""

    estimate: TimeEstimate | None = None
    probe: SettingsProbed | None = None
    scores: list[ClassifierScored] = field(default_factory=list)
    kept: ClassifierKept | None = None
    warning: RunWarning | None = None  # the below_zero_shot warning, when the run sent one
    finished: RunFinished | None = None
    epochs: int = 0  # the run's length, from RunStarted
    resumed_at: int = 0  # the step the last (re)start began at: >0 for a resumed run

    def handle(self, event: object) -> bool:
        """Take in an event; True when it changed the report."""
        if isinstance(event, TimeEstimate):
            self.estimate = event
            self.epochs = event.epochs
        elif isinstance(event, SettingsProbed):
            self.probe = event
        elif isinstance(event, ClassifierScored):
            self.scores.append(event)
        elif isinstance(event, ClassifierKept):
            self.kept = event
        elif isinstance(event, RunWarning) and event.kind == BELOW_ZERO_SHOT:
            self.warning = event
        elif isinstance(event, RunFinished):
            self.finished = event
        elif isinstance(event, RunStarted):
            if event.start_step == 0:
                # A fresh start (not a resume): anything from an earlier try is gone.
                self.__init__()
            self.epochs = event.epochs
            self.resumed_at = event.start_step
        else:
            return False
        return True

    # ---- the scores ------------------------------------------------------------------------
    def first(self, kind: str) -> ClassifierScored | None:
        return next((s for s in self.scores if s.kind == kind), None)

    @property
    def zero_shot_score(self) -> float | None:
        zero = self.first(ZERO_SHOT)
        if zero is not None:
            return zero.score
        if self.kept is not None:
            return self.kept.zero_shot_score
        return self.scores[-1].zero_shot_score if self.scores else None

    @property
    def refined_score(self) -> float | None:
        refined = self.first(REFINED)
        return refined.score if refined is not None else None

    @property
    def centred_score(self) -> float | None:
        centred = self.first(CENTRED)
        return centred.score if centred is not None else None

    def teacher_scores(self) -> list[tuple[int, float]]:
        """(epoch, 1-based; score) of the teacher after each epoch, in order."""
        return [(s.epoch + 1, s.score) for s in self.scores if s.kind == TEACHER]

    def best_teacher(self) -> ClassifierScored | None:
        teachers = [s for s in self.scores if s.kind == TEACHER]
        return max(teachers, key=lambda s: s.score) if teachers else None

    def kept_so_far(self) -> tuple[str, float] | None:
        """The classifier the run would hand back now (label, score)."""
        if self.kept is not None:
            return self.kept.label, self.kept.score
        if self.scores:
            return self.scores[-1].kept, self.scores[-1].kept_score
        return None

    def kept_point(self) -> tuple[str, int, float] | None:
        """(kind, 1-based epoch or 0, score) of the kept (or best so far) classifier."""
        if self.kept is not None:
            return self.kept.kind, self.kept.epoch + 1, self.kept.score
        now = self.kept_so_far()
        if now is None:
            return None
        match = next((s for s in reversed(self.scores) if s.label == now[0]), None)
        if match is None:
            return None
        return match.kind, match.epoch + 1, match.score

    def has_anything(self) -> bool:
        return bool(self.estimate or self.probe or self.scores or self.kept)

    # ---- the verdict -------------------------------------------------------------------------
    def below_zero_shot(self) -> str:
        """A plain sentence when the run hands back nothing better than zero-shot by its own
        measure (the engine's words when it sent them); "" otherwise."""
        if self.warning is not None:
            return self.warning.message
        kept = self.kept
        if kept is None:
            return ""
        best = self.best_teacher()
        if kept.kind == ZERO_SHOT and best is not None:
            return (f"Training did not beat zero-shot by the label-free measure (best trained "
                    f"score {best.score:.3f}, zero-shot {kept.zero_shot_score:.3f}), so the run "
                    "keeps the zero-shot classifier.")
        if kept.score < kept.zero_shot_score:
            return (f"The kept classifier ({kept.label}) scores {kept.score:.3f} by the "
                    f"label-free measure, below zero-shot ({kept.zero_shot_score:.3f}): it is "
                    "probably worse than the model you started from.")
        return ""

    def suggestion(self) -> str:
        return self.warning.suggestion if self.warning is not None else ""

    # ---- text --------------------------------------------------------------------------------
    def expected_text(self) -> str:
        e = self.estimate
        if e is None:
            return ""
        return f"about {format_duration(e.seconds)}"

    def expected_detail(self) -> str:
        e = self.estimate
        if e is None:
            return ""
        return (f"{e.epochs} epochs, {e.total_steps:,} steps at {e.seconds_per_step:.2f} s a "
                f"step, measured on {e.device} before training")

    def probe_text(self) -> str:
        """One line: what the probe chose, out of how many, scored on how many images."""
        p = self.probe
        if p is None:
            return ""
        chosen = next((c for c in p.candidates if c.get("name") == p.chosen), None)
        score = f" ({chosen['score']:.3f})" if chosen is not None else ""
        what = "The recipe" if p.chosen == "recipe" else _sentence(p.chosen).rstrip(".")
        return f"{what}{score}, best of {len(p.candidates)} on {p.images:,} images"

    def probe_note(self) -> str:
        """Why the recipe stayed when a candidate scored a little higher, else the runner-up."""
        p = self.probe
        if p is None:
            return ""
        chosen = next((c for c in p.candidates if c.get("name") == p.chosen), None)
        others = [c for c in p.candidates if c.get("name") != p.chosen]
        if chosen is None or not others:
            return ""
        top = max(others, key=lambda c: c["score"])
        if top["score"] > chosen["score"]:
            return (f"{top['name']} {top['score']:.3f}: not enough ahead to switch "
                    f"(+{PROBE_MARGIN} needed)")
        return f"next best: {top['name']} ({top['score']:.3f})"

    def chosen_settings_text(self) -> str:
        p = self.probe
        if p is None:
            return ""
        if not p.settings:
            return "the preset's settings, unchanged"
        return ", ".join(f"{k} = {_value(v)}" for k, v in p.settings.items())

    def kept_text(self) -> str:
        """What the run hands back (or would, so far), with its score and zero-shot's."""
        now = self.kept_so_far()
        if now is None:
            return ""
        label, score = now
        zero = self.zero_shot_score
        against = f" (zero-shot {zero:.3f})" if zero is not None and label != "zero-shot" else ""
        return f"{label}, score {score:.3f}{against}"

    def reason_text(self) -> str:
        """Why the kept classifier, in plain words; also says when training's result is not
        what predicts (the refined or zero-shot classifier scored higher)."""
        kept = self.kept
        if kept is None:
            return ""
        others = [s for s in self.scores if (s.kind, s.epoch) != (kept.kind, kept.epoch)]
        runner = None
        if "best label-free score" in kept.reason and others:
            runner = runner_of(others)
            text = (f"Best of the {len(self.scores)} classifiers scored; next: {runner.label} "
                    f"({runner.score:.3f}).")
        else:
            text = _sentence(kept.reason)
        best = self.best_teacher()
        if kept.kind != TEACHER and best is not None:
            if best is runner:  # its score is already in the sentence
                text += " The trained weights are not used."
            else:
                text += (f" The trained weights are not used: the best of them, {best.label}, "
                         f"scored {best.score:.3f}.")
        return text


def runner_of(scores: list) -> object | None:
    """The best-scored of ``scores`` (None when empty)."""
    return max(scores, key=lambda s: s.score) if scores else None


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def read_run_report(run_dir: str | Path | None) -> RunReport:
    """The report of a run from its metrics.jsonl (empty when there is none)."""
    report = RunReport()
    if run_dir is None:
        return report
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return report
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if '"StepMetrics"' in line or '"EpochSummary"' in line:
                    continue  # most lines: skip them unparsed
                try:
                    data = json.loads(line)
                    cls = _LOGGED.get(data.pop("type", ""))
                    if cls is not None:
                        report.handle(cls(**data))
                except (ValueError, TypeError):
                    continue  # a line cut short by a crash, or another engine version's
    except OSError:
        return RunReport()
    return report
