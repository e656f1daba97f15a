"""Seed 004's ``test.py``: the same script as ``evaluate.py``.

    python test.py --data_root D --model_path output/best_model.pth --num_frames 16 \
        --segments 4 --batch_size 8 --out_dir output_test
"""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).with_name("evaluate.py"))
    runpy.run_path(sys.argv[0], run_name="__main__")
