"""What this machine has for ``scripts/gpu_check.sh``: one ``preflight: KEY: VALUE`` line each,
the findings as JSON, and the verdict as the exit status.

``python -m benchmarks.gpu_preflight OUT_JSON --tier core|dali [--cpu]``

Exit 0: go on; 3: no CUDA device (``--cpu``, the CPU rehearsal, goes on without one); 4: the
dali tier cannot run (DALI does not import, or NVDEC does not decode one tiny H.264 file), with
one line on stderr saying why, so that a DALI run stops before it burns its minutes.

NVDEC is tested, not looked up: ``libnvcuvid.so.1`` is loaded with ``ctypes`` (what DALI does;
``ldconfig -p`` lists libraries a container cannot load, and misses ones on LD_LIBRARY_PATH),
and, where DALI imports on a GPU, one tiny index-coded H.264 file goes through DALI's mixed
(NVDEC) decoder and must come back frame-exact.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from accel.cli import Parser, one_line

NVCUVID = "libnvcuvid.so.1"
NVDEC_PROBE_FRAMES = [3, 0, 7]


def say(key: str, value: object) -> None:
    print(f"preflight: {key}: {value}", flush=True)


def probe_nvcuvid(name: str = NVCUVID) -> str | None:
    """None when the NVDEC driver library loads, else why not (one clause)."""
    try:
        ctypes.CDLL(name)
    except OSError as e:
        return f"{name} does not load ({one_line(e)})"
    return None


def probe_nvdec(decode: Callable | None = None, *, workdir: Path | None = None) -> str | None:
    """None when one tiny H.264 file decodes frame-exact through DALI's mixed (NVDEC)
    decoder, else why not. ``decode(requests, device=)`` stands in for
    :func:`accel.data.dali.decode_frames` in tests."""
    from accel.synth import read_frame_index, write_index_video

    if decode is None:
        from accel.data.dali import decode_frames as decode
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        try:
            path = write_index_video(Path(tmp) / "nvdec_probe.mp4", 8, width=64, height=64, codec="h264", gop=4)
            (got,) = decode([(str(path), NVDEC_PROBE_FRAMES)], device="gpu")
            seen = [read_frame_index(f) for f in got.numpy()]
        except Exception as e:  # noqa: BLE001  (any failure means: do not start the DALI steps)
            return one_line(e, typed=True, limit=200)
    return None if seen == NVDEC_PROBE_FRAMES else f"frames {seen} came back for {NVDEC_PROBE_FRAMES}"


def probe_cuda(found: dict[str, Any]) -> None:
    import torch

    found.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    say("CUDA", f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'}; "
                f"device {'available' if found['cuda_available'] else 'NOT available'}")
    if found["cuda_available"]:
        from accel.telemetry import nvml_driver_version

        found.update(gpu=torch.cuda.get_device_name(0),
                     capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                     gpu_count=torch.cuda.device_count(), driver=nvml_driver_version() or "n/a")
        say("GPU", f"{found['gpu']} (compute capability {found['capability']}, {found['gpu_count']} device(s))")
        say("driver", found["driver"])


def probe_nvml(found: dict[str, Any]) -> None:
    from accel.telemetry import nvml_counter_support

    support = found["nvml_counters"] = nvml_counter_support(0)
    if not support:
        say("NVML counters", "none (nvidia-ml-py missing or no NVIDIA driver): GPU telemetry reads n/a")
        return
    ok = [k for k, v in support.items() if v == "ok"]
    no = [f"{k} ({v})" for k, v in support.items() if v != "ok"]
    say("NVML counters", f"supported: {', '.join(ok) or 'none'}"
        + (f"; unsupported (read n/a): {'; '.join(no)}" if no else ""))


def probe_dali(found: dict[str, Any], tier: str) -> None:
    from accel.data.dali.install import dali_install_hint

    found["dali_hint"] = dali_install_hint()
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401  (a wheel for another CUDA fails here)
        found["dali"] = dali.__version__
        say("DALI", f"{dali.__version__} (built for CUDA {dali.__cuda_version__ // 1000}, {dali.__cuda_version__})")
    except Exception as e:  # noqa: BLE001  (missing, or a wheel for another CUDA)
        found["dali"] = None
        say("DALI", f"not importable ({one_line(e, typed=True)}; "
                    f"{found['dali_hint']})" + ("" if tier == "dali" else "; the core tier goes on without it"))


def verdict(found: dict[str, Any], tier: str, cpu: bool) -> tuple[int, str]:
    """(exit status, the one line that stops the run, or "")."""
    if not found["cuda_available"] and not cpu:
        return 3, ("no CUDA device here (torch.cuda.is_available() is False): the GPU checks need one GPU "
                   "(--rehearse-cpu runs the core tier on the CPU); nothing was run")
    if tier == "dali" and not found.get("dali"):
        return 4, (f"--tier dali: NVIDIA DALI does not import; carry it with bash scripts/device_kit.sh --dali "
                   f"(or {found.get('dali_hint')}); nothing was run")
    if tier == "dali" and found.get("nvdec") != "ok":
        return 4, f"--tier dali: NVDEC does not work here ({found.get('nvdec')}); nothing was run"
    return 0, ""


def run(out: Path, tier: str, cpu: bool, *, decode: Callable | None = None) -> int:
    found: dict[str, Any] = {"tier": tier, "rehearsal_cpu": cpu}
    probe_cuda(found)
    why = probe_nvcuvid()
    found["libnvcuvid"] = "ok" if why is None else why
    say("libnvcuvid", f"{NVCUVID} loads" if why is None else f"{why} (NVDEC, and so DALI's GPU decoder, cannot work)")
    probe_nvml(found)
    probe_dali(found, tier)
    if found.get("dali") and found["cuda_available"] and why is None:
        nvdec = probe_nvdec(decode, workdir=out.parent)
        found["nvdec"] = "ok" if nvdec is None else nvdec
    else:
        found["nvdec"] = why or ("no CUDA device" if not found["cuda_available"] else "DALI does not import")
    say("NVDEC", "one H.264 file decodes frame-exact on DALI's mixed decoder" if found["nvdec"] == "ok"
        else f"not tested or failed: {found['nvdec']}")
    found["cpu_decoders"] = {m: importlib.util.find_spec(m) is not None
                             for m in ("av", "decord", "torchcodec", "skvideo")}
    say("CPU decoders", ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in found["cpu_decoders"].items()))
    status, line = verdict(found, tier, cpu)
    out.write_text(json.dumps(found, indent=2) + "\n")
    if line:
        print(f"gpu_check.sh: {line}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks.gpu_preflight", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("out", type=Path, help="where the findings go (JSON)")
    p.add("--tier", choices=("core", "dali"), default="core")
    p.add("--cpu", action="store_true", help="the CPU rehearsal: no CUDA device is fine")
    args = p.parse_args(argv)
    return run(args.out, args.tier, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
