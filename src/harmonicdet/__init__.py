"""HarmonicDet: consistent classification scores and localisation for object detectors.

Implements the Harmonic loss, the Harmonic IoU loss and the task-contrasting loss of
"Reconcile Prediction Consistency for Balanced Object Detection" (Wang & Zhang, ICCV 2021).
"""

__version__ = "0.1.0"
