"""A dependency-free progress line for long loops: rate, ETA and the latest values."""

from __future__ import annotations

import sys
import time
from typing import Mapping, Optional, TextIO


class Progress:
    """Prints ``desc  i/total  values  rate  ETA``: in place on a terminal, every ``every`` steps otherwise."""

    def __init__(self, total: int, desc: str, *, every: int = 10, start: int = 0,
                 stream: Optional[TextIO] = None, enabled: bool = True) -> None:
        self.total, self.desc, self.every = total, desc, max(1, every)
        self.count = start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self._t0, self._n0 = time.perf_counter(), start

    def update(self, n: int = 1, values: Optional[Mapping[str, float]] = None, unit_rate: float = 1.0) -> None:
        self.count += n
        if not self.enabled or not (self.tty or self.count % self.every == 0 or self.count == self.total):
            return
        elapsed = time.perf_counter() - self._t0
        rate = (self.count - self._n0) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else float("nan")
        shown = " ".join(f"{k}={v:.4g}" for k, v in (values or {}).items())
        line = f"{self.desc} {self.count}/{self.total} {shown} {rate * unit_rate:.2f}/s eta {eta:.0f}s"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
