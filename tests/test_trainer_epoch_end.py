"""The epoch's end and a stop: each epoch's summary, warnings and label-free score reach the
run's log exactly once, whether a stop is asked for during the epoch-end scoring (the run
stops at the epoch boundary and resumes there) or the process dies during it (the resumed
run does that epoch again, from its log cut back to the last checkpoint)."""

from __future__ import annotations

import json

import pytest
import torch

import must_engine.training.trainer as trainer_module
from must_engine.events import RunFinished
from must_engine.training.control import TrainControl
from must_engine.training.event_log import checkpoint_log_bytes, open_event_log
from must_engine.training.label_free import RunScorer
from must_engine.training.trainer import Trainer, train
from must_engine.trust.collapse import CollapseWatch, CollapseWatchSettings
from tests.test_trainer import make_job


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _warnings(log) -> list[tuple]:
    return [(w["kind"], w["classes"], w["step"]) for w in log if w["type"] == "RunWarning"]


def _of(log, kind: str, key: str) -> list:
    return [e[key] for e in log if e["type"] == kind]


def test_a_stop_asked_during_the_epoch_end_scoring_scores_each_epoch_once(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    run = tmp_path / "run"
    control = TrainControl()
    real = RunScorer.score_teacher

    def stop_while_scoring(self, teacher, epoch, step, **kwargs):
        if epoch == 0:
            control.stop()
        return real(self, teacher, epoch, step, **kwargs)

    monkeypatch.setattr(RunScorer, "score_teacher", stop_while_scoring)
    first = list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3), run,
                       control=control))
    assert isinstance(first[-1], RunFinished) and first[-1].stopped
    assert first[-1].step == 4  # 24 images / 6 a batch: the end of the first epoch
    resumed = list(Trainer(run).run())
    assert not resumed[-1].stopped and resumed[-1].step == 12
    log = _log(run)
    assert _of(log, "EpochSummary", "epoch") == [0, 1, 2]
    teacher_scores = [e["epoch"] for e in log
                      if e["type"] == "ClassifierScored" and e["kind"] == "teacher"]
    assert teacher_scores == [0, 1, 2]
    selection = json.loads((run / "run.json").read_text())["selection"]
    assert [c["epoch"] for c in selection["candidates"] if c["kind"] == "teacher"] == [0, 1, 2]


def test_a_run_that_dies_during_the_epoch_end_scoring_keeps_that_epochs_warnings(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    # A watch that warns about nearly every class at the first epoch's end.
    monkeypatch.setattr(trainer_module, "CollapseWatch", lambda names: CollapseWatch(
        names, CollapseWatchSettings(far_below=10.0)))
    real = RunScorer.score_teacher

    def dies(self, teacher, epoch, step, **kwargs):
        raise KeyboardInterrupt  # a second Ctrl-C, or the process killed

    monkeypatch.setattr(RunScorer, "score_teacher", dies)
    run = tmp_path / "run"
    job = make_job(image_folder, class_names, tiny_model_dir, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        list(train(job, run))
    warned = _warnings(_log(run))
    assert warned  # epoch 0's warnings were logged before the scoring died

    monkeypatch.setattr(RunScorer, "score_teacher", real)
    list(Trainer(run).run())
    log = _log(run)
    assert _of(log, "EpochSummary", "epoch") == [0, 1]
    # The redone epoch warns again (its first warnings were cut from the log with it), and
    # counts once: the second epoch's summary is not the third the watch has seen.
    assert _warnings(log)[:len(warned)] == warned


def test_an_epochs_score_survives_when_run_json_cannot_be_written_after_the_checkpoint(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    """The checkpoint is written, then run.json; if the second write fails (a full disk, a
    kill), the resume starts after the scored epoch, so its score must come from the
    checkpoint, or the epoch is never scored and the kept classifier's file belongs to
    another entry of the selection."""
    import errno

    from must_engine.runs import RunInfo

    real_save = RunInfo.save
    checkpoint = tmp_path / "run" / "checkpoint.pt"

    def full_disk_after_the_checkpoint(self):
        if checkpoint.is_file():
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_save(self)

    monkeypatch.setattr(RunInfo, "save", full_disk_after_the_checkpoint)
    run = tmp_path / "run"
    with pytest.raises(OSError):
        list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=2), run))
    stale = json.loads((run / "run.json").read_text())
    assert not [c for c in stale["selection"]["candidates"] if c["kind"] == "teacher"]

    monkeypatch.setattr(RunInfo, "save", real_save)
    resumed = list(Trainer(run).run())
    assert [e.epoch for e in resumed if type(e).__name__ == "EpochSummary"] == [1]
    selection = json.loads((run / "run.json").read_text())["selection"]
    assert [c["epoch"] for c in selection["candidates"] if c["kind"] == "teacher"] == [0, 1]


def test_the_event_log_keeps_an_epoch_when_run_json_cannot_be_written_after_the_checkpoint(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    """The log's length at a checkpoint was kept only in run.json, written after the
    checkpoint: when that write failed, the resume (after the epoch) cut the log back to the
    checkpoint before, and the epoch's lines were lost for good."""
    import errno

    from must_engine.runs import RunInfo

    real_save = RunInfo.save

    def full_disk_at_the_second_checkpoint(self):
        if self.data.get("step", 0) >= 8:  # 4 steps an epoch
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_save(self)

    monkeypatch.setattr(RunInfo, "save", full_disk_at_the_second_checkpoint)
    run = tmp_path / "run"
    with pytest.raises(OSError):
        list(train(make_job(image_folder, class_names, tiny_model_dir, epochs=3), run))
    # What the several-process launcher reads to cut the log: the checkpoint's, not run.json's
    stale = json.loads((run / "run.json").read_text())["metrics_bytes"]
    assert checkpoint_log_bytes(run / "checkpoint.pt") > stale
    monkeypatch.setattr(RunInfo, "save", real_save)
    resumed = list(Trainer(run).run())
    assert [e.epoch for e in resumed if type(e).__name__ == "EpochSummary"] == [2]
    log = _log(run)
    assert _of(log, "EpochSummary", "epoch") == [0, 1, 2]
    assert [e["epoch"] for e in log
            if e["type"] == "ClassifierScored" and e["kind"] == "teacher"] == [0, 1, 2]


def test_the_kept_teachers_weights_are_the_selected_epochs_after_a_death_during_scoring(
        tmp_path, image_folder, class_names, tiny_model_dir, monkeypatch):
    """The best teacher's weights are saved during the epoch-end scoring, before the
    checkpoint. A death there, then a redo of that epoch that scores lower, must not hand
    back the dead attempt's weights under the earlier epoch's name."""
    from dataclasses import replace

    import must_engine.training.label_free as label_free

    scores = {0: [100.0], 1: [200.0, -100.0], 2: [-100.0]}  # epoch 1: first try, then redo
    real_score, real_teacher, real_kept = (label_free.score_candidate,
                                           RunScorer.score_teacher, RunScorer.kept_model)

    def scored(kind, *args, epoch=-1, **kwargs):
        cand = real_score(kind, *args, epoch=epoch, **kwargs)
        if kind == "teacher":
            return replace(cand, score=scores[epoch].pop(0))
        return replace(cand, score=-1000.0) if epoch >= 0 else cand

    weights = {}

    def dies_after_scoring_epoch_1_once(self, teacher, epoch, step, **kwargs):
        weights.setdefault(epoch, {k: v.clone() for k, v in teacher.state_dict().items()})
        events = real_teacher(self, teacher, epoch, step, **kwargs)
        if epoch == 1 and scores[1]:
            raise KeyboardInterrupt  # killed before the checkpoint
        return events

    kept, files = [], []

    def keeps(self, teacher, architecture):
        model, events = real_kept(self, teacher, architecture)
        kept.append(model)
        files.extend(sorted(p.name for p in self.run_dir.glob("best_teacher*")))
        return model, events

    monkeypatch.setattr(label_free, "score_candidate", scored)
    monkeypatch.setattr(RunScorer, "score_teacher", dies_after_scoring_epoch_1_once)
    monkeypatch.setattr(RunScorer, "kept_model", keeps)
    run = tmp_path / "run"
    job = make_job(image_folder, class_names, tiny_model_dir, epochs=3, keep="best")
    with pytest.raises(KeyboardInterrupt):
        list(train(job, run))
    list(Trainer(run).run())
    selection = json.loads((run / "run.json").read_text())["selection"]
    best = selection["candidates"][selection["kept"]]
    assert (best["kind"], best["epoch"]) == ("teacher", 0)
    # the dead attempt's weights were removed once the checkpoint named epoch 0's
    assert files == ["best_teacher_step4.safetensors"]
    assert not list(run.glob("best_teacher*"))  # removed once the model is saved
    state = kept[0].state_dict()
    for name, value in weights[0].items():
        assert torch.equal(state[name].float(), value.float()), name


def test_opening_the_log_drops_a_line_cut_off_by_a_kill(tmp_path):
    """A checkpoint records the log's length with its own line, before that line is written;
    a kill mid-write leaves part of it below the kept length, which must not merge with the
    resumed run's first line."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "A"}\n{"type": "Checkpo')
    with open_event_log(path, keep_bytes=10_000) as log:
        log.write('{"type": "B"}\n')
    assert path.read_text() == '{"type": "A"}\n{"type": "B"}\n'
