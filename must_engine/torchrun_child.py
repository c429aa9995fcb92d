"""A run trained by several processes under torchrun, started and followed from this one.

The app cannot train on several GPUs in its own process: it prepares the run here (scan,
model, zero-shot classifier), starts ``torchrun ... -m must_engine train --resume`` as a
child process, and reads the run's event log (``metrics.jsonl``, written by the child's
first process) back as events, so the run looks like one trained here. Pause, resume and
stop go to the child through the run's control file (``training.control``).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from must_engine.events import Event, RunFinished, RunStarted, event_from_dict
from must_engine.run_lock import run_lock
from must_engine.runs import CHECKPOINT_FILE, METRICS_FILE, RunError, TrainJob, open_run
from must_engine.training.control import TrainControl, write_request
from must_engine.training.event_log import checkpoint_log_bytes, open_event_log

EventSink = Callable[[Event], None]
POLL_SECONDS = 0.1


def torchrun_command(run_dir: Path, images: Path, processes: int, device: str,
                     python: str = sys.executable) -> list[str]:
    """The child: the prepared run in ``run_dir`` trained by ``processes`` processes on one
    machine (``--standalone``), each on its own GPU for ``device`` "cuda"."""
    return [python, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "must_engine", "train", str(images),
            "--out", str(run_dir), "--resume", "--quiet", "--device", device]


def train_in_child(job: TrainJob, run_dir: str | Path, *, processes: int, device: str,
                   control: TrainControl | None = None, resume: bool = False,
                   on_event: EventSink | None = None,
                   popen: Callable | None = None) -> Iterator[Event]:
    """Prepare (or check) the run here, train it in ``processes`` torchrun processes on
    ``device``, and yield the events their first process logs. ``popen`` starts the child
    (``subprocess.Popen``; tests put another in)."""
    import subprocess

    from must_engine.training.trainer import _prepare_or_check

    run_dir = Path(run_dir)
    control = control or TrainControl()
    if processes < 2:
        raise RunError(f"Training on several GPUs needs two or more; {processes} found here. "
                       "Choose one GPU or the CPU in Setup.")
    with run_lock(run_dir):  # released before the child's first process takes it
        _prepare_or_check(job, run_dir, resume=resume, device=device, on_event=on_event)
    info = open_run(run_dir)
    log = run_dir / METRICS_FILE
    # The child cuts the log back to its checkpoint's end before appending (a resumed run
    # repeats the steps after it); cut it here first, and follow it from there.
    # The checkpoint's own record first: run.json is written after it and may lag.
    checkpoint = run_dir / CHECKPOINT_FILE
    keep = checkpoint_log_bytes(checkpoint) if checkpoint.is_file() else None
    if keep is None:
        keep = int(info.data.get("metrics_bytes") or 0) if info.step else 0
    open_event_log(log, keep).close()
    offset = log.stat().st_size
    cmd = torchrun_command(run_dir, info.images_root, processes, device)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errors:
        child = (popen or subprocess.Popen)(cmd, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=errors)
        finished = None
        try:
            started = asked_stop = False
            asked_pause = False
            partial = ""
            while True:
                ended = child.poll() is not None
                with open(log, encoding="utf-8") as f:
                    f.seek(offset)
                    text = f.read()
                    offset = f.tell()
                partial += text
                *lines, partial = partial.split("\n")
                for line in lines:
                    event = _parse(line)
                    if isinstance(event, RunStarted):
                        started = True
                        event = replace(event, device=f"{processes} processes (torchrun), "
                                                      f"the first on {event.device}")
                    if isinstance(event, RunFinished):
                        finished = event
                    if event is not None:
                        yield event
                if ended:
                    break
                # Requests go through the control file once the child trains; before that
                # (loading the model) a stop ends it by signal, which it turns into a stop.
                if control.stop_requested and not asked_stop:
                    asked_stop = True
                    if started:
                        write_request(run_dir, "stop")
                    else:
                        child.terminate()
                elif started and not asked_stop and control.pause_requested != asked_pause:
                    asked_pause = control.pause_requested
                    write_request(run_dir, "pause" if asked_pause else "run")
                time.sleep(POLL_SECONDS)
        except BaseException:
            if child.poll() is None:  # the app is closing or the follower failed
                child.terminate()
                with contextlib.suppress(Exception):
                    child.wait(timeout=60)
            raise
        if finished is None:
            errors.seek(0)
            raise RuntimeError(_child_error(errors.read(), child.returncode))


def _parse(line: str) -> Event | None:
    import json

    try:
        return event_from_dict(json.loads(line))
    except ValueError:
        return None


def _child_error(stderr: str, code: int | None) -> str:
    """The child's own one-line error when it wrote one, else its last lines."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("must train: error:"):
            return line.removeprefix("must train: error:").strip()
    tail = " / ".join(lines[-3:]) if lines else "no message"
    return f"The training processes ended without finishing the run (exit {code}): {tail}"
