"""What a live run writes as it goes: ``predictions.jsonl`` (one line per inferred or dropped
frame, flushed every line so an interrupted run keeps what it saw), the optional annotated
video (the label, its probability and the latency drawn on every frame), and the summary
table printed at the end."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .live import FrameResult


class JsonlWriter:
    """One JSON object per line; each line is flushed when written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = self.path.open("w", encoding="utf-8")

    def write(self, result: FrameResult) -> None:
        doc = {k: v for k, v in result.to_json().items() if v is not None}
        self.file.write(json.dumps(doc) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class OverlayVideo:
    """The source's frames re-encoded (H.264, PyAV) with the current prediction drawn on."""

    def __init__(self, path: str | Path, *, fps: float, width: int, height: int):
        import av

        self.path = Path(path)
        self.container = av.open(str(self.path), "w")
        rate = max(1, int(round(fps)))
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, image: np.ndarray, last: FrameResult | None, dropped: bool) -> None:
        import av
        from PIL import Image, ImageDraw

        img = Image.fromarray(image[:self.stream.height, :self.stream.width])
        if last is not None and last.label is not None:
            text = f"{last.smoothed_label} {last.smoothed_prob:.2f} | now {last.label} {last.prob:.2f} " \
                   f"| {last.latency_ms:.0f} ms" + (" | dropped" if dropped else "")
            draw = ImageDraw.Draw(img)
            draw.rectangle((0, 0, img.width, 14), fill=(0, 0, 0))
            draw.text((3, 1), text, fill=(255, 255, 255))
        frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: one row per source, latency percentiles, dropped, late, classes."""
    cols = [("source", "source"), ("path", "path"), ("frames", "frames"), ("inferred", "inferred"),
            ("dropped", "dropped"), ("late", "late"), ("p50 ms", "latency_p50_ms"),
            ("p95 ms", "latency_p95_ms"), ("p99 ms", "latency_p99_ms"), ("p99.9 ms", "latency_p99_9_ms"),
            ("max ms", "latency_max_ms"), ("frames per class", "frames_per_class")]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}"
        if isinstance(v, dict):
            return " ".join(f"{k}:{n}" for k, n in v.items()) or "-"
        return "-" if v is None else str(v)

    table = [[h for h, _ in cols]] + [[cell(r.get(k)) for _, k in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
