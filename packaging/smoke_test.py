"""Start a built MUST Studio to its main window, offscreen, and report start-up time and size.

Usage (from the repository root, after `pyinstaller packaging/must-studio.spec`):

    python packaging/smoke_test.py                       # dist/must-studio/must-studio
    python packaging/smoke_test.py /tmp/must-build/dist/must-studio/must-studio --runs 3

The contract with the app (must_gui.app.main):
  * With MUST_STUDIO_SMOKE=1 in its environment, once the main window is shown the app prints
    one line "MUST_STUDIO_READY <seconds>" to stdout (seconds: a float, time from the app's
    own start to the window being shown), flushes, and quits with exit code 0.
  * If MUST_STUDIO_SMOKE_FILE is also set, it writes the same line to that file, because a
    windowed Windows build may have no stdout to print to.

The script's own wall-clock time (process start to the READY line) is the figure to quote.
Exit code: 0 when every run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

READY_PATTERN = re.compile(r"^MUST_STUDIO_READY\s+([0-9]+(?:\.[0-9]*)?)\s*$")
APP_NAME = "must-studio"


@dataclass
class RunResult:
    exit_code: int | None
    wall_to_ready_s: float | None  # measured here: launch to the READY line
    wall_total_s: float  # measured here: launch to process exit (or kill)
    app_reported_s: float | None  # what the app printed
    timed_out: bool
    stdout_tail: list[str]
    stderr_tail: list[str]

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.app_reported_s is not None and not self.timed_out


def default_executable() -> Path:
    name = f"{APP_NAME}.exe" if sys.platform == "win32" else APP_NAME
    return Path("dist") / APP_NAME / name


def resolve_executable(path: Path) -> Path:
    """Accept the executable, its one-folder directory, or a macOS .app bundle."""
    if path.suffix == ".app" and path.is_dir():
        candidates = sorted((path / "Contents" / "MacOS").iterdir())
        if not candidates:
            raise SystemExit(f"{path} holds no executable in Contents/MacOS; rebuild the app.")
        return candidates[0]
    if path.is_dir():
        for name in (APP_NAME, f"{APP_NAME}.exe"):
            if (path / name).is_file():
                return path / name
    return path


def build_folder(executable: Path) -> Path:
    """The folder whose size to report: the .app bundle, or the one-folder directory."""
    for parent in executable.parents:
        if parent.suffix == ".app":
            return parent
    return executable.parent


def folder_size(folder: Path) -> tuple[int, int]:
    """Bytes and file count under folder; links are not followed (macOS bundles use them)."""
    total = files = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            if not path.is_symlink():
                total += path.stat().st_size
                files += 1
    return total, files


# Files every build must carry, relative to its data folder (setup.py's DATA_PACKAGE): the
# offline demo, the tiny CLIP it trains, the prompt templates and the icons.
DATA_FOLDER = "must_studio_resources"
REQUIRED_DATA = (
    "templates/default.json",
    "demo/classes.txt",
    "demo/answer_key.csv",
    "models/must-tiny-clip/open_clip_config.json",
    "icons/must-studio-256.png",
)


def missing_data(folder: Path) -> list[str]:
    """REQUIRED_DATA files absent from the build; the data folder is searched for because its
    place differs by platform (_internal/ on Linux and Windows, Contents/ on macOS)."""
    roots = [p for p in folder.rglob(DATA_FOLDER) if p.is_dir()]
    if not roots:
        return [f"{DATA_FOLDER}/ (the whole data folder)"]
    root = roots[0]
    demo_images = root / "demo" / "images"
    missing = [f"{DATA_FOLDER}/{name}" for name in REQUIRED_DATA if not (root / name).is_file()]
    if not (demo_images.is_dir() and any(demo_images.iterdir())):
        missing.append(f"{DATA_FOLDER}/demo/images/ (the demo pictures)")
    return missing


def smoke_environment(scratch: Path, ready_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        MUST_STUDIO_SMOKE="1",
        MUST_STUDIO_SMOKE_FILE=str(ready_file),
        # A first start on a fresh machine: no network, no saved settings or caches.
        HF_HUB_OFFLINE="1",
        XDG_CONFIG_HOME=str(scratch / "config"),
        XDG_CACHE_HOME=str(scratch / "cache"),
        XDG_DATA_HOME=str(scratch / "data"),
    )
    return env


def _drain(stream, sink: list[tuple[float, str]]) -> None:
    for line in iter(stream.readline, ""):
        sink.append((time.perf_counter(), line.rstrip("\r\n")))
    stream.close()


def run_once(executable: Path, timeout_s: float) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="must-smoke-") as scratch_name:
        scratch = Path(scratch_name)
        ready_file = scratch / "ready.txt"
        stdout_lines: list[tuple[float, str]] = []
        stderr_lines: list[tuple[float, str]] = []

        start = time.perf_counter()
        process = subprocess.Popen(
            [str(executable)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=smoke_environment(scratch, ready_file),
            cwd=scratch,  # so that nothing relies on being started from the repository
        )
        # Both pipes are read on threads so that a chatty stderr cannot block the app.
        readers = [
            threading.Thread(target=_drain, args=(process.stdout, stdout_lines), daemon=True),
            threading.Thread(target=_drain, args=(process.stderr, stderr_lines), daemon=True),
        ]
        for reader in readers:
            reader.start()

        timed_out = False
        try:
            exit_code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
            exit_code = None
        total = time.perf_counter() - start
        for reader in readers:
            reader.join(timeout=5)

        wall_to_ready = app_reported = None
        for stamp, line in stdout_lines:
            match = READY_PATTERN.match(line.strip())
            if match:
                wall_to_ready = stamp - start
                app_reported = float(match.group(1))
                break
        if app_reported is None and ready_file.is_file():
            match = READY_PATTERN.match(ready_file.read_text(encoding="utf-8").strip())
            if match:
                app_reported = float(match.group(1))
                wall_to_ready = total  # no arrival time for a file; exit time is the bound

        return RunResult(
            exit_code=exit_code,
            wall_to_ready_s=wall_to_ready,
            wall_total_s=total,
            app_reported_s=app_reported,
            timed_out=timed_out,
            stdout_tail=[line for _, line in stdout_lines[-20:]],
            stderr_tail=[line for _, line in stderr_lines[-40:]],
        )


def describe_failure(result: RunResult, timeout_s: float) -> str:
    if result.timed_out:
        reason = f"the app did not quit within {timeout_s:.0f} s"
    elif result.exit_code != 0:
        reason = f"the app exited with code {result.exit_code}"
    else:
        reason = "the app never printed a MUST_STUDIO_READY line"
    lines = [f"FAILED: {reason}."]
    if result.stdout_tail:
        lines += ["--- last stdout lines ---", *result.stdout_tail]
    if result.stderr_tail:
        lines += ["--- last stderr lines ---", *result.stderr_tail]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Smoke-test a built MUST Studio.")
    parser.add_argument(
        "executable",
        nargs="?",
        type=Path,
        default=default_executable(),
        help="built app: its executable, one-folder directory or .app (default: %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=1, help="start the app this many times")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per start")
    args = parser.parse_args(argv)

    executable = resolve_executable(args.executable).resolve()
    if not executable.is_file():
        print(
            f"No built app at {executable}; build it with "
            "`pyinstaller --noconfirm packaging/must-studio.spec` or pass its path.",
            file=sys.stderr,
        )
        return 1

    folder = build_folder(executable)
    size_bytes, file_count = folder_size(folder)
    print(f"app: {executable}")
    print(f"build folder: {folder}")
    print(f"build size: {size_bytes / 2**20:.0f} MiB in {file_count} files")

    all_passed = True
    absent = missing_data(folder)
    if absent:
        all_passed = False
        print("FAILED: the build lacks its data files: " + ", ".join(absent))
    else:
        print(f"data files: present ({DATA_FOLDER}/)")

    ready_times: list[float] = []
    for run in range(1, args.runs + 1):
        result = run_once(executable, args.timeout)
        if not result.passed:
            all_passed = False
            print(f"run {run}: " + describe_failure(result, args.timeout))
            continue
        ready_times.append(result.wall_to_ready_s)
        print(
            f"run {run}: ready after {result.wall_to_ready_s:.2f} s "
            f"(app reports {result.app_reported_s:.2f} s), "
            f"exited 0 after {result.wall_total_s:.2f} s"
        )

    if ready_times:
        print(
            f"start-up time to main window: first {ready_times[0]:.2f} s, "
            f"median {statistics.median(ready_times):.2f} s over {len(ready_times)} run(s)"
        )
    print("SMOKE TEST PASSED" if all_passed else "SMOKE TEST FAILED")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
