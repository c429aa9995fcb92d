"""Several GPUs from the app: the device picker offers "All N GPUs" where there are two or
more, and a run on them trains in a torchrun child process that the training page shows as
one run (progress, pause, stop) from the child's first process's event log.

No GPU is needed: the GPU count is set on the page, and the real child run uses 2 CPU
processes (gloo) instead of 2 GPUs (NCCL).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from must_engine.devices import ALL_GPUS, DeviceInfo, device_choices
from must_engine.project import Project
from must_engine.torchrun_child import torchrun_command
from must_gui.pages import training_page as training_module
from must_gui.pages.setup_page import StartRequest
from must_gui.pages.training_page import TrainingPage
from must_gui.widgets.device_picker import DevicePicker

pytestmark = pytest.mark.gui


def _gpus(n):
    return [DeviceInfo("cuda", i, "Test GPU", 8 << 30, f"Test GPU {i} (8 GiB)")
            for i in range(n)] + [DeviceInfo("cpu", None, "CPU", None, "CPU")]


def test_picker_offers_all_gpus_where_there_are_several(qtbot):
    assert ALL_GPUS not in [c for c, _ in device_choices(_gpus(1))]
    choices = device_choices(_gpus(3))
    assert [c for c, _ in choices] == ["cuda:0", "cuda:1", "cuda:2", ALL_GPUS, "cpu"]
    picker = DevicePicker()
    qtbot.addWidget(picker)
    picker._ready(choices)
    index = picker.findData(ALL_GPUS)
    assert index >= 0 and picker.itemText(index).startswith("All 3 GPUs")
    with qtbot.waitSignal(picker.deviceChanged) as chosen:
        picker.setCurrentIndex(index)
    assert chosen.args == [ALL_GPUS] and picker.choice() == ALL_GPUS


@pytest.fixture
def page(qtbot):
    widget = TrainingPage()
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.stop()
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=300_000)


def _project(tmp_path, image_folder, class_names, tiny_model_dir):
    return Project(name="p", image_folder=str(image_folder), class_names=list(class_names),
                   templates=["a photo of a {}."], model=f"local-dir:{tiny_model_dir}",
                   preset="pets", device=ALL_GPUS, path=tmp_path / "p.mustproj",
                   overrides={"epochs": 3, "batch_size": 6, "seed": 3, "mask_ratio": 0.25,
                              "base_lr": 0.05, "keep": "last", "log_every": 1})


def test_all_gpus_starts_torchrun_as_a_child(page, qtbot, tmp_path, image_folder,
                                             class_names, tiny_model_dir, monkeypatch):
    started = []

    class FakeTorchrun:
        """Records the command and fails at once with the engine's one-line error."""

        def __init__(self, cmd, stderr, **_kw):
            started.append(cmd)
            stderr.write("must train: error: no GPU in this test.\n")
            self.returncode = 1

        def poll(self):
            return 1

    from must_engine.training.trainer import prepare_run

    project = _project(tmp_path, image_folder, class_names, tiny_model_dir)
    run = tmp_path / "run-001"
    # Prepared as the Setup page's preview does (on the CPU: no GPU here), then started.
    prepare_run(project.train_job(), run, device="cpu")
    monkeypatch.setattr(subprocess, "Popen", FakeTorchrun)
    page.gpu_count = lambda: 4
    with qtbot.waitSignal(page.failed, timeout=120_000) as failed:
        page.start(StartRequest(project, run, True))
    assert failed.args == ["no GPU in this test."]
    assert started == [torchrun_command(run, image_folder.resolve(), 4, "cuda")]
    assert started[0][1:5] == ["-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node=4"]
    assert started[0][-6:] == ["--out", str(run), "--resume", "--quiet", "--device", "cuda"]


def test_all_gpus_run_shows_as_one_run_and_pauses_and_stops(page, qtbot, tmp_path,
                                                            image_folder, class_names,
                                                            tiny_model_dir):
    page.gpu_count = lambda: 2
    page.child_device = "cpu"  # 2 gloo processes stand in for 2 GPUs
    run = tmp_path / "run-001"
    steps = []
    page.plots.handle = lambda e, steps=steps: steps.append(getattr(e, "step", None))
    page.start(StartRequest(_project(tmp_path, image_folder, class_names, tiny_model_dir),
                            run, False))
    qtbot.waitUntil(lambda: page.state == training_module.TRAINING and bool(steps),
                    timeout=300_000)
    assert "2 processes (torchrun)" in page.subtitle.text()
    page.pause()
    qtbot.waitUntil(lambda: page.state == training_module.PAUSED, timeout=120_000)
    paused_at = int(page.status.text().split("step ")[1].split(".")[0])
    page.stop()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=120_000)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and info["processes"] == 2
    assert info["step"] == paused_at and 0 < paused_at < 12
    assert page.progress.format() == f"Stopped at step {paused_at}"
    assert page.last_finished is not None and page.last_finished.stopped
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "RunStarted" for e in logged) == 1  # one run, one stream
    assert not (run / "control").exists()


def test_open_a_run_folder_made_elsewhere(window, tmp_path, image_folder, class_names,
                                          tiny_model_dir, monkeypatch):
    """A run trained by the command line (as torchrun on a cluster would) opens in the app
    with its own project: curves, status, the run's classes and settings."""
    from must_engine.cli import main

    run = tmp_path / "cluster" / "run-16gpu"
    assert main(["train", str(image_folder), "--classes", ",".join(class_names), "--model",
                 str(tiny_model_dir), "--out", str(run), "--epochs", "1", "--batch-size", "6",
                 "--preset", "pets", "--device", "cpu", "--quiet"]) == 0
    project = window.open_run_folder(run)
    assert project is not None and project.current_run_dir() == run
    assert project.class_names == list(class_names) and project.preset == "pets"
    assert project.overrides["epochs"] == 1 and project.device == "auto"
    assert (tmp_path / "cluster" / "run-16gpu.mustproj").is_file()
    page = window.training_page
    assert page.run_dir == run and page.status.text() == "This run has finished."
    from PySide6.QtWidgets import QMessageBox

    said = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *args: said.append(args[2]))
    assert window.open_run_folder(tmp_path) is None  # no run.json: a sentence, no project
    assert said and "is not a MUST run folder" in said[0]
