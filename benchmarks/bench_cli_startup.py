"""Start-up time of the ``harmonicdet`` command: ``--help`` and a sub-command's ``--help``, against the interpreter.

    python benchmarks/bench_cli_startup.py [--repeats 9]

Each command runs in a fresh interpreter (``sys.executable``), the commands interleaved so a
shared machine's load affects them alike; the median wall time of ``--repeats`` runs is
printed beside the ratios to a bare interpreter (``python -c pass``) and to ``import torch``
(what every command paid before the heavy imports were made lazy). Also printed: the heavy
modules that building the parser imports (none is the goal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "pydantic", "ultralytics", "PIL", "scipy")
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "harmonicdet --help": ["-m", "harmonicdet", "--help"],
    "harmonicdet draw --help": ["-m", "harmonicdet", "draw", "--help"],
    "harmonicdet yolo-study --help": ["-m", "harmonicdet", "yolo-study", "--help"],
}


def heavy_modules_of_the_parser() -> list:
    code = ("import sys, json\nfrom harmonicdet.cli import build_parser\nbuild_parser()\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    seconds = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], stdout=subprocess.DEVNULL, check=True)
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    bare, torch_import = median["python -c pass"], median["python -c 'import torch'"]
    print(f"| command | median s ({args.repeats} runs) | x python -c pass | x import torch |")
    print("|---|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {value / bare:.2f} | {value / torch_import:.2f} |")
    print(f"heavy modules imported by build_parser(): {heavy_modules_of_the_parser() or 'none'}")


if __name__ == "__main__":
    run()
