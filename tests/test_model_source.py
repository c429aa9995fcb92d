"""Loading a pretrained model: problems the user can fix are one ModelError sentence."""

from __future__ import annotations

import shutil

import pytest

from must_engine.models.source import ModelError, ModelSpec, load_clip


def test_damaged_weights_file_is_a_model_error(tiny_model_dir, tmp_path):
    damaged = tmp_path / "model"
    shutil.copytree(tiny_model_dir, damaged)
    weights = list(damaged.glob("*.safetensors"))
    assert weights
    for path in weights:
        path.write_bytes(b"cut short")  # an interrupted download
    with pytest.raises(ModelError, match="is damaged .*delete it"):
        load_clip(ModelSpec.parse(str(damaged)))
