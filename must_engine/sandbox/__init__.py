"""A self-made world for offline demos, tests and benchmarks.

- :mod:`must_engine.sandbox.world`: labelled shape pictures in a source and shifted styles.
- :mod:`must_engine.sandbox.tiny_clip`: the project's tiny open_clip ViT, pretrained here.
- :mod:`must_engine.sandbox.build_demo`: rebuilds ``resources/models/must-tiny-clip`` and
  ``resources/demo`` bit for bit from a seed.

Submodules are imported on demand so that ``import must_engine.sandbox`` stays light.
"""
