"""Ultralytics offline: the environment variables Ultralytics reads at its import, and the fonts it would download.

:func:`prepare_environment` sets, unless already set, ``YOLO_OFFLINE=1`` (Ultralytics skips its
import-time DNS probe, update checks and usage events) and ``YOLO_AUTOINSTALL=0`` (no ``pip``
subprocess). It leaves ``YOLO_CONFIG_DIR`` alone, so the settings folder is Ultralytics' own
per-user one, the same for harmonic and stock runs and independent of the working directory
(Linux ``$XDG_CONFIG_HOME/Ultralytics``, default ``~/.config/Ultralytics``; macOS
``~/Library/Application Support/Ultralytics``; Windows ``%APPDATA%/Ultralytics``; Ultralytics
falls back to a private folder in the temporary directory when that is not writable); set
``YOLO_CONFIG_DIR`` to use another. It must run before ``ultralytics`` is imported:
:mod:`harmonicdet.integrations.ultralytics` calls it first thing. :func:`ensure_fonts` copies
matplotlib's DejaVuSans.ttf into that folder as ``Arial.ttf`` and ``Arial.Unicode.ttf`` (its
dataset check downloads them otherwise); the trainer calls it when it is made.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Optional

from harmonicdet.io import atomic_write

__all__ = ["FONTS", "ensure_fonts", "prepare_environment"]

FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
_ENV_DEFAULTS = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


def prepare_environment() -> None:
    """Set the offline variables (unless set) before Ultralytics reads them at its import."""
    if "ultralytics" in sys.modules and not all(k in os.environ for k in _ENV_DEFAULTS):
        warnings.warn("ultralytics was imported before harmonicdet.integrations.ultralytics: its import-time settings "
                      "(YOLO_OFFLINE, YOLO_AUTOINSTALL) may not be the offline ones; import "
                      "harmonicdet.integrations.ultralytics first", RuntimeWarning, stacklevel=3)
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def ensure_fonts(config_dir: Optional[os.PathLike] = None) -> None:
    """Copy matplotlib's DejaVuSans.ttf into Ultralytics' config folder (default: its ``USER_CONFIG_DIR``) as each
    of :data:`FONTS` that is missing.

    Ultralytics' ``check_font`` looks there first and downloads the font otherwise.
    """
    import matplotlib

    source = Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    if config_dir is None:
        from ultralytics.utils import USER_CONFIG_DIR as config_dir
    folder = Path(config_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONTS:
        target = folder / name
        if not target.exists() and source.is_file():
            # atomic, and a temporary file per process: a concurrent check_font or import never sees half a font
            with open(source, "rb") as font, atomic_write(target, unique=True) as copy:
                shutil.copyfileobj(font, copy)
