"""Set before any test module here imports Ultralytics, which reads them at its import: offline, no pip, and a
settings folder of the tests' own (test_import_sets_offline_environment checks the integration's own defaults)."""

import os
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="harmonicdet-yolo-config-"))
