"""The wheel's layout and how the app finds its shipped data (demo, tiny CLIP, templates,
icons), installed or in a source checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from must_engine import demo_files, shipped_data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packaging"))
import smoke_test  # noqa: E402

BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "must_engine", "must_gui",
                "resources")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    """Build the wheel from a copy of the sources (so no build/ folder lands in the checkout)
    with the setuptools the test extras install, offline."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = REPO / name
        if not path.exists():
            continue
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    # A checkout built before the rename keeps build/lib/resources/; it must not ship again.
    stale = source / "build" / "lib" / "resources"
    stale.mkdir(parents=True)
    (stale / "stale.txt").write_text("from an older build", encoding="utf-8")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(source)], check=True)
    (wheel,) = out.glob("must_studio-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_ships_data_under_its_own_package_name(wheel_names):
    top_level = {name.split("/")[0] for name in wheel_names}
    assert "resources" not in top_level  # a common name: other projects' files would clash
    assert shipped_data.DATA_PACKAGE in top_level
    data = [n for n in wheel_names if n.startswith(shipped_data.DATA_PACKAGE + "/")]
    shipped = {p.relative_to(REPO / "resources").as_posix()
               for p in (REPO / "resources").rglob("*") if p.is_file()
               and "__pycache__" not in p.parts}
    assert {n.split("/", 1)[1] for n in data} == shipped
    code = {n for n in top_level if not n.endswith(".dist-info")}
    assert code == {"must_engine", "must_gui", shipped_data.DATA_PACKAGE}


def _layout(root: Path, folder: str, *, checkout: bool) -> Path:
    """root/<folder>/ with a template file, and root/pyproject.toml for a checkout."""
    data = root / folder / "templates"
    data.mkdir(parents=True)
    (data / "default.json").write_text("{}", encoding="utf-8")
    if checkout:
        (root / "pyproject.toml").write_text("", encoding="utf-8")
    return root / folder


def test_installed_data_folder_is_found_beside_the_engine(tmp_path, monkeypatch):
    installed = _layout(tmp_path, shipped_data.DATA_PACKAGE, checkout=False)
    monkeypatch.setattr(shipped_data, "_package_parent", lambda: tmp_path)
    assert shipped_data.shipped_data_dir() == installed
    assert shipped_data.shipped_file("templates", "default.json").is_file()


def test_source_checkout_uses_its_own_resources_folder(tmp_path, monkeypatch):
    checkout = _layout(tmp_path, "resources", checkout=True)
    monkeypatch.setattr(shipped_data, "_package_parent", lambda: tmp_path)
    assert shipped_data.shipped_data_dir() == checkout


def test_another_projects_resources_folder_is_never_taken(tmp_path, monkeypatch):
    # site-packages/resources from some other distribution, no must_studio_resources
    _layout(tmp_path, "resources", checkout=False)
    monkeypatch.setattr(shipped_data, "_package_parent", lambda: tmp_path)
    with pytest.raises(shipped_data.ShippedDataMissing, match="reinstall MUST Studio"):
        shipped_data.shipped_data_dir()
    reason = demo_files.demo_missing_reason()
    assert reason is not None and "reinstall MUST Studio" in reason
    assert not demo_files.demo_available()


def test_repository_data_is_found_and_complete():
    assert shipped_data.shipped_data_dir() == REPO / "resources"
    assert demo_files.demo_missing_reason() is None


def test_smoke_test_names_missing_bundle_data(tmp_path):
    assert smoke_test.missing_data(tmp_path) == [f"{smoke_test.DATA_FOLDER}/ (the whole data "
                                                 "folder)"]
    bundle = tmp_path / "_internal" / smoke_test.DATA_FOLDER
    shutil.copytree(REPO / "resources", bundle,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pyc"))
    assert smoke_test.missing_data(tmp_path) == []
    (bundle / "templates" / "default.json").unlink()
    assert smoke_test.missing_data(tmp_path) == [
        f"{smoke_test.DATA_FOLDER}/templates/default.json"]
