"""`must train` -> `must predict` -> `must eval`, end to end, and the CLI's error lines."""

from __future__ import annotations

import csv
import json

import pytest

from must_engine.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_predict_eval_end_to_end(tmp_path, tiny_model_dir, image_folder, class_names,
                                       capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", image_folder, "--classes", ",".join(class_names),
                              "--model", tiny_model_dir, "--out", run, "--epochs", 2,
                              "--batch-size", 8, "--seed", 1, "--quiet"], capsys)
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["settings"]["epochs"] == 2 and info["settings"]["seed"] == 1
    assert (run / "model.safetensors").is_file()
    assert not (run / "checkpoint.pt").exists()  # a finished run drops its resume state

    preds = tmp_path / "predictions.csv"
    code, out, err = run_cli(["predict", run, image_folder, "--out", preds, "--quiet"], capsys)
    assert code == 0, err
    with preds.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames
    assert columns[:5] == ["path", "label", "confidence", "zero_shot_label",
                           "zero_shot_confidence"]
    assert columns[5:] == [f"p_{n}" for n in class_names]
    assert len(rows) == 24
    assert all(r["label"] in class_names and r["zero_shot_label"] in class_names for r in rows)
    assert rows[0]["path"].split("/")[0] in class_names  # relative to IMAGES
    for r in rows:
        probs = [float(r[f"p_{n}"]) for n in class_names]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-5)

    code, out, err = run_cli(["eval", preds, image_folder], capsys)
    assert code == 0, err
    assert "overall" in out and "zero-shot" in out and "adapted" in out
    for name in class_names:
        assert name in out


@pytest.mark.parametrize("args, message", [
    (["train", "{missing}", "--classes", "a,b", "--model", "{model}"], "was not found"),
    (["train", "{images}", "--classes", "cat", "--model", "{model}"], "at least two class"),
    (["train", "{images}", "--classes", "cat,Cat", "--model", "{model}"], "given twice"),
    (["train", "{images}", "--classes", "cat,dog", "--model", "ViT-Nope-1"], "Unknown model"),
    (["train", "{images}", "--classes", "cat,dog", "--model", "RN50", "--pretrained", "openai"],
     "ResNet"),
    (["train", "{empty}", "--classes", "cat,dog", "--model", "{model}"], "No image files"),
    (["train", "{images}", "--classes", "cat,dog"], "--model"),
    (["train", "{too_long}", "--classes", "a,b", "--model", "{model}"], "holds a name of 300"),
    (["predict", "{missing}", "{images}"], "not found"),
    (["eval", "{missing}", "{images}"], "not found"),
])
def test_bad_input_gives_one_clear_line(args, message, tmp_path, tiny_model_dir, image_folder,
                                        capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    subs = {"{missing}": tmp_path / "nope", "{images}": image_folder, "{model}": tiny_model_dir,
            "{empty}": empty, "{too_long}": tmp_path / ("a" * 300)}
    argv = [str(subs.get(a, a)) for a in args]
    code, out, err = run_cli(argv + ["--out", tmp_path / "run"] if args[0] == "train" else argv,
                             capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert message in lines[0]


def test_resume_continues_a_stopped_run(tmp_path, tiny_model_dir, image_folder, class_names,
                                        capsys):
    from must_engine.events import StepMetrics
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.control import TrainControl
    from must_engine.training.trainer import train

    run = tmp_path / "run"
    control = TrainControl()
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 2, "batch_size": 8})
    for event in train(job, run, control=control):
        if isinstance(event, StepMetrics) and event.step == 1:
            control.stop()
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    assert (run / "checkpoint.pt").is_file()
    code, out, err = run_cli(["train", image_folder, "--out", run, "--resume", "--quiet"],
                             capsys)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_train_labels_csv_are_fixed_labels_for_the_run(tmp_path, tiny_model_dir, image_folder,
                                                       class_names, capsys):
    from must_engine.runs import METRICS_FILE
    from must_engine.trust.user_labels import read_run_labels

    red = [f"red circle/red circle_{i:03d}.png" for i in range(8)]
    labels = tmp_path / "known.csv"
    # deliberately "wrong" labels: the run must train on them, whatever the teacher says
    labels.write_text("path,label\n" + "".join(f"{p},blue circle\n" for p in red))
    # threshold 0.99: the random tiny model is never that sure, so only fixed labels give a
    # self-training loss
    common = ["--classes", ",".join(class_names), "--model", tiny_model_dir, "--epochs", 1,
              "--batch-size", 6, "--seed", 1, "--threshold", 0.99, "--no-mim",
              "--no-align", "--quiet"]

    def st_losses(run):
        rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
        return [r["loss_st"] for r in rows if "loss_st" in r]

    plain = tmp_path / "plain"
    code, out, err = run_cli(["train", image_folder, *common, "--out", plain], capsys)
    assert code == 0, err
    assert st_losses(plain) and not any(st_losses(plain))

    run = tmp_path / "labelled"
    code, out, err = run_cli(["train", image_folder, *common, "--out", run, "--labels", labels],
                             capsys)
    assert code == 0, err
    blue = class_names.index("blue circle")
    assert read_run_labels(run, class_names).fixed == {p: blue for p in red}
    assert any(st_losses(run))

    # the run keeps them: a resume may not change them
    code, out, err = run_cli(["train", image_folder, "--out", run, "--resume", "--labels",
                              labels], capsys)
    assert code == 2 and "keeps the labels it started with" in err


@pytest.mark.parametrize("rows, message", [
    ("path,label\nred circle/red circle_000.png,purple\n", "not one of the classes"),
    ("path,label\nred circle/nope.png,blue circle\n", "not in"),
    ("file,class\nred circle/red circle_000.png,blue circle\n", "columns 'path' and 'label'"),
    ("path,label\n", "holds no labels"),
])
def test_train_bad_labels_csv_is_one_clear_line(rows, message, tmp_path, tiny_model_dir,
                                                image_folder, class_names, capsys):
    labels = tmp_path / "known.csv"
    labels.write_text(rows)
    run = tmp_path / "run"
    code, out, err = run_cli(["train", image_folder, "--classes", ",".join(class_names),
                              "--model", tiny_model_dir, "--out", run, "--labels", labels],
                             capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], err
    assert not (run / "run.json").exists()
