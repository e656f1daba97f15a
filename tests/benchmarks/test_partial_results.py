"""A benchmark stopped part-way (gpu_check.sh's time limit) keeps the rows it made: models,
stream and train write their JSON after every record; and the rows say what they measured
(cuDNN autotuning on, TF32 named as such)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.__main__ import main as bench_main


@pytest.fixture(autouse=True)
def keep_cudnn_benchmark(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)


class Stop(Exception):
    """The time limit, arriving after the first record."""


def stop_after_first(real, calls):
    def wrapped(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise Stop
        return real(*a, **k)
    return wrapped


def test_models_writes_each_record_as_it_goes(tmp_path, monkeypatch):
    from benchmarks import models

    calls: list[int] = []
    monkeypatch.setattr(models, "run_case", stop_after_first(models.run_case, calls))
    out = tmp_path / "m.json"
    with pytest.raises(Stop):
        bench_main(["models", "--models", "tsn_resnet18", "--variants", "eager,channels_last", "--device",
                    "cpu", "--frames", "2", "--size", "32", "--batch-size", "1", "--warmup", "0",
                    "--iters", "1", "--threads", "1", "--no-plot", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["partial"] is True and [r["variant"] for r in doc["records"]] == ["eager"]
    assert doc["records"][0]["status"] == "ok" and doc["records"][0]["precision"] == "fp32"
    assert torch.backends.cudnn.benchmark is True
    assert not list(tmp_path.glob("*.tmp"))


def test_stream_writes_each_record_as_it_goes(tmp_path, monkeypatch):
    from benchmarks import stream

    calls: list[int] = []
    monkeypatch.setattr(stream, "_one", stop_after_first(lambda name, variant, *a: {"model": name, "variant": variant,
                                                                                     "status": "ok"}, calls))
    out = tmp_path / "s.json"
    with pytest.raises(Stop):
        bench_main(["stream", "--models", "tsn_resnet18", "--variants", "eager,channels_last", "--device", "cpu",
                    "--no-cudnn-benchmark", "--json", str(out)])
    assert json.loads(out.read_text())["records"] == [{"model": "tsn_resnet18", "variant": "eager", "status": "ok"}]
    assert torch.backends.cudnn.benchmark is False


def test_train_writes_each_backend_as_it_goes(tmp_path, monkeypatch, temporal_dataset):
    from benchmarks import train

    calls: list[int] = []
    monkeypatch.setattr(train, "bench_backend", stop_after_first(
        lambda manifest, backend, *a: {"backend": backend, "status": "ok"}, calls))
    out = tmp_path / "t.json"
    with pytest.raises(Stop):
        bench_main(["train", "--data", str(temporal_dataset), "--split", "train", "--backends", "pyav,decord",
                    "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text())["records"] == [{"backend": "pyav", "status": "ok"}]


@pytest.mark.parametrize("capability, allowed, expect", [((9, 0), True, "tf32"), ((8, 0), True, "tf32"),
                                                         ((7, 0), True, "fp32"), ((9, 0), False, "fp32")])
def test_fp32_rows_on_ampere_and_later_are_labelled_tf32(capability, allowed, expect):
    from benchmarks.common import fp32_math

    assert fp32_math("cuda", capability=capability, conv_tf32=allowed) == expect
    assert fp32_math("cpu") == "fp32"


def test_row_precision_names_autocast_and_exports(monkeypatch):
    from benchmarks import models

    monkeypatch.setattr(models, "fp32_math", lambda device_type: "tf32" if device_type == "cuda" else "fp32")
    cuda = torch.device("cuda")
    assert models.row_precision("eager", cuda) == "tf32" and models.row_precision("channels_last", cuda) == "tf32"
    assert models.row_precision("amp", cuda) == "bf16" and models.row_precision("cuda_graphs+amp_fp16", cuda) == "fp16"
    assert models.row_precision("tensorrt", cuda) == "fp16" and models.row_precision("tensorrt_fp32", cuda) == "tf32"
    assert models.row_precision("eager", torch.device("cpu")) == "fp32"
