"""Atomic writes: a temporary file in the target's folder, then a rename, so a crash never leaves half a file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``json.dump`` ``obj`` to ``path`` atomically (see :func:`write_text_atomic`)."""
    return write_text_atomic(json.dumps(obj), path)


def write_image_atomic(image: Any, path: str | os.PathLike, *, format: str = "PNG", **options: Any) -> Path:
    """Save a ``PIL.Image`` to ``path`` atomically: encoded in memory, then :func:`write_bytes_atomic`.

    ``options`` go to ``Image.save`` (e.g. ``compress_level=1`` for a fast PNG).
    """
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return write_bytes_atomic(buffer.getvalue(), path)


def read_jsonl(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """The JSON objects of a JSON-lines log; a torn last line (a write cut short) is dropped, a corrupt
    line before it is a ``ValueError`` naming the file and the line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if all(not rest.strip() for rest in lines[number:]):
                break  # the last line, torn by a kill: after the checkpoint, so nothing is lost
            raise ValueError(f"{path}: line {number} is not valid JSON ({err}); repair or remove it") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records
