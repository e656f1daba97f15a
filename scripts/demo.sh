#!/usr/bin/env bash
# The demo: make the synthetic temporal dataset, stream it through the loader, train a
# temporal model (TSM-ResNet-18) from scratch, evaluate it, say where the reports are.
set -euo pipefail
PY=${PY:-python3}
DATA=${1:-runs/demo_data}
OUT=${2:-runs/demo}
cd "$(dirname "$0")/.."
if [ ! -d "$DATA/test" ]; then
  "$PY" -m accel.synth "$DATA" --classes 4 --videos-per-class 60 --frames 32 --size 64
fi
"$PY" -m accel.demo "$DATA" --clip-len 8
"$PY" train.py --model tsm_resnet18 --data_dir "$DATA" --clip_len 8 --size 64 --epochs 6 \
  --lr 1e-3 --augment none --out_dir "$OUT"
"$PY" evaluate.py --checkpoint "$OUT/best.pt" --data_dir "$DATA"
echo
echo "demo done: training reports, plots (loss/accuracy curves, confusion matrix, ROC," \
     "per-class accuracy) and metrics.json in $OUT/; evaluate.py's in $OUT/eval_test/"
