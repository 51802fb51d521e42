"""Atomic writes: a temporary file in the target's folder, then a rename, so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``json.dump`` ``obj`` to ``path`` atomically (see :func:`write_text_atomic`)."""
    return write_text_atomic(json.dumps(obj), path)
