"""Where the data files that ship with MUST Studio live: the demo, the tiny CLIP model, the
default prompt templates and the app's icons.

The repository keeps them in its top-level folder ``resources/``; a wheel (and the packaged
app) installs that folder as the package ``must_studio_resources``, next to ``must_engine``
(see setup.py for why the name is not ``resources``). The folder is looked up beside the
``must_engine`` package actually running, so a source checkout run with ``PYTHONPATH`` uses its
own files even when another copy of the app is installed."""

from __future__ import annotations

import sys
from pathlib import Path

DATA_PACKAGE = "must_studio_resources"
CHECKOUT_FOLDER = "resources"


class ShippedDataMissing(FileNotFoundError):
    """The app's own data files cannot be found; the message says what to do."""


def _package_parent() -> Path:
    """The folder that holds the running must_engine package (site-packages, a checkout...)."""
    return Path(__file__).resolve().parent.parent


def shipped_data_dir() -> Path:
    parent = _package_parent()
    installed = parent / DATA_PACKAGE
    if installed.is_dir():
        return installed
    # A source checkout (plain or editable install): pyproject.toml marks it, so that a
    # folder named `resources` left in site-packages by some other project is never taken.
    checkout = parent / CHECKOUT_FOLDER
    if (parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    # A frozen app's modules live in an archive, never as files: only an installed copy's
    # vanishing source file says it was reinstalled or removed under a running app.
    if not getattr(sys, "frozen", False) and not Path(__file__).exists():
        raise ShippedDataMissing(
            "MUST Studio's files were replaced or removed while it was running (reinstalled?): "
            "close and restart MUST Studio.")
    raise ShippedDataMissing(
        f"MUST Studio's data files are missing ({installed} not found): reinstall MUST Studio.")


def shipped_file(*parts: str) -> Path:
    """A path inside the shipped data folder, e.g. shipped_file("templates", "default.json")."""
    return shipped_data_dir().joinpath(*parts)
