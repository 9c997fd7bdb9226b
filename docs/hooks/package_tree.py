"""A mkdocs hook: the package as griffe can read it, for the API reference.

The subpackages live outside `fusiongraph/` (setuptools' package-dir: `fusiongraph.graph` is
`graph/`), which griffe's finder does not follow. Loading this hook lays out
`build/api_src/fusiongraph/` as links to the real folders, named in pyproject.toml, before
mkdocstrings reads `paths: [build/api_src]`.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "build" / "api_src"


def lay_out_package() -> Path:
    """Link each `fusiongraph.<sub>` folder under TREE/fusiongraph/<sub>; return TREE."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "fusiongraph"
    top.mkdir(parents=True)
    for source in (ROOT / package_dir["fusiongraph"]).glob("*.py"):
        (top / source.name).symlink_to(source)
    for name, folder in package_dir.items():
        if name != "fusiongraph":
            (top / name.split(".", 1)[1]).symlink_to(ROOT / folder, target_is_directory=True)
    return TREE


lay_out_package()
