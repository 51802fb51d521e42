"""Applications built on the training library: the study runner, the demo, prediction, the YOLO study."""
