"""Run a trained model on video files and live streams, frame by frame, in real time.

    python predict.py runs/demo_data/test --checkpoint runs/demo/best.pt
    python predict.py udp://127.0.0.1:5000 --checkpoint best.pt --deadline_ms 40
    ffmpeg -i case.mp4 -c:v libx264 -f mpegts - | python predict.py - --checkpoint best.pt

SOURCE: a video file, a folder (its videos) or a glob; a stream FFmpeg opens (udp://, rtp://,
rtsp://, srt://, http(s):// HLS); a V4L2 device (/dev/video0); ``-`` for an MPEG-TS on stdin.
The clip length, size, statistics and classes come from the checkpoint. Every frame enters a
ring of the last clip_len frames, pre-processed on the device as evaluation does; the model
runs on the window (frame models that declare an encoder/head split run their encoder on the
new frame only: the "incremental" path; with an exported --runtime, the encoder runs through
it and the head stays eager). Files are read as fast as possible with every frame
inferred (policy block) unless ``--realtime`` paces them at their own fps; live sources are
real time, with the busy-drop policy (a frame arriving while the model is busy is dropped).
Writes, per source, under ``--out_dir``: predictions.jsonl, summary.json, timeline.png and,
with ``--video_out``, annotated.mp4. Exit status 0 when every source ran to its end (or
stalled for good), 2 for a bad input, 130 after Ctrl-C (outputs flushed).
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from accel.cli import Parser, UsageError, fail, one_line, positive_float, positive_int, resolve_device
from accel.deploy.live import POLICIES, FramesAsClips, LiveClassifier, latency_summary
from accel.deploy.outputs import JsonlWriter, OverlayVideo, summary_table
from accel.deploy.perf import to_channels_last
from accel.deploy.sources import SourceError, VideoSource, expand_sources, source_kind
from accel.train.checkpoint import EVAL_ENTRIES, CheckpointError, read_checkpoint
from accel.train.tracking import write_json
from models import frame_split, resolve_data_config, resolve_model_name
from models.checkpoint import model_from_checkpoint

PROG = "predict.py"
RUNTIMES = ("eager", "onnx", "aoti", "tensorrt")


def get_args_parser() -> Parser:
    p = Parser(prog=PROG, description="Per-frame predictions of a train.py checkpoint on files and "
                                      "live video.")
    p.add("source", help="file, folder, glob, stream URL, /dev/videoN, or - (MPEG-TS on stdin)")
    p.add("--checkpoint", required=True, help="best.pt or last.pt from train.py")
    p.add("--out_dir", default="runs/predict", help="one folder per source under it")
    p.add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add("--runtime", choices=RUNTIMES, default="eager",
          help="model runtime, as in evaluate.py; for a frame model's incremental path, its encoder's "
               "(the head stays eager)")
    p.add("--exported", help="a whole-window exported file for --runtime (default: export now into "
                             "out_dir: encoder.* for a frame model's incremental path, else model.*)")
    p.add("--model", help="must name the checkpoint's model (checked, not changed)")
    p.add("--clip_len", type=positive_int, help="must match the checkpoint's (checked, not changed)")
    p.add("--policy", choices=POLICIES,
          help="busy-drop (live default), block (file default: every frame inferred), deadline")
    p.add("--deadline_ms", type=positive_float, help="results later than this are flagged late")
    p.add("--every", type=positive_int, default=1, help="infer every N-th frame")
    p.add("--smooth", type=positive_int, default=5, help="windows in the smoothed label's average")
    p.add("--top_k", type=positive_int, default=3)
    p.add_flag("--realtime", False, "pace files at their own fps (rehearse a live case)")
    p.add_flag("--channels_last", True, "channels-last weights, as the clips are (default on; on CPU a "
                                        "frame model's encoder runs about 2x slower with mixed layouts)")
    p.add_flag("--incremental", True, "frame models: encoder once per new frame (--no_incremental: "
                                      "recompute the window)")
    p.add("--reconnect_s", type=positive_float, default=10.0,
          help="retry a stalled stream this long (http(s): FFmpeg resumes the transfer)")
    p.add("--read_timeout_s", type=positive_float, default=2.0,
          help="no packet this long is a stall (HLS: plus 1.5 segment durations)")
    p.add("--open_timeout_s", type=positive_float, default=10.0,
          help="how long a stream may take to start sending")
    p.add("--max_frames", type=positive_int, help="stop each source after this many frames")
    p.add_flag("--save_logits", False, "also write each window's logits to predictions.jsonl")
    p.add_flag("--video_out", False, "write annotated.mp4: the label and latency on every frame")
    p.add("--threads", type=positive_int, help="CPU threads for torch (default: torch's)")
    p.add_flag("--progress", True, "tqdm bar (--no_progress)")
    return p


def load_model(args, device: torch.device):
    """The checkpoint's model, its settings (clip_len, size, frame_size, mean, std, classes)."""
    ckpt = read_checkpoint(args.checkpoint, require=EVAL_ENTRIES)
    model = model_from_checkpoint(ckpt, source=args.checkpoint)
    name = ckpt["model_name"]
    if args.model and resolve_model_name(args.model) != resolve_model_name(name):
        raise UsageError(f"--model {args.model}: {args.checkpoint} holds a {name}")
    cfg = resolve_data_config(model)
    e = dict(ckpt.get("eval") or {})
    s = {"model": name, "classes": list(ckpt["classes"]), "clip_len": int(e.get("clip_len", cfg.clip_len)),
         "size": int(e.get("size", cfg.size)), "mean": tuple(e.get("mean") or cfg.mean),
         "std": tuple(e.get("std") or cfg.std),
         "frame_size": tuple(e["frame_size"]) if e.get("frame_size") else None}
    if args.clip_len is not None and args.clip_len != s["clip_len"]:
        raise UsageError(f"--clip_len {args.clip_len}: {args.checkpoint} was trained on "
                         f"{s['clip_len']}-frame clips")
    model = model.to(device).eval()
    if args.channels_last:
        to_channels_last(model)
    return model, s


@dataclass
class ModelPath:
    """What runs per frame: the whole-window callable, or a frame model's encoder and head."""
    window: Callable[[torch.Tensor], torch.Tensor] | None = None
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None
    head: Callable[[torch.Tensor], torch.Tensor] | None = None


def build_model_path(args, model, s: dict, device: torch.device, out_root: Path) -> ModelPath:
    """Once for every source. A frame model runs incrementally (unless --no_incremental), its
    encoder through --runtime (exported now to out_root/encoder.*) and its head eager; with
    --exported (a whole-window artifact) or a model that mixes frames, the whole window runs
    through the runtime."""
    whole_artifact = args.exported is not None and args.runtime != "eager"
    split = frame_split(model) if args.incremental and not whole_artifact else None
    if args.runtime == "eager":
        return ModelPath(encode=split.encode, head=split.head) if split else ModelPath(window=model)
    from types import SimpleNamespace

    from accel.train.evaluation import EvalSettings
    from evaluate import build_runner

    ev = SimpleNamespace(runtime=args.runtime, exported=args.exported, channels_last=args.channels_last)
    out_root.mkdir(parents=True, exist_ok=True)
    if split is None:
        return ModelPath(window=build_runner(ev, model, EvalSettings(clip_len=s["clip_len"], size=s["size"],
                                                                     batch_size=2), device, out_root, None))
    encoder = build_runner(ev, FramesAsClips(model), EvalSettings(clip_len=1, size=s["size"], batch_size=2),
                           device, out_root, None, stem="encoder")
    return ModelPath(encode=lambda frames: encoder(frames.unsqueeze(2)), head=split.head)


def build_classifier(args, path: ModelPath, s: dict, device: torch.device, policy: str) -> LiveClassifier:
    return LiveClassifier(path.window, classes=s["classes"], clip_len=s["clip_len"], size=s["size"], device=device,
                          mean=s["mean"], std=s["std"], frame_size=s["frame_size"], encode=path.encode,
                          head=path.head, policy=policy, deadline_ms=args.deadline_ms, every=args.every,
                          smooth=args.smooth, top_k=args.top_k, keep_logits=args.save_logits)


def folder_name(spec: str, taken: set[str]) -> str:
    """A folder name for a source: the file's stem, or the URL made safe; unique in the run."""
    base = "stdin" if spec == "-" else Path(spec).stem if "://" not in spec else spec.split("://", 1)[1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("_") or "source"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def run_source(args, source: VideoSource, live: LiveClassifier, out: Path) -> dict:
    """Play one source through the classifier, writing as it goes; returns the summary."""
    from tqdm import tqdm

    results, last = [], None
    writer = JsonlWriter(out / "predictions.jsonl")
    video = OverlayVideo(out / "annotated.mp4", fps=source.fps, width=source.width, height=source.height) \
        if args.video_out else None
    ended, t0 = "end", time.perf_counter()
    bar = tqdm(desc=Path(source.spec).name or source.spec, unit="frame", disable=not args.progress,
               file=sys.stderr, leave=False)
    try:
        for f in source:
            r = live.submit(f.image, index=f.index, pts_s=f.pts_s, arrival_s=f.arrival_s)
            if r is not None:
                results.append(r)
                writer.write(r)
                last = r if not r.dropped else last
            if video is not None:
                video.write(f.image, last, r is not None and r.dropped)
            bar.update()
            if args.max_frames and f.index + 1 >= args.max_frames:
                break
            if last is not None and f.index % 10 == 0:
                st = latency_summary(results)
                bar.set_postfix_str(f"{last.smoothed_label} p50 {st.get('latency_p50_ms', 0):.0f} "
                                    f"p99 {st.get('latency_p99_ms', 0):.0f} ms drop {st['dropped']}")
    except KeyboardInterrupt:
        ended = "interrupted"
    finally:
        bar.close()
        writer.close()
        if video is not None:
            video.close()
        source.close()
    if source.stall_message:
        ended = "stalled"
        print(source.stall_message, flush=True)
    return write_outputs(args, source, live, results, out, ended, time.perf_counter() - t0)


def write_outputs(args, source: VideoSource, live: LiveClassifier, results: list, out: Path,
                  ended: str, elapsed: float) -> dict:
    from accel.deploy.timeline import plot_timeline

    doc = {"source": source.spec, "kind": source.kind, "checkpoint": str(args.checkpoint),
           "runtime": args.runtime, "path": live.path, "policy": live.policy,
           "deadline_ms": args.deadline_ms, "device": str(live.device), "fps": source.fps,
           "clip_len": live.ring.clip_len, "size": live.ring.size, "frames": source.frames,
           "corrupt_packets": source.corrupt, "reconnects": source.reconnects,
           "stall": source.stall_message, "ended": ended, "time_s": elapsed,
           "warmup_ms": live.warmup_ms,
           "model_ms_mean": sum(live.model_ms) / len(live.model_ms) if live.model_ms else None,
           "frames_encoded": live.features.encoded if live.features is not None else None,
           **latency_summary(results)}
    write_json(doc, out / "summary.json")
    plot_timeline(results, live.classes, out / "timeline.png", fps=source.fps,
                  title=f"{Path(source.spec).name or source.spec}: {live.path} path, {live.policy}")
    return doc


def setup(args):
    """Device, model and settings, the expanded sources; bad input raises a one-line error."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.runtime == "tensorrt" and device.type != "cuda":
        raise UsageError("--runtime tensorrt needs a CUDA device")
    model, s = load_model(args, device)
    return device, model, s, expand_sources(args.source)


def main(args) -> int:
    out_root, taken, rows, status = Path(args.out_dir), set(), [], 0
    try:
        device, model, s, specs = setup(args)
        path = build_model_path(args, model, s, device, out_root)
    except (UsageError, CheckpointError, SourceError, ValueError, FileNotFoundError, ImportError,
            RuntimeError) as err:  # RuntimeError: an export or runtime that cannot run here
        fail(PROG, one_line(err))
    print(f"{s['model']} from {args.checkpoint}: {len(s['classes'])} classes, clips {s['clip_len']}x"
          f"{s['size']}px; runtime {args.runtime}; device {device}; {len(specs)} source(s)", flush=True)
    for spec in specs:
        try:
            out = out_root / folder_name(spec, taken)
            out.mkdir(parents=True, exist_ok=True)
            realtime = args.realtime or source_kind(spec) != "file"
            live = build_classifier(args, path, s, device, args.policy or ("busy-drop" if realtime else "block"))
            # One-off costs, reported apart; before the source opens, so a live stream's packets
            # do not pile up unread meanwhile (and a sender not yet up is waited for after).
            live.warmup(*(s["frame_size"] or (s["size"], s["size"])))
            source = VideoSource(spec, realtime=args.realtime, reconnect_s=args.reconnect_s,
                                 read_timeout_s=args.read_timeout_s, open_timeout_s=args.open_timeout_s)
        except (SourceError, UsageError, ImportError, ValueError, FileNotFoundError) as err:
            print(f"{PROG}: error: {one_line(err)}", file=sys.stderr, flush=True)
            status = 2
            continue
        doc = run_source(args, source, live, out)
        rows.append({"source": Path(spec).name or spec, **doc})
        print(f"{spec}: {doc['frames']} frames, {doc['inferred']} inferred ({doc['path']} path, {doc['policy']}), "
              f"{doc['dropped']} dropped, {doc['late']} late, {doc['corrupt_packets']} corrupt packets; "
              f"outputs in {out}", flush=True)
        if doc["ended"] == "interrupted":
            status = 130
            break
    if rows:
        print(summary_table(rows))
    return status


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
