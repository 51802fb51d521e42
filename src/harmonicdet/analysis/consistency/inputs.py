"""COCO ground truth and results (or flat tensors) as validated numpy arrays.

Malformed input raises ``ValueError`` naming the entry and the field, e.g.
``results[12]: image_id 99 is not in the ground truth``: unknown image or category
ids, missing fields, non-numeric or non-integer values, non-finite numbers,
negative box sizes. Empty results give a report with zero counts and ``null``
statistics. Every report is plain JSON (floats, ints, ``None``; never NaN).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from harmonicdet.checks import is_integral as _is_integer
from harmonicdet.checks import is_number as _is_number

JsonLike = Union[str, os.PathLike, Mapping[str, Any], Sequence[Mapping[str, Any]]]
ArrayLike = Any  # numpy array, torch tensor or nested sequence

_FIELDS = ("image_id", "category_id", "bbox", "score")


def _as_numpy(x: ArrayLike, dtype=None) -> np.ndarray:
    """A numpy array of a tensor (any device, with or without grad), array or sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _load_json(source: Any, what: str) -> Any:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file {path} does not exist") from None
        try:
            return json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if hasattr(source, "dataset") and isinstance(getattr(source, "dataset"), Mapping):
        return source.dataset  # a pycocotools / faster-coco-eval COCO object
    return source


def _first_bad(records: Sequence[Any], test) -> int:
    for i, r in enumerate(records):
        if not test(r):
            return i
    return -1


_INT64_LIMIT = 2.0 ** 63  # ids at or beyond it do not fit the int64 arrays the analysis uses


def _is_id(value: Any) -> bool:
    """An integral number (:func:`~harmonicdet.checks.is_integral`, never a bool) within the int64 range."""
    return _is_integer(value) and -_INT64_LIMIT <= value < _INT64_LIMIT


def _numeric_column(values: List[Any], where: str, field: str, integer: bool = False) -> np.ndarray:
    """``values`` as a numpy array (float64, or int64 with ``integer``), naming the first bad entry; a bool is
    never taken for a number, nor an id beyond the int64 range for an id."""
    arr = np.asarray(values) if values else np.zeros((0,))
    # numpy reads True as 1 in a column with numbers: bools are looked for entry by entry
    if arr.dtype.kind not in "iuf" or arr.ndim != 1 or any(isinstance(v, (bool, np.bool_)) for v in values):
        i = max(_first_bad(values, _is_id if integer else _is_number), 0)
        raise ValueError(f"{where}[{i}]: {field} must be {'an integer' if integer else 'a number'}, "
                         f"got {values[i]!r}")
    if not integer:
        return arr.astype(np.float64)
    if arr.dtype.kind == "f":
        bad = np.nonzero(~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= _INT64_LIMIT))[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{where}[{i}]: {field} must be an integer within the 64-bit range, got {values[i]!r}")
    return arr.astype(np.int64)


def _bbox_column(values: List[Any], where: str) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes as a float64 [N, 4] array, naming the first bad entry."""
    try:
        arr = np.asarray(values) if values else np.zeros((0, 4))
    except ValueError:  # ragged
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 4 or arr.dtype.kind not in "iuf":
        for i, v in enumerate(values):
            if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != 4:
                raise ValueError(f"{where}[{i}]: bbox must be [x, y, w, h], got {v!r}")
            if not all(_is_number(x) for x in v):
                raise ValueError(f"{where}[{i}]: bbox must be four numbers, got {v!r}")
        raise ValueError(f"{where}: every bbox must be [x, y, w, h] numbers")
    return arr.astype(np.float64)


def _columns(records: Any, where: str, fields: Sequence[str]) -> Dict[str, List[Any]]:
    """``{field: [record[field], ...]}``, or a ValueError naming the first bad record."""
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a list, got {type(records).__name__}")
    try:  # fast path: one list comprehension per field
        if all(isinstance(r, dict) for r in records):
            return {f: [r[f] for r in records] for f in fields}
    except KeyError:
        pass
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}[{i}]: expected an object, got {type(r).__name__}")
        missing = [k for k in fields if k not in r]
        if missing:
            raise ValueError(f"{where}[{i}]: missing field(s) {', '.join(missing)}")
    return {f: [r[f] for r in records] for f in fields}


def _boxes_from_xywh(bbox: np.ndarray, where: str) -> np.ndarray:
    bad = np.nonzero(~np.isfinite(bbox).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"{where}[{bad[0]}]: bbox {bbox[bad[0]].tolist()} is not finite")
    bad = np.nonzero((bbox[:, 2] < 0) | (bbox[:, 3] < 0))[0]
    if len(bad):
        raise ValueError(f"{where}[{bad[0]}]: bbox {bbox[bad[0]].tolist()} has a negative width or height")
    return np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)


class GroundTruth:
    """COCO ground truth as arrays.

    Attributes:
        image_ids, category_ids: sorted known ids (int64).
        category_names: names aligned with ``category_ids``.
        images: ``{image id: the COCO image entry}`` (``file_name``, ``width``, ``height`` when given).
        boxes: [G, 4] xyxy; image, category: [G] indices into ``image_ids`` / ``category_ids``;
        crowd: [G] bool.
    """

    def __init__(self, gt: Any) -> None:
        data = _load_json(gt, "ground-truth")
        source = f"{gt}: " if isinstance(gt, (str, os.PathLike)) else ""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}ground truth: expected a COCO dict with images, annotations, categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{source}ground truth: missing the list {key!r}")
        for key in ("images", "categories"):
            for i, entry in enumerate(data[key]):
                if not isinstance(entry, Mapping) or not _is_id(entry.get("id")):
                    raise ValueError(f"{source}ground truth {key}[{i}]: needs an integer id within the 64-bit "
                                     f"range, got {entry.get('id') if isinstance(entry, Mapping) else entry!r}")
        self.image_ids = np.unique(np.array([int(im["id"]) for im in data["images"]], dtype=np.int64))
        self.images: Dict[int, Mapping[str, Any]] = {int(im["id"]): im for im in data["images"]}
        categories = sorted({int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}.items())
        self.category_ids = np.array([c for c, _ in categories], dtype=np.int64)
        self.category_names = [n for _, n in categories]
        anns = data["annotations"]
        where = f"{source}ground truth annotations"
        cols = _columns(anns, where, ("image_id", "category_id", "bbox"))
        self.boxes = _boxes_from_xywh(_bbox_column(cols["bbox"], where), where)
        self.image = self.image_index(_numeric_column(cols["image_id"], where, "image_id", True), where)
        self.category = self.category_index(_numeric_column(cols["category_id"], where, "category_id", True), where)
        self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        self.annotation_ids = _numeric_column([a.get("id", i) for i, a in enumerate(anns)], where, "id", True)

    @staticmethod
    def _index(values: np.ndarray, known: np.ndarray, field: str, where: str) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        position = np.clip(np.searchsorted(known, values), 0, max(len(known) - 1, 0))
        bad = np.nonzero((known[position] != values) if len(known) else np.ones(len(values), bool))[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{where}[{i}]: {field} {int(values[i])} is not in the ground truth")
        return position.astype(np.int64)

    def image_index(self, image_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(np.asarray(image_ids, dtype=np.int64), self.image_ids, "image_id", where)

    def category_index(self, category_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(np.asarray(category_ids, dtype=np.int64), self.category_ids, "category_id", where)

    def class_keys(self) -> List[str]:
        """Keys of ``per_class``: the names, or ``"name (id)"`` where a name repeats."""
        seen: Dict[str, int] = {}
        for name in self.category_names:
            seen[name] = seen.get(name, 0) + 1
        return [n if seen[n] == 1 else f"{n} ({c})" for n, c in zip(self.category_names, self.category_ids)]


def results_arrays(results: Any, gt: GroundTruth, what: str) -> Dict[str, np.ndarray]:
    """Validated arrays of COCO results (path or list): boxes ``[N, 4]`` xyxy, scores ``[N]``, and the image
    and category index ``[N]`` of each detection into ``gt``; ``what`` names the input in error messages."""
    data = _load_json(results, what)
    if isinstance(results, (str, os.PathLike)):
        what = f"{results}: {what}"  # with several --dt files, the error names the one at fault
    cols = _columns(data, what, _FIELDS)
    bbox = _bbox_column(cols["bbox"], what)
    scores = _numeric_column(cols["score"], what, "score")
    bad = np.nonzero(~np.isfinite(scores))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: score {scores[bad[0]]} is not finite")
    bad = np.nonzero((scores < 0) | (scores > 1))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: score {scores[bad[0]]} is outside [0, 1] (a probability is expected)")
    boxes = _boxes_from_xywh(bbox, what)
    image = gt.image_index(_numeric_column(cols["image_id"], what, "image_id", True), what)
    category = gt.category_index(_numeric_column(cols["category_id"], what, "category_id", True), what)
    return {"boxes": boxes, "scores": scores, "image": image, "category": category}



def _tensor_inputs(boxes: ArrayLike, scores: Optional[ArrayLike], labels: ArrayLike, image_ids: ArrayLike,
                   prefix: str) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
    b = _as_numpy(boxes, np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{prefix}_boxes: expected shape [N, 4], got {list(b.shape)}")
    arrays = {"labels": _as_numpy(labels).ravel(), "image_ids": _as_numpy(image_ids).ravel()}
    if scores is not None:
        arrays["scores"] = _as_numpy(scores, np.float64).ravel()
    for name, a in arrays.items():
        if len(a) != len(b):
            raise ValueError(f"{prefix}_{name}: {len(a)} entries for {len(b)} boxes")
    for name in ("labels", "image_ids"):
        a = arrays[name]
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and len(a):
                bad = np.nonzero(~np.isfinite(a) | (a != np.round(a)))[0]
                if len(bad):
                    raise ValueError(f"{prefix}_{name}[{bad[0]}]: must be an integer, got {a[bad[0]]}")
            elif len(a):
                raise ValueError(f"{prefix}_{name}: must be integers, got dtype {a.dtype}")
        arrays[name] = a.astype(np.int64)
    bad = np.nonzero(~np.isfinite(b).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"{prefix}_boxes[{bad[0]}]: {b[bad[0]].tolist()} is not finite")
    bad = np.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0]
    if len(bad):
        raise ValueError(f"{prefix}_boxes[{bad[0]}]: {b[bad[0]].tolist()} has x2 < x1 or y2 < y1")
    s = arrays.get("scores")
    if s is not None:
        bad = np.nonzero(~np.isfinite(s))[0]
        if len(bad):
            raise ValueError(f"{prefix}_scores[{bad[0]}]: {s[bad[0]]} is not finite")
    return b, s, arrays["labels"], arrays["image_ids"]
