"""The method, end to end, on the project's own offline world: adapting the shipped tiny CLIP
to the demo's target-style pictures must beat its zero-shot accuracy, without labels.

Also `must demo` itself, as a user runs it (train, predict, export; prints both accuracies).
"""

from __future__ import annotations

import json

import pytest

from must_engine import demo_files
from must_engine.cli import main
from must_engine.demo import read_answer_key, run_demo

pytestmark = pytest.mark.skipif(not demo_files.demo_available(),
                                reason="demo resources missing (build_demo not run)")

# The stated margin: adapted top-1 must be at least this many points above zero-shot on the
# demo set with the demo settings and seed 0 (measured: 48.0% -> 67.5%, +19.5 points; the
# margin leaves room for floating-point differences between CPUs, not for a weaker method).
MARGIN_POINTS = 10.0


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), device="cpu")


def test_adaptation_beats_zero_shot_on_the_demo(demo_report):
    key = read_answer_key(demo_files.demo_answer_key())
    assert demo_report.num_images == len(key)
    gain = 100 * (demo_report.adapted_accuracy - demo_report.zero_shot_accuracy)
    assert demo_report.zero_shot_accuracy > 1.5 / len(demo_files.demo_class_names())
    assert gain >= MARGIN_POINTS, demo_report.summary()


def test_demo_outputs_are_complete(demo_report):
    assert (demo_report.run_dir / "model.safetensors").is_file()
    assert demo_report.predictions_csv.is_file()
    assert (demo_report.bundle / "card.json").is_file()


def test_the_demo_trains_uncentred_as_its_figures_were_measured(demo_report):
    # centring (the auto recipe's) measured 63.7% against 67.0% on the demo
    run = json.loads((demo_report.run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["settings"]["center"] == 0.0 and not run["centred_training"]
    kinds = [c["kind"] for c in run["selection"]["candidates"]]
    assert "centred_zero_shot" not in kinds and "refined" in kinds


def test_must_demo_command_prints_both_accuracies(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "zero-shot accuracy" in out and "adapted accuracy" in out
