"""``python -m benchmarks models``: the acceptance command, record fields, skips, errors,
the batch sweep and the exported variants. Small models and inputs; no speed assertions."""
import json

import pytest
import torch

from benchmarks import models as bm
from benchmarks.__main__ import main as bench_main
from models import create_model

SMALL = ["--device", "cpu", "--frames", "4", "--size", "32", "--warmup", "0", "--iters", "2",
         "--pool", "2", "--no-plot"]


def run(tmp_path, *argv, name="out.json"):
    out = tmp_path / name
    rc = bench_main(["models", *argv, "--json", str(out)])
    return rc, json.loads(out.read_text())


def by(records, **kw):
    return [r for r in records if all(r[k] == v for k, v in kw.items())]


def test_acceptance_command(tmp_path, capsys):
    rc, data = run(tmp_path, "--models", "tsm_resnet18,r3d_18_late_fusion", "--device", "cpu",
                   "--batch-size", "2", "--frames", "8", "--size", "112", "--warmup", "1",
                   "--iters", "5")
    assert rc == 0
    recs = data["records"]
    assert [r["model"] for r in recs] == ["tsm_resnet18", "r3d_18_late_fusion"]
    for r in recs:
        m = create_model(r["model"], num_classes=7)
        assert r["params"] == sum(p.numel() for p in m.parameters())
        assert r["status"] == "ok" and r["batch_size"] == 2 and r["frames"] == 8 and r["size"] == 112
        assert r["ms_per_clip"] == r["batch_time_ms_mean"] / r["batch_size"]
        assert r["clips_per_s"] == pytest.approx(1e3 * r["batch_size"] / r["batch_time_ms_mean"])
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["gflops"] > 0 and r["max_abs_diff"] == 0.0 and r["top1_agree"] == 1.0
        assert r["iters"] == 5 and r["cpu_util"] != "n/a" and r["sm_util"] == "n/a"
    env = data["environment"]
    assert env["torch"] == torch.__version__ and "git_commit" in env
    assert data["command"].startswith("python -m benchmarks models")
    md = (tmp_path / "out.md").read_text()
    for header in ("Params (M)", "Mean Batch Time (s) ± std", "Latency (ms/clip)", "Clips/s"):
        assert header in md
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out.png").is_file()
    printed = capsys.readouterr().out
    assert "tsm_resnet18 [infer]" in printed and "wrote" in printed


def test_unavailable_variants_are_skipped_rows_not_crashes(tmp_path):
    rc, data = run(tmp_path, "--models", "tsm_resnet18", "--variants",
                   "eager,cuda_graphs,amp_fp16,tensorrt,channels_last+cuda_graphs", *SMALL,
                   "--batch-size", "2")
    assert rc == 0
    recs = data["records"]
    assert len(recs) == 5
    for r in recs[1:]:
        assert r["status"] == "skipped" and r["reason"], r
        assert r["batch_time_ms_mean"] is None and r["params"] == recs[0]["params"]
    assert "CUDA" in by(recs, variant="cuda_graphs")[0]["reason"]


def test_train_mode_and_inference_only_skips(tmp_path):
    rc, data = run(tmp_path, "--models", "cnn_lstm", "--variants", "eager,amp,onnx", "--mode",
                   "both", *SMALL, "--batch-size", "2")
    assert rc == 0
    train = by(data["records"], mode="train")
    assert [r["status"] for r in train] == ["ok", "ok", "skipped"]
    assert by(train, variant="onnx")[0]["reason"] == "inference-only variant"
    assert train[0]["ms_per_clip"] == train[0]["batch_time_ms_mean"] / 2
    infer_amp = by(data["records"], mode="infer", variant="amp")[0]
    assert 0 < infer_amp["max_abs_diff"] < 0.1   # bf16: close to eager fp32, not equal


def test_onnx_variant_parity(tmp_path):
    before = torch.get_num_threads()
    rc, data = run(tmp_path, "--models", "cnn_lstm", "--variants", "onnx", *SMALL,
                   "--batch-size", "1,3", "--threads", "1")
    assert torch.get_num_threads() == before   # --threads is scoped to the run
    assert all(r["cpu_threads"] == 1 for r in data["records"])
    assert rc == 0
    for r in data["records"]:   # one dynamic-batch export serves both batch sizes
        assert r["status"] == "ok" and r["max_abs_diff"] < 1e-3 and r["top1_agree"] == 1.0
        assert r["export_s"] > 0 and r["compile_s"] is None


def test_batch_sweep_adds_latency_row_and_stops(tmp_path):
    rc, data = run(tmp_path, "--models", "tsn_resnet18", *SMALL, "--batch-size", "2",
                   "--batch-sweep", "--max-batch", "8")
    assert rc == 0
    sizes = [r["batch_size"] for r in data["records"]]
    assert sizes[:2] == [1, 2] and all(b <= 8 for b in sizes)
    assert sizes == sorted(sizes) and len(sizes) == len(set(sizes))


def test_failing_variant_is_an_error_row_and_exit_1(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("exporter exploded\nsecond line")
    monkeypatch.setattr(bm, "build_runner", boom)
    rc, data = run(tmp_path, "--models", "tsn_resnet18", "--variants", "eager,aoti", *SMALL,
                   "--batch-size", "2")
    assert rc == 1
    eager, aoti = data["records"]
    assert eager["status"] == "ok"
    assert aoti["status"] == "error" and aoti["reason"] == "RuntimeError: exporter exploded"


@pytest.mark.parametrize("variant, shift, verdict", [
    ("aoti", 0.0, "ok"),                # fp32 variant, exact: passes
    ("aoti", 0.5, "error"),             # fp32 variant off by 0.5: wrong results
    ("amp", 0.01, "ok"),                # low precision: only finiteness is gated
    ("amp", float("nan"), "error"),
])
def test_wrong_results_are_error_rows(tmp_path, monkeypatch, variant, shift, verdict):
    def runner(variant, model, example, **kw):
        return (lambda x: model(x) + shift), {}
    monkeypatch.setattr(bm, "build_runner", runner)
    rc, data = run(tmp_path, "--models", "tsn_resnet18", "--variants", variant, *SMALL,
                   "--batch-size", "2")
    r = data["records"][0]
    assert r["status"] == verdict and rc == (1 if verdict == "error" else 0)
    if verdict == "error":
        assert r["reason"].startswith("parity:") and r["batch_time_ms_mean"] is not None


@pytest.mark.parametrize("variant, opts", [
    ("eager", {}),
    ("channels_last+amp+compile", {"channels_last": True, "amp": "bf16", "compile": True,
                                   "cuda_graphs": False}),
    ("amp_fp16+cuda_graphs", {"channels_last": False, "amp": "fp16", "compile": False,
                              "cuda_graphs": True}),
])
def test_parse_variant(variant, opts):
    assert bm.parse_variant(variant)["optimize"] == opts


@pytest.mark.parametrize("bad", ["fast", "amp+amp_fp16", "onnx+amp", "amp+amp"])
def test_bad_variant_lists_allowed_values(bad):
    with pytest.raises(ValueError, match="use one of eager"):
        bm.parse_variant(bad)


def refused(capsys, argv) -> str:
    """The one line ``python -m benchmarks`` stops with (exit 2)."""
    with pytest.raises(SystemExit) as e:
        bench_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_rejects_unknown_model_and_variant(tmp_path, capsys):
    err = refused(capsys, ["models", "--models", "nope", "--json", str(tmp_path / "x.json")])
    assert "unknown 'nope'" in err and "tsm_resnet18" in err
    err = refused(capsys, ["models", "--variants", "turbo", "--json", str(tmp_path / "x.json")])
    assert "unknown variant 'turbo'" in err and "use one of eager" in err


@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "argument --batch-size/--batch_size: '0': must be >= 1"),
    (["--iters", "0"], "must be >= 1, got 0"),
    (["--warmup", "-1"], "must be >= 0, got -1"),
    (["--threads", "0"], "must be >= 1, got 0"),
    (["--mode", "fast"], "invalid choice: 'fast' (choose from 'infer', 'train', 'both')"),
])
def test_bad_numbers_are_refused_at_parse_time(tmp_path, capsys, argv, needle):
    assert needle in refused(capsys, ["models", *argv, "--json", str(tmp_path / "x.json")])


def test_cuda_device_without_cuda_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = refused(capsys, ["models", "--device", "cuda", "--json", str(tmp_path / "x.json")])
    assert "--device cuda: CUDA is not available" in err


def test_sync_device_waits_for_cuda_only(monkeypatch):
    from accel.deploy.perf import sync_device

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    sync_device("cpu")
    sync_device(torch.device("cuda", 1))
    assert waited == [torch.device("cuda", 1)]


@pytest.mark.compile
def test_compile_variant_reports_compile_time(tmp_path):
    rc, data = run(tmp_path, "--models", "tsn_resnet18", "--variants", "compile", *SMALL,
                   "--batch-size", "2")
    r = data["records"][0]
    assert rc == 0 and r["status"] == "ok" and r["compile_s"] > 0 and r["max_abs_diff"] < 1e-3


@pytest.mark.slow
def test_aoti_variant_parity(tmp_path):
    rc, data = run(tmp_path, "--models", "cnn_lstm", "--variants", "aoti", *SMALL, "--batch-size", "2")
    r = data["records"][0]
    assert rc == 0 and r["status"] == "ok" and r["max_abs_diff"] < 1e-3 and r["export_s"] > 0


@pytest.mark.parametrize("command", ["models", "stream", "compare"])
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as e:
        bench_main([command, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out
