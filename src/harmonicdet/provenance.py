"""What produced a run: package version, git commit of the source tree, torch version, host.

Studies span several sittings while the code moves; every training run records this
so that results trained with different code can be told apart. On CPU the same code and
seed give bit-identical runs on one machine but not across machines whose CPUs take
other vectorised kernels, so the CPU and torch's kernel level are recorded too.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from harmonicdet.io import write_json_atomic


def git_commit(path: Path = Path(__file__).resolve().parent) -> Optional[str]:
    """The commit of the git checkout this package is tracked in (``+dirty`` with uncommitted changes).

    ``None`` outside a checkout, and for a copy of the package lying untracked inside another
    checkout, whose commit would not be the code's.
    """
    try:
        subprocess.run(["git", "ls-files", "--error-unmatch", Path(__file__).name], cwd=path, capture_output=True,
                       timeout=10, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``), else ``platform.processor()``, else ``"cpu"``."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def provenance() -> Dict[str, Any]:
    """``{"version", "commit", "torch", "device_name", "cpu", "cpu_capability", "host", "time"}`` of this process;
    ``cpu_capability`` is the vector instruction set torch's CPU kernels use here (``"AVX2"``, ``"AVX512"``, ...)."""
    from harmonicdet import __version__

    return {
        "version": __version__,
        "commit": git_commit(),
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "host": platform.node(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def record_sitting(out: Path, start_iteration: int) -> None:
    """Append this sitting's :func:`provenance` (and the iteration it starts at) to ``out/provenance.json``;
    a run that starts at iteration 0 starts the list afresh."""
    path = out / "provenance.json"
    sittings = json.loads(path.read_text())["sittings"] if path.exists() and start_iteration > 0 else []
    write_json_atomic({"sittings": sittings + [{**provenance(), "start_iteration": start_iteration}]}, path)
