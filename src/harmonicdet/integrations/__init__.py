"""Optional integrations with other training frameworks.

Each integration is its own module and imports its framework only when imported
itself, so the core package never needs them:

* :mod:`harmonicdet.integrations.ultralytics`: the Harmonic loss in Ultralytics YOLO
  training (YOLOv8, YOLO11, YOLO26); ``pip install "harmonicdet[ultralytics]"``.
* :mod:`harmonicdet.integrations.transformers`: the Harmonic loss in Hugging Face transformers'
  RT-DETR (v1, v2) and D-FINE; ``pip install "harmonicdet[transformers]"``.
"""
