"""One acceleration step shared by training, evaluation and the benchmarks.

``optimize(model, channels_last=True, amp="bf16", compile=True)`` returns an
``Optimized`` module: it moves the model to its device, converts weights and inputs to
channels-last, runs the forward under autocast, optionally through ``torch.compile``, and
(inference only, CUDA only) replays the whole forward as a captured CUDA graph.

Order matters and is fixed here: memory format first (the compiler sees the real strides),
then autocast inside the compiled region (so it is traced into the graph), then the CUDA
graph around everything (it captures the compiled kernels).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile modes; the first two capture CUDA graphs themselves.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_MODES_WITH_CUDAGRAPHS = ("reduce-overhead", "max-autotune")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put 5-D weights in channels_last_3d and 4-D weights in channels_last, in place.

    ``model.to(memory_format=channels_last_3d)`` fails on 4-D tensors, and video models mix
    both (frame CNNs + 3-D convolutions), so each tensor gets the format of its rank.

    Tensors get the canonical strides of the format, also where a size-1 dimension makes
    the layout ambiguous (1x1 convolutions, R(2+1)D's (1,3,3) kernels): ``.contiguous()``
    keeps such a tensor's old strides, but the backward pass makes its gradient with the
    canonical ones, and DDP's gradient buckets (laid out like the parameters) then warn
    "grad strides do not match bucket view strides" and copy every step.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}

    def canonical(t: torch.Tensor) -> torch.Tensor:
        fmt = formats[t.dim()]
        if t.stride() == torch.empty(t.shape, memory_format=fmt, device="meta").stride():
            return t
        return torch.empty_like(t, memory_format=fmt).copy_(t)

    with torch.no_grad():
        for module in model.modules():
            for _, p in list(module.named_parameters(recurse=False)):
                if p.dim() in formats:
                    p.data = canonical(p.data)
            for name, b in list(module.named_buffers(recurse=False)):
                if b is not None and b.dim() in formats:
                    module._buffers[name] = canonical(b)
    return model


def sync_device(device: str | torch.device) -> None:
    """Wait for all work queued on a CUDA device (every stream); nothing on a CPU device."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_gflops(model: nn.Module, *, clip_len: int, size: int) -> float:
    """Forward GFLOPs of one (1, 3, clip_len, size, size) clip: ``FlopCounterMode``'s total
    / 1e9 (a multiply-add counts 2; elementwise ops, norms and pooling count 0).

    Runs on the meta device, so nothing is computed or allocated and the LSTM and attention
    decompose into the matrix products the counter sees (a cuDNN LSTM kernel would not be
    counted); a model not on meta already is copied there, the original stays as it is. An
    op without a meta kernel raises.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    tensors = [*model.parameters(), *model.buffers()]
    meta = model if all(t.is_meta for t in tensors) else copy.deepcopy(model).to("meta")
    was_training = meta.training
    meta.eval()
    x = torch.empty(1, 3, clip_len, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            meta(x.contiguous(memory_format=torch.channels_last_3d))
    finally:
        meta.train(was_training)
    return counter.get_total_flops() / 1e9


def _check_options(*, amp, compile, cuda_graphs, device: torch.device) -> str | None:
    """Validate everything before touching the model; return the compile mode or None."""
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {sorted(AMP_DTYPES)}, got {amp!r}")
    if isinstance(compile, bool):
        mode = "default" if compile else None
    elif isinstance(compile, str) and compile in COMPILE_MODES:
        mode = compile
    else:
        raise ValueError(f"compile must be False, True or one of {list(COMPILE_MODES)}, got {compile!r}")
    if not isinstance(cuda_graphs, bool):
        raise ValueError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if cuda_graphs and mode in _MODES_WITH_CUDAGRAPHS:
        raise ValueError(f"compile mode {mode!r} already captures CUDA graphs; with "
                         "cuda_graphs=True use compile=True or 'max-autotune-no-cudagraphs'")
    if cuda_graphs and (device.type != "cuda" or not torch.cuda.is_available()):
        raise RuntimeError("cuda_graphs=True needs a CUDA device (CUDA graphs capture GPU "
                           f"kernels); got device {str(device)!r}"
                           + ("" if torch.cuda.is_available() else " and no CUDA is available"))
    return mode


class _GraphReplay:
    """Capture ``fn`` once per input shape as a CUDA graph and replay it.

    The graph reads a static input buffer and writes a static output, so each call copies
    the new input in, replays, and returns a clone of the output (a caller that keeps the
    result must not see it overwritten by the next call). Inference only: captured under
    ``no_grad``.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, warmup: int = 3):
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, x: torch.Tensor):
        static_in = x.clone()  # clone keeps x's memory format (channels-last stays)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # Warm-up on a side stream: lazy init, cuDNN autotuning and compiled-kernel loading
        # must happen before capture, and off the default stream as the CUDA-graph docs ask.
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            # A replayed graph has no autograd history: training through it would silently
            # learn nothing, so refuse instead.
            raise RuntimeError("cuda_graphs=True is inference-only: call the model under "
                               "torch.no_grad() or torch.inference_mode()")
        key = (tuple(x.shape), x.dtype, x.stride())
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


class Optimized(nn.Module):
    """The model plus how to call it: input memory format, autocast, compiled forward."""

    def __init__(self, model: nn.Module, *, channels_last: bool, amp: str | None,
                 compile_mode: str | None, cuda_graphs: bool, device: torch.device):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.amp = amp
        self.compile_mode = compile_mode
        self.cuda_graphs = cuda_graphs
        self.device = device
        step = self._autocast_forward
        if compile_mode is not None:
            step = torch.compile(step, mode=compile_mode)
        self._step = _GraphReplay(step) if cuda_graphs else step

    def _autocast_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp is None:
            return self.model(x)
        with torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp]):
            # Logits back in fp32: losses, softmax and parity checks expect them.
            return self.model(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        if x.dim() == 5:  # the clip in the weights' layout: a mixed pair takes slow CPU kernels
            x = x.contiguous(memory_format=torch.channels_last_3d if self.channels_last
                             else torch.contiguous_format)
        return self._step(x)

    def extra_repr(self) -> str:
        return (f"channels_last={self.channels_last}, amp={self.amp}, "
                f"compile={self.compile_mode}, cuda_graphs={self.cuda_graphs}, device={self.device}")


def optimize(model: nn.Module, *, channels_last: bool = False, amp: str | None = None,
             compile: bool | str = False, cuda_graphs: bool = False,
             device: str | torch.device | None = None) -> Optimized:
    """Wrap ``model`` for fast execution; every option is off by default.

    channels_last: weights and 5-D inputs in ``channels_last_3d`` (4-D weights in
        ``channels_last``), the layout cuDNN's fastest 3-D and 2-D kernels use. ``False``
        hands 5-D inputs over contiguous (loaders give channels-last clips), as the weights are.
    amp: ``None`` | ``"bf16"`` | ``"fp16"``: autocast dtype (logits are returned in fp32).
        fp16 training needs a ``torch.amp.GradScaler``; bf16 does not.
    compile: ``False`` | ``True`` (mode "default") | one of ``COMPILE_MODES``.
    cuda_graphs: capture the forward per input shape and replay it (CUDA, inference only).
    device: where the model runs; ``None`` keeps the device of its parameters.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
    mode = _check_options(amp=amp, compile=compile, cuda_graphs=cuda_graphs, device=device)
    model = model.to(device)
    if channels_last:
        to_channels_last(model)
    return Optimized(model, channels_last=channels_last, amp=amp, compile_mode=mode,
                     cuda_graphs=cuda_graphs, device=device)
