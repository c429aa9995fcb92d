"""Say which system libraries are missing before Qt aborts on them.

On Linux, Qt's X11 platform plugin (xcb) links a dozen system libraries that a stock Debian
or Ubuntu may lack; Qt then aborts (exit 134) naming at most one of them, not always the
right one. Before the app creates its QApplication, this asks the dynamic linker (``ldd``)
about the plugin and, when libraries are missing, names them with the packages to install.
Nothing here imports Qt: the plugin is located through PySide6's package folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# Every system library the xcb plugin loads directly (found with `ldd` on
# PySide6/Qt/plugins/platforms/libqxcb.so, PySide6 6.x) and its Debian/Ubuntu package. The
# libraries these pull in themselves (libpng, zlib, libXau...) come with the packages.
# .ci/run and the README's Troubleshooting name the same packages (tests/test_platform_check.py).
XCB_PACKAGES: dict[str, str] = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}

Runner = Callable[[list[str]], str]


def _run_ldd(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    return done.stdout


def xcb_plugin_path() -> Path | None:
    """PySide6's libqxcb.so, or None where PySide6 or the plugin is absent."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0], "Qt", "plugins", "platforms",
                  "libqxcb.so")
    return plugin if plugin.is_file() else None


def missing_libraries(plugin: Path, run: Runner = _run_ldd) -> list[str]:
    """Sonames the dynamic linker cannot find for plugin ("libfoo.so.1 => not found" in ldd's
    output), in ldd's order, each once; [] when ldd is missing or everything resolves."""
    if shutil.which("ldd") is None and run is _run_ldd:
        return []
    try:
        output = run(["ldd", str(plugin)])
    except (OSError, subprocess.SubprocessError):
        return []
    missing: list[str] = []
    for line in output.splitlines():
        name, _, target = line.strip().partition("=>")
        if target.strip() == "not found" and name.strip() not in missing:
            missing.append(name.strip())
    return missing


def uses_xcb(env: Mapping[str, str]) -> bool:
    """Whether Qt will pick its X11 plugin: asked for by name, or by default outside Wayland."""
    requested = env.get("QT_QPA_PLATFORM", "")
    if requested:
        return requested.split(":")[0].split(";")[0] == "xcb"
    return env.get("XDG_SESSION_TYPE", "") != "wayland" and not env.get("WAYLAND_DISPLAY")


def missing_libraries_message(missing: list[str]) -> str:
    packages = sorted({XCB_PACKAGES[name] for name in missing if name in XCB_PACKAGES})
    unknown = [name for name in missing if name not in XCB_PACKAGES]
    steps = []
    if packages:
        steps.append(f"on Debian/Ubuntu: sudo apt-get install {' '.join(packages)}")
    if unknown:
        steps.append(f"the packages that provide {', '.join(unknown)}")
    return (f"MUST Studio cannot start: Qt's X11 plugin needs system libraries that are "
            f"missing ({', '.join(missing)}). Install them ({'; '.join(steps)}), "
            "or use the command line, `must`.")


NO_DISPLAY = ("MUST Studio cannot start: there is no X display (DISPLAY is not set). Start it "
              "from a desktop session (or with xvfb-run), or use the command line, `must`.")


def qt_start_problem(env: Mapping[str, str] | None = None, run: Runner = _run_ldd) -> str | None:
    """One sentence saying why Qt would abort at start on this machine, or None."""
    env = os.environ if env is None else env
    # A frozen build carries its own copies of these libraries beside the plugin.
    if not sys.platform.startswith("linux") or getattr(sys, "frozen", False) \
            or not uses_xcb(env):
        return None
    plugin = xcb_plugin_path()
    if plugin is None:
        return None
    missing = missing_libraries(plugin, run)
    if missing:
        return missing_libraries_message(missing)
    return None if env.get("DISPLAY") else NO_DISPLAY
