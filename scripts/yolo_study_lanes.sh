#!/usr/bin/env bash
# Runs `harmonicdet yolo-study` as one process per variant side by side (one torch thread each: 2 cores,
# 2 variants), then one call that reports every run recorded in --out (and runs --bench-reps if given).
# Usage: scripts/yolo_study_lanes.sh [yolo-study options other than --variants, --data, --no-report]
# Environment: VARIANTS (default "standard harmonic"), DATA (default data/yolo_scenes), PYTHON, LOG_DIR.
# A stopped lane leaves its run resumable from Ultralytics' last.pt; run the script again to go on.
set -euo pipefail
python=${PYTHON:-python3}
data=${DATA:-data/yolo_scenes}
log_dir=${LOG_DIR:-runs/lane_logs}
read -ra variants <<< "${VARIANTS:-standard harmonic}"
mkdir -p "$log_dir"
pids=()
for variant in "${variants[@]}"; do
  "$python" -m harmonicdet yolo-study --data "$data" --variants "$variant" --no-report "$@" \
    >> "$log_dir/yolo-$variant.log" 2>&1 &
  pids+=($!)
  # the first lane writes the dataset (data.yaml last, atomically); the others start once it is complete
  while [ ! -f "$data/yolo/data.yaml" ] && kill -0 "$!" 2>/dev/null; do sleep 2; done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || { echo "a lane failed: see $log_dir/yolo-*.log" >&2; exit 1; }
exec "$python" -m harmonicdet yolo-study --data "$data" --variants "${variants[@]}" "$@"
