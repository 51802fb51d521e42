#!/usr/bin/env bash
# Runs a study's unfinished runs in LANES side-by-side processes (e.g. on one GPU), each for at most
# LIMIT seconds, then writes nothing else: the report is `harmonicdet study STUDY --report-only`.
# Usage: scripts/study_lanes.sh STUDY.yaml [LANES=9] [LIMIT_S=0 (no limit)]
# Environment: PYTHON, LOG_DIR, OMP_NUM_THREADS (torch threads per lane; default: cores / lanes, at least 1).
# Run i takes every LANES-th run of the study's order, so each lane gets a mix; a lane that is stopped
# leaves its run resumable from last.pt (study resume rules).
set -euo pipefail
study=$1; lanes=${2:-9}; limit=${3:-0}
python=${PYTHON:-python3}
# a command substitution, not <(...): a Python that is missing or fails stops the script (set -e)
# instead of reading as "no unfinished runs"
unfinished=$("$python" -c "
import sys
from harmonicdet.engine.study import load_study, run_state
for run in load_study(sys.argv[1]).runs:
    if run_state(run) != 'done':
        print(run.name)" "$study")
mapfile -t names <<< "$unfinished"
[ -z "$unfinished" ] && names=()
[ ${#names[@]} -eq 0 ] && { echo "every run of $study is done"; exit 0; }
log_dir=${LOG_DIR:-runs/lane_logs}
# torch's default of one thread per core in every lane oversubscribes the cores (2 Faster R-CNN lanes on
# 2 cores: 7 s a step instead of 3.5 s), so each lane gets its share unless OMP_NUM_THREADS says otherwise
running=$(( lanes < ${#names[@]} ? lanes : ${#names[@]} ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / running > 0 ? $(nproc) / running : 1 ))}
mkdir -p "$log_dir"
for ((lane = 0; lane < running; lane++)); do
  own=()
  for ((i = lane; i < ${#names[@]}; i += lanes)); do own+=("${names[$i]}"); done
  if [ "$limit" -gt 0 ]; then stop=(timeout -s TERM "$limit"); else stop=(); fi
  "${stop[@]}" "$python" -m harmonicdet study "$study" --only "${own[@]}" --no-report --quiet \
    >> "$log_dir/lane$lane.log" 2>&1 &
done
wait || true
"$python" -c "
import sys
from harmonicdet.engine.study import load_study, run_state
for run in load_study(sys.argv[1]).runs:
    print(run.name, run_state(run))" "$study"
