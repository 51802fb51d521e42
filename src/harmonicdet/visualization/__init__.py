"""Pictures of detections: :mod:`.draw` (arrays to images) and :mod:`.coco` (COCO results on their images)."""
