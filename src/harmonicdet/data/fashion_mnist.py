"""Fashion-MNIST's four IDX files: where to find them and how to read them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ENV_VAR = "HARMONICDET_FASHION_MNIST"
# where Debian's dataset-fashion-mnist package installs the files
STANDARD_LOCATIONS = (Path("/usr/share/datasets/fashion-mnist"),)


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in FILES.values() for name in pair)


def find_fashion_mnist(directory: Optional[str | os.PathLike] = None) -> Path:
    """The folder with the four ``*-ubyte.gz`` files: ``directory``, else ``$HARMONICDET_FASHION_MNIST``,
    else Debian's ``dataset-fashion-mnist`` location."""
    if directory is not None:
        folder = Path(directory)
        missing = [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"--fashion-mnist {folder}: missing {', '.join(missing)}")
        return folder
    candidates = ([Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []) + list(STANDARD_LOCATIONS)
    for folder in candidates:
        if _has_files(folder):
            return folder
    raise FileNotFoundError(
        "Fashion-MNIST not found (looked in " + ", ".join(str(c) for c in candidates) + "). Install it with "
        "`apt-get install dataset-fashion-mnist`, or download the four files train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz into a folder and "
        f"pass --fashion-mnist DIR (or set {ENV_VAR})."
    )


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """A gzipped IDX array of unsigned bytes (magic ``0x0000 08 dims``), validated against its header."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes with {expected_dims} dimension(s)")
    header = 4 + 4 * expected_dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_dims))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{path}: {len(raw) - header} data bytes, the header promises shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(split: str, directory: Optional[str | os.PathLike] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels uint8 [N])`` of Fashion-MNIST's ``"train"`` or ``"test"`` split."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist(directory)
    images = read_idx(folder / FILES[split][0], 3)
    labels = read_idx(folder / FILES[split][1], 1)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{folder / FILES[split][1]}: label {labels.max()} outside 0..{len(CLASSES) - 1}")
    return images, labels
