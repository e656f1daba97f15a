#!/usr/bin/env bash
# The demo: make the synthetic temporal dataset, then stream it through the loader.
set -euo pipefail
PY=${PY:-python3}
DATA=${1:-runs/demo_data}
cd "$(dirname "$0")/.."
if [ ! -d "$DATA/test" ]; then
  "$PY" -m accel.synth "$DATA" --classes 4 --videos-per-class 24 --frames 32 --size 64
fi
"$PY" -m accel.demo "$DATA"
