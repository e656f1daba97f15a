"""Hardware telemetry over a timed window: NVML (SM, NVDEC, memory, power, clocks,
temperature) and psutil (CPU utilisation, resident memory of this process and its workers).

Usage::

    with Telemetry(hz=2) as tel:
        run_benchmark()
    tel.summary()   # {"sm_util": 87.5, "nvdec_util": 41.0, "cpu_util": 63.2, "rss_mb": ...}

Without a GPU or without nvidia-ml-py (``pip install vidaccel[nvml]``) the GPU fields are
``"n/a"`` and the CPU fields are still measured. Each NVML counter stands alone: one this GPU
does not support (H100 / H200 have no NVENC; a MIG slice refuses utilisation queries) reads
``"n/a"`` from its first failure on and the others go on (:func:`nvml_counter_support`
says which counters a GPU has).

The sampler is a Python thread and takes the GIL for each sample: around millisecond-scale
timed loops that report p99 latencies, sample at :data:`P99_SAFE_HZ` (2 Hz) or less, so
the sampler cannot show up in the tail it is measuring.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import psutil

from .cli import one_line

NA = "n/a"

P99_SAFE_HZ = 2.0  # the sampling rate for benchmarks that report tail latencies

# One reader per counter, so that one unsupported counter fails alone. A reader returns a
# dict of fields (the utilisation query yields two).
_COUNTERS: dict[str, Callable[[Any, Any], dict[str, float]]] = {
    "utilization": lambda nv, h: (lambda u: {"sm_util": float(u.gpu), "mem_util": float(u.memory)})(
        nv.nvmlDeviceGetUtilizationRates(h)),
    "decoder": lambda nv, h: {"nvdec_util": float(nv.nvmlDeviceGetDecoderUtilization(h)[0])},
    "encoder": lambda nv, h: {"nvenc_util": float(nv.nvmlDeviceGetEncoderUtilization(h)[0])},
    "memory": lambda nv, h: {"gpu_mem_mb": nv.nvmlDeviceGetMemoryInfo(h).used / 2**20},
    "power": lambda nv, h: {"power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0},
    "sm_clock": lambda nv, h: {"sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))},
    "mem_clock": lambda nv, h: {"mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))},
    "temperature": lambda nv, h: {"temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))},
}
_FIELDS = {"utilization": ("sm_util", "mem_util"), "decoder": ("nvdec_util",), "encoder": ("nvenc_util",),
           "memory": ("gpu_mem_mb",), "power": ("power_w",), "sm_clock": ("sm_clock_mhz",),
           "mem_clock": ("mem_clock_mhz",), "temperature": ("temp_c",)}
_GPU_FIELDS = tuple(f for fields in _FIELDS.values() for f in fields)


def _nvml():
    """The NVML module from nvidia-ml-py, initialised, or None when unavailable."""
    try:
        import pynvml  # provided by nvidia-ml-py
        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no package, no driver, no GPU: all mean "no NVML here"
        return None


def nvml_driver_version() -> str | None:
    nv = _nvml()
    if nv is None:
        return None
    v = nv.nvmlSystemGetDriverVersion()
    return v.decode() if isinstance(v, bytes) else str(v)


def nvml_counter_support(device_index: int = 0) -> dict[str, str]:
    """``{counter: "ok" | why not}`` for this GPU's NVML counters; ``{}`` without NVML."""
    nv = _nvml()
    if nv is None:
        return {}
    try:
        h = nv.nvmlDeviceGetHandleByIndex(device_index)
    except Exception as e:  # noqa: BLE001  (NVML's error classes are generated at runtime)
        return {name: f"no device {device_index} ({one_line(e, typed=True, limit=200)})" for name in _COUNTERS}
    out = {}
    for name, read in _COUNTERS.items():
        try:
            read(nv, h)
            out[name] = "ok"
        except Exception as e:  # noqa: BLE001
            out[name] = one_line(e, typed=True, limit=200)
    return out


def _rss_mb(proc: psutil.Process) -> float:
    """Resident memory of a process and all its children (DataLoader workers)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


class Telemetry:
    """Samples hardware counters on a background thread while the ``with`` block runs."""

    def __init__(self, *, hz: float = P99_SAFE_HZ, device_index: int = 0):
        if hz <= 0:
            raise ValueError(f"hz must be > 0, got {hz}")
        self.interval = 1.0 / hz
        self.device_index = device_index
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self._nv = None
        self._handle = None
        self.unsupported: dict[str, str] = {}  # counter -> NVML's error, from its first failure
        self.elapsed_s = 0.0

    def _read_gpu(self) -> dict[str, float | str]:
        """Every counter still supported; one that raises is 'n/a' from then on (no retries)."""
        out: dict[str, float | str] = {}
        for name, read in _COUNTERS.items():
            if name not in self.unsupported:
                try:
                    out.update(read(self._nv, self._handle))
                    continue
                except Exception as e:  # noqa: BLE001  (NVMLError_NotSupported, _NoPermission, ...)
                    self.unsupported[name] = one_line(e, typed=True, limit=200)
            out.update({f: NA for f in _FIELDS[name]})
        return out

    def _sample_once(self) -> None:
        s = {"t": time.perf_counter(), "cpu_util": psutil.cpu_percent(interval=None),
             "rss_mb": _rss_mb(self._proc)}
        if self._handle is not None:
            s.update(self._read_gpu())
        self.samples.append(s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    def __enter__(self) -> "Telemetry":
        self._nv = _nvml()
        if self._nv is not None:
            try:
                self._handle = self._nv.nvmlDeviceGetHandleByIndex(self.device_index)
            except Exception:
                self._handle = None
        psutil.cpu_percent(interval=None)  # first call only sets psutil's reference point
        self.samples = []
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vidaccel-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample_once()  # a window shorter than one interval still gets a sample
        self.elapsed_s = time.perf_counter() - self._t0

    @property
    def gpu_available(self) -> bool:
        return self._handle is not None

    def summary(self) -> dict[str, Any]:
        """Means over the window (peaks for memory); a GPU field is 'n/a' without NVML or when
        its counter is unsupported (``nvml_unsupported`` then says which and why)."""
        out: dict[str, Any] = {"telemetry_samples": len(self.samples)}
        if not self.samples:
            return out | {"cpu_util": NA, "rss_mb": NA} | {k: NA for k in _GPU_FIELDS}
        out["cpu_util"] = sum(s["cpu_util"] for s in self.samples) / len(self.samples)
        out["rss_mb"] = max(s["rss_mb"] for s in self.samples)
        for k in _GPU_FIELDS:
            values = [s[k] for s in self.samples if isinstance(s.get(k), (int, float))]
            if not self.gpu_available or not values:
                out[k] = NA
            else:
                out[k] = max(values) if k == "gpu_mem_mb" else sum(values) / len(values)
        if self.unsupported:
            out["nvml_unsupported"] = dict(self.unsupported)
        return out
