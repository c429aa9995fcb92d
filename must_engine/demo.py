"""``must demo``: the whole pipeline, offline, on the embedded demo (train, predict, export),
scored against the demo's answer key, which training never sees."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from must_engine.events import Event, Status

EventSink = Callable[[Event], None]


@dataclass
class DemoReport:
    run_dir: Path
    predictions_csv: Path
    bundle: Path
    num_images: int
    zero_shot_accuracy: float
    adapted_accuracy: float
    seconds: float

    def summary(self) -> str:
        gain = 100 * (self.adapted_accuracy - self.zero_shot_accuracy)
        return (f"Demo: {self.num_images} images\n"
                f"  zero-shot accuracy: {self.zero_shot_accuracy:.1%}\n"
                f"  adapted accuracy:   {self.adapted_accuracy:.1%}  ({gain:+.1f} points)\n"
                f"  time: {self.seconds:.0f} s\n"
                f"  run: {self.run_dir}\n  predictions: {self.predictions_csv}\n"
                f"  exported bundle: {self.bundle}")


def read_answer_key(path: Path) -> dict[str, str]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def accuracy(paths: list[str], labels: list[str], key: dict[str, str]) -> float:
    scored = [(lab == key[p]) for p, lab in zip(paths, labels, strict=True) if p in key]
    return sum(scored) / max(1, len(scored))


def run_demo(out: Path | None = None, *, epochs: int | None = None,
             on_event: EventSink | None = None, device: str | None = None) -> DemoReport:
    import time

    from must_engine import demo_files
    from must_engine.export import export_run
    from must_engine.models.source import ModelSpec
    from must_engine.predict import predict_run
    from must_engine.runs import RunError, TrainJob
    from must_engine.training.trainer import train

    missing = demo_files.demo_missing_reason()
    if missing is not None:
        raise RunError(missing)
    started = time.perf_counter()
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="must-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if (run_dir / "run.json").exists():
        raise RunError(f"{run_dir} already holds a demo run; choose an empty --out folder.")
    overrides = dict(demo_files.demo_settings_overrides())
    if epochs is not None:
        overrides["epochs"] = epochs
    if device is not None:
        overrides["device"] = device
    images = demo_files.demo_images_dir()
    job = TrainJob(images, demo_files.demo_class_names(),
                   ModelSpec.parse(str(demo_files.demo_model_dir())),
                   demo_files.demo_templates(), overrides=overrides)
    for event in train(job, run_dir, on_event=on_event):
        if on_event is not None:
            on_event(event)
    if on_event is not None:
        on_event(Status("Predicting every demo image"))
    preds = predict_run(run_dir, on_event=on_event)
    csv_path = preds.write_csv(out / "predictions.csv")
    if on_event is not None:
        on_event(Status("Exporting the adapted model"))
    bundle = export_run(run_dir, "bundle", out / "bundle", predictions=preds).path
    key = read_answer_key(demo_files.demo_answer_key())
    names = preds.class_names
    zero = accuracy(preds.paths, [names[i] for i in preds.zero_shot_labels()], key)
    adapted = accuracy(preds.paths, [names[i] for i in preds.labels()], key)
    return DemoReport(run_dir, csv_path, bundle, len(preds), zero, adapted,
                      time.perf_counter() - started)
