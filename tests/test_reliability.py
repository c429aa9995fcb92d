"""What happens when things go wrong: bad settings, model folders without weights, resumes
that change settings, two trainers on one folder, full disks, file modes, killed writers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import must_engine
from must_engine.cli import main
from must_engine.events import StepMetrics
from must_engine.models.source import ModelError, ModelSpec, load_clip
from must_engine.run_lock import RunLockedError, run_lock
from must_engine.runs import RunError, TrainJob
from must_engine.training.control import TrainControl
from must_engine.training.trainer import Trainer, TrainingError, prepare_run, train

REPO = Path(must_engine.__file__).resolve().parent.parent


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    return lines[0]


def stopped_run(tmp_path, model, images, classes, *, at_step=1, **overrides) -> Path:
    run = tmp_path / "run"
    control = TrainControl()
    job = TrainJob(images, classes, ModelSpec.parse(str(model)),
                   overrides={"epochs": 2, "batch_size": 8, **overrides})
    for event in train(job, run, control=control):
        if isinstance(event, StepMetrics) and event.step == at_step:
            control.stop()
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    return run


# ---- settings and models ---------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--weight-decay", "nan"], "weight_decay must be a finite number"),
    (["--base-lr", "inf"], "base_lr must be a finite number"),
    (["--weight-decay", "-0.1"], "weight decay must not be negative"),
    (["--batch-size", "0"], "batch size must be at least 1"),
    (["--batch-size", "-3"], "batch size must be at least 1"),
    (["--threshold", "nan"], "conf_threshold must be a finite number"),
])
def test_non_finite_or_negative_settings_are_refused(flags, message, tmp_path, tiny_model_dir,
                                                     image_folder, capsys):
    code, _out, err = run_cli(["train", image_folder, "--classes", "a,b", "--model",
                               tiny_model_dir, "--out", tmp_path / "run", *flags], capsys)
    assert code == 2
    assert message in one_line(err)
    assert not (tmp_path / "run").exists()


def test_a_model_folder_with_a_config_but_no_weights_is_refused(tmp_path, tiny_model_dir,
                                                                image_folder, capsys):
    bare = tmp_path / "no-weights"
    bare.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", bare)
    with pytest.raises(ModelError, match="no weights"):
        load_clip(ModelSpec.parse(str(bare)))
    code, _out, err = run_cli(["train", image_folder, "--classes", "a,b", "--model", bare,
                               "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert "no weights" in one_line(err)


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_damaged_or_pickled_model_weights_give_one_line(damage, tmp_path, tiny_model_dir,
                                                        image_folder, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "open_clip_model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        import pickle

        weights.unlink()
        (model / "open_clip_pytorch_model.bin").write_bytes(pickle.dumps({"not": "weights"}))
    code, _out, err = run_cli(["train", image_folder, "--classes", "a,b", "--model", model,
                               "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 2, err
    line = one_line(err)
    assert "Could not load" in line or "is damaged" in line


def test_pretrained_pointing_at_a_pickle_gives_one_line(tmp_path, image_folder, capsys):
    import pickle

    bad = tmp_path / "weights.pt"
    bad.write_bytes(pickle.dumps(["pickle", "not", "a", "checkpoint"]))
    code, _out, err = run_cli(["train", image_folder, "--classes", "a,b", "--model",
                               "ViT-S-32", "--pretrained", bad, "--out", tmp_path / "r", "--quiet"],
                              capsys)
    assert code == 2, err
    assert "Could not load" in one_line(err)


def test_non_finite_weights_stop_the_run_even_when_the_loss_stays_finite(
        tmp_path, tiny_model_dir, image_folder, class_names):
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8, "use_mim": False})
    prepare_run(job, tmp_path / "run")
    trainer = Trainer(tmp_path / "run")
    with __import__("torch").no_grad():  # the decoder is off, so the loss never sees it
        next(trainer.student.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        list(trainer.run())
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---- resume ----------------------------------------------------------------------------------
def test_resume_applies_safe_settings_from_the_resumed_step_and_records_them(
        tmp_path, tiny_model_dir, image_folder, class_names, capsys):
    run = stopped_run(tmp_path, tiny_model_dir, image_folder, class_names)
    before = json.loads((run / "run.json").read_text())
    code, _out, err = run_cli(["train", image_folder, "--out", run, "--resume", "--quiet",
                               "--base-lr", "5e-6", "--weight-decay", "0.01", "--threshold",
                               "0.5", "--w-fair", "0.5", "--precision", "fp32"], capsys)
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    s = info["settings"]
    assert (s["base_lr"], s["weight_decay"], s["conf_threshold"], s["w_fair"],
            s["precision"]) == (5e-6, 0.01, 0.5, 0.5, "fp32")
    [record] = info["resumes"]
    assert record["from_step"] == before["step"] == 2
    assert record["changed"]["base_lr"] == {"from": before["settings"]["base_lr"], "to": 5e-6}
    assert set(record["changed"]) == {"base_lr", "weight_decay", "conf_threshold", "w_fair",
                                      "precision"}
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in steps if r["type"] == "StepMetrics"}
    assert lrs[2] < lrs[1] * 0.5  # the lower rate applies from the resumed step on


def test_resume_sets_the_new_weight_decay_on_the_loaded_optimizer(
        tmp_path, tiny_model_dir, image_folder, class_names):
    from must_engine.runs import open_run
    from must_engine.training.resume import apply_resume

    run = stopped_run(tmp_path, tiny_model_dir, image_folder, class_names)
    apply_resume(open_run(run), {"weight_decay": 0.2})
    trainer = Trainer(run)
    decays = {g["weight_decay"] for g in trainer.optimizer.param_groups}
    assert decays == {0.0, 0.2}


@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "4"], "batch_size"),
    (["--epochs", "5"], "epochs"),
    (["--classes", "a,b,c"], "the class names"),
    (["--seed", "7", "--mask-ratio", "0.3"], "mask_ratio, seed"),
])
def test_resume_refuses_what_cannot_change_and_names_it(flags, named, tmp_path, tiny_model_dir,
                                                        image_folder, class_names, capsys):
    run = stopped_run(tmp_path, tiny_model_dir, image_folder, class_names)
    code, _out, err = run_cli(["train", image_folder, "--out", run, "--resume", *flags], capsys)
    assert code == 2
    line = one_line(err)
    assert "cannot change" in line and named in line
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"  # untouched


def test_resume_does_not_repeat_event_rows_after_the_last_checkpoint(
        tmp_path, tiny_model_dir, image_folder, class_names):
    run = tmp_path / "run"
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 3, "batch_size": 8})
    events = train(job, run)
    for event in events:  # a crash two steps after the epoch-1 checkpoint (step 3)
        if isinstance(event, StepMetrics) and event.step == 4:
            break
    events.close()
    list(train(TrainJob(image_folder, [], None), run, resume=True))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "StepMetrics"] == list(range(9))


# ---- the run-folder lock -----------------------------------------------------------------------
def hold_lock_in_another_process(run: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom must_engine.run_lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_cannot_train_a_locked_run_and_a_dead_holder_frees_it(
        tmp_path, tiny_model_dir, image_folder, class_names, capsys):
    run = stopped_run(tmp_path, tiny_model_dir, image_folder, class_names)
    holder = hold_lock_in_another_process(run)
    try:
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"), run_lock(run):
            pass
        code, _out, err = run_cli(["train", image_folder, "--out", run, "--resume"], capsys)
        assert code == 2
        assert f"being trained by process {holder.pid}" in one_line(err)
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up; its lock file stays behind
        holder.wait()
    assert (run / ".must-lock").exists()
    code, _out, err = run_cli(["train", image_folder, "--out", run, "--resume", "--quiet"],
                              capsys)
    assert code == 0, err  # the stale lock was taken over
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_two_new_trainings_into_one_folder_cannot_both_run(tmp_path, tiny_model_dir,
                                                           image_folder, class_names):
    run = tmp_path / "run"
    holder = hold_lock_in_another_process(run)
    try:
        job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)))
        with pytest.raises(RunLockedError):
            next(train(job, run))  # what the app calls on its training thread
    finally:
        holder.kill()
        holder.wait()
    assert not (run / "run.json").exists()


def test_a_lock_on_a_folder_it_created_leaves_nothing_behind_on_failure(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(RunError), run_lock(run):
        raise RunError("bad model")
    assert not run.exists()


# ---- file modes ------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_the_modes_a_plain_write_would(umask_022, tmp_path):
    from must_engine.export.common import staged_file, staged_folder
    from must_engine.io_utils import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with staged_file(tmp_path / "b.csv") as tmp:
        tmp.write_text("x\n")
    with staged_folder(tmp_path / "folder") as tmp:
        (tmp / "inner.txt").write_text("y")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == 0o644
    assert mode(tmp_path / "b.csv") == 0o644
    assert mode(tmp_path / "folder") == 0o755
    os.umask(0o077)
    write_json(tmp_path / "c.json", {"x": 1})
    assert mode(tmp_path / "c.json") == 0o600
    os.chmod(tmp_path / "a.json", 0o640)
    write_json(tmp_path / "a.json", {"x": 2})  # a rewrite keeps the file's own mode
    assert mode(tmp_path / "a.json") == 0o640


# ---- killed writers and full disks -----------------------------------------------------------
def test_parts_left_by_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    from must_engine.io_utils import write_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.json.{dead.pid}-abc123.part"
    stale.write_text("half")
    mine = tmp_path / f".run.json.{os.getpid()}-def456.part"  # a live writer's: kept
    mine.write_text("in progress")
    write_json(tmp_path / "run.json", {"ok": True})
    assert not stale.exists() and mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "run.json"]


def test_parts_named_without_a_pid_are_removed_only_when_a_day_old(tmp_path):
    """Older versions staged ``.<name>.<8 random>.part`` (no pid): nothing says whether a
    live process still writes one, so only parts untouched for a day go, and only names of
    exactly that shape; a folder counts as touched when anything inside it changed."""
    from must_engine.io_utils import UNNAMED_WRITER_AGE_S, write_json

    old = time.time() - UNNAMED_WRITER_AGE_S - 60

    def aged(path, when=old):
        os.utime(path, (when, when), follow_symlinks=False)
        return path

    stale_file = tmp_path / ".run.json.k2x_9q0a.part"
    stale_file.write_text("half")
    aged(stale_file)
    stale_folder = tmp_path / ".run.json.ab12cd34.part"
    (stale_folder / "sub").mkdir(parents=True)
    (stale_folder / "sub" / "card.json").write_text("{}")
    for p in (stale_folder / "sub" / "card.json", stale_folder / "sub", stale_folder):
        aged(p)
    live_file = tmp_path / ".run.json.zz99yy88.part"  # being written: changed just now
    live_file.write_text("in progress")
    live_folder = tmp_path / ".run.json.qq11ww22.part"  # old folder, a file inside now
    live_folder.mkdir()
    (live_folder / "weights.bin").write_text("in progress")
    aged(live_folder)
    users = tmp_path / "mine.txt"
    users.write_text("the user's")
    kept_names = [".run.json.notes.part", ".run.json.abcdefghij.part", ".run.json.ABCDEFGH.part",
                  "run.json.abcdefgh.part", ".run.json.abcdefgh.partial"]
    for name in kept_names:  # not names this program stages under
        (tmp_path / name).write_text("user")
        aged(tmp_path / name)
    link = tmp_path / ".run.json.lnk12345.part"
    os.symlink(users, link)
    aged(link)
    aged(users)

    write_json(tmp_path / "run.json", {"ok": True})
    assert not stale_file.exists() and not stale_folder.exists()
    assert live_file.read_text() == "in progress"
    assert (live_folder / "weights.bin").read_text() == "in progress"
    assert all((tmp_path / name).read_text() == "user" for name in kept_names)
    assert link.is_symlink() and users.read_text() == "the user's"


class _FillingFile:
    """A file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_at_the_checkpoint_gives_one_line_and_records_the_status(
        tmp_path, tiny_model_dir, image_folder, class_names, capsys, monkeypatch):
    import builtins

    import must_engine.training.trainer as trainer_module

    real_open = builtins.open
    monkeypatch.setattr(trainer_module, "open",
                        lambda p, mode="r", *a, **k: _FillingFile(real_open(p, mode, *a, **k),
                                                                  4096), raising=False)
    run = tmp_path / "run"
    code, _out, err = run_cli(["train", image_folder, "--classes", ",".join(class_names),
                               "--model", tiny_model_dir, "--out", run, "--epochs", 2,
                               "--batch-size", 8, "--quiet"], capsys)
    assert code == 2
    line = one_line(err)
    assert "not enough free disk space" in line and "checkpoint.pt" in line
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped"
    assert (run / "metrics.jsonl").stat().st_size > 0  # the log was flushed as it went
    assert not [p for p in run.iterdir() if p.name.endswith(".part")]
    assert not (run / "checkpoint.pt").exists()


def test_a_full_disk_during_torchscript_export_gives_one_line_and_no_part(
        tmp_path, tiny_model_dir, image_folder, class_names, capsys, monkeypatch):
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8})
    list(train(job, tmp_path / "run"))
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "exports"
    out.mkdir()
    code, _out, err = run_cli(["export", tmp_path / "run", "--format", "torchscript", "--out",
                               out / "model.pt"], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("must export: error:") and "full" in last and "model.pt" in last
    assert list(out.iterdir()) == []


# ---- one line instead of a traceback ---------------------------------------------------------
def test_damaged_run_files_and_bad_outputs_give_one_line(tmp_path, tiny_model_dir,
                                                         image_folder, class_names, capsys):
    for i, text in enumerate(("{}", "[]", "{not json")):
        run = tmp_path / f"bad{i}"
        run.mkdir()
        (run / "run.json").write_text(text)
        code, _out, err = run_cli(["predict", run, image_folder, "--out",
                                   tmp_path / "p.csv"], capsys)
        assert code == 2, err
        assert "damaged" in one_line(err)
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8})
    list(train(job, tmp_path / "run"))
    code, _out, err = run_cli(["predict", tmp_path / "run", image_folder, "--out", tmp_path],
                              capsys)
    assert code == 2 and "is a folder" in one_line(err)
    (tmp_path / "old.csv").write_text("keep me")
    code, _out, err = run_cli(["predict", tmp_path / "run", image_folder, "--out",
                               tmp_path / "old.csv"], capsys)
    assert code == 2 and "--overwrite" in one_line(err)
    assert (tmp_path / "old.csv").read_text() == "keep me"
    if os.geteuid() != 0:  # root reads and writes everywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        code, _out, err = run_cli(["predict", tmp_path / "run", image_folder, "--out",
                                   locked / "p.csv", "--quiet"], capsys)
        assert code == 2 and "Permission denied" in one_line(err)


def test_demo_refuses_to_overwrite_an_existing_csv(tmp_path, capsys):
    (tmp_path / "predictions.csv").write_text("keep me")
    code, _out, err = run_cli(["demo", "--out", tmp_path], capsys)
    assert code == 2 and "--overwrite" in one_line(err)
    assert (tmp_path / "predictions.csv").read_text() == "keep me"


@pytest.mark.parametrize("case, message", [
    ("file_as_folder", "is a file, not a folder"),
    ("binary_classes", "is not UTF-8 text"),
    ("template_field", "placeholder other than"),
])
def test_messages_say_what_is_wrong(case, message, tmp_path, tiny_model_dir, image_folder,
                                    capsys):
    images, extra = image_folder, ["--classes", "a,b"]
    if case == "file_as_folder":
        images = next(image_folder.rglob("*.png"))
    elif case == "binary_classes":
        (tmp_path / "names.txt").write_bytes(b"\xff\xfe\x00\x81binary")
        extra = ["--classes-file", tmp_path / "names.txt"]
    else:
        (tmp_path / "t.txt").write_text("a photo of {x} {}.\n")
        extra += ["--templates-file", tmp_path / "t.txt"]
    code, _out, err = run_cli(["train", images, *extra, "--model", tiny_model_dir, "--out",
                               tmp_path / "run"], capsys)
    assert code == 2
    assert message in one_line(err)


def test_an_unreadable_image_folder_says_so(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    code, _out, err = run_cli(["train", folder, "--classes", "a,b", "--model", "x"], capsys)
    assert code == 2 and "cannot be read (permission denied)" in one_line(err)


def test_train_lists_the_images_it_skipped(tmp_path, tiny_model_dir, image_folder, class_names,
                                           capsys):
    photos = tmp_path / "photos"
    shutil.copytree(image_folder, photos)
    (photos / "broken.png").write_bytes(b"not a png")
    code, _out, err = run_cli(["train", photos, "--classes", ",".join(class_names), "--model",
                               tiny_model_dir, "--out", tmp_path / "run", "--epochs", 1,
                               "--batch-size", 8], capsys)
    assert code == 0, err
    assert "broken.png" in err and "left out of training" in err


def test_csv_cells_that_look_like_formulas_are_written_as_text(tmp_path):
    import csv

    import numpy as np

    from must_engine.predict import Predictions, read_predictions_csv

    names = ["=cmd|' /C calc'!A0.png", "+x.png", "ok.png"]
    classes = ["@risk", "-minus"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    preds = Predictions(tmp_path, names, classes, probs, probs)
    preds.write_csv(tmp_path / "p.csv")
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as f:
        raw = list(csv.reader(f))
    cells = [c for row in raw for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    read_classes, rows = read_predictions_csv(tmp_path / "p.csv")
    assert read_classes == classes
    assert [r["path"] for r in rows] == names and rows[0]["label"] == "@risk"


def test_an_empty_pil_image_is_refused_with_a_classifier_error(tmp_path, tiny_model_dir,
                                                                image_folder, class_names):
    from PIL import Image

    from must_engine.classifier import ClassifierError, load_classifier

    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8})
    list(train(job, tmp_path / "run"))
    clf = load_classifier(tmp_path / "run")
    with pytest.raises(ClassifierError, match="empty 0x0"):
        clf.predict([Image.new("RGB", (0, 0))])


def test_cli_refuses_bad_input_before_importing_torch(tmp_path):
    code = ("import sys\nfrom must_engine.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n")
    cases = [["train", str(tmp_path / "missing"), "--classes", "a,b", "--model", "x"],
             ["train", str(tmp_path), "--classes", "a,b", "--model", "x", "--base-lr", "nan"],
             ["train", str(tmp_path), "--classes", "a", "--model", "x"],
             ["predict", str(tmp_path / "missing"), str(tmp_path)]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in cases:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, *argv], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (argv, done.stderr)
        assert "torch was imported" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert time.perf_counter() - started < 60


def test_sigterm_outside_training_removes_staged_files_and_exits_143(tmp_path, capsys,
                                                                       monkeypatch):
    import signal

    import must_engine.cli as cli
    from must_engine.export.common import staged_file

    def slow_write(args):
        with staged_file(tmp_path / "out.csv") as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this
        return 0

    monkeypatch.setitem(cli.COMMANDS, "eval", slow_write)
    code, _out, err = run_cli(["eval", "a.csv", tmp_path], capsys)
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_an_export_names_images_deleted_since_training(tmp_path, tiny_model_dir, image_folder,
                                                       class_names, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(image_folder, photos)
    job = TrainJob(photos, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   overrides={"epochs": 1, "batch_size": 8})
    list(train(job, tmp_path / "run"))
    gone = sorted(photos.rglob("*.png"))[0]
    gone.unlink()
    code, _out, err = run_cli(["export", tmp_path / "run", "--format", "csv", "--out",
                               tmp_path / "p.csv"], capsys)
    assert code == 0, err
    assert "Left out 1 image(s)" in err and gone.name in err
