"""Ship catalogs/ and pipelines/ inside the wheel as geosdm/catalogs and geosdm/pipelines (package data).

pyproject.toml holds the whole project definition; this file only adds a build step. The YAML files live at the
checkout's top level (where the docs and `geosdm run pipelines/demo.yaml` name them); a built wheel copies them
into the package, where geosdm.resources finds them (importlib.resources) once installed. An editable install
(`pip install -e .`) reads them from the checkout instead and copies nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("catalogs", "pipelines")  # top-level folders of YAML files -> geosdm/<name>/ in the wheel


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "geosdm" / name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted((HERE / name).glob("*.yaml")):
                shutil.copy2(f, target / f.name)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outs = list(super().get_outputs(include_bytecode))
        for name in SHIPPED:
            outs += [str(Path(self.build_lib) / "geosdm" / name / f.name) for f in sorted((HERE / name).glob("*.yaml"))]
        return outs


setup(cmdclass={"build_py": BuildWithConfigs})
