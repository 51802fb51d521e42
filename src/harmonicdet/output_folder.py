"""The one rule for every folder a command writes: new, empty, or made by that same command.

A command opens its output folder with :class:`OutputFolder` before it does any work. The
folder is accepted when it

* does not exist or is empty;
* holds the marker :data:`MARKER` (``.harmonicdet.json``) naming the same command: the command
  made it. The marker records ``{"command", "settings", "created"}``: the command's settings
  (the same settings let a dataset be reused as it is) and the paths, relative to the folder,
  of what the command created there (a directory listed covers everything inside it);
* was made by an earlier version of the command, before markers existed: each command
  recognises its own layout (``recognise(folder)`` gives the paths it made, or ``None``;
  :func:`flat_layout` for the outputs written flat into their folder).

Anything else is refused with one line naming the folder and what is in it, before anything is
written. Two ways of writing follow:

* :meth:`OutputFolder.replace` (datasets, predictions, drawings): the whole folder is written to a
  staging folder beside it (``.NAME.partial-PID-HEX``) and renamed into place, the marker listing
  every file; the folder it replaces must hold nothing the command did not make. A write that fails
  or is interrupted (Ctrl-C included) removes the staging folder and leaves the old folder as it
  was, so no half-written folder is ever taken for a finished one.
* :meth:`OutputFolder.mark`, then the command writes its own entries (runs and studies, which grow
  over sittings): entries of others are left alone. :meth:`OutputFolder.claim` empties an entry
  for rewriting only when the marker lists it (the demo).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Set

from harmonicdet.io import write_json_atomic

MARKER = ".harmonicdet.json"
_SHOWN = 5  # entries a refusal names

Recognise = Callable[[Path], Optional[Iterable[str]]]


def flat_layout(required: str, *patterns: str) -> Recognise:
    """A ``recognise`` for an output an earlier version wrote flat into its folder: the folder holds ``required``
    and every entry's name matches one of ``patterns`` (``fnmatch``), e.g. ``("draw.json", "*.png")``."""
    def recognise(folder: Path) -> Optional[List[str]]:
        names = sorted(p.name for p in folder.iterdir())
        ours = required in names and all(any(fnmatch(n, pattern) for pattern in (required, *patterns)) for n in names)
        return names if ours else None

    return recognise


def _normalised(settings: Any) -> Any:
    """``settings`` as JSON reads it back (tuples as lists, paths as strings), so that equal settings compare equal."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _listing(names: List[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _files(folder: Path) -> List[str]:
    """Every file and link under ``folder`` (not directories), as sorted paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink() or not p.is_dir())


class OutputFolder:
    """A command's output folder, checked against the rule of the module docstring when made.

    Args:
        path: the folder.
        command: the command that writes it, e.g. ``"harmonicdet data scenes"``.
        settings: what the output is a function of (JSON-able); recorded in the marker.
        name: how messages name the folder (a flag such as ``"--out"``, or ``"output_dir"``).
        recognise: ``folder -> paths | None``: the paths an earlier, unmarked version of the command made there.

    Attributes:
        made_before: the folder holds the command's earlier output (marked or recognised).
        same_settings: its marker records the same settings (never for a recognised, unmarked folder).
        created: the paths the command made there.
    """

    def __init__(self, path: str | os.PathLike, command: str, settings: Any = None, *, name: str = "folder",
                 recognise: Optional[Recognise] = None) -> None:
        self.path, self.command, self.name, self.recognise = Path(path), command, name, recognise
        self.settings = _normalised(settings)
        self.marker = self.path / MARKER
        self.made_before = self.same_settings = False
        self.created: Set[str] = set()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{name} {self.path} is a file, not a folder; choose a folder")
        entries = sorted(self.path.iterdir()) if self.path.is_dir() else []
        if self.marker.is_file():
            record = self._read_marker()
            self.made_before, self.created = True, set(record["created"])
            self.same_settings = record["settings"] == self.settings
        elif entries:
            adopted = recognise(self.path) if recognise is not None else None
            if adopted is None:
                shown = [p.name + ("/" if p.is_dir() else "") for p in entries]
                raise ValueError(f"{name} {self.path} holds files `{command}` did not make ({_listing(shown)}); "
                                 "choose a new or empty folder")
            self.made_before, self.created = True, set(adopted)

    def _read_marker(self) -> dict:
        try:
            record = json.loads(self.marker.read_text(encoding="utf-8"))
            made_by, created = record["command"], record["created"]
            if not isinstance(made_by, str) or not isinstance(created, list):
                raise TypeError("command must be a string and created a list")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{self.marker} is not a harmonicdet marker ({err}); choose another {self.name}") from None
        if made_by != self.command:
            raise ValueError(f"{self.name} {self.path} was made by `{made_by}`, not `{self.command}`; "
                             f"choose another {self.name}")
        return {"settings": record.get("settings"), "created": created}

    def complete(self) -> bool:
        """Whether the folder holds the command's output with the same settings, every file it made still there."""
        return self.same_settings and all((self.path / name).exists() for name in self.created)

    def _made(self, relative: str) -> bool:
        """Whether the command made ``relative`` (it, or a directory above it, is listed)."""
        parts = relative.split("/")
        return any("/".join(parts[:end]) in self.created for end in range(1, len(parts) + 1))

    def foreign(self) -> List[str]:
        """The files under the folder the command did not make (its marker aside)."""
        if not self.path.is_dir():
            return []
        return [f for f in _files(self.path) if f != MARKER and not self._made(f)]

    def _refuse_foreign(self) -> None:
        foreign = self.foreign()
        if foreign:
            raise ValueError(f"{self.path / foreign[0]} was not made by `{self.command}`; move it away or choose "
                             f"another {self.name}")

    def _record(self, created: Optional[Set[str]] = None) -> dict:
        """The marker's content: the command, its settings and what it created (default :attr:`created`)."""
        return {"command": self.command, "settings": self.settings,
                "created": sorted(self.created if created is None else created)}

    def mark(self) -> Path:
        """Create the folder if needed and write the marker (the settings and what the command created); returns
        the folder. Call it once the input is accepted, before the first write."""
        self.path.mkdir(parents=True, exist_ok=True)
        record = self._record()
        try:
            current = json.loads(self.marker.read_text(encoding="utf-8")) if self.marker.is_file() else None
        except ValueError:
            current = None
        if current != record:
            write_json_atomic(record, self.marker)
        return self.path

    def check(self, *names: str) -> None:
        """Refuse now, before any work, if ``folder/name`` exists and the command did not make it."""
        for name in names:
            entry = self.path / name
            if (entry.exists() or entry.is_symlink()) and not self._made(name):
                raise ValueError(f"{entry} was not made by `{self.command}`; move it away or choose another "
                                 f"{self.name}")

    def keep(self, name: str) -> Path:
        """``folder/name``, recorded in the marker as the command's (left as it is if it was already)."""
        self.check(name)
        if name not in self.created:
            self.created.add(name)
        self.mark()
        return self.path / name

    def claim(self, name: str) -> Path:
        """``folder/name`` for the command to (re)write: removed if the command made it before, refused if not."""
        entry = self.keep(name)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
        return entry

    def _reopened(self) -> "OutputFolder":
        """The folder as it is now (another process may have written it since)."""
        return OutputFolder(self.path, self.command, self.settings, name=self.name, recognise=self.recognise)

    @contextmanager
    def replace(self, *, reuse_same: bool = False) -> Iterator[Path]:
        """Write the whole folder anew: yields an empty staging folder beside it, which replaces it when the block
        ends without an error (the marker lists every file written); on any error, Ctrl-C included, the staging
        folder is removed and the folder is left as it was.

        ``reuse_same``: if another process completed the folder with the same settings meanwhile (:meth:`complete`),
        keep theirs.
        """
        self._refuse_foreign()  # before any work: the swap would delete these
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{secrets.token_hex(3)}"
        staging = self.path.with_name(f".{self.path.name}.partial-{token}")
        staging.mkdir()
        try:
            yield staging
            created = set(_files(staging))
            write_json_atomic(self._record(created), staging / MARKER)
            now = self._reopened()
            if reuse_same and now.complete():
                shutil.rmtree(staging)
                return
            now._refuse_foreign()
            if self.path.exists() or self.path.is_symlink():
                retired = self.path.with_name(f".{self.path.name}.retired-{token}")
                self.path.rename(retired)
                try:
                    staging.rename(self.path)
                except BaseException:
                    retired.rename(self.path)
                    raise
                shutil.rmtree(retired)
            else:
                try:
                    staging.rename(self.path)
                except OSError:  # another process renamed its folder into place first
                    if not (reuse_same and self._reopened().complete()):
                        raise
                    shutil.rmtree(staging)
                    return
            self.created, self.made_before, self.same_settings = created, True, True
        except BaseException:  # Ctrl-C included: no half-written folder is left behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
