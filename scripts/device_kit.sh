#!/usr/bin/env bash
# The wheels the lent GPU machine lacks, fetched here, carried there (it has no registry).
#
#   core  PyAV (abi3), decord, scikit-video for Python 3.12 manylinux x86-64, --no-deps,
#         into KIT/core; checks that the working tree plus that kit stay under 60 MiB (one
#         call carries at most 64 MiB) and prints the one command line that installs them
#         there with pip install --no-index --no-deps --target /tmp/site.
#   --dali  also nvidia-dali-cuda130 2.4.0 and the dependencies the GPU machine lacks
#         (nvimgcodec, nvcomp, libcst, optree, ...), packed into one tar and split into chunks
#         of at most 55 MiB under KIT/dali, and prints the sequence of calls that carry them
#         one by one, then join, check and install them. FRAGILE: the machine is handed back
#         30 s after a call and /tmp goes with it, so every call must follow the previous one
#         within 30 s; one late call loses the chunks carried so far and costs a new machine
#         start. Keep the calls ready to paste, and check the printed sha256 on the last one.
#
# usage: bash scripts/device_kit.sh [--kit DIR] [--dali] [--check] [--rehearse]
#   --kit DIR    where the kit goes (default .device_kit, ignored by git)
#   --check      only check sizes and print the calls for a kit fetched before (no download)
#   --rehearse   then run the GPU machine's join + install here, into a temporary --target
#                (as CPython 3.12), and import what it installed from there
# Exit 0: kit ready and within the size limit; 1: a download, the size check or the
# rehearsal failed; 2: bad arguments.
set -uo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "device_kit.sh: $*" >&2; exit 2; }
fail() { echo "device_kit.sh: $*" >&2; exit 1; }

KIT=.device_kit DALI=0 CHECK=0 REHEARSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kit) [ $# -ge 2 ] || die "--kit needs a folder"; KIT=$2; shift 2 ;;
    --kit=*) KIT=${1#--kit=}; shift ;;
    --dali) DALI=1; shift ;;
    --check) CHECK=1; shift ;;
    --rehearse) REHEARSE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
KIT=${KIT%/}
case "$KIT" in ''|/*|..*|*/..*) die "--kit must be a relative folder inside the repository, got '$KIT'" ;; esac
git check-ignore -q "$KIT/x" 2>/dev/null || die "--kit $KIT is not ignored by git: the kit must not be committed"

# The GPU machine: CPython 3.12 on manylinux x86-64. Pinned to what the tests here run on.
CORE_WHEELS=(av==18.1.0 decord==0.6.0 scikit-video==1.1.11)
DALI_WHEEL=nvidia-dali-cuda130==2.4.0
# DALI's dependencies that the GPU machine already has (with torch, pip, pytest): not carried,
# so the kit never overrides the machine's own (matched case-blind on the wheel's name).
ON_MACHINE_RE='^(numpy|packaging|six|typing_extensions|pyyaml|wheel)-'
LIMIT_MIB=60 CHUNK_MIB=55
# Three kit wheels ship nvidia/__init__.py, which makes nvidia a regular package in front of the
# machine's own nvidia.* namespace (nvidia.cudnn, nvidia.nccl, ... that torch loads): removed
# after every install. The outer timeout keeps the check inside the call's 600 s even if it hangs.
FIX_NS="rm -f /tmp/site/nvidia/__init__.py"
OUTER="timeout -k 20 550"
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux2010_x86_64)

mib() { echo $(( ($1 + 1048575) / 1048576 )); }
bytes_of() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }

# What travels with every call: tracked files plus untracked files git does not ignore.
tree_bytes() {
  git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null \
    | awk '$2 == "total" {s += $1} END {print s + 0}'
}

fetch_core() {
  rm -rf "$KIT/core" && mkdir -p "$KIT/core"
  echo "device_kit.sh: pip download ${CORE_WHEELS[*]} (Python 3.12, manylinux x86-64, --no-deps)"
  "$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$KIT/core" "${CORE_WHEELS[@]}" 2> >(grep -v "is ignored: it is neither" >&2) \
    || fail "pip download of the core wheels failed (see above); nothing usable in $KIT/core"
}

fetch_dali() {
  local wheels="$KIT/dali_wheels"
  rm -rf "$wheels" "$KIT/dali" && mkdir -p "$wheels" "$KIT/dali"
  echo "device_kit.sh: pip download $DALI_WHEEL and its dependencies (Python 3.12, manylinux x86-64)"
  "$PY" -m pip download -q "${TARGET[@]}" -d "$wheels" "$DALI_WHEEL" 2> >(grep -v "is ignored: it is neither" >&2) \
    || fail "pip download of $DALI_WHEEL failed (see above)"
  local w
  for w in "$wheels"/*.whl; do
    if basename "$w" | grep -Eiq "$ON_MACHINE_RE"; then rm -f "$w"; fi
  done
  # One uncompressed tar (wheels are zip files already), split into fixed-size chunks.
  ls "$wheels" > "$KIT/dali/wheels.txt"
  tar -C "$wheels" -cf "$KIT/dali/dali_kit.tar" . || fail "cannot pack $wheels"
  (cd "$KIT/dali" && sha256sum dali_kit.tar | cut -d' ' -f1 > dali_kit.sha256 \
    && split -b "${CHUNK_MIB}M" -d -a 2 dali_kit.tar part_ && rm dali_kit.tar) \
    || fail "cannot split the DALI kit into chunks"
  rm -rf "$wheels"
}

check_core() {
  [ -d "$KIT/core" ] && ls "$KIT/core"/*.whl >/dev/null 2>&1 \
    || fail "no core kit in $KIT/core: run bash scripts/device_kit.sh"
  local tree kit total
  tree=$(tree_bytes) kit=$(bytes_of "$KIT/core")
  total=$(( tree + kit ))
  echo "device_kit.sh: core kit $(ls "$KIT/core" | tr '\n' ' ')"
  echo "device_kit.sh: size check: tree $(mib "$tree") MiB + core kit $(mib "$kit") MiB = $(mib "$total") MiB (limit ${LIMIT_MIB} MiB)"
  [ "$total" -lt $(( LIMIT_MIB * 1048576 )) ] \
    || fail "tree plus core kit is $(mib "$total") MiB, over ${LIMIT_MIB} MiB: one call cannot carry it"
}

check_dali() {
  ls "$KIT/dali"/part_* >/dev/null 2>&1 || fail "no DALI chunks in $KIT/dali: run bash scripts/device_kit.sh --dali"
  local tree part size
  tree=$(tree_bytes)
  for part in "$KIT/dali"/part_*; do
    size=$(bytes_of "$part")
    [ "$size" -le $(( CHUNK_MIB * 1048576 )) ] || fail "$part is $(mib "$size") MiB, over ${CHUNK_MIB} MiB"
    [ $(( tree + size )) -lt $(( LIMIT_MIB * 1048576 )) ] || fail "tree plus $part is over ${LIMIT_MIB} MiB"
  done
  echo "device_kit.sh: DALI kit: $(ls "$KIT/dali"/part_* | wc -l) chunks of at most ${CHUNK_MIB} MiB, $(mib "$(bytes_of "$KIT/dali")") MiB in all:" \
       "$(tr '\n' ' ' < "$KIT/dali/wheels.txt")"
}

# The last GPU-machine call's join + check + install, with the chunks in $1 and the install
# target in $2; extra pip flags after them (the rehearsal here installs as CPython 3.12).
join_install() {
  local parts=$1 site=$2; shift 2
  local sha; sha=$(cat "$KIT/dali/dali_kit.sha256")
  cat "$parts"/part_* > "$parts/dali_kit.tar" \
    && echo "$sha  $parts/dali_kit.tar" | sha256sum -c --quiet - \
    && mkdir -p "$parts/whl" && tar -C "$parts/whl" -xf "$parts/dali_kit.tar" \
    && "$PY" -m pip install -q --no-index --no-deps --target "$site" "$@" "$parts"/whl/*.whl "$KIT"/core/*.whl 2> >(grep -v "Running pip as the 'root' user" >&2) \
    && rm -f "$site/nvidia/__init__.py"
}

rehearse() {
  # The GPU machine runs CPython 3.12: import there with a 3.12 here, beside numpy,
  # packaging and six (which the GPU machine has with torch, and the kit leaves out).
  local py312=${REHEARSE_PY:-} tmp c
  if [ -z "$py312" ]; then
    for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
      if "$c" -c "" 2>/dev/null; then py312=$c; break; fi
    done
  fi
  [ -n "$py312" ] && "$py312" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null \
    || fail "rehearsal needs a CPython 3.12 (none found; set REHEARSE_PY)"
  tmp=$(mktemp -d /tmp/device_kit.XXXXXX) || fail "no temporary folder"
  mkdir -p "$tmp/kit"
  "$PY" -m pip install -q --target "$tmp/machine" "${TARGET[@]}" numpy "packaging<=26.3" six 2> >(grep -v "is ignored: it is neither" >&2) \
    || { rm -rf "$tmp"; fail "rehearsal: cannot fetch the GPU machine's numpy / packaging / six stand-ins"; }
  if [ "$DALI" = 1 ]; then
    cp "$KIT"/dali/part_* "$tmp/kit/"  # what calls 1..N leave in /tmp/kit there
    join_install "$tmp/kit" "$tmp/site" "${TARGET[@]}" || { rm -rf "$tmp"; fail "rehearsal: join + install failed"; }
  else
    "$PY" -m pip install -q --no-index --no-deps --target "$tmp/site" "${TARGET[@]}" "$KIT"/core/*.whl \
      || { rm -rf "$tmp"; fail "rehearsal: install failed"; }
  fi
  PYTHONPATH="$tmp/site:$tmp/machine" "$py312" - "$tmp/site" "$DALI" <<'PY' || { rm -rf "$tmp"; fail "rehearsal: an installed package does not import from the target"; }
import importlib, importlib.util, sys
from pathlib import Path
site, dali = Path(sys.argv[1]), sys.argv[2] == "1"
names = ["av", "decord"] + (["nvidia.dali", "nvidia.dali.fn"] if dali else [])
for name in names:
    mod = importlib.import_module(name)
    assert Path(mod.__file__).is_relative_to(site), f"{name} came from {mod.__file__}, not {site}"
bikes = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/bikes.mp4"
assert bikes.is_file() and bikes.is_relative_to(site), bikes
import av
with av.open(str(bikes)) as c:
    n = sum(1 for _ in c.decode(video=0))
extra = f", DALI {sys.modules['nvidia.dali'].__version__}" if dali else ""
print(f"device_kit.sh: rehearsal on Python {sys.version.split()[0]}: {', '.join(names)} import from "
      f"the --target folder; bikes.mp4 decodes ({n} frames){extra}")
PY
  rm -rf "$tmp"
}

INSTALL_CORE="python3 -m pip install -q --no-index --no-deps --target /tmp/site $KIT/core/*.whl && $FIX_NS"
print_core() {
  cat <<EOF

On the GPU machine, one call (carry ["$KIT/core"]):
  $INSTALL_CORE && PYTHONPATH=/tmp/site:\$PWD $OUTER bash scripts/gpu_check.sh --out \$OUT/gpu_check
EOF
}

print_dali() {
  local n=0 part sha
  sha=$(cat "$KIT/dali/dali_kit.sha256")
  echo
  echo "DALI tier: these calls one right after the other (each within 30 s of the last one's end;"
  echo "a gap hands the machine back and loses /tmp/kit):"
  for part in "$KIT/dali"/part_*; do
    n=$((n + 1))
    echo "  call $n (carry [\"$part\"]): mkdir -p /tmp/kit && cp $part /tmp/kit/ && ls -l /tmp/kit"
  done
  n=$((n + 1))
  echo "  call $n (carry [\"$KIT/core\"]): cat /tmp/kit/part_* > /tmp/kit/dali_kit.tar" \
       "&& echo '$sha  /tmp/kit/dali_kit.tar' | sha256sum -c --quiet - && mkdir -p /tmp/kit/whl" \
       "&& tar -C /tmp/kit/whl -xf /tmp/kit/dali_kit.tar" \
       "&& python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/kit/whl/*.whl $KIT/core/*.whl" \
       "&& $FIX_NS && PYTHONPATH=/tmp/site:\$PWD $OUTER bash scripts/gpu_check.sh --tier dali --out \$OUT/gpu_check"
}

if [ "$CHECK" = 0 ]; then
  fetch_core
  [ "$DALI" = 1 ] && fetch_dali
fi
check_core
[ "$DALI" = 1 ] && check_dali
print_core
[ "$DALI" = 1 ] && print_dali
[ "$REHEARSE" = 1 ] && rehearse
exit 0
