#!/usr/bin/env bash
# Install vidaccel and its test dependencies into the current Python.
# Idempotent and quick when everything is already there.
set -euo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  # '===' asks for the registry's torch 2.13.0 build: a local CPU-only wheel (2.13.0+cpu)
  # has no matching torchvision, and torchvision from the registry needs the registry torch.
  echo "setup: installing torch 2.13.0 + torchvision 0.28.0 (a few GB, about a minute)"
  "$PY" -m pip install -q "torch===2.13.0" "torchvision==0.28.0"
fi
"$PY" -m pip install -q -e ".[dev]"

# torchcodec loads FFmpeg's shared libraries from the system; the conformance tests and the
# live-stream tests use FFmpeg's command line (the same Debian package).
if ! ldconfig -p 2>/dev/null | grep -q "libavcodec\.so" || ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing FFmpeg (apt-get install ffmpeg): torchcodec's libraries and the command line"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
      || echo "setup: could not install ffmpeg; torchcodec and command-line tests will skip and say why"
  else
    echo "setup: FFmpeg (libraries or command line) is missing and this is not root with apt-get;" \
         "torchcodec and command-line tests will skip and say why"
  fi
fi
