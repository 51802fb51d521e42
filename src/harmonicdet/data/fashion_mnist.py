"""Fashion-MNIST's four IDX files: where to find them and how to read them."""

from __future__ import annotations

import gzip
import hashlib
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
# searched in order when no folder is given; Debian's dataset-fashion-mnist package installs the first
STANDARD_LOCATIONS = (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/local/share/datasets/fashion-mnist"))


_HOW_TO_GET = (
    "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files in "
    "/usr/share/datasets/fashion-mnist), or download the four files train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
    "(https://github.com/zalandoresearch/fashion-mnist) into a folder and pass --fashion-mnist DIR "
    f"(or set {ENV_VAR}=DIR)."
)


def _missing(folder: Path) -> list:
    return [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def find_fashion_mnist(directory: Optional[str | os.PathLike] = None) -> Path:
    """The folder with the four ``*-ubyte.gz`` files.

    Looked up in order: ``directory`` (``--fashion-mnist DIR``), else
    ``$HARMONICDET_FASHION_MNIST``, else the first of :data:`STANDARD_LOCATIONS`
    (``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist``
    package installs them, then ``/usr/local/share/datasets/fashion-mnist``) that
    holds all four. A folder given explicitly (argument or environment variable)
    must hold all four files. Raises ``FileNotFoundError`` saying how to get them.
    """
    explicit = [(Path(directory), "--fashion-mnist")] if directory is not None else (
        [(Path(os.environ[ENV_VAR]), f"${ENV_VAR}")] if os.environ.get(ENV_VAR) else [])
    for folder, origin in explicit:
        missing = _missing(folder)
        if missing:
            raise FileNotFoundError(f"{origin} {folder}: missing {', '.join(missing)}. {_HOW_TO_GET}")
        return folder
    for folder in STANDARD_LOCATIONS:
        if not _missing(Path(folder)):
            return Path(folder)
    raise FileNotFoundError("Fashion-MNIST not found (looked in " + ", ".join(map(str, STANDARD_LOCATIONS))
                            + f"; no --fashion-mnist DIR or ${ENV_VAR} given). {_HOW_TO_GET}")


def fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 (hex) over the four files' bytes: identifies the data a set of scenes was made from."""
    digest = hashlib.sha256()
    for pair in FILES.values():
        for name in pair:
            with open(Path(folder) / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """A gzipped IDX array of unsigned bytes (magic ``0x0000 08 dims``), validated against its header."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x000008{expected_dims:02x}: "
                         f"unsigned bytes, {expected_dims} dimension(s))")
    if len(raw) < 4 + 4 * expected_dims:
        raise ValueError(f"{path}: truncated IDX header")
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
    if not len(images) or min(images.shape[1:]) == 0:
        raise ValueError(f"{folder / FILES[split][0]}: no images (shape {images.shape})")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{folder / FILES[split][1]}: label {labels.max()} outside 0..{len(CLASSES) - 1}")
    return images, labels
