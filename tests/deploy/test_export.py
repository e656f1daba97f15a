"""accel.deploy.export: ONNX and AOTInductor on CPU with parity against eager fp32; TensorRT's
missing-dependency error here, its round trip on GPU machines that have torch-tensorrt.

A dynamic-batch export is always checked at a second batch size (export_* does it): an
LSTM whose batch axis got frozen to the example's passes at that size and fails at another.
"""
import importlib.util

import pytest
import torch
from torch import nn

from accel.deploy.export import check_parity, export_aoti, export_onnx, export_tensorrt, load_exported
from models import create_model

HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None


class TinyLSTM(nn.Module):
    """Per-frame conv features -> LSTM over time (hidden state sized from the batch)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        b, c, t, h, w = x.shape
        f = self.conv(x.transpose(1, 2).reshape(b * t, c, h, w)).mean((2, 3)).view(b, t, -1)
        out, _ = self.lstm(f)
        return self.fc(out[:, -1])


def clips(b=2, t=4, size=32, seed=0):
    return torch.randn(b, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def zoo(name, **kw):
    torch.manual_seed(0)
    return create_model(name, num_classes=5, **kw).eval()


def assert_parity(result, tol=1e-3):
    assert result.parity["max_abs_diff"] < tol, result.parity
    assert result.parity["top1_agree"] == 1.0, result.parity


# --------------------------------------------------------------------------- parity
def test_check_parity_identical_and_different():
    m = TinyLSTM().eval()
    x = clips()
    same = check_parity(m, m, x)
    assert same["max_abs_diff"] == 0.0 and same["top1_agree"] == 1.0 and same["ref_max_abs"] > 0
    shifted = check_parity(m, lambda x: m(x) + 0.5, [x, clips(3)])
    assert shifted["max_abs_diff"] == pytest.approx(0.5, abs=1e-6) and shifted["top1_agree"] == 1.0


def test_check_parity_nan_is_an_infinite_difference():
    m = TinyLSTM().eval()
    p = check_parity(m, lambda x: torch.full_like(m(x), float("nan")), clips())
    assert p["max_abs_diff"] == float("inf")


def test_check_parity_shape_mismatch_is_an_error():
    m = TinyLSTM().eval()
    with pytest.raises(ValueError, match="shape"):
        check_parity(m, lambda x: m(x)[:1], clips())


# --------------------------------------------------------------------------- ONNX
def test_onnx_lstm_batch_axis_is_really_dynamic(tmp_path):
    m = TinyLSTM().eval()
    r = export_onnx(m, clips(2), tmp_path / "lstm.onnx")
    assert_parity(r)
    for b in (1, 5):   # neither the example's batch nor the second one export_onnx checked
        x = clips(b, seed=b)
        out = load_exported(r.path, "cpu")(x)
        assert out.shape == (b, 3)
        torch.testing.assert_close(out, m(x), atol=1e-4, rtol=1e-4)


def test_onnx_static_batch_rejects_other_batch_sizes(tmp_path):
    m = TinyLSTM().eval()
    r = export_onnx(m, clips(2), tmp_path / "static.onnx", dynamic_batch=False)
    assert_parity(r)
    with pytest.raises(Exception, match="(?i)dimension"):  # ONNX Runtime's InvalidArgument
        r.runner(clips(3))


@pytest.mark.parametrize("name, t, size", [("tsm_resnet18", 4, 32), ("cnn_lstm", 4, 32),
                                           ("r3d_18", 4, 32)])
def test_onnx_zoo_models_match_eager(tmp_path, name, t, size):
    r = export_onnx(zoo(name), clips(2, t, size), tmp_path / f"{name}.onnx")
    assert_parity(r)
    assert r.export_s > 0 and r.path.stat().st_size > 0


def test_dynamic_export_needs_batch_of_two(tmp_path):
    with pytest.raises(ValueError, match="batch size >= 2"):
        export_onnx(TinyLSTM().eval(), clips(1), tmp_path / "x.onnx")


# --------------------------------------------------------------------------- AOTInductor
def test_aoti_tiny_lstm_round_trip(tmp_path):
    m = TinyLSTM().eval()
    r = export_aoti(m, clips(2), tmp_path / "lstm.pt2")
    assert_parity(r)
    again = load_exported(tmp_path / "lstm.pt2", "cpu")
    torch.testing.assert_close(again(clips(4, seed=4)), m(clips(4, seed=4)), atol=1e-4, rtol=1e-4)


def test_aoti_path_must_end_in_pt2(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_aoti(TinyLSTM().eval(), clips(2), tmp_path / "model.so")


@pytest.mark.slow
@pytest.mark.parametrize("name, t, size", [
    # tsm at 8x64: Inductor (torch 2.13, CPU) has produced NaN logits for the TSM shift
    # (empty_like + slice writes) at this size in most runs; the parity check catches it.
    ("tsm_resnet18", 8, 64), ("cnn_lstm", 4, 32), ("r3d_18", 4, 32)])
def test_aoti_zoo_models_match_eager(tmp_path, name, t, size):
    assert_parity(export_aoti(zoo(name), clips(2, t, size), tmp_path / f"{name}.pt2"))


# --------------------------------------------------------------------------- loading
def test_load_exported_rejects_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        load_exported(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "absent.onnx")


# --------------------------------------------------------------------------- TensorRT
def test_tensorrt_precision_is_validated_first(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        export_tensorrt(TinyLSTM().eval(), clips(2), tmp_path / "m.ep", precision="int4")


@pytest.mark.skipif(HAS_TRT, reason="torch_tensorrt is installed here")
def test_tensorrt_missing_names_the_install_for_this_torch(tmp_path):
    import torch

    pinned = r"torch-tensorrt==" + ".".join(torch.__version__.split("+")[0].split(".")[:2]) + r"\.\*"
    with pytest.raises(ImportError, match=pinned):
        export_tensorrt(TinyLSTM().eval(), clips(2), tmp_path / "m.ep")
    (tmp_path / "m.ep").write_bytes(b"")
    with pytest.raises(ImportError, match=pinned):
        load_exported(tmp_path / "m.ep", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs CUDA and torch_tensorrt")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 5e-2)])
@pytest.mark.parametrize("name", ["tsm_resnet18", "cnn_lstm"])
def test_tensorrt_round_trip(tmp_path, name, precision, tol):
    m = zoo(name).cuda()
    r = export_tensorrt(m, clips(2, 8, 64).cuda(), tmp_path / f"{name}.ep", precision=precision)
    assert r.parity["max_abs_diff"] < tol, r.parity
    out = load_exported(r.path, "cuda")(clips(5, 8, 64, seed=5).cuda())
    assert out.shape == (5, 5) and out.dtype == torch.float32


def test_the_tensorrt_hint_pins_torchs_minor(monkeypatch):
    """torch-tensorrt releases each pin one torch: the hint names the installed minor."""
    from accel.deploy.export import trt_install_hint

    assert trt_install_hint("2.11.0+cu130") == "pip install 'torch-tensorrt==2.11.*'"
    monkeypatch.setattr(torch, "__version__", "2.13.0")
    assert trt_install_hint() == "pip install 'torch-tensorrt==2.13.*'"


def test_quiet_hides_only_the_warnings_and_loggers_it_names(caplog):
    """The exporters' noise about torch internals is hidden by name; any other warning shows."""
    import logging
    import warnings

    from accel.deploy.export import HIDDEN_LOGGERS, quiet_export

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_export():
            warnings.warn("_check_is_size will be removed in a future PyTorch release", FutureWarning, stacklevel=1)
            warnings.warn("The tensor attributes self.lstm._flat_weights[0] were assigned during export",
                          stacklevel=1)
            warnings.warn("something about the model", UserWarning, stacklevel=1)
            logging.getLogger(HIDDEN_LOGGERS[0]).warning("No CUDA runtime is found")
            logging.getLogger("accel.elsewhere").warning("still shown")
    assert [str(w.message) for w in seen] == ["something about the model"]
    assert [r.getMessage() for r in caplog.records] == ["still shown"]
    assert logging.getLogger(HIDDEN_LOGGERS[0]).level == logging.NOTSET  # restored
