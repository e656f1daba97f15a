"""accel.deploy.perf.optimize: argument checks, channels-last, autocast, compile, CUDA graphs."""
import pytest
import torch
from torch import nn

from accel.deploy.perf import COMPILE_MODES, optimize, to_channels_last


class TinyVideoNet(nn.Module):
    """3-D conv, then a per-frame 2-D conv (the two weight ranks video models mix)."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.conv3d = nn.Conv3d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.conv2d = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv3d(x)))
        b, c, t, h, w = x.shape
        x = self.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w))
        return self.fc(x.mean((2, 3)).view(b, t, c).mean(1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyVideoNet().eval()


@pytest.fixture
def x():
    return torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kw, match", [
    (dict(amp="fp8"), "amp must be None or one of"),
    (dict(compile="fastest"), "compile must be False, True or one of"),
    (dict(channels_last="yes"), "channels_last must be True or False"),
    (dict(cuda_graphs=1), "cuda_graphs must be True or False"),
    (dict(cuda_graphs=True, compile="reduce-overhead"), "already captures CUDA graphs"),
])
def test_bad_options_fail_early_with_allowed_values(model, kw, match):
    with pytest.raises(ValueError, match=match):
        optimize(model, **kw)


def test_cuda_graphs_on_cpu_names_the_requirement(model):
    with pytest.raises(RuntimeError, match="cuda_graphs=True needs a CUDA device"):
        optimize(model, cuda_graphs=True, device="cpu")


def test_defaults_are_plain_eager(model, x):
    ref = model(x)
    opt = optimize(model)
    assert torch.equal(opt(x), ref)
    assert "compile=None" in repr(opt)


def test_channels_last_converts_each_rank_and_keeps_outputs(model, x):
    ref = model(x)
    opt = optimize(model, channels_last=True)
    assert opt.model.conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert opt.model.conv2d.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(opt(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_clip_reaches_the_model_in_the_weights_layout(model, x, channels_last):
    """Loaders hand over channels-last clips; without channels_last the model gets them
    contiguous, like its weights (mixed layouts take slow kernels on CPU)."""
    seen = []
    opt = optimize(model, channels_last=channels_last)
    opt.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    opt(x.contiguous(memory_format=torch.channels_last_3d))
    opt(x.contiguous())
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert [t.is_contiguous(memory_format=fmt) for t in seen] == [True, True]


def test_to_channels_last_leaves_low_rank_tensors_alone():
    m = to_channels_last(nn.Linear(3, 2))
    assert m.weight.is_contiguous()


def test_amp_bf16_returns_fp32_logits_close_to_eager(model, x):
    ref = model(x)
    out = optimize(model, amp="bf16")(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=5e-2)


def test_training_through_optimize_updates_the_model(model, x):
    opt = optimize(model.train(), channels_last=True, amp="bf16")
    before = model.fc.weight.detach().clone()
    sgd = torch.optim.SGD(opt.parameters(), lr=0.5)
    nn.functional.cross_entropy(opt(x), torch.tensor([0, 1])).backward()
    sgd.step()
    assert not torch.equal(before, model.fc.weight)


def test_every_listed_compile_mode_reaches_torch_compile_and_others_are_refused(model, monkeypatch):
    """Each of COMPILE_MODES (the --compile choices) is accepted and handed to torch.compile
    as it is (compile=True is "default"); any other value is refused listing them all."""
    asked = []

    def fake_compile(fn, *, mode):
        asked.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    for mode in COMPILE_MODES:
        assert optimize(model, compile=mode).compile_mode == mode
    assert optimize(model, compile=True).compile_mode == "default"
    assert optimize(model, compile=False).compile_mode is None
    assert asked == [*COMPILE_MODES, "default"]
    with pytest.raises(ValueError) as e:
        optimize(model, compile="max-autotune-no-cuda-graphs")
    assert all(repr(m) in str(e.value) for m in COMPILE_MODES)


@pytest.mark.compile
def test_compile_matches_eager(model, x):
    ref = model(x)
    opt = optimize(model, compile=True, channels_last=True)
    with torch.no_grad():
        torch.testing.assert_close(opt(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_replay_matches_eager(model, x):
    model, x = model.cuda(), x.cuda()
    ref = model(x)
    opt = optimize(model, cuda_graphs=True, channels_last=True, device="cuda")
    with torch.no_grad():
        out1 = opt(x)
        out2 = opt(x * 2)   # new data through the same captured graph
    torch.testing.assert_close(out1, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out2, model(x * 2), atol=1e-4, rtol=1e-4)
    assert len(opt._step.graphs) == 1
    with pytest.raises(RuntimeError, match="inference-only"):
        opt(x)   # grad enabled


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_fp16_on_cuda(model, x):
    model, x = model.cuda(), x.cuda()
    out = optimize(model, amp="fp16", channels_last=True)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x), atol=2e-2, rtol=2e-2)
