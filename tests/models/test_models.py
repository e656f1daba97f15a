"""Model zoo: registry, every model's forward/backward/training, layouts, TSM, late fusion,
parameter counts against the seeds, pretrained/offline behaviour, compile.

Behaviour tests use tiny clips (B=2, T=4 or 8, 32 px) so the file runs in about a minute on
2 CPU cores; compile tests are marked ``compile``.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from accel.data.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from models import create_model, frames_view, list_models, param_groups, register_model, resolve_data_config
from models.base import PretrainedUnavailable
from models.tsm import temporal_shift

ALL_MODELS = [
    "resnet50_lstm",
    "resnext50_lstm",
    "resnet18_lstm",
    "cnn_lstm",
    "tsm_resnet18",
    "r2plus1d_18",
    "r3d_18",
    "r3d_18_late_fusion",
    "vivit",
    "tsn_resnet18",
]
B, T, S = 2, 4, 32


def small_clip(name: str, *, seed: int = 0, channels_last: bool = False) -> torch.Tensor:
    t = 8 if name == "r3d_18_late_fusion" else T  # 4 segments of 2 frames
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, t, S, S, generator=g)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def make(name: str, num_classes: int = 5, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **kw)


# ----------------------------------------------------------------------------- registry
def test_registry_lists_every_seed_model():
    assert sorted(ALL_MODELS) == list_models()
    assert list_models("*lstm") == ["cnn_lstm", "resnet18_lstm", "resnet50_lstm", "resnext50_lstm"]


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'tsm_resnet50'.*tsm_resnet18"):
        create_model("tsm_resnet50", num_classes=7)


def test_duplicate_registration_fails(monkeypatch):
    def cnn_lstm(*, num_classes, pretrained=False):  # same name as a registered model
        return nn.Linear(1, num_classes)

    with pytest.raises(ValueError, match="already registered.*known models: .*tsm_resnet18"):
        register_model(cnn_lstm)
    assert create_model("cnn_lstm", num_classes=2).__class__.__name__ == "CNNLSTM"

    from models import registry

    monkeypatch.setattr(registry, "_model_entrypoints", dict(registry._model_entrypoints))
    monkeypatch.setattr(registry, "_model_configs", dict(registry._model_configs))

    def my_tiny_model(*, num_classes, pretrained=False):
        return nn.Linear(3, num_classes)

    assert register_model(my_tiny_model) is my_tiny_model
    assert "my_tiny_model" in list_models()
    assert create_model("my_tiny_model", num_classes=4).out_features == 4


def test_num_classes_is_keyword_only_and_checked():
    with pytest.raises(TypeError):
        create_model("cnn_lstm", 7)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("cnn_lstm", num_classes=0)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_default_input_attributes(name):
    m = make(name)
    assert isinstance(m.default_clip_len, int) and isinstance(m.default_size, int)
    assert len(m.mean) == 3 and len(m.std) == 3
    assert isinstance(m.backbone, nn.Module)
    expected = {"resnet50_lstm": (32, 224), "resnet18_lstm": (30, 224), "r3d_18": (16, 112),
                "tsm_resnet18": (16, 112)}
    if name in expected:
        assert (m.default_clip_len, m.default_size) == expected[name]


# ----------------------------------------------------------------------------- data config
@pytest.mark.parametrize("name,weights", [("r3d_18", "R3D_18_Weights"),
                                          ("r2plus1d_18", "R2Plus1D_18_Weights"),
                                          ("r3d_18_late_fusion", "R3D_18_Weights")])
def test_kinetics_models_resolve_kinetics_statistics(name, weights):
    """torchvision's Kinetics-400 video ResNets: the statistics of their own weights' transforms."""
    from torchvision.models import video as tvv

    want = getattr(tvv, weights).KINETICS400_V1.transforms()
    for cfg in (resolve_data_config(name), resolve_data_config(make(name))):
        assert cfg.weights == "kinetics400" and (cfg.clip_len, cfg.size) == (16, 112)
        assert list(cfg.mean) == list(want.mean) and list(cfg.std) == list(want.std)
        assert cfg.size == want.crop_size[0]
    assert make(name).mean == tuple(want.mean)  # the README's model.mean, read from the config


@pytest.mark.parametrize("name", ["tsm_resnet18", "cnn_lstm", "resnext50_lstm", "resnet50_lstm",
                                  "tsn_resnet18"])
def test_imagenet_trunks_resolve_imagenet_statistics(name):
    from torchvision.models import ResNet18_Weights

    imagenet = ResNet18_Weights.IMAGENET1K_V1.transforms()
    cfg = resolve_data_config(name)
    assert cfg.weights == "imagenet" and cfg.mean == IMAGENET_MEAN and cfg.std == IMAGENET_STD
    assert list(cfg.mean) == list(imagenet.mean) and list(cfg.std) == list(imagenet.std)
    assert resolve_data_config(make(name)) == cfg


def test_data_config_follows_aliases_wrappers_options_and_overrides():
    assert resolve_data_config("R3D") == resolve_data_config("r3d_18")
    m = make("r3d_18")
    assert resolve_data_config(torch.compile(m)) == m.data_config  # compile wrapper looked through
    assert resolve_data_config(m, size=160).size == 160 and resolve_data_config(m, size=None).size == 112
    v = create_model("vivit", num_classes=3, num_frames=8, image_size=64)
    assert (v.default_clip_len, v.default_size) == (8, 64) and resolve_data_config(v).clip_len == 8
    assert resolve_data_config(nn.Linear(2, 2)) == DataConfig()  # a foreign module: the defaults
    with pytest.raises(ValueError, match="std must be positive"):
        DataConfig(std=(0.2, 0.0, 0.2))
    assert DataConfig.from_dict(m.data_config.to_dict()) == m.data_config


def test_registering_a_data_config(monkeypatch):
    from models import registry

    monkeypatch.setattr(registry, "_model_entrypoints", dict(registry._model_entrypoints))
    monkeypatch.setattr(registry, "_model_configs", dict(registry._model_configs))
    cfg = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), clip_len=8, size=64, weights=None)

    @register_model(data_config=cfg)
    def my_config_model(*, num_classes, pretrained=False):
        return nn.Linear(3, num_classes)

    assert resolve_data_config("my_config_model") is cfg
    assert create_model("my_config_model", num_classes=2).data_config is cfg


# ----------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_and_finite_gradients(name):
    m = make(name).train()
    x = small_clip(name, channels_last=True)
    out = m(x)
    assert out.shape == (B, 5) and out.dtype == torch.float32
    out.logsumexp(dim=1).sum().backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{n} has non-finite gradient"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_sgd_on_a_fixed_batch_lowers_the_loss(name):
    m = make(name, dropout=0.0).train()
    x = small_clip(name, channels_last=True)
    y = torch.tensor([1, 3])
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[3:]) < losses[0], losses


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last_3d_input_gives_the_same_output(name):
    m = make(name).eval()
    x = small_clip(name)
    with torch.no_grad():
        a = m(x)
        b = m(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item() + 1e-6)


def test_frames_view_is_free_for_channels_last_3d():
    x = torch.randn(2, 3, 4, 8, 6).contiguous(memory_format=torch.channels_last_3d)
    f = frames_view(x)
    assert f.shape == (8, 3, 8, 6)
    assert f.data_ptr() == x.data_ptr()  # a view, no copy
    assert f.is_contiguous(memory_format=torch.channels_last)
    # frame t of clip b is row b*T + t
    torch.testing.assert_close(f[1 * 4 + 2], x[1, :, 2], rtol=0, atol=0)
    torch.testing.assert_close(frames_view(x.contiguous()), f, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        frames_view(torch.randn(3, 4, 8, 6))
    from accel.data import transforms

    assert frames_view is transforms.frames_view  # the one view, the transforms' too


@pytest.mark.parametrize("name", ["cnn_lstm", "resnet18_lstm", "tsm_resnet18", "tsn_resnet18", "vivit"])
def test_frame_models_feed_their_first_conv_without_a_copy(name):
    m = make(name).eval()
    first_conv = m.backbone.patch_embed if name == "vivit" else m.backbone.conv1
    seen = {}
    first_conv.register_forward_pre_hook(lambda mod, args: seen.update(ptr=args[0].data_ptr(), x=args[0]))
    x = small_clip(name, channels_last=True)
    with torch.no_grad():
        m(x)
    assert seen["ptr"] == x.data_ptr()
    assert seen["x"].is_contiguous(memory_format=torch.channels_last)


def test_tsn_is_order_blind_and_temporal_models_are_not():
    x = small_clip("tsn_resnet18")
    perm = x[:, :, torch.tensor([3, 1, 0, 2])]
    with torch.no_grad():
        tsn = make("tsn_resnet18").eval()
        torch.testing.assert_close(tsn(x), tsn(perm), rtol=1e-4, atol=1e-5)
        for name in ("tsm_resnet18", "cnn_lstm"):
            m = make(name).eval()
            assert not torch.allclose(m(x), m(perm), rtol=1e-4, atol=1e-5), name


# ----------------------------------------------------------------------------- parameter counts
def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, seed_millions",
    [
        ("cnn_lstm", 13.28),  # seed 001 table
        ("tsm_resnet18", 11.0),  # seed 001 table (the 11.2 M is the exact 11.18 M)
        ("tsm_resnet18", 11.2),
        ("r2plus1d_18", 31.0),  # seed 001 table
        ("vivit", 3.7),  # seed 001 table
    ],
)
def test_parameter_counts_match_the_seeds(name, seed_millions):
    got = n_params(create_model(name, num_classes=7)) / 1e6
    assert abs(got - seed_millions) / seed_millions < 0.02, f"{name}: {got:.3f} M vs seed {seed_millions} M"


def test_resnet18_lstm_matches_the_seed_summary():
    m = create_model("resnet18_lstm", num_classes=1)  # seed 003: binary, BCE
    assert n_params(m.lstm) == 460_800
    linears = [layer for layer in m.head if isinstance(layer, nn.Linear)]
    assert [n_params(layer) for layer in linears] == [8_256, 65]
    assert [type(layer).__name__ for layer in m.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert n_params(m.backbone) == 11_176_512  # ResNet-18 without fc: the seed's blocks summed
    assert m.lstm.num_layers == 2 and m.lstm.hidden_size == 128 and m.pool == "mean"
    assert m.backbone_frozen and not any(p.requires_grad for p in m.backbone.parameters())


def test_seed_architecture_details():
    rx = create_model("resnext50_lstm", num_classes=2)
    assert rx.lstm.hidden_size == 2048 and rx.pool == "mean" and rx.head[0].p == 0.4
    assert rx.backbone.layer1[0].conv2.groups == 32
    r50 = create_model("resnet50_lstm", num_classes=2)
    assert r50.backbone.fc.__class__ is nn.Identity and r50.lstm.input_size == 2048
    bi = create_model("cnn_lstm", num_classes=3, bidirectional=True, num_layers=2, hidden_size=64,
                      pool="last")
    assert bi.head[1].in_features == 128
    out = bi(small_clip("cnn_lstm"))
    assert out.shape == (B, 3)


# ----------------------------------------------------------------------------- temporal shift
def reference_shift(x: torch.Tensor, num_frames: int, shift_div: int) -> torch.Tensor:
    """Readable TSM shift: one frame at a time."""
    nt, c, h, w = x.shape
    fold = c // shift_div
    out = torch.zeros_like(x)
    for clip in range(nt // num_frames):
        for t in range(num_frames):
            i = clip * num_frames + t
            if t + 1 < num_frames:  # channels [0, fold) come from the next frame
                out[i, :fold] = x[i + 1, :fold]
            if t - 1 >= 0:  # channels [fold, 2 fold) come from the previous frame
                out[i, fold : 2 * fold] = x[i - 1, fold : 2 * fold]
            out[i, 2 * fold :] = x[i, 2 * fold :]  # the rest stays
    return out


@pytest.mark.parametrize(
    "n, t, c, shift_div",
    [(2, 4, 16, 8), (3, 8, 64, 8), (1, 5, 12, 4), (2, 1, 8, 8), (2, 3, 7, 2), (1, 16, 3, 8)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_temporal_shift_matches_the_reference(n, t, c, shift_div, channels_last):
    x = torch.randn(n * t, c, 5, 3, generator=torch.Generator().manual_seed(t * c))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = temporal_shift(x, t, shift_div)
    torch.testing.assert_close(got, reference_shift(x, t, shift_div), rtol=0, atol=0)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_temporal_shift_gradient_matches_the_reference():
    x = torch.randn(16, 16, 4, 4, requires_grad=True)
    g = torch.randn(16, 16, 4, 4)
    (ga,) = torch.autograd.grad(temporal_shift(x, 8, 8), x, g)
    (gb,) = torch.autograd.grad(reference_shift(x, 8, 8), x, g)
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_temporal_shift_off_and_bad_input():
    x = torch.randn(8, 16, 2, 2)
    assert temporal_shift(x, 4, 0) is x
    with pytest.raises(ValueError, match="multiple of num_frames"):
        temporal_shift(x, 3, 8)


class _Shift(nn.Module):
    def forward(self, x):
        return temporal_shift(x, 4, 8)


def test_temporal_shift_exports():
    x = torch.randn(8, 16, 5, 5)
    ep = torch.export.export(_Shift(), (x,))
    torch.testing.assert_close(ep.module()(x), reference_shift(x, 4, 8), rtol=0, atol=0)


def test_temporal_shift_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    x = torch.randn(8, 16, 5, 5)
    path = tmp_path / "shift.onnx"
    torch.onnx.export(_Shift().eval(), (x,), str(path), dynamo=True, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), reference_shift(x, 4, 8), rtol=0, atol=0)


def test_tsm_model_exports():
    m = make("tsm_resnet18").eval()
    x = small_clip("tsm_resnet18", channels_last=True)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-5)


def test_tsm_without_shift_equals_the_per_frame_average():
    tsm = make("tsm_resnet18", shift_div=0).eval()
    tsn = create_model("tsn_resnet18", num_classes=5).eval()
    tsn.load_state_dict(tsm.state_dict())  # same layout: trunk + Dropout/Linear head
    x = small_clip("tsm_resnet18", channels_last=True)
    with torch.no_grad():
        torch.testing.assert_close(tsm(x), tsn(x), rtol=1e-4, atol=1e-5)
        shifted = make("tsm_resnet18").eval()
        shifted.load_state_dict(tsm.state_dict())
        assert not torch.allclose(shifted(x), tsn(x), rtol=1e-4, atol=1e-5)


def test_tsm_options():
    m = make("tsm_resnet18", num_segments=4, shift_div=4)
    assert m(small_clip("tsm_resnet18")).shape == (B, 5)
    with pytest.raises(ValueError, match="num_segments=4"):
        m(torch.randn(1, 3, 8, S, S))
    with pytest.raises(ValueError, match="shift_div"):
        make("tsm_resnet18", shift_div=1)


# ----------------------------------------------------------------------------- late fusion
def test_late_fusion_is_the_mean_of_segment_logits():
    lf = make("r3d_18_late_fusion", num_segments=4).eval()
    plain = create_model("r3d_18", num_classes=5).eval()
    plain.load_state_dict(lf.state_dict())
    x = torch.randn(2, 3, 8, S, S).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        want = torch.stack([plain(x[:, :, 2 * i : 2 * i + 2]) for i in range(4)], dim=1).mean(dim=1)
        torch.testing.assert_close(lf(x), want, rtol=1e-4, atol=1e-5)


def test_late_fusion_needs_segments_dividing_the_clip():
    lf = make("r3d_18_late_fusion", num_segments=3)
    with pytest.raises(ValueError, match="T=8 frames cannot be split into 3 equal segments"):
        lf(torch.randn(1, 3, 8, S, S))


# ----------------------------------------------------------------------------- options
def test_param_groups_give_the_trunk_a_lower_lr():
    m = make("cnn_lstm")
    groups = m.param_groups(1e-3, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.backbone.parameters()}
    helper = param_groups(m, lr=1e-3, backbone_lr=5e-5, weight_decay=0.01)
    assert helper[0]["lr"] == pytest.approx(5e-5) and helper[1]["weight_decay"] == 0.01
    torch.optim.AdamW(helper)  # accepted as is


def test_freeze_backbone_stops_gradients_and_batchnorm_drift():
    m = make("tsm_resnet18", freeze_backbone=True).train()
    assert all(not p.requires_grad for p in m.backbone.parameters())
    assert not m.backbone.training and m.head.training
    bn = m.backbone.bn1
    before = bn.running_mean.clone()
    m(small_clip("tsm_resnet18")).sum().backward()
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    assert [g["name"] for g in m.param_groups(1e-3)] == ["head"]
    m.freeze_backbone(False).train()
    assert m.backbone.training and all(p.requires_grad for p in m.backbone.parameters())


def test_lstm_runs_in_float32_under_autocast():
    m = make("cnn_lstm").eval()
    seen = {}
    m.lstm.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0].dtype, out=out[0].dtype))
    m.backbone.register_forward_hook(lambda mod, inp, out: seen.update(trunk=out.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(small_clip("cnn_lstm", channels_last=True))
    assert seen == {"trunk": torch.bfloat16, "inp": torch.float32, "out": torch.float32}
    assert torch.isfinite(out.float()).all()


def test_cnn_lstm_trunk_is_one_graph_and_the_lstm_the_only_break():
    m = make("cnn_lstm").eval()
    explain = torch._dynamo.explain(m)(small_clip("cnn_lstm", channels_last=True))
    assert explain.graph_break_count == 1
    convs = [
        n for g in explain.graphs for n in g.graph.nodes
        if n.op == "call_function" and "conv2d" in str(n.target)
    ]
    assert len(convs) == 20  # every conv of the ResNet-18 trunk (17 + 3 downsample) in a graph
    torch._dynamo.reset()


def test_vivit_interpolates_positions_for_other_sizes():
    m = make("vivit").eval()
    assert m.backbone.spatial_pos.shape[1] == 7 * 7 + 1 and m.backbone.temporal_pos.shape[1] == 17
    with torch.no_grad():
        assert m(torch.randn(1, 3, 16, 112, 112)).shape == (1, 5)
        assert m(torch.randn(1, 3, 6, 48, 80)).shape == (1, 5)


# ----------------------------------------------------------------------------- weights
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(url, *a, **k):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("name", ["tsm_resnet18", "resnet50_lstm", "r2plus1d_18"])
def test_pretrained_without_network_says_how_to_pass_a_checkpoint(monkeypatch, tmp_path, name):
    _no_network(monkeypatch, tmp_path)
    with pytest.raises(PretrainedUnavailable, match=r"checkpoint_path=") as info:
        create_model(name, num_classes=7, pretrained=True)
    assert "download.pytorch.org" in str(info.value)


def test_vivit_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("vivit", num_classes=7, pretrained=True)


def test_pretrained_uses_a_file_in_the_hub_cache(monkeypatch, tmp_path):
    _no_network(monkeypatch, tmp_path)
    from torchvision.models import ResNet18_Weights, resnet18

    ref = resnet18(weights=None)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1])
    m = create_model("tsn_resnet18", num_classes=7, pretrained=True)
    torch.testing.assert_close(m.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight, rtol=0, atol=0)


def test_checkpoint_path_loads_model_and_trunk_weights(monkeypatch, tmp_path):
    _no_network(monkeypatch, tmp_path)
    src = make("cnn_lstm", num_classes=7)
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for f in ("plain.pt", "wrapped.pt"):
        # pretrained=True with a local file: the file replaces the download
        m = create_model("cnn_lstm", num_classes=7, pretrained=True, checkpoint_path=str(tmp_path / f))
        for k, v in src.state_dict().items():
            torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=0)

    # a torchvision weights file of the trunk (classifier dropped), e.g. resnet18-f37072fd.pth
    from torchvision.models import resnet18

    tv = resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    m = create_model("tsm_resnet18", num_classes=7, checkpoint_path=str(tmp_path / "resnet18-f37072fd.pth"))
    torch.testing.assert_close(m.backbone.conv1.weight, tv.conv1.weight, rtol=0, atol=0)

    with pytest.raises(ValueError, match="not its shapes"):
        create_model("cnn_lstm", num_classes=3, checkpoint_path=str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="fits neither"):
        create_model("r3d_18", num_classes=7, checkpoint_path=str(tmp_path / "plain.pt"))


def test_flop_counter_table_helpers():
    from accel.deploy.perf import count_gflops
    from benchmarks.models import gflops_or_none

    m = create_model("tsn_resnet18", num_classes=7)
    per_clip = count_gflops(m, clip_len=2, size=32)
    per_frame = count_gflops(m, clip_len=1, size=32)
    assert per_clip > 0 and per_clip == pytest.approx(2 * per_frame, rel=1e-3)
    # the model counted stays where it was; a meta-built one (python -m models) is counted as it is
    assert next(m.parameters()).device.type == "cpu" and m.training
    with torch.device("meta"):
        on_meta = create_model("tsn_resnet18", num_classes=7)
    assert count_gflops(on_meta, clip_len=2, size=32) == per_clip
    # the benchmarks' figure is the same count (None where the meta device cannot run the model)
    assert gflops_or_none(m, 2, 32) == per_clip

    class NoMetaKernel(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy())

    assert gflops_or_none(NoMetaKernel(), 2, 32) is None


# ----------------------------------------------------------------------------- compile
@pytest.mark.compile
@pytest.mark.parametrize("name", ["tsm_resnet18", "cnn_lstm"])
def test_torch_compile_matches_eager_on_cpu(name):
    torch._dynamo.reset()
    m = make(name).eval()
    x = small_clip(name, channels_last=True)
    compiled = torch.compile(m)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- reduced precision
def channels_last_weights(model: nn.Module) -> nn.Module:
    """4-D weights channels_last, 5-D channels_last_3d (``model.to(memory_format=...)`` takes one rank)."""
    for t in list(model.parameters()) + list(model.buffers()):
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
        if fmt is not None:
            t.data = t.data.contiguous(memory_format=fmt)
    return model


def _autocast_matches_fp32(name: str, device: str, dtype: torch.dtype, tol: float, size: int = S) -> None:
    m = channels_last_weights(make(name).to(device))
    x = small_clip(name, channels_last=True).to(device)
    x = F.interpolate(x, size=(x.shape[2], size, size)).contiguous(memory_format=torch.channels_last_3d)
    # Calibrate BatchNorm on the clip itself (one cumulative pass), then compare in eval mode:
    # random-init running stats let activations grow, and train-mode statistics over a
    # 2-clip batch amplify rounding noise; neither is what reduced precision is judged on.
    for bn in m.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    with torch.no_grad():
        m.train()(x)
        m.eval()
        ref = m(x)
        with torch.autocast(device, dtype=dtype):
            low = m(x)
    assert low.shape == (B, 5) and torch.isfinite(low).all()
    scale = max(ref.abs().max().item(), 0.5)  # random-init logits can be tiny
    torch.testing.assert_close(low.float(), ref, rtol=tol, atol=tol * scale)


# (R(2+1)D's many stacked convs drift further in bf16 on 32 px clips, up to 30 % of the
# logit range; fp16 on the GPU below covers it.)
@pytest.mark.parametrize("name", ["cnn_lstm", "tsm_resnet18", "r3d_18", "vivit"])
def test_cpu_bf16_autocast_stays_close_to_fp32(name):
    _autocast_matches_fp32(name, "cpu", torch.bfloat16, tol=0.1)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL_MODELS)
def test_cuda_channels_last_fp16_autocast_forward(name):
    _autocast_matches_fp32(name, "cuda", torch.float16, tol=0.05, size=64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lstm_float32_under_fp16_autocast():
    m = make("cnn_lstm").cuda().eval()
    seen = {}
    m.lstm.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0].dtype))
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = m(small_clip("cnn_lstm", channels_last=True).cuda())
    assert seen["inp"] == torch.float32 and out.shape == (B, 5)


@pytest.mark.gpu
@pytest.mark.compile
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_cnn_lstm_under_autocast():
    torch._dynamo.reset()
    m = channels_last_weights(make("cnn_lstm").cuda().eval())
    x = small_clip("cnn_lstm", channels_last=True).cuda()
    compiled = torch.compile(m)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        a, b = compiled(x), m(x)
    torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)
    torch._dynamo.reset()
