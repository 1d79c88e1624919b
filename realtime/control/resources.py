"""Where the shaders and the presets are: inside the installed package, else in the checkout.

A checkout keeps them at the top, beside `realtime/` (`shaders/`, `config/`); a wheel (`pip
install .`, pipx) carries them as package data inside the package (`realtime/shaders/`,
`realtime/config/`, mapped by pyproject.toml's [tool.setuptools.package-dir]). The package's
copy is looked up first, through importlib.resources, so an installed tool never reads a
`config/` folder that happens to lie next to site-packages.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # the folder holding realtime/ in a checkout
KINDS = {"shaders": "display.vert", "config": "default.toml"}  # folder -> a file it always has


class ResourceError(FileNotFoundError):
    """The shaders or presets are in neither place; the message names both."""


def data_dir(kind: str) -> Path:
    """The folder of one kind of data file: "shaders" or "config".

    Raises:
        ResourceError: unknown kind, or the folder is neither in the package nor the checkout.
    """
    if kind not in KINDS:
        raise ResourceError(f"unknown data folder {kind!r}; valid: {', '.join(KINDS)}")
    packaged = Path(str(importlib.resources.files("realtime") / kind))
    checkout = CHECKOUT / kind
    for folder in (packaged, checkout):
        if (folder / KINDS[kind]).is_file():
            return folder
    raise ResourceError(
        f"cannot find the {kind}/ folder: not in the installed package ({packaged}) nor in a "
        f"checkout ({checkout}); reinstall with `pip install .` from a complete checkout"
    )
