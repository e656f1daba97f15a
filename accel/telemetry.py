"""Hardware telemetry over a timed window: NVML (SM, NVDEC, memory, power, clocks,
temperature) and psutil (CPU utilisation, resident memory of this process and its workers).

Usage::

    with Telemetry(hz=20) as tel:
        run_benchmark()
    tel.summary()   # {"sm_util": 87.5, "nvdec_util": 41.0, "cpu_util": 63.2, "rss_mb": ...}

Without a GPU or without nvidia-ml-py (``pip install vidaccel[nvml]``) the GPU fields are
``"n/a"`` and the CPU fields are still measured.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import psutil

NA = "n/a"

_GPU_FIELDS = ("sm_util", "mem_util", "nvdec_util", "nvenc_util", "gpu_mem_mb", "power_w",
               "sm_clock_mhz", "mem_clock_mhz", "temp_c")


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

    def __init__(self, *, hz: float = 20.0, device_index: int = 0):
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
        self.elapsed_s = 0.0

    def _read_gpu(self) -> dict[str, float]:
        nv, h = self._nv, self._handle
        util = nv.nvmlDeviceGetUtilizationRates(h)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        return {
            "sm_util": float(util.gpu),
            "mem_util": float(util.memory),
            "nvdec_util": float(nv.nvmlDeviceGetDecoderUtilization(h)[0]),
            "nvenc_util": float(nv.nvmlDeviceGetEncoderUtilization(h)[0]),
            "gpu_mem_mb": mem.used / 2**20,
            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
            "temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        }

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
        """Means over the window (peaks for memory); GPU fields are 'n/a' without NVML."""
        out: dict[str, Any] = {"telemetry_samples": len(self.samples)}
        if not self.samples:
            return out | {"cpu_util": NA, "rss_mb": NA} | {k: NA for k in _GPU_FIELDS}
        mean = lambda k: sum(s[k] for s in self.samples) / len(self.samples)  # noqa: E731
        out["cpu_util"] = mean("cpu_util")
        out["rss_mb"] = max(s["rss_mb"] for s in self.samples)
        for k in _GPU_FIELDS:
            if self.gpu_available:
                out[k] = max(s[k] for s in self.samples) if k == "gpu_mem_mb" else mean(k)
            else:
                out[k] = NA
        return out
