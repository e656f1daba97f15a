"""The run's plots are written as PNG files."""
from __future__ import annotations

import numpy as np

from accel.train.metrics import softmax


def test_plots_write_png(tmp_path):
    from accel.train.plots import plot_confusion_matrix, plot_curves, plot_per_class_accuracy, plot_roc

    hist = [{"epoch": 0, "a": 1.0, "b": None}, {"epoch": 1, "a": 0.5, "b": 0.7}]
    files = [plot_curves(hist, ["a", "b"], tmp_path / "c.png", title="t", ylabel="y"),
             plot_confusion_matrix([[3, 1], [0, 2]], ["x", "y"], tmp_path / "cm.png"),
             plot_roc([0, 1, 1, 0], softmax(np.array([[1, 0], [0, 1], [0.2, 0], [0, 0.1]])), ["x", "y"],
                      tmp_path / "roc.png"),
             plot_per_class_accuracy([0.5, None], ["x", "y"], tmp_path / "pc.png")]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
