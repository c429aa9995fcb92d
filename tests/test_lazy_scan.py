"""The lazy folder scan: listed without decoding, unreadable files reported when found."""

from __future__ import annotations

import pytest
from PIL import Image

from must_engine.images import SkippedFile, confirm_readable, scan_folder
from must_engine.models.source import ModelSpec
from must_engine.runs import RunError, TrainJob
from must_engine.training.trainer import prepare_run


def _tree(root, names_bad):
    root.mkdir()
    for name in ["a.png", "b.png", "c.png", "d.png"]:
        Image.new("RGB", (8, 8), (9, 9, 9)).save(root / name)
    for name in names_bad:
        (root / name).write_bytes(b"not an image at all")
    return root


def test_lazy_listing_decodes_nothing(tmp_path, monkeypatch):
    root = _tree(tmp_path / "p", ["zz.jpg"])
    import must_engine.images as images

    monkeypatch.setattr(images, "_check_one", lambda path: pytest.fail("decoded " + str(path)))
    scan = scan_folder(root, verify=False)
    assert scan.files == ["a.png", "b.png", "c.png", "d.png", "zz.jpg"]


def test_confirm_readable_checks_only_until_enough_decode(tmp_path):
    root = _tree(tmp_path / "p", ["0bad.jpg", "zz.jpg"])
    scan = confirm_readable(scan_folder(root, verify=False), needed=2)
    # 0bad.jpg came before two readable files: found and reported; zz.jpg is left for the
    # first epoch to find (it is never read here)
    assert scan.skipped == [SkippedFile("0bad.jpg", "not an image")]
    assert scan.files == ["a.png", "b.png", "c.png", "d.png", "zz.jpg"]


def test_a_folder_of_unreadable_files_is_refused_before_loading_a_model(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"garbage")
    job = TrainJob(root, ["a", "b"], ModelSpec.parse(str(tmp_path / "no-model")))
    with pytest.raises(RunError, match="No readable images"):
        prepare_run(job, tmp_path / "run")
