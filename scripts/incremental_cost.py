"""python scripts/incremental_cost.py: the per-window compute of cnn_lstm at 16x112 on CPU, one
thread: incremental (the encoder on one new frame, the head over 16 features) against the
full-clip forward, alternating in one process so the machine's load hits both alike."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from accel.cli import Parser, positive_int  # noqa: E402
from accel.deploy.perf import to_channels_last  # noqa: E402
from models import create_model, frame_split  # noqa: E402


def measure(reps: int = 15) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = to_channels_last(create_model("cnn_lstm", num_classes=7).eval())  # as the inputs are
    split = frame_split(model)
    clip = torch.randn(1, 3, 16, 112, 112).contiguous(memory_format=torch.channels_last_3d)
    frame = torch.randn(1, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    feats = torch.randn(1, 16, 512)

    def incremental():
        return split.head(torch.cat([feats[:, 1:], split.encode(frame)[:, None]], 1))

    times: dict[str, list[float]] = {"incremental": [], "full": []}
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            incremental()
            model(clip)
        for _ in range(reps):
            for name, fn in (("incremental", incremental), ("full", lambda: model(clip))):
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) * 1e3)
    inc, full = np.array(times["incremental"]), np.array(times["full"])
    print(f"incremental p50 {np.median(inc):.1f} ms p99 {np.percentile(inc, 99):.1f} ms | "
          f"full p50 {np.median(full):.1f} ms p99 {np.percentile(full, 99):.1f} ms | "
          f"ratio p50 {np.median(full) / np.median(inc):.1f}x")


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python scripts/incremental_cost.py", description=__doc__.split(": ", 1)[1])
    p.add("--reps", type=positive_int, default=15, help="timed windows of each kind (default: %(default)s)")
    measure(p.parse_args(argv).reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
