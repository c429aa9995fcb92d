"""Changed-prediction groups, the collapse watch, unsure images, the user labels file and
known-label evaluation (folder of class subfolders or labels CSV)."""

from __future__ import annotations

import numpy as np
import pytest

from must_engine.evaluate import evaluate_csv, evaluate_labels, read_labels_csv
from must_engine.events import EpochSummary
from must_engine.trust.changes import changed_groups
from must_engine.trust.collapse import COLLAPSE, NEVER_CONFIDENT, CollapseWatch
from must_engine.trust.unsure import UnsureRule, unsure_mask
from must_engine.trust.user_labels import (
    UserLabels,
    UserLabelsError,
    labels_path,
    read_run_labels,
    training_files,
    write_run_labels,
)


def test_changed_predictions_grouped_by_pair():
    before = np.array([0, 0, 1, 1, 2, 0, 0, 2])
    after = np.array([1, 1, 1, 0, 2, 1, 2, 2])
    conf = np.array([0.5, 0.9, 0.1, 0.3, 0.2, 0.7, 0.4, 0.1])
    groups = changed_groups(before, after, conf)
    assert [(g.source, g.target, g.count) for g in groups] == [(0, 1, 3), (0, 2, 1), (1, 0, 1)]
    assert groups[0].indices == (1, 5, 0)  # most confident first
    assert sum(g.count for g in groups) == int((before != after).sum())
    assert changed_groups(before, before) == []


def summary(epoch, counts, confident):
    return EpochSummary(epoch=epoch, epochs=10, pseudo_label_counts=counts,
                        confident_counts=confident, confidence_bin_edges=[0, 1],
                        confidence_histogram=[sum(counts)], mean_confidence=0.5,
                        confident_fraction=0.5, seconds=1.0)


def test_collapse_watch_on_a_made_up_history():
    names = ["cat", "dog", "fox", "owl"]
    watch = CollapseWatch(names)
    # 'fox' shrinks 30% -> 20% -> 12% -> 8% (never 'far below': 8% > 0.2 x 36%); 'owl' is never confident
    history = [([30, 25, 30, 15], [10, 8, 9, 0]), ([33, 30, 20, 17], [12, 9, 5, 0]),
               ([37, 34, 12, 17], [14, 10, 3, 0]), ([40, 36, 8, 17], [15, 12, 1, 0])]
    raised = [watch.update(summary(e, c, k), step=e * 10) for e, (c, k) in enumerate(history)]
    assert raised[0] == []  # one epoch: too early to call anything
    assert [(w.kind, w.classes) for w in raised[1]] == [(NEVER_CONFIDENT, ["owl"])]
    assert "threshold" in raised[1][0].suggestion
    assert raised[2] == []
    assert [(w.kind, w.classes) for w in raised[3]] == [(COLLAPSE, ["fox"])]
    assert "losing" in raised[3][0].message and raised[3][0].step == 30
    assert "fairness" in raised[3][0].suggestion and "Rename" in raised[3][0].suggestion
    # warned once: the same state again raises nothing new
    assert watch.update(summary(4, [40, 37, 5, 18], [15, 12, 1, 0])) == []


def test_collapse_watch_flags_a_class_far_below_the_rest_at_once():
    watch = CollapseWatch(["a", "b", "c"])
    warnings = watch.update(summary(0, [50, 48, 2], [20, 20, 1]))
    assert [(w.kind, w.classes) for w in warnings] == [(COLLAPSE, ["c"])]
    assert "far fewer" in warnings[0].message
    balanced = CollapseWatch(["a", "b", "c"])
    assert balanced.update(summary(0, [35, 33, 32], [20, 20, 10])) == []


def test_collapse_watch_replays_a_resumed_runs_log(tmp_path):
    import json

    log = tmp_path / "metrics.jsonl"
    s = summary(0, [50, 48, 2], [20, 20, 1])
    log.write_text(json.dumps(s.to_dict()) + "\n{cut sho", encoding="utf-8")
    watch = CollapseWatch(["a", "b", "c"])
    watch.replay(log)
    assert watch.update(summary(1, [50, 48, 2], [20, 20, 1])) == []  # already warned


def test_unsure_needs_both_classifiers_weak():
    zero = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2]])
    adapted = np.array([[0.45, 0.3, 0.25], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1]])
    assert unsure_mask(zero, adapted).tolist() == [True, False, False]
    assert unsure_mask(zero, None).tolist() == [True, False, True]
    assert unsure_mask(zero, adapted, UnsureRule(0.95)).tolist() == [True, True, True]
    with pytest.raises(ValueError):
        UnsureRule(0)


def test_user_labels_file_and_run_copy(tmp_path):
    project = tmp_path / "birds.mustproj"
    store = UserLabels()
    store.set_label("a/1.png", "cat", "spot-check")
    store.set_label("a/2.png", "dog")
    store.set_label("a/3.png", None, "spot-check")  # none of these
    store.set_excluded({"b/9.png"})
    store.correction_weight = 2.5
    store.save(labels_path(project))
    assert labels_path(project).name == "birds_labels.json"
    again = UserLabels.load(labels_path(project))
    assert again.labels["a/1.png"].label == "cat" and again.labels["a/1.png"].source == "spot-check"
    assert again.class_labels(["dog", "cat"]) == {"a/1.png": 1, "a/2.png": 0}
    run = tmp_path / "run"
    run.mkdir()
    write_run_labels(run, again, ["dog", "cat"])
    r = read_run_labels(run, ["dog", "cat"])
    assert r.fixed == {"a/1.png": 1, "a/2.png": 0} and r.weight == 2.5
    assert r.excluded == {"b/9.png", "a/3.png"}
    assert training_files(["a/1.png", "a/3.png", "b/9.png", "c.png"], r) == ["a/1.png", "c.png"]
    with pytest.raises(UserLabelsError, match="names class 'cat'"):
        read_run_labels(run, ["dog", "owl"])
    assert UserLabels.load(tmp_path / "missing.json").labels == {}
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserLabelsError, match="cannot be read"):
        UserLabels.load(tmp_path / "bad.json")


def test_confusion_matrices_before_and_after():
    result = evaluate_labels(["a", "b", "c"], [0, 0, 1, 2, None], [0, 1, 1, 2, 0],
                             [1, 1, 1, 0, 0])
    assert result.confusion_adapted == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert result.confusion_zero_shot == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]
    assert result.adapted == pytest.approx(3 / 4) and result.zero_shot == pytest.approx(1 / 4)
    assert result.unlabelled == 1
    text = result.confusion_table()
    assert text.splitlines()[1].split()[-3:] == ["1", "1", "0"]


def write_predictions(path, rows, classes):
    header = "path,label,confidence,zero_shot_label,zero_shot_confidence," + ",".join(
        f"p_{c}" for c in classes)
    lines = [header] + [f"{p},{a},0.9,{z},0.8," + ",".join(["0.5"] * len(classes))
                        for p, a, z in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_eval_with_a_labels_csv(tmp_path):
    classes = ["cat", "dog"]
    preds = write_predictions(tmp_path / "p.csv", [("x/1.png", "cat", "dog"),
                                                   ("x/2.png", "dog", "dog"),
                                                   ("x/3.png", "dog", "cat")], classes)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nx/1.png,cat\nx/2.png,Cat\n", encoding="utf-8")
    assert read_labels_csv(labels, classes) == {"x/1.png": 0, "x/2.png": 0}
    result = evaluate_csv(preds, labels=labels)
    assert result.count == 2 and result.unlabelled == 1
    assert result.confusion_adapted == [[1, 1], [0, 0]]
    assert result.confusion_zero_shot == [[0, 2], [0, 0]]
    labels.write_text("path,label\nx/1.png,horse\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'horse', which is not one of the classes"):
        evaluate_csv(preds, labels=labels)
    labels.write_text("file,class\nx/1.png,cat\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns 'path' and 'label'"):
        evaluate_csv(preds, labels=labels)


def test_must_eval_prints_confusion_matrices(tmp_path, capsys):
    from must_engine.cli import main

    classes = ["cat", "dog"]
    preds = write_predictions(tmp_path / "p.csv", [("cat/1.png", "cat", "dog"),
                                                   ("dog/2.png", "cat", "dog")], classes)
    for c in classes:
        (tmp_path / "imgs" / c).mkdir(parents=True)
    assert main(["eval", str(preds), str(tmp_path / "imgs"), "--confusion"]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix, zero-shot" in out and "confusion matrix, adapted" in out
    after = out.split("confusion matrix, adapted")[1].splitlines()
    assert after[2].split()[-2:] == ["1", "0"] and after[3].split()[-2:] == ["1", "0"]
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncat/1.png,dog\n", encoding="utf-8")
    assert main(["eval", str(preds), "--labels", str(labels)]) == 0
    assert "overall" in capsys.readouterr().out
    assert main(["eval", str(preds)]) == 2
    assert "--labels" in capsys.readouterr().err


def test_the_command_line_prints_run_warnings(capsys):
    from must_engine.cli import Progress
    from must_engine.events import RunWarning

    Progress()(RunWarning(COLLAPSE, "Class 'fox' is losing its pseudo-labels.",
                          "Rename the class.", ["fox"], 30))
    assert "warning: Class 'fox' is losing its pseudo-labels. Rename the class." in \
        capsys.readouterr().err
