"""Typed records the engine reports while it works.

The trainer, the model loader and the exporters *yield* or *emit* these small dataclasses;
they never call into a user interface. A GUI turns them into signals, the command line into
a progress bar. Every event is plain data (numbers, strings, lists) so it can cross a thread
or process boundary and be written to a JSON log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class DownloadProgress(Event):
    """Bytes of a model file fetched so far (total 0 when the size is not known)."""

    what: str
    done_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Status(Event):
    """A human-readable line about what the engine is doing now."""

    message: str


@dataclass(frozen=True)
class RunStarted(Event):
    run_dir: str
    epochs: int
    steps_per_epoch: int
    start_step: int
    num_images: int
    class_names: list[str]
    device: str


@dataclass(frozen=True)
class StepMetrics(Event):
    """One optimisation step. Losses are already multiplied by nothing: raw values;
    ``loss_total`` is the weighted sum that was minimised."""

    step: int  # global step, 0-based, of the step just finished
    epoch: int  # 0-based
    epoch_step: int
    steps_per_epoch: int
    total_steps: int
    loss_st: float
    loss_fair: float
    loss_mim: float
    loss_align: float
    loss_total: float
    confident_fraction: float
    teacher_confidence: float
    lr: float
    ema_decay: float
    images_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class EpochSummary(Event):
    """Per-epoch view of the teacher's pseudo-labels over every image seen in the epoch."""

    epoch: int
    epochs: int
    pseudo_label_counts: list[int]  # per class, all samples
    confident_counts: list[int]  # per class, samples above the threshold
    confidence_bin_edges: list[float]
    confidence_histogram: list[int]
    mean_confidence: float
    confident_fraction: float
    seconds: float


@dataclass(frozen=True)
class ClassifierScored(Event):
    """The label-free measure of a classifier the run could hand back (the EMA teacher and
    the refined teacher at an epoch's end; ``epoch`` -1 for the starting classifiers). ``score`` is in [0, 1], higher
    is better; ``signals`` holds its parts; ``kept`` names the best-scored classifier so far,
    which is what the run will hand back, and ``kept_score`` its score."""

    kind: str  # "zero_shot", "refined", "teacher" or "refined_teacher"
    label: str
    epoch: int
    step: int
    score: float
    signals: dict
    kept: str
    kept_score: float
    zero_shot_score: float


@dataclass(frozen=True)
class ClassifierKept(Event):
    """Which classifier the finished run hands back (predicts and exports), and why."""

    kind: str
    label: str
    epoch: int
    score: float
    zero_shot_score: float
    reason: str


@dataclass(frozen=True)
class SettingsProbed(Event):
    """The ``auto`` preset's probe: each candidate setting trained briefly on ``images``
    images and scored by the label-free measure; ``chosen`` is what the run trains with."""

    chosen: str
    settings: dict
    images: int
    candidates: list  # [{"name", "score", "settings"}]


@dataclass(frozen=True)
class TimeEstimate(Event):
    """Expected training time, from the device's speed measured before training starts."""

    seconds: float
    epochs: int
    total_steps: int
    seconds_per_step: float
    device: str


@dataclass(frozen=True)
class RunWarning(Event):
    """Something the user should know about the run while it goes on: what was seen, in one
    sentence, and what to try. ``kind`` is a stable identifier (for example
    ``"no_confident_labels"`` or ``"class_collapse"``) that front ends can key on;
    ``classes`` names the classes concerned, if any; ``step`` is when it was raised."""

    kind: str
    message: str
    suggestion: str = ""
    classes: list[str] = field(default_factory=list)
    step: int = -1


@dataclass(frozen=True)
class CheckpointSaved(Event):
    path: str
    step: int
    epoch: int


@dataclass(frozen=True)
class Paused(Event):
    step: int


@dataclass(frozen=True)
class Resumed(Event):
    step: int


@dataclass(frozen=True)
class RunFinished(Event):
    """Training ended. ``stopped`` is True when the user stopped it early; the last
    checkpoint is then kept and the run can be resumed."""

    run_dir: str
    step: int
    total_steps: int
    stopped: bool
    seconds: float
    model_path: str | None = None


@dataclass(frozen=True)
class PredictionProgress(Event):
    done: int
    total: int


@dataclass(frozen=True)
class ExportProgress(Event):
    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class ExportCheck(Event):
    """Result of re-running an exported file against PyTorch on sample images."""

    format: str
    max_abs_diff: float
    tolerance: float
    passed: bool
    samples: int
    details: dict = field(default_factory=dict)


def event_from_dict(data: dict) -> Event | None:
    """The event a ``to_dict`` line of the run's log describes (None for an unknown type or
    a line of another version), so a run in another process reads like one in this one."""
    kinds = {cls.__name__: cls for cls in Event.__subclasses__()}
    fields = dict(data)
    cls = kinds.get(str(fields.pop("type", "")))
    if cls is None:
        return None
    try:
        return cls(**fields)
    except TypeError:
        return None
