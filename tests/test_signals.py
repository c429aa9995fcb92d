"""`must train` under signals, as a terminal or a service manager sends them: each stops the
run after the current step with a checkpoint and exits 3, loader workers included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import must_engine

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and process groups")
REPO = Path(must_engine.__file__).resolve().parent.parent


def start_training(run: Path, model: Path, images: Path, classes: list[str], *extra: str):
    cmd = [sys.executable, "-m", "must_engine.cli", "train", str(images), "--classes",
           ",".join(classes), "--model", str(model), "--out", str(run), "--epochs", "400",
           "--batch-size", "2", "--quiet",
           # a published preset: no settings probe before the first step, which is what
           # these tests wait for (the probe alone outlasted the wait on a loaded machine)
           "--preset", "pets", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # A session of its own: the process group a terminal would signal on Ctrl-C.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)


def steps_logged(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.startswith('{"type": "StepMetrics"'))


def wait_for_steps(proc, run: Path, steps: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while steps_logged(run) < steps:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("training did not start in time")
        time.sleep(0.2)


def loader_workers(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children]


def assert_stopped_cleanly(proc, run: Path) -> None:
    try:
        _out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 3, err
    assert "Traceback" not in err, err
    assert "keeping a checkpoint" in err and "--resume" in err
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert info["status"] == "stopped"
    assert info["step"] >= 1
    assert (run / "checkpoint.pt").is_file()


def test_ctrl_c_to_the_process_group_with_loader_workers_stops_cleanly(
        tmp_path, tiny_model_dir, image_folder, class_names):
    run = tmp_path / "run"
    proc = start_training(run, tiny_model_dir, image_folder, class_names, "--num-workers", "2")
    wait_for_steps(proc, run, 3)
    if sys.platform.startswith("linux"):  # the workers are up: the signal reaches them too
        assert len(loader_workers(proc.pid)) >= 2
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    assert_stopped_cleanly(proc, run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_ctrl_c(sig, tmp_path, tiny_model_dir, image_folder,
                                              class_names):
    run = tmp_path / "run"
    proc = start_training(run, tiny_model_dir, image_folder, class_names, "--num-workers", "0")
    wait_for_steps(proc, run, 2)
    os.kill(proc.pid, sig)
    assert_stopped_cleanly(proc, run)


@pytest.mark.slow  # the in-process version is tests/test_reliability.py
def test_event_log_keeps_every_row_through_kill_9_and_resume_does_not_repeat_rows(
        tmp_path, tiny_model_dir, image_folder, class_names):
    run = tmp_path / "run"
    proc = start_training(run, tiny_model_dir, image_folder, class_names, "--num-workers", "0",
                          "--epochs", "3")
    wait_for_steps(proc, run, 14)  # past the first epoch's checkpoint (12 steps an epoch)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert steps_logged(run) >= 14  # each row reached the OS as it was written
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "must_engine.cli", "train", str(image_folder),
                           "--out", str(run), "--resume", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in
             (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
             if json.loads(line).get("type") == "StepMetrics"]
    assert steps == list(range(36))  # 3 epochs of 12 steps, each once
