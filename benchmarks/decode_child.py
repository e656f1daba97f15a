"""What the watched decode child costs: the bare reader, the dataset decoding in-process
(``isolate_decode=False``) and the default dataset (decode child on), on the same clips.

    python -m benchmarks.decode_child --backends pyav,torchcodec --clips 50

The three are timed clip by clip in turn (bare, in-process, child for clip 1, then clip 2...),
so load on a shared machine hits all three alike and the ratios hold within one run. Wall
time (median) shows what a clip waits; CPU time (mean; the child's own included) shows what it
costs: on a loaded machine each hand-over between processes can wait for a time slice, which
costs the clip wall time but leaves the CPU to other work. Files:
``prepared`` (224x128 H.264, keyframe every 16, no B-frames, 300 frames, 16-frame uniform clips:
what ``accel.prepare`` writes) and ``tiny`` (64x64, 50 frames, 8-frame clips).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from accel.cli import Parser, comma_list, positive_int
from accel.data.dataset import VideoClipDataset
from accel.data.manifests import folder_manifest
from accel.data.sampling import sample_indices
from accel.io.backends import AUTO_ORDER, open_video
from accel.synth import write_index_video
from benchmarks.cpu import children_cpu_s

# kind: (width, height, frames, gop, clip_len)
KINDS = {"prepared": (224, 128, 300, 16, 16), "tiny": (64, 64, 50, 30, 8)}
MODES = ("bare", "in_process", "child")


def make_files(root: Path, kind: str, *, videos: int = 4) -> Path:
    """``videos`` index-coded files of ``kind`` under ``root/kind/train/a`` (made once)."""
    width, height, frames, gop, _ = KINDS[kind]
    folder = root / kind / "train" / "a"
    for i in range(videos):
        path = folder / f"v{i}.mp4"
        if not path.exists():
            write_index_video(path, frames, width=width, height=height, gop=gop, seed=i)
    return root / kind


def measure(data: Path, kind: str, backend: str, *, clips: int, warmup: int = 5) -> dict:
    """Median and mean ms per clip of each mode, and the child's overhead over in-process."""
    clip_len = KINDS[kind][4]
    manifest = folder_manifest(data, "train")
    options = dict(clip_len=clip_len, strategy="uniform", backend=backend)
    in_process = VideoClipDataset(manifest, isolate_decode=False, **options)
    child = VideoClipDataset(manifest, **options)
    paths = [item.path for item in manifest.items]
    plans = [sample_indices(len(open_video(p, backend)), clip_len, "uniform") for p in paths]

    def bare(i: int) -> torch.Tensor:
        return open_video(paths[i], backend).get_frames(plans[i])

    calls = {"bare": bare, "in_process": lambda i: in_process[i]["clip"],
             "child": lambda i: child[i]["clip"]}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    cpu = dict.fromkeys(MODES, 0.0)
    for n in range(warmup + clips):
        i = n % len(paths)
        if n == warmup:
            decode_cpu = children_cpu_s()  # the child only works inside child calls
        for mode in MODES:
            t0, c0 = time.perf_counter(), time.process_time()
            calls[mode](i)
            if n >= warmup:
                times[mode].append((time.perf_counter() - t0) * 1e3)
                cpu[mode] += time.process_time() - c0
    after = children_cpu_s()
    child.close()
    row: dict = {"kind": kind, "backend": backend, "clips": clips}
    for mode in MODES:
        row[f"{mode}_ms"] = round(statistics.median(times[mode]), 2)
        row[f"{mode}_cpu_ms"] = round(cpu[mode] / clips * 1e3, 2)
    if after.keys() == decode_cpu.keys():  # the same child all along: its CPU counts too
        row["child_cpu_ms"] = round(row["child_cpu_ms"] + sum(after[p] - decode_cpu[p] for p in after)
                                    / clips * 1e3, 2)
    else:  # replaced mid-run (recycled): its CPU is not known
        row["child_cpu_ms"] = None
    row["child_over_in_process_ms"] = round(row["child_ms"] - row["in_process_ms"], 2)
    row["child_over_bare"] = round(row["child_ms"] / row["bare_ms"], 3)
    return row


def build_parser(prog: str = "python -m benchmarks.decode_child") -> Parser:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add("--backends", type=comma_list(choices=AUTO_ORDER), default=["pyav", "torchcodec"],
          help="comma-separated (default: pyav,torchcodec)")
    p.add("--kinds", type=comma_list(choices=tuple(KINDS)), default=list(KINDS),
          help=f"comma-separated, of {', '.join(KINDS)} (default: all)")
    p.add("--clips", type=positive_int, default=50, help="timed clips per mode (default: %(default)s)")
    p.add("--cache", type=Path, default=None, help="where the files are made (default: a temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        columns = ["kind", "backend", "bare_ms", "in_process_ms", "child_ms",
                   "child_over_in_process_ms", "child_over_bare",
                   "bare_cpu_ms", "in_process_cpu_ms", "child_cpu_ms"]
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for kind in args.kinds:
            data = make_files(cache, kind)
            for backend in args.backends:
                r = measure(data, kind, backend, clips=args.clips)
                print("| " + " | ".join(str(r[c]) for c in columns) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
