"""Before Qt aborts on a missing system library, the app names the libraries and packages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from must_gui import platform_check
from must_gui.platform_check import XCB_PACKAGES

REPO = Path(__file__).resolve().parents[1]

LDD_TWO_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007fa5)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibfoo-extra.so.2 => not found
"""


def test_missing_libraries_are_read_from_ldd_output(tmp_path):
    found = platform_check.missing_libraries(tmp_path / "libqxcb.so",
                                             run=lambda _cmd: LDD_TWO_MISSING)
    assert found == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfoo-extra.so.2"]


def test_message_names_libraries_and_debian_packages():
    text = platform_check.missing_libraries_message(
        ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfoo-extra.so.2"])
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1, libfoo-extra.so.2" in text
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in text
    assert "the packages that provide libfoo-extra.so.2" in text


@pytest.mark.parametrize(("env", "expected"), [
    ({}, True),
    ({"QT_QPA_PLATFORM": "xcb"}, True),
    ({"QT_QPA_PLATFORM": "offscreen"}, False),
    ({"QT_QPA_PLATFORM": "wayland;xcb"}, False),
    ({"XDG_SESSION_TYPE": "wayland"}, False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, False),
])
def test_xcb_is_checked_only_where_qt_would_use_it(env, expected):
    assert platform_check.uses_xcb(env) is expected


def _fake_plugin(tmp_path, monkeypatch):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    monkeypatch.setattr(platform_check, "xcb_plugin_path", lambda: plugin)
    monkeypatch.setattr(platform_check.sys, "platform", "linux")


def test_start_problem_names_missing_libraries_then_display(tmp_path, monkeypatch):
    _fake_plugin(tmp_path, monkeypatch)
    problem = platform_check.qt_start_problem({"DISPLAY": ":0"},
                                              run=lambda _cmd: LDD_TWO_MISSING)
    assert problem is not None and "libxcb-icccm4 libxcb-keysyms1" in problem
    assert platform_check.qt_start_problem({"DISPLAY": ":0"}, run=lambda _cmd: "") is None
    assert platform_check.qt_start_problem({}, run=lambda _cmd: "") == platform_check.NO_DISPLAY
    assert platform_check.qt_start_problem({"QT_QPA_PLATFORM": "offscreen"},
                                           run=lambda _cmd: LDD_TWO_MISSING) is None


def test_app_prints_the_problem_instead_of_letting_qt_abort(monkeypatch, capsys):
    from must_gui import app

    monkeypatch.setattr(platform_check, "qt_start_problem", lambda: "MUST Studio cannot start.")

    def must_not_start(_argv):
        raise AssertionError("Qt was started although it would abort")

    monkeypatch.setattr(app, "create_application", must_not_start)
    assert app.main(["must-studio"]) == 1
    assert "MUST Studio cannot start." in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd on this machine (not Linux)")
def test_table_holds_every_x11_library_the_real_plugin_loads():
    plugin = platform_check.xcb_plugin_path()
    assert plugin is not None
    output = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True,
                            check=True).stdout
    names = {line.split()[0] for line in output.splitlines() if "=>" in line}
    x11 = {n for n in names if re.match(r"lib(xcb|X11|xkbcommon|EGL|GL\.)", n)}
    assert x11 and x11 <= set(XCB_PACKAGES)


def test_ci_and_readme_install_every_package():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for package in set(XCB_PACKAGES.values()):
        assert re.search(rf"(?<![\w.-]){re.escape(package)}(?![\w.-])", ci), package
        assert re.search(rf"(?<![\w.-]){re.escape(package)}(?![\w.-])", readme), package
