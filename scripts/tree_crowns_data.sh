#!/usr/bin/env bash
# The tree-crown photographs of the fine-tuning study (docs/finetuning.md): DeepForest's four annotated aerial RGB
# photographs (PyPI deepforest==2.1.0, MIT; Pascal-VOC boxes labelled Tree, Alive, Dead) as a VOC folder, cut into
# one-class 256 px tiles in two folds split by source photograph:
#   OUT/voc                  Annotations/, JPEGImages/, ImageSets/Main/trainval.txt
#   OUT/tiles_large          train: the 2299x2472 photograph; val: the other three
#   OUT/tiles_small          train: the other three; val: the 2299x2472 photograph
# Usage: scripts/tree_crowns_data.sh [OUT]   (default data/tree_crowns; reruns replace what it made)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/tree_crowns}"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# only the wheel, not its dependencies: its data files are all that is used
.venv/bin/python -m pip download -q --no-deps deepforest==2.1.0 -d "$wheels"
.venv/bin/python - "$wheels"/deepforest-2.1.0-*.whl "$out/voc" <<'PY'
import sys, zipfile, xml.etree.ElementTree as ET
from pathlib import Path
wheel, voc = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
    (voc / folder).mkdir(parents=True, exist_ok=True)
stems = []
for name in sorted(n for n in wheel.namelist() if n.startswith("deepforest/data/") and n.endswith(".xml")):
    xml = wheel.read(name)
    image = ET.fromstring(xml).findtext("filename")
    (voc / "Annotations" / Path(name).name).write_bytes(xml)
    (voc / "JPEGImages" / image).write_bytes(wheel.read(f"deepforest/data/{image}"))
    stems.append(Path(name).stem)
(voc / "ImageSets/Main/trainval.txt").write_text("".join(f"{s}\n" for s in stems))
print(f"{voc}: {len(stems)} annotated photographs")
PY
large=2019_YELL_2_528000_4978000_image_crop2
others="2019_YELL_2_541000_4977000_image_crop OSBS_029 SOAP_061"
tiles=(.venv/bin/harmonicdet data tiles --voc "$out/voc" --classes Tree,Alive,Dead --single-class tree
       --size 256 --overlap 64 --min-visible 0.5)
# shellcheck disable=SC2086
"${tiles[@]}" --out "$out/tiles_large" --val-images $others
"${tiles[@]}" --out "$out/tiles_small" --val-images "$large"
