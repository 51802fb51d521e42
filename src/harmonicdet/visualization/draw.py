"""Detections drawn on images: arrays in, ``PIL`` images out.

Boxes are drawn by ``torchvision.utils.draw_bounding_boxes``; text, the legend and the
side-by-side composition by ``PIL`` (``ImageDraw`` / ``Image``). Nothing here reads
files or matches detections: :mod:`harmonicdet.visualization.coco` does that with the
matching of :mod:`harmonicdet.analysis.consistency` and calls these functions.

Colours (RGB):

* a detection's box, by its IoU ``u`` with the best-matching object of its class:
  :data:`GOOD` (``u >= iou_high``), :data:`FAIR` (``iou_low <= u < iou_high``),
  :data:`POOR` (``u < iou_low``), :data:`IGNORED` (matched a crowd region: left out of
  the consistency report);
* ground-truth boxes: :data:`GROUND_TRUTH`, one pixel wide, drawn first;
* the two inconsistencies of the consistency report get a frame just outside the box
  and their label starts with a mark: :data:`OVERCONFIDENT` and ``!`` for a high score
  on a badly localised box (``s >= score_hi, u < iou_low``), :data:`UNDERCONFIDENT`
  and ``?`` for a low score on a well-localised box (``s < score_lo, u >= iou_high``).

Labels stay inside the picture and avoid each other where they can (:func:`place_labels`).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes

from harmonicdet.analysis.consistency import IOU_HIGH, IOU_LOW, SCORE_HI, SCORE_LO

RGB = Tuple[int, int, int]
Rect = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)

GOOD: RGB = (0, 200, 80)
FAIR: RGB = (255, 190, 0)
POOR: RGB = (230, 30, 30)
IGNORED: RGB = (150, 150, 150)
GROUND_TRUTH: RGB = (255, 255, 255)
OVERCONFIDENT: RGB = (255, 0, 255)
UNDERCONFIDENT: RGB = (0, 140, 255)
BACKGROUND: RGB = (32, 32, 32)  # header and legend strips
GAP = 8  # pixels between side-by-side panels

# mark per detection: NONE, or one of the two inconsistencies
NONE, HIGH_SCORE_LOW_IOU, LOW_SCORE_HIGH_IOU = 0, 1, 2
_MARK_COLOUR = {HIGH_SCORE_LOW_IOU: OVERCONFIDENT, LOW_SCORE_HIGH_IOU: UNDERCONFIDENT}
_MARK_TEXT = {HIGH_SCORE_LOW_IOU: "!", LOW_SCORE_HIGH_IOU: "?"}

# tab10: class colours of detections drawn without ground truth (harmonicdet predict)
CLASS_COLOURS: Tuple[RGB, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                                  (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass(frozen=True)
class Bands:
    """The consistency report's thresholds (:mod:`harmonicdet.analysis.consistency`): IoU bands and scores."""

    score_hi: float = SCORE_HI
    score_lo: float = SCORE_LO
    iou_low: float = IOU_LOW
    iou_high: float = IOU_HIGH

    def __post_init__(self) -> None:
        if not (0 <= self.score_lo <= self.score_hi <= 1 and 0 <= self.iou_low <= self.iou_high <= 1):
            raise ValueError(f"need 0 <= score_lo <= score_hi <= 1 and 0 <= iou_low <= iou_high <= 1, got {self}")


def iou_colours(ious: Any, ignored: Any = None, bands: Bands = Bands()) -> List[RGB]:
    """The box colour of each detection from its IoU (see the module docstring)."""
    u = np.asarray(ious, dtype=np.float64).ravel()
    skip = np.zeros(len(u), bool) if ignored is None else np.asarray(ignored, bool).ravel()
    band = np.where(u >= bands.iou_high, 0, np.where(u >= bands.iou_low, 1, 2))
    palette = (GOOD, FAIR, POOR)
    return [IGNORED if s else palette[b] for b, s in zip(band.tolist(), skip.tolist())]


def class_colour(label: int) -> RGB:
    return CLASS_COLOURS[int(label) % len(CLASS_COLOURS)]


@functools.lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    """PIL's built-in font at ``size`` px (its fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def font_size(scale: int = 1) -> int:
    """Label text size in px at an integer ``scale`` (9 px at 1; text grows slower than the picture)."""
    return 9 + 5 * (max(1, int(scale)) - 1)


def _text_colour(background: RGB) -> RGB:
    return (0, 0, 0) if 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2] > 140 else (255, 255, 255)


def _boxes(boxes: Any) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    return b.round()  # draw_bounding_boxes truncates; round to the nearest pixel instead


def _draw_boxes(image: torch.Tensor, boxes: torch.Tensor, colours: Sequence[RGB], width: int) -> torch.Tensor:
    if len(boxes) == 0:
        return image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return draw_bounding_boxes(image, boxes, colors=list(colours), width=width)


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[Tuple[int, int]], width: int, height: int, *,
                 inset: int = 0, taken: Sequence[Rect] = ()) -> List[Tuple[int, int]]:
    """The top-left corner of each label (``sizes``: ``(w, h)`` px) beside its box (``xyxy``), inside a
    ``width`` x ``height`` picture: a greedy placement.

    In the given order (the most important first) each label takes the first of its places that
    overlaps no label placed before it nor ``taken``, else the one that overlaps them least. Its
    places, at the box's left end then at its right end: above the box, inside its top (``inset``
    px below the edge), below it, inside its bottom; moved left or right to stay in the picture,
    and left out when they would leave it at the top or bottom (all of them, for a label taller
    than the picture: then it sits at the top).
    """
    placed: List[Rect] = list(taken)
    corners = []
    for (x0, y0, x1, y1), (w, h) in zip(boxes, sizes):
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        places = [(x, y) for x in (x0, x1 - w + 1) for y in (y0 - h, y0 + inset, y1 + 1, y1 - inset - h + 1)]
        places = [(min(max(x, 0), max(width - w, 0)), y) for x, y in places if 0 <= y <= height - h]
        places = places or [(min(max(x0, 0), max(width - w, 0)), 0)]
        best = min(places, key=lambda c: sum(_overlap((c[0], c[1], c[0] + w, c[1] + h), r) for r in placed))
        corners.append(best)
        placed.append((best[0], best[1], best[0] + w, best[1] + h))
    return corners


def render(image: Any, *, det_boxes: Any, det_scores: Any, det_names: Sequence[str], det_colours: Sequence[RGB],
           det_marks: Any = None, gt_boxes: Any = None, gt_names: Optional[Sequence[str]] = None, scale: int = 1,
           box_width: int = 2, note: Optional[str] = None) -> Image.Image:
    """One image with its detections (and ground truth) drawn on it.

    Args:
        image: [H, W, 3] uint8 array or a ``PIL`` image.
        det_boxes: [D, 4] ``xyxy`` in image pixels; det_scores: [D]; det_names: D class names;
        det_colours: D RGB box colours (e.g. :func:`iou_colours`).
        det_marks: [D] :data:`NONE` / :data:`HIGH_SCORE_LOW_IOU` / :data:`LOW_SCORE_HIGH_IOU`: a frame in
            :data:`OVERCONFIDENT` / :data:`UNDERCONFIDENT` just outside the box, and ``!`` / ``?`` before its label.
        gt_boxes: [G, 4] ``xyxy`` ground truth, drawn first in :data:`GROUND_TRUTH`, 1 px wide.
        gt_names: G class names, written small inside the bottom-left corner of each object's box
            (so that a well-placed box of the wrong class, IoU 0 with its own class, reads as such).
        scale: integer upscaling of the picture (boxes, lines and text scale with it).
        box_width: line width of the detections at scale 1.
        note: a line written in the top-left corner (e.g. why no detection is drawn).

    Detections are drawn in the given order (the last on top); each gets a label
    ``[mark]name score`` on a patch of its colour beside its box, placed by
    :func:`place_labels` (the last detection's first). Returns an RGB ``PIL`` image of size
    ``(W * scale, H * scale)``.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = pil.convert("RGB")
    scale = max(1, int(scale))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.BILINEAR)
    boxes = _boxes(det_boxes) * scale
    scores = np.asarray(det_scores, dtype=np.float64).ravel()
    marks = np.zeros(len(boxes), np.int64) if det_marks is None else np.asarray(det_marks, np.int64).ravel()
    if not (len(scores) == len(det_names) == len(det_colours) == len(marks) == len(boxes)):
        raise ValueError(f"render: {len(boxes)} boxes but {len(scores)} scores, {len(det_names)} names, "
                         f"{len(det_colours)} colours, {len(marks)} marks")
    width = box_width * scale
    tensor = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    if gt_boxes is not None:
        gt = _boxes(gt_boxes) * scale
        tensor = _draw_boxes(tensor, gt, [GROUND_TRUTH] * len(gt), scale)
    marked = np.nonzero(marks != NONE)[0]
    if len(marked):
        frame = boxes[marked] + torch.tensor([-width, -width, width, width], dtype=boxes.dtype)
        tensor = _draw_boxes(tensor, frame, [_MARK_COLOUR[int(marks[i])] for i in marked], width)
    tensor = _draw_boxes(tensor, boxes, det_colours, width)
    out = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    draw, taken = ImageDraw.Draw(out), []
    if note:
        f = font(font_size(scale))
        left, top, right, bottom = draw.textbbox((0, 0), note, font=f)
        taken.append((0, 0, right - left + 2, bottom - top + 2))
        draw.rectangle((0, 0, right - left + 1, bottom - top + 1), fill=BACKGROUND)
        draw.text((1 - left, 1 - top), note, fill=(255, 255, 255), font=f)
    if gt_boxes is not None and gt_names is not None:
        if len(gt_names) != len(gt):
            raise ValueError(f"render: {len(gt)} ground-truth boxes but {len(gt_names)} names")
        f = font(max(6, font_size(scale) - 2))
        for box, name in zip(gt.tolist(), gt_names):
            left, top, right, bottom = draw.textbbox((0, 0), name, font=f)
            x, y = box[0] + width, box[3] - width - (bottom - top) - 1
            taken.append((int(x), int(y), int(x + right - left + 2), int(y + bottom - top + 1)))
            draw.rectangle((x, y, x + right - left + 1, y + bottom - top), fill=BACKGROUND)
            draw.text((x + 1 - left, y - top), name, fill=GROUND_TRUTH, font=f)
    if len(boxes):
        f = font(font_size(scale))
        texts = [f"{_MARK_TEXT.get(mark, '')}{name} {score:.2f}" for name, score, mark in
                 zip(det_names, scores.tolist(), marks.tolist())]
        sizes = []
        for text in texts:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
            sizes.append((right - left + 2, bottom - top + 1))
        # the last drawn (on top, the most important) is placed first
        corners = place_labels(boxes.tolist()[::-1], sizes[::-1], out.width, out.height, inset=width,
                               taken=taken)[::-1]
        for text, (w, h), (x, y), colour, mark in zip(texts, sizes, corners, det_colours, marks.tolist()):
            left, top, _, _ = draw.textbbox((0, 0), text, font=f)
            patch = _MARK_COLOUR.get(mark, colour)
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=patch)
            draw.text((x + 1 - left, y - top), text, fill=_text_colour(patch), font=f)
    return out


def side_by_side(panels: Sequence[Image.Image], labels: Optional[Sequence[str]] = None, *, gap: int = GAP,
                 scale: int = 1) -> Image.Image:
    """Panels in a row, ``gap`` px apart, with a header strip naming each one when ``labels`` is given.

    The result is ``sum(widths) + gap * (n - 1)`` wide.
    """
    if not panels:
        raise ValueError("side_by_side: no panels")
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"side_by_side: {len(panels)} panels but {len(labels)} labels")
    f = font(font_size(scale) + 2)
    header = 0
    if labels:
        header = max(_text_height(f, t) for t in labels) + 6
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, header + max(p.height for p in panels)), BACKGROUND)
    draw, x = ImageDraw.Draw(canvas), 0
    for i, panel in enumerate(panels):
        canvas.paste(panel, (x, header))
        if labels:
            left, top, right, _ = draw.textbbox((0, 0), labels[i], font=f)
            draw.text((x + max(0, (panel.width - (right - left)) // 2) - left, 3 - top), labels[i],
                      fill=(255, 255, 255), font=f)
        x += panel.width + gap
    return canvas


def stack(images: Sequence[Image.Image], *, gap: int = GAP) -> Image.Image:
    """Images one below the other, ``gap`` px apart, left-aligned on the strip background."""
    if not images:
        raise ValueError("stack: no images")
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                       BACKGROUND)
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas


def _text_height(f: ImageFont.ImageFont, text: str) -> int:
    _, top, _, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=f)
    return bottom - top


def legend_entries(bands: Bands = Bands()) -> List[Tuple[RGB, str]]:
    """``(colour, text)`` of every colour :func:`render` uses for IoU-coloured detections."""
    return [
        (GOOD, f"IoU >= {bands.iou_high:g}"),
        (FAIR, f"IoU {bands.iou_low:g}-{bands.iou_high:g}"),
        (POOR, f"IoU < {bands.iou_low:g}"),
        (GROUND_TRUTH, "ground truth"),
        (OVERCONFIDENT, f"! score >= {bands.score_hi:g}, IoU < {bands.iou_low:g}"),
        (UNDERCONFIDENT, f"? score < {bands.score_lo:g}, IoU >= {bands.iou_high:g}"),
        (IGNORED, "crowd (ignored)"),
    ]


@functools.lru_cache(maxsize=16)
def legend(width: int, bands: Bands = Bands(), scale: int = 1) -> Image.Image:
    """A strip ``width`` px wide explaining the colours (entries wrap onto as many lines as needed)."""
    f = font(font_size(scale))
    pad, swatch = 3 * scale, 8 * scale
    entries = legend_entries(bands)
    line = max(max(_text_height(f, t) for _, t in entries), swatch) + pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed, x, y = [], pad, pad
    for colour, text in entries:
        left, top, right, _ = probe.textbbox((0, 0), text, font=f)
        w = swatch + pad + (right - left)
        if x > pad and x + w > width - pad:
            x, y = pad, y + line
        placed.append((x, y, colour, text, left, top))
        x += w + 3 * pad
    strip = Image.new("RGB", (width, y + line + pad), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for x, y, colour, text, left, top in placed:
        draw.rectangle((x, y + 1, x + swatch - 1, y + swatch), fill=colour)
        draw.text((x + swatch + pad - left, y - top), text, fill=(255, 255, 255), font=f)
    return strip


def with_legend(image: Image.Image, bands: Bands = Bands(), scale: int = 1) -> Image.Image:
    """``image`` with :func:`legend` below it (same width)."""
    strip = legend(image.width, bands, scale)
    canvas = Image.new("RGB", (image.width, image.height + strip.height), BACKGROUND)
    canvas.paste(image, (0, 0))
    canvas.paste(strip, (0, image.height))
    return canvas
