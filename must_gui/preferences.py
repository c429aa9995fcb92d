"""The user's preferences: a typed dataclass saved as JSON under the user config directory.

``MUST_STUDIO_CONFIG_DIR`` (and ``MUST_STUDIO_DATA_DIR`` for app-made files such as the demo
project) move everything elsewhere, so tests and portable installs never touch the user's
real settings. Window geometry lives in QSettings, in an INI file in the same directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from must_engine.io_utils import write_json

APP_NAME = "MUST Studio"
ORGANISATION = "MUST Studio"
CONFIG_ENV = "MUST_STUDIO_CONFIG_DIR"
DATA_ENV = "MUST_STUDIO_DATA_DIR"
PREFERENCES_FILE = "preferences.json"
WINDOW_STATE_FILE = "window.ini"
MAX_RECENT = 10
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

log = logging.getLogger(__name__)


def config_dir() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    import appdirs

    return Path(appdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Where the app keeps files it makes for the user (the demo project)."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    import appdirs

    return Path(appdirs.user_data_dir(APP_NAME, appauthor=False))


def window_state_path() -> Path:
    return config_dir() / WINDOW_STATE_FILE


@dataclass
class Preferences:
    recent_projects: list[str] = field(default_factory=list)  # most recent first
    default_device: str = "auto"
    default_model: str = DEFAULT_MODEL
    default_pretrained: str = DEFAULT_PRETRAINED
    thumbnail_size: int = 128
    last_folder: str = ""  # where file dialogs open

    def add_recent(self, path: str | Path) -> None:
        text = str(Path(path).absolute())
        self.recent_projects = [text, *(p for p in self.recent_projects if p != text)]
        del self.recent_projects[MAX_RECENT:]

    def remove_recent(self, path: str | Path) -> None:
        text = str(Path(path).absolute())
        self.recent_projects = [p for p in self.recent_projects if p != text]

    def existing_recent(self) -> list[str]:
        return [p for p in self.recent_projects if Path(p).is_file()]

    @classmethod
    def from_dict(cls, data: dict) -> Preferences:
        """Unknown keys are dropped and wrongly typed values fall back to the default, so a
        hand-edited or older file never stops the app from starting."""
        defaults = cls()
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(defaults, f.name)
            if isinstance(value, type(default)) and not (
                    isinstance(value, bool) and not isinstance(default, bool)):
                values[f.name] = value
        prefs = cls(**values)
        prefs.recent_projects = [p for p in prefs.recent_projects if isinstance(p, str)]
        return prefs


def preferences_path() -> Path:
    return config_dir() / PREFERENCES_FILE


def load_preferences(path: Path | None = None) -> Preferences:
    path = path or preferences_path()
    if not path.is_file():
        return Preferences()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable preferences %s: %s", path, exc)
        return Preferences()
    return Preferences.from_dict(data if isinstance(data, dict) else {})


def save_preferences(prefs: Preferences, path: Path | None = None) -> None:
    write_json(path or preferences_path(), asdict(prefs))
