"""Prediction consistency of any detector: do its classification scores agree with its localisation?

The paper's complaint about standard training is *inconsistent* predictions: a
high classification score on a poorly localised box, or the reverse; NMS ranks
by score, so it then keeps the wrong box. This package measures that for any
detector's output, one concept a module: :mod:`.inputs` (COCO ground truth and
results, parsed and validated), :mod:`.matching` (each detection's IoU with its
best same-class object), :mod:`.statistics` (the metrics on plain arrays) and
:mod:`.report` (the JSON report; its docstring defines every field); the field's
metrics: :mod:`.assignment` (COCO's one-to-one true positives), :mod:`.detection_calibration`
(LaECE, D-ECE), :mod:`.tide` (TIDE's error breakdown), :mod:`.posthoc` (the post-hoc
calibration baseline).

Entry points
------------
* :func:`consistency_report` -- COCO ground truth (path, dict or ``pycocotools.coco.COCO``)
  and COCO results (path or list of ``{image_id, category_id, bbox [x, y, w, h], score}``).
* :func:`consistency_report_from_tensors` -- the same report from flat tensors/arrays
  (boxes ``xyxy``), for use inside a training loop.
* :func:`score_iou_pairs` -- the per-detection ``(score, IoU)`` pairs of COCO results.
* :func:`match_detections` -- just the vectorised matching: IoU, matched object, ignored;
  :class:`GroundTruth` and :func:`results_arrays` give it the validated arrays of COCO input.
* :func:`correlations`, :func:`inconsistency`, :func:`calibration`, :func:`nms_ranking` --
  the metrics on plain arrays; :func:`inconsistent_detections` -- which detections
  :func:`inconsistency` counts (``harmonicdet draw`` marks them).
* :func:`match_pairs`, :func:`assign_one_to_one` -- the overlapping pairs and COCO's one-to-one
  assignment; :func:`laece`, :func:`dece`, :func:`tide_breakdown`, :func:`posthoc_calibration` --
  the field's calibration errors, error breakdown and post-hoc baseline on plain arrays.

Malformed input raises ``ValueError`` naming the entry and the field, e.g.
``results[12]: image_id 99 is not in the ground truth``: unknown image or category
ids, missing fields, non-numeric or non-integer values, non-finite numbers,
negative box sizes. Empty results give a report with zero counts and ``null``
statistics. Every report is plain JSON (floats, ints, ``None``; never NaN).

"""

from .assignment import assign_one_to_one
from .detection_calibration import dece, laece
from .inputs import ArrayLike, GroundTruth, JsonLike, results_arrays
from .matching import Matches, match_detections, match_pairs
from .posthoc import posthoc_calibration
from .report import HISTOGRAM_BINS, consistency_report, consistency_report_from_tensors, score_iou_pairs
from .statistics import (IOU_HIGH, IOU_LOW, SCORE_HI, SCORE_LO, calibration, correlations, inconsistency,
                         inconsistent_detections, nms_ranking)
from .tide import class_average_precision, tide_breakdown

__all__ = [
    "ArrayLike", "GroundTruth", "HISTOGRAM_BINS", "IOU_HIGH", "IOU_LOW", "JsonLike", "Matches", "SCORE_HI", "SCORE_LO",
    "assign_one_to_one", "calibration", "class_average_precision", "consistency_report",
    "consistency_report_from_tensors", "correlations", "dece", "inconsistency", "inconsistent_detections", "laece",
    "match_detections", "match_pairs", "nms_ranking", "posthoc_calibration", "results_arrays", "score_iou_pairs",
    "tide_breakdown",
]
