"""Shared fixtures: a tiny random open_clip model and made-up images (no network).

Tests never touch the user's real settings, caches or the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: the models here are tiny, and on a shared two-core machine OpenMP's
# spinning worker threads made the same run 20x slower (measured: 50 s against 6 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from must_engine.testing import write_image_folder, write_tiny_model  # noqa: E402

CLASSES = ["red circle", "green square", "blue circle"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_user_cache_for_shared_fixtures(tmp_path_factory):
    """Session and module fixtures (trained runs, the demo) are built before the per-test
    isolation below; this keeps their decoded-image cache out of the user's cache folder."""
    old = os.environ.get("MUST_STUDIO_CACHE_DIR")
    os.environ["MUST_STUDIO_CACHE_DIR"] = str(tmp_path_factory.mktemp("shared-cache"))
    yield
    if old is None:
        os.environ.pop("MUST_STUDIO_CACHE_DIR", None)
    else:
        os.environ["MUST_STUDIO_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("MUST_STUDIO_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("MUST_STUDIO_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("MUST_STUDIO_DATA_DIR", str(base / "data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def class_names():
    return list(CLASSES)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Class-named subfolders, 8 images each (labels only used for `must eval`)."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "photos", CLASSES, 8)


# Skips are allowed only for hardware this machine lacks; in CI any other skip (a missing
# dependency behind importorskip, a broken fixture) fails the run instead of hiding a hole.
_ALLOWED_SKIP_WORDS = ("GPU", "CUDA", "MPS", "Apple")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    bad = []
    for report in reporter.stats.get("skipped", []):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        if not any(word in reason for word in _ALLOWED_SKIP_WORDS):
            bad.append(f"{report.nodeid}: {reason}")
    if bad:
        reporter.write_line("CI: tests skipped for a reason other than missing hardware:",
                            red=True)
        for line in bad:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = 1
