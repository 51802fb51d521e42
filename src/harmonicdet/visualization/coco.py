"""COCO results drawn on the images of a COCO ground truth, coloured by how well each detection is localised.

Every detection is paired with its IoU to the best-matching object of its class by
:func:`harmonicdet.analysis.consistency.score_iou_pairs` -- the matching of
``harmonicdet consistency`` -- and flagged by
:func:`~harmonicdet.analysis.consistency.inconsistent_detections` with the report's
thresholds; :mod:`harmonicdet.visualization.draw` draws them.

Which detections are drawn, per image and results file: every inconsistent one, and
the others with ``score >= score_thresh``; at most ``max_per_image``, inconsistent
ones first, then by score. Counts in ``draw.json`` are over all detections. A panel
with nothing drawn says why in its top-left corner (``no detections``, or no score
reaching ``score_thresh`` and the best one), and ``draw.json`` gives each image's
best score per results file. Images with more than 8 bits per value (16-bit PNGs) are scaled
to 8 bits (:func:`harmonicdet.images.rgb8`); ``scale`` is bounded so that no panel exceeds
:data:`MAX_PICTURE_SIDE` pixels a side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from harmonicdet.analysis.consistency import GroundTruth, inconsistent_detections, score_iou_pairs
from harmonicdet.checks import is_finite_number, is_int, is_number
from harmonicdet.images import rgb8
from harmonicdet.io import safe_file_part, write_image_atomic, write_json_atomic
from harmonicdet.output_folder import OutputFolder, flat_layout
from harmonicdet.visualization import draw as drawing
from harmonicdet.visualization.draw import Bands

DEFAULT_SCORE_THRESH = 0.3
DEFAULT_MAX_PER_IMAGE = 30
MAX_PICTURE_SIDE = 16384  # pixels a side of one drawn panel (--scale included): 768 MiB of RGB at most
COMMAND = "harmonicdet draw"  # what --out's marker (harmonicdet.output_folder.MARKER) names as its maker


class _Matched:
    """One results file matched against the ground truth, indexed by image."""

    def __init__(self, truth: GroundTruth, source: Any, name: str, bands: Bands) -> None:
        try:
            pairs = score_iou_pairs(truth, source)
        except ValueError as err:
            raise ValueError(err if str(err).startswith(name) else f"{name}: {err}") from None
        self.pairs = pairs
        valid = ~pairs["ignored"]
        hs_li, ls_hi = inconsistent_detections(pairs["score"], pairs["iou"], score_hi=bands.score_hi,
                                               score_lo=bands.score_lo, iou_low=bands.iou_low,
                                               iou_high=bands.iou_high)
        self.mark = np.where(hs_li & valid, drawing.HIGH_SCORE_LOW_IOU,
                             np.where(ls_hi & valid, drawing.LOW_SCORE_HIGH_IOU, drawing.NONE))
        position = np.searchsorted(truth.image_ids, pairs["image_id"])
        self.order = np.argsort(position, kind="stable")
        self.bounds = np.searchsorted(position[self.order], np.arange(len(truth.image_ids) + 1))
        self.inconsistent_per_image = np.bincount(position[self.mark != drawing.NONE],
                                                  minlength=len(truth.image_ids))

    def of_image(self, index: int) -> np.ndarray:
        return self.order[self.bounds[index]:self.bounds[index + 1]]


def _select(truth: GroundTruth, matched: Sequence[_Matched], ids: Optional[Sequence[int]], worst: Optional[int],
            gt_name: str) -> List[int]:
    """Positions in ``truth.image_ids`` of the images to draw, in drawing order."""
    if ids:
        positions = []
        for image_id in ids:
            p = int(np.searchsorted(truth.image_ids, int(image_id)))
            if p >= len(truth.image_ids) or truth.image_ids[p] != int(image_id):
                raise ValueError(f"image id {image_id} is not in {gt_name}")
            positions.append(p)
        positions = list(dict.fromkeys(positions))
    else:
        positions = list(range(len(truth.image_ids)))
    if worst is not None:
        if worst < 1:
            raise ValueError(f"--worst must be >= 1, got {worst}")
        total = sum(m.inconsistent_per_image for m in matched)
        positions = sorted(positions, key=lambda p: (-int(total[p]), int(truth.image_ids[p])))[:worst]
    return positions


def _load_image(truth: GroundTruth, image_id: int, images_dir: Path) -> Tuple[Image.Image, str]:
    entry = truth.images[image_id]
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(f"image id {image_id}: the ground truth gives no file_name")
    path = images_dir / file_name
    if not path.is_file():
        raise ValueError(f"image file {path} (image id {image_id}) does not exist")
    try:
        with Image.open(path) as image:
            pil = rgb8(image)
    except (OSError, ValueError) as err:
        raise ValueError(f"image file {path} (image id {image_id}) could not be read: {err}") from None
    width, height = entry.get("width"), entry.get("height")
    if width is not None and height is not None and pil.size != (int(width), int(height)):
        raise ValueError(f"image file {path} is {pil.width}x{pil.height} but the ground truth says "
                         f"{width}x{height} (image id {image_id})")
    return pil, file_name


def nothing_drawn_note(best_score: Optional[float], score_thresh: float) -> str:
    """Why a panel shows no detection: it has none, or none scores ``score_thresh`` (nor is inconsistent)."""
    return "no detections" if best_score is None else f"none >= {score_thresh:g} (best {best_score:.3f})"


def _panel(pil: Image.Image, truth: GroundTruth, index: int, gt_rows: np.ndarray, m: _Matched,
           score_thresh: float, max_per_image: int, bands: Bands,
           scale: int) -> Tuple[Image.Image, Dict[str, int], Optional[float]]:
    rows = m.of_image(index)
    p = m.pairs
    marks = m.mark[rows]
    best = float(p["score"][rows].max()) if len(rows) else None
    keep = rows[(p["score"][rows] >= score_thresh) | (marks != drawing.NONE)]
    # inconsistent first, then by score; the first max_per_image are drawn, the most important on top
    keep = keep[np.lexsort((-p["score"][keep], m.mark[keep] == drawing.NONE))][:max_per_image][::-1]
    names = [truth.category_names[int(np.searchsorted(truth.category_ids, c))] for c in p["category_id"][keep]]
    image = drawing.render(pil, det_boxes=p["box"][keep], det_scores=p["score"][keep], det_names=names,
                           det_colours=drawing.iou_colours(p["iou"][keep], p["ignored"][keep], bands),
                           det_marks=m.mark[keep], gt_boxes=truth.boxes[gt_rows],
                           gt_names=[truth.category_names[int(c)] for c in truth.category[gt_rows]], scale=scale,
                           note=None if len(keep) else nothing_drawn_note(best, score_thresh))
    counts = {"detections": int(len(rows)), "drawn": int(len(keep)),
              "high_score_low_iou": int((marks == drawing.HIGH_SCORE_LOW_IOU).sum()),
              "low_score_high_iou": int((marks == drawing.LOW_SCORE_HIGH_IOU).sum())}
    return image, counts, best


def _rows(gt: Any, dts: Sequence[Any], labels: Sequence[str], images_dir: Any, *, ids: Optional[Sequence[int]],
          worst: Optional[int], score_thresh: float, max_per_image: int, bands: Bands, scale: int,
          show_progress: bool) -> Iterator[Tuple[int, str, List[Image.Image], Dict[str, Dict[str, int]],
                                                 Dict[str, Optional[float]]]]:
    """``(image_id, file_name, one panel per results file, counts per label, best score per label)`` of each
    selected image; the arguments are checked now, the rows drawn as they are iterated."""
    if not dts:
        raise ValueError("give at least one results file (--dt)")
    if len(labels) != len(dts):
        raise ValueError(f"{len(dts)} results files (--dt) but {len(labels)} labels (--label)")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    if not is_int(max_per_image) or max_per_image < 1:
        raise ValueError(f"max_per_image (--max-dets) must be an integer >= 1, got {max_per_image!r}")
    if not is_finite_number(score_thresh) or not 0 <= score_thresh <= 1:
        raise ValueError(f"--score-thresh must be a number in [0, 1], got {score_thresh!r}")
    if not is_int(scale) or scale < 1:
        raise ValueError(f"--scale must be an integer >= 1, got {scale!r}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"image folder {images_dir} does not exist")
    gt_name = str(gt) if isinstance(gt, (str, os.PathLike)) else "the ground truth"
    try:
        truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    except ValueError as err:
        raise ValueError(err if str(err).startswith(gt_name) else f"{gt_name}: {err}") from None
    matched = [_Matched(truth, dt, str(dt) if isinstance(dt, (str, os.PathLike)) else f"results {label}", bands)
               for dt, label in zip(dts, labels)]
    positions = _select(truth, matched, ids, worst, gt_name)
    for index in positions:  # before any picture is drawn; an image without a size is checked when it is read
        entry = truth.images[int(truth.image_ids[index])]
        if is_number(entry.get("width")) and is_number(entry.get("height")):
            check_scale(scale, int(entry["width"]), int(entry["height"]), int(truth.image_ids[index]))
    return _each_row(truth, matched, positions, labels, images_dir, score_thresh=score_thresh,
                     max_per_image=max_per_image, bands=bands, scale=scale, show_progress=show_progress)


def check_scale(scale: int, width: int, height: int, image_id: int) -> None:
    """Refuse a ``scale`` that would draw the ``width`` x ``height`` image past :data:`MAX_PICTURE_SIDE` pixels a
    side (the picture's memory grows with its square)."""
    if max(width, height) * scale > MAX_PICTURE_SIDE:
        raise ValueError(f"--scale {scale} would draw image id {image_id} ({width}x{height}) at {width * scale}x"
                         f"{height * scale} px; pictures are bounded at {MAX_PICTURE_SIDE} px a side, so --scale "
                         f"{max(1, MAX_PICTURE_SIDE // max(width, height))} at most")


def _each_row(truth: GroundTruth, matched: Sequence[_Matched], positions: Sequence[int], labels: Sequence[str],
              images_dir: Path, *, score_thresh: float, max_per_image: int, bands: Bands, scale: int,
              show_progress: bool) -> Iterator[Tuple[int, str, List[Image.Image], Dict[str, Dict[str, int]],
                                                     Dict[str, Optional[float]]]]:
    """The rows of :func:`_rows`, drawn one by one."""
    gt_order = np.argsort(truth.image, kind="stable")
    gt_bounds = np.searchsorted(truth.image[gt_order], np.arange(len(truth.image_ids) + 1))
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(positions), desc="draw", unit="img", leave=False)
    for index in positions:
        image_id = int(truth.image_ids[index])
        pil, file_name = _load_image(truth, image_id, images_dir)
        check_scale(scale, pil.width, pil.height, image_id)
        gt_rows = gt_order[gt_bounds[index]:gt_bounds[index + 1]]
        panels, counts, best = [], {}, {}
        for label, m in zip(labels, matched):
            panel, counts[label], best[label] = _panel(pil, truth, index, gt_rows, m, score_thresh, max_per_image,
                                                       bands, scale)
            panels.append(panel)
        if progress is not None:
            progress.update(1)
        yield image_id, file_name, panels, counts, best
    if progress is not None:
        progress.close()


def draw_coco_results(gt: Any, dts: Sequence[Any], out_dir: Any, images_dir: Any, *,
                      labels: Optional[Sequence[str]] = None, ids: Optional[Sequence[int]] = None,
                      worst: Optional[int] = None, score_thresh: float = DEFAULT_SCORE_THRESH,
                      max_per_image: int = DEFAULT_MAX_PER_IMAGE, bands: Bands = Bands(), scale: int = 1,
                      show_progress: bool = True) -> Dict[str, Any]:
    """Draw COCO results on the ground truth's images; one PNG per image into ``out_dir``, and ``draw.json``.

    Args:
        gt: COCO ground truth (path, dict or :class:`~harmonicdet.analysis.consistency.GroundTruth`).
        dts: COCO results (paths or lists); with several, each image's panels side by side.
        out_dir: output folder under the rule of :mod:`harmonicdet.output_folder` (new, empty or made by
            ``draw``, then replaced as a whole); nothing is written outside it.
        images_dir: folder the ground truth's ``file_name`` are relative to.
        labels: one name per results file (default: the file stems, or ``dt1``, ``dt2``...).
        ids: image ids to draw (default: every image of the ground truth).
        worst: only the ``worst`` images (of ``ids``) with the most inconsistent detections,
            summed over the results files, most first (ties: lower id first).
        score_thresh, max_per_image: which detections are drawn (see the module docstring).
        bands: the IoU bands and score thresholds (default: the consistency report's).
        scale: integer upscaling of the pictures; a panel is at most :data:`MAX_PICTURE_SIDE` pixels a side.

    Returns:
        The ``draw.json`` summary: settings and, per image in drawing order, ``image_id``,
        ``file_name``, ``png`` (name in ``out_dir``), per label ``counts`` (``detections``, ``drawn``,
        ``high_score_low_iou``, ``low_score_high_iou``) and ``best_score`` (``None``: no detections).

    Raises:
        ValueError: one line naming the bad file, id or argument.
    """
    labels = list(labels) if labels else _default_labels(dts)
    out = Path(out_dir)
    settings = {"score_thresh": score_thresh, "max_per_image": max_per_image, "scale": scale, "worst": worst,
                **bands.__dict__}
    rows = _rows(gt, dts, labels, images_dir, ids=ids, worst=worst, score_thresh=score_thresh,
                 max_per_image=max_per_image, bands=bands, scale=scale, show_progress=show_progress)
    sources = {"gt": str(gt) if isinstance(gt, (str, os.PathLike)) else None,
               "dt": [str(d) if isinstance(d, (str, os.PathLike)) else None for d in dts], "labels": labels}
    folder = OutputFolder(out, COMMAND, {**sources, "ids": None if ids is None else list(ids), **settings},
                          name="--out", recognise=flat_layout("draw.json", "*.png"))
    images = []
    with folder.replace() as staging:
        for image_id, file_name, panels, counts, best in rows:
            picture = panels[0] if len(panels) == 1 else drawing.side_by_side(panels, labels, scale=scale)
            png = f"{image_id}_{safe_file_part(Path(file_name).stem, 'image')}.png"
            write_image_atomic(drawing.with_legend(picture, bands, scale), staging / png, compress_level=1)
            images.append({"image_id": image_id, "file_name": file_name, "png": png, "counts": counts,
                           "best_score": best})
        summary = {**sources, "settings": settings, "images": images}
        write_json_atomic(summary, staging / "draw.json")
    return summary


def comparison_panel(gt: Any, dts: Sequence[Any], labels: Sequence[str], images_dir: Any, path: Any, *,
                     num_images: int = 4, ids: Optional[Sequence[int]] = None, worst: bool = False,
                     score_thresh: float = DEFAULT_SCORE_THRESH, max_per_image: int = 10, bands: Bands = Bands(),
                     scale: int = 2) -> Path:
    """One PNG at ``path`` comparing results files on a few images: one row per image, the results side by
    side under a header with their labels, the legend at the bottom.

    The images: ``ids``, else the ``num_images`` with the most inconsistent detections (``worst``), else the
    first ``num_images`` by id (typical ones, as the detectors see them).
    """
    if ids is None:
        truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
        gt, ids = truth, None if worst else truth.image_ids[:num_images].tolist()
    rows = [drawing.side_by_side(panels, scale=scale) for _, _, panels, _, _ in _rows(
        gt, dts, list(labels), images_dir, ids=ids, worst=num_images if ids is None else None,
        score_thresh=score_thresh, max_per_image=max_per_image, bands=bands, scale=scale, show_progress=False)]
    if not rows:
        raise ValueError("comparison_panel: no images to draw")
    labelled = _label_columns(drawing.stack(rows), labels, rows[0], scale)
    return write_image_atomic(drawing.with_legend(labelled, bands, scale), Path(path), optimize=True)


def _label_columns(body: Image.Image, labels: Sequence[str], first_row: Image.Image, scale: int) -> Image.Image:
    """``body`` under a header naming the columns (columns as wide as a row's panels)."""
    n = len(labels)
    panel_width = (first_row.width - drawing.GAP * (n - 1)) // n
    blanks = [Image.new("RGB", (panel_width, 0)) for _ in labels]
    header = drawing.side_by_side(blanks, labels, scale=scale)
    return drawing.stack([header, body], gap=0)


def _default_labels(dts: Sequence[Any]) -> List[str]:
    if all(isinstance(d, (str, os.PathLike)) for d in dts):
        stems = [Path(d).stem for d in dts]
        if len(set(stems)) == len(stems):
            return stems
        parents = [f"{Path(d).parent.name}/{Path(d).stem}" for d in dts]
        if len(set(parents)) == len(parents):
            return parents
    return [f"dt{i + 1}" for i in range(len(dts))]
