"""Atomic writes: a temporary file in the target's folder, then a rename, so a crash never leaves half a file.

:func:`atomic_write` is the one implementation; the ``write_*_atomic`` helpers, checkpoints
(:func:`harmonicdet.engine.checkpoint.atomic_torch_save`), figures and logs all write through it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List


@contextmanager
def atomic_write(path: str | os.PathLike, *, fsync: bool = False, unique: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into: a temporary file in the same folder (its parents
    created) that replaces ``path`` (``os.replace``) when the block ends without an error.

    On any error, Ctrl-C included, the temporary file is removed and ``path`` keeps its old content.

    Args:
        fsync: flush the data to disk before the rename (checkpoints: the rename must not outrun the data).
        unique: the temporary name carries the process id, for writers that may run at the same time
            (e.g. several processes filling one cache); otherwise it is ``.NAME.tmp``, which the next
            write replaces should a killed process leave one behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if unique else f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


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


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``, or of its gzipped copy ``path.gz`` where only that exists (a study's run
    records keep their large logs compressed)."""
    path = Path(path)
    compressed = path.with_name(path.name + ".gz")
    if not path.exists() and compressed.is_file():
        return gzip.decompress(compressed.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """The JSON objects of a JSON-lines log (or of its ``.gz`` copy, see :func:`read_text`); a torn last line
    (a write cut short) is dropped, a corrupt line before it is a ``ValueError`` naming the file and the line."""
    lines = read_text(path).splitlines()
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


def safe_file_part(text: str, fallback: str) -> str:
    """``text`` made safe as part of a file name (runs of other characters become ``_``); ``fallback`` when
    nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or fallback


def check_path_part(text: Any, what: str) -> str:
    """``text`` if it can stand as one file or folder name: letters, digits, ``.``, ``_`` and ``-``, not beginning
    with ``.`` (so never ``..``, a separator or a hidden name); otherwise a ``ValueError`` naming ``what``."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", text):
        raise ValueError(f"{what} becomes a folder name and must be letters, digits, '.', '_' and '-' (not "
                         f"beginning with '.'), got {text!r}")
    return text


def say(text: str) -> None:
    """One progress line of a long command, on stderr (stdout keeps the command's result), shown at once."""
    print(text, file=sys.stderr, flush=True)
