"""Deployment exports with a parity check against eager fp32.

=================  ==========================================  ==============================
export             artifact, runtime                           where it runs
=================  ==========================================  ==============================
``export_onnx``    ``.onnx``, ONNX Runtime                     CPU here; CUDA with onnxruntime-gpu
``export_aoti``    ``.pt2`` AOTInductor package                CPU and CUDA (compiled for the
                                                               example's device)
``export_tensorrt````.ep`` torch-tensorrt ExportedProgram        CUDA only; needs torch-tensorrt
=================  ==========================================  ==============================

Every exporter returns an ``ExportResult`` with the artifact path, a loaded callable,
the export time and ``check_parity`` against the eager fp32 model on the example (and, for
dynamic batch, on a second batch size: a batch axis that only *looks* dynamic fails there).
``load_exported(path, device)`` reopens any artifact by its suffix, for ``evaluate.py
--runtime onnx|aoti|tensorrt``.

The batch dimension is the only dynamic one: clip length and frame size are fixed by the
model's training, and fixed shapes let every backend plan its kernels.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["ExportResult", "check_parity", "export_onnx", "export_aoti", "export_tensorrt",
           "load_exported", "OnnxRunner", "EXPORT_SUFFIXES"]

EXPORT_SUFFIXES = {".onnx": "onnx", ".pt2": "aoti", ".ep": "tensorrt"}
TRT_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
MAX_BATCH = 256  # upper bound of the dynamic batch axis


@dataclass
class ExportResult:
    path: Path
    runner: Callable[[torch.Tensor], torch.Tensor]
    export_s: float
    parity: dict[str, float] = field(default_factory=dict)


def check_parity(reference: Callable[[torch.Tensor], torch.Tensor],
                 exported: Callable[[torch.Tensor], torch.Tensor],
                 inputs: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, float]:
    """Max |difference| of logits and the share of equal arg-max, over ``inputs``.

    ``reference`` should be the eager fp32 model; both outputs are compared in fp32.
    ``ref_max_abs`` (the largest reference logit) says what scale the difference is on.
    """
    inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    max_diff, ref_max, agree, total = 0.0, 0.0, 0, 0
    with torch.inference_mode():
        for x in inputs:
            ref = reference(x).float()
            out = exported(x).float().to(ref.device)
            if out.shape != ref.shape:
                raise ValueError(f"exported output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
            # NaN must not hide behind max(): a non-finite output is an infinite difference.
            diff = (out - ref).abs().nan_to_num(nan=float("inf"))
            max_diff = max(max_diff, diff.max().item())
            ref_max = max(ref_max, ref.abs().max().item())
            agree += int((out.argmax(-1) == ref.argmax(-1)).sum().item())
            total += ref.shape[0]
    return {"max_abs_diff": max_diff, "top1_agree": agree / total, "ref_max_abs": ref_max}


def _other_batch(example: torch.Tensor) -> torch.Tensor:
    """The example at another batch size (example batch + 1), to prove the axis is dynamic."""
    g = torch.Generator().manual_seed(1234)
    shape = (example.shape[0] + 1, *example.shape[1:])
    return torch.randn(shape, generator=g).to(example.device, example.dtype)


def _check_example(example: torch.Tensor, dynamic_batch: bool) -> None:
    if not isinstance(example, torch.Tensor) or example.dim() != 5:
        raise ValueError("example must be one float tensor shaped (B, C, T, H, W)")
    if dynamic_batch and example.shape[0] < 2:
        # torch.export specialises size-1 dimensions to the constant 1.
        raise ValueError("a dynamic-batch export needs an example with batch size >= 2, "
                         f"got {example.shape[0]}")


def _dynamic_shapes(dynamic_batch: bool):
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def _parity_inputs(example: torch.Tensor, dynamic_batch: bool) -> list[torch.Tensor]:
    return [example, _other_batch(example)] if dynamic_batch else [example]


# What the exporters warn and log about torch's own internals, not about the model (seen
# with torch 2.10 on the zoo); hidden so benchmark output stays readable. Anything else,
# a new warning included, still shows.
HIDDEN_WARNINGS = (
    (FutureWarning, r"_check_is_size will be removed"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated"),
    (UserWarning, r"The tensor attributes .* were assigned during export"),  # nn.LSTM's _flat_weights
)
HIDDEN_LOGGERS = ("torch.utils.cpp_extension",)  # "No CUDA runtime is found" while AOTInductor builds on CPU


@contextlib.contextmanager
def quiet_export():
    """Hide :data:`HIDDEN_WARNINGS` and the warnings of :data:`HIDDEN_LOGGERS` for the block."""
    loggers = [logging.getLogger(name) for name in HIDDEN_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category, message in HIDDEN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _export(model: nn.Module, example: torch.Tensor, path: str | Path, *, dynamic_batch: bool,
            check: bool, build: Callable[[Path], object], suffix: str | None = None, artifact: str = "",
            load: Callable[[Path], Callable[[torch.Tensor], torch.Tensor]] | None = None,
            reference: nn.Module | None = None) -> ExportResult:
    """What every exporter does around its own ``build(path)``: check the example and the
    path's ``suffix``, time the build, reload the artifact (``load``, default
    :func:`load_exported` on the example's device; the round trip is part of the check)
    and check parity against ``reference`` (default: ``model``) at one or two batch sizes."""
    _check_example(example, dynamic_batch)
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise ValueError(f"{artifact} must end in {suffix}, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    t0 = time.perf_counter()
    with quiet_export(), torch.no_grad():
        build(path)
    export_s = time.perf_counter() - t0
    runner = load(path) if load is not None else load_exported(path, example.device)
    parity = check_parity(reference or model, runner, _parity_inputs(example, dynamic_batch)) if check else {}
    return ExportResult(path, runner, export_s, parity)


# --------------------------------------------------------------------------- ONNX
class OnnxRunner:
    """Run an ONNX file with ONNX Runtime on torch tensors.

    On CUDA, inputs and outputs stay on the GPU through IO binding (no host round trip);
    that needs the ``onnxruntime-gpu`` build with its CUDAExecutionProvider.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", *,
                 intra_op_threads: int | None = None, spin: bool = False):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("ONNX export/inference needs onnxruntime: pip install 'vidaccel[onnx]'") from e
        self.device = torch.device(device)
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        # ORT's CPU threads spin between runs by default. Next to torch's own threads (the
        # frame pre-processing, predict.py's eager head) they fight over the cores: a CNN-LSTM
        # frame (ORT encoder + eager head) took 44 ms in predict.py with spinning, 14.5 ms
        # without (the encoder alone: 7 ms; 2 cores). ``spin=True`` for a process that runs
        # ORT and nothing else (there it is ~10% faster).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu "
                                   "(instead of onnxruntime) to run ONNX on CUDA")
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.num_classes = out.shape[-1] if isinstance(out.shape[-1], int) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()   # ORT reads plain row-major buffers
        if self.device.type != "cuda":
            out = self.session.run([self.output_name], {self.input_name: x.cpu().numpy()})[0]
            return torch.from_numpy(out)
        import numpy as np

        if self.num_classes is None:  # IO binding writes into a buffer of the output's shape
            raise RuntimeError("the ONNX model's class axis is not fixed: it cannot run on CUDA with IO binding")
        x = x.to(self.device)
        y = torch.empty((x.shape[0], self.num_classes), device=self.device, dtype=torch.float32)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", self.device.index or 0, np.float32,
                           tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", self.device.index or 0, np.float32,
                            tuple(y.shape), y.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # x must be written before ORT reads it
        self.session.run_with_iobinding(binding)
        return y


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                dynamic_batch: bool = True, opset: int | None = None,
                check: bool = True) -> ExportResult:
    """Export with ``torch.onnx.export(dynamo=True)`` and check parity in ONNX Runtime.

    Why the dynamo exporter: on torch 2.13 it exports every model of the zoo, LSTM ones
    included, with a batch axis that stays symbolic through the LSTM (checked by running a
    second batch size); the TorchScript exporter also works on these models but is
    deprecated in torch and warns on every LSTM. The runner uses ONNX Runtime on the
    example's device. Large models keep their weights in ``<path>.data`` beside the
    ``.onnx`` file: move both together.
    """
    kwargs: dict[str, Any] = dict(dynamo=True, input_names=["clips"], output_names=["logits"],
                                  dynamic_shapes=_dynamic_shapes(dynamic_batch), verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    return _export(model, example, path, dynamic_batch=dynamic_batch, check=check,
                   build=lambda p: torch.onnx.export(model.eval(), (example,), str(p), **kwargs),
                   load=lambda p: OnnxRunner(p, example.device))


# --------------------------------------------------------------------------- AOTInductor
def export_aoti(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                dynamic_batch: bool = True, check: bool = True) -> ExportResult:
    """``torch.export`` + ``torch._inductor.aoti_compile_and_package`` into a ``.pt2``.

    The package holds kernels compiled for the example's device (C++ for CPU, Triton/CUDA
    for GPU); load it on the same kind of device. Compiling takes 10-20 s per zoo model
    on 2 CPU cores.
    """
    def build(p: Path) -> None:
        # The package is compiled for the strides of its example: use the contract's batch
        # layout (channels_last_3d, what the loaders deliver); the runner converts to it.
        x = example.contiguous(memory_format=torch.channels_last_3d)
        ep = torch.export.export(model.eval(), (x,), dynamic_shapes=_dynamic_shapes(dynamic_batch))
        torch._inductor.aoti_compile_and_package(ep, package_path=str(p))

    return _export(model, example, path, dynamic_batch=dynamic_batch, check=check, build=build,
                   suffix=".pt2", artifact="an AOTInductor package")


# --------------------------------------------------------------------------- TensorRT
def trt_install_hint(torch_version: str | None = None) -> str:
    """torch-tensorrt pinned to the installed torch's minor (each release pins one torch:
    an unpinned install would pull a torch-tensorrt that needs, and installs, another torch)."""
    major, minor = (torch_version or torch.__version__).split("+")[0].split(".")[:2]
    return f"pip install 'torch-tensorrt=={major}.{minor}.*'"


def _import_torch_tensorrt():
    try:
        import torch_tensorrt
    except ImportError as e:
        raise ImportError(
            f"TensorRT export needs torch-tensorrt: {trt_install_hint()} on a CUDA machine "
            "(TensorRT itself is not installable from every package registry; the ONNX and "
            "AOTInductor exports work without it)") from e
    return torch_tensorrt


def _lstm_ops(model: nn.Module) -> set:
    """The LSTM aten ops, when the model has an LSTM: TensorRT has no converter for them."""
    if not any(isinstance(m, nn.LSTM) for m in model.modules()):
        return set()
    return {torch.ops.aten.lstm.input}


class _CastRunner:
    """Feed an fp16 engine fp16 inputs and hand back fp32 logits (the eager contract)."""

    def __init__(self, module: Callable, dtype: torch.dtype):
        self.module, self.dtype = module, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype)).float()


def export_tensorrt(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                    precision: str = "fp16", dynamic_batch: bool = True,
                    min_block_size: int = 5, opt_batch: int | None = None,
                    check: bool = True) -> ExportResult:
    """Compile with torch-tensorrt's dynamo frontend and save a reloadable ``.ep``.

    precision: ``"fp16"`` | ``"fp32"``. The model and its inputs are cast to that dtype and
        compiled with explicit typing, so the engine runs in exactly that precision; the
        returned runner takes and returns fp32 like the eager model.
    dynamic_batch: an optimisation profile from batch 1 to ``MAX_BATCH`` (optimised for
        ``opt_batch``, default the example's batch), else a static engine.
    LSTM models: ``aten.lstm`` is listed in ``torch_executed_ops`` so it stays in PyTorch
    (cuDNN) while the CNN trunk becomes TensorRT engines; ``min_block_size`` keeps tiny
    TensorRT islands from being built between PyTorch ops.
    """
    if precision not in TRT_PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(TRT_PRECISIONS)}, got {precision!r}")
    _check_example(example, dynamic_batch)
    torch_tensorrt = _import_torch_tensorrt()
    if example.device.type != "cuda":
        raise RuntimeError(f"TensorRT export needs the model and example on a CUDA device, got {example.device}")
    dtype = TRT_PRECISIONS[precision]
    reference = model.eval()
    trt_model = reference if dtype == torch.float32 else _half_copy(reference)
    x = example.to(dtype)
    dyn = _dynamic_shapes(dynamic_batch)
    rest = tuple(x.shape[1:])
    if dynamic_batch:
        opt = opt_batch or x.shape[0]
        inputs = [torch_tensorrt.Input(min_shape=(1, *rest), opt_shape=(opt, *rest),
                                       max_shape=(MAX_BATCH, *rest), dtype=dtype)]
    else:
        inputs = [torch_tensorrt.Input(shape=tuple(x.shape), dtype=dtype)]

    def build(p: Path) -> None:
        ep = torch.export.export(trt_model, (x,), dynamic_shapes=dyn)
        trt_gm = torch_tensorrt.dynamo.compile(
            ep, arg_inputs=inputs, use_explicit_typing=True, min_block_size=min_block_size,
            torch_executed_ops=_lstm_ops(reference))
        save_kw = {"dynamic_shapes": dyn} if dynamic_batch else {}
        torch_tensorrt.save(trt_gm, str(p), output_format="exported_program", arg_inputs=[x], **save_kw)

    return _export(trt_model, example, path, dynamic_batch=dynamic_batch, check=check, build=build,
                   suffix=".ep", artifact="a TensorRT ExportedProgram", reference=reference)


def _half_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).half()


# --------------------------------------------------------------------------- loading
def load_exported(path: str | Path, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``clips (B, C, T, H, W) float -> logits (B, classes) fp32`` from an artifact.

    ``.onnx`` -> ONNX Runtime; ``.pt2`` -> AOTInductor package; ``.ep`` -> torch-tensorrt
    ExportedProgram (loaded with ``torch.export.load``, which needs torch_tensorrt imported
    so the engine ops are registered).
    """
    path = Path(path)
    kind = EXPORT_SUFFIXES.get(path.suffix)
    if kind is None:
        raise ValueError(f"unknown export format {path.suffix!r}; expected one of {sorted(EXPORT_SUFFIXES)}")
    if not path.exists():
        raise FileNotFoundError(f"no exported model at {path}")
    device = torch.device(device)
    if kind == "onnx":
        return OnnxRunner(path, device)
    if kind == "aoti":
        with quiet_export():
            compiled = torch._inductor.aoti_load_package(str(path))

        def run_aoti(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device).contiguous(memory_format=torch.channels_last_3d)
            return compiled(x).float()
        return run_aoti
    _import_torch_tensorrt()  # registers the TensorRT engine ops torch.export.load needs
    module = torch.export.load(str(path)).module().to(device)
    return _CastRunner(module, _input_dtype(module) or torch.float32)


def _input_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype the saved graph's first input expects (fp16 engines want fp16 clips)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    for node in graph.nodes:
        if node.op == "placeholder" and "val" in node.meta and hasattr(node.meta["val"], "dtype"):
            return node.meta["val"].dtype
    return None
