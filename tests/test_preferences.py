"""Preferences: a typed dataclass in the (redirected) user config directory."""

from __future__ import annotations

import json

from must_gui.preferences import (
    MAX_RECENT,
    Preferences,
    config_dir,
    load_preferences,
    preferences_path,
    save_preferences,
)


def test_config_dir_is_redirected_in_tests(tmp_path_factory):
    # The autouse fixture in tests/conftest.py points it at a temporary folder.
    assert "pytest" in str(config_dir()) or str(tmp_path_factory.getbasetemp()) in str(
        config_dir())


def test_round_trip_and_recent_list(tmp_path):
    prefs = Preferences()
    for i in range(MAX_RECENT + 3):
        prefs.add_recent(tmp_path / f"p{i}.mustproj")
    prefs.add_recent(tmp_path / "p5.mustproj")  # reopening moves it to the top, once
    assert prefs.recent_projects[0].endswith("p5.mustproj")
    assert len(prefs.recent_projects) == MAX_RECENT
    assert len(set(prefs.recent_projects)) == MAX_RECENT
    prefs.default_device = "cpu"
    save_preferences(prefs)
    assert preferences_path().is_file()
    assert load_preferences() == prefs


def test_damaged_or_odd_files_fall_back_to_defaults():
    path = preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{broken", encoding="utf-8")
    assert load_preferences() == Preferences()
    path.write_text(json.dumps({"thumbnail_size": "big", "recent_projects": ["a", 3],
                                "unknown": 1, "default_device": "cuda:1"}), encoding="utf-8")
    prefs = load_preferences()
    assert prefs.thumbnail_size == Preferences().thumbnail_size
    assert prefs.recent_projects == ["a"]
    assert prefs.default_device == "cuda:1"
