"""Package layout for setuptools (the project's metadata is in pyproject.toml).

The repository keeps the shipped data (demo, tiny CLIP model, prompt templates, icons) in the
top-level folder ``resources/``. A wheel installs that folder as the package
``must_studio_resources``: a top-level package named ``resources`` would collide with any other
project using that common name (one install removing or shadowing the other's files).
pyproject.toml cannot rename a package while also finding packages automatically, hence this
file; must_engine.shipped_data finds the folder under either name.
"""

import shutil

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

DATA_PACKAGE = "must_studio_resources"
CODE_FILES = ["*.json", "*.txt", "*.svg", "*.png", "*.ico", "*.icns", "*.safetensors", "*.jpg",
              "*.csv", "*.md", "*.desktop", "*.xml"]



class FreshBuildPy(build_py):
    """Empty the build folder first: bdist_wheel packs all of build/lib, so a checkout built
    before the rename would still ship its stale top-level resources/ (measured: it did)."""

    def run(self):
        if not self.editable_mode:
            shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()


setup(
    cmdclass={"build_py": FreshBuildPy},
    packages=find_namespace_packages(include=["must_engine*", "must_gui*"]) + [DATA_PACKAGE],
    package_dir={DATA_PACKAGE: "resources"},
    package_data={
        "": CODE_FILES,
        # The data package's subfolders are plain folders, not packages: glob them recursively.
        DATA_PACKAGE: [f"**/{pattern}" for pattern in CODE_FILES],
    },
)
