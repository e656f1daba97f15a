"""Per-iteration timers: warm-up, then N timed iterations, each timed on its own.

On CUDA each iteration is bracketed by two CUDA events (``enable_timing=True``) recorded
on the compute stream, torch's current stream, and the host waits for that iteration's
end event before the next one starts: the time is the stream's, every kernel the
iteration launched included, and never work queued on other streams (a loader's
prefetch, telemetry) nor by the warm-up, which the stream finishes first. Backends with
streams of their own join it: ONNX Runtime's CUDA provider synchronises its stream
before ``run`` returns (so the end event, recorded after the call, comes after its
work), and torch-tensorrt engines and AOTInductor packages run on torch's current stream
or make it wait for theirs. On CPU ``time.perf_counter`` brackets the call.

Inputs rotate through a pool (iteration ``i`` gets ``pool[i % len(pool)]``): one tensor
reused forever stays in the CPU caches / GPU L2 and flatters small models.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch

__all__ = ["time_iterations", "time_inference", "time_train_step", "make_input_pool"]


def _check_counts(warmup: int, iters: int) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")


def time_iterations(step: Callable[[int], Any], *, warmup: int, iters: int,
                    device: str | torch.device = "cpu") -> list[float]:
    """Call ``step(i)`` ``warmup`` times untimed, then ``iters`` times; return ms per call.

    ``device``: where ``step`` launches its work; on a CUDA device each call is timed by
    CUDA events on the current stream (see the module docstring).
    """
    _check_counts(warmup, iters)
    device = torch.device(device)
    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        return _time_on_stream(step, range(warmup, warmup + iters), device)
    times: list[float] = []
    for i in range(warmup, warmup + iters):
        t0 = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_on_stream(step: Callable[[int], Any], calls: range, device: torch.device) -> list[float]:
    stream = torch.cuda.current_stream(device)
    stream.synchronize()  # the warm-up's queued kernels stay out of the first iteration
    times: list[float] = []
    for i in calls:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        step(i)
        end.record(stream)
        end.synchronize()  # this iteration's work only: the next starts on an idle stream
        times.append(start.elapsed_time(end))
    return times


def _device_of(pool: Sequence[torch.Tensor]) -> torch.device:
    if not pool:
        raise ValueError("the input pool is empty: give at least one input tensor")
    return pool[0].device


def time_inference(fn: Callable[[torch.Tensor], Any], pool: Sequence[torch.Tensor], *,
                   warmup: int = 3, iters: int = 20) -> list[float]:
    """ms per call of ``fn(x)`` over rotating inputs, under ``torch.inference_mode``."""
    device = _device_of(pool)
    with torch.inference_mode():
        return time_iterations(lambda i: fn(pool[i % len(pool)]), warmup=warmup, iters=iters,
                               device=device)


def time_train_step(model: Callable[[torch.Tensor], torch.Tensor], pool: Sequence[torch.Tensor],
                    targets: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer, *,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    scaler: torch.amp.GradScaler | None = None,
                    warmup: int = 3, iters: int = 20) -> list[float]:
    """ms per training step: zero_grad, forward, loss, backward, optimizer step.

    ``targets[i]`` pairs with ``pool[i]``. Pass a ``GradScaler`` for fp16 autocast.
    """
    if len(targets) != len(pool):
        raise ValueError(f"need one target per input: {len(pool)} inputs, {len(targets)} targets")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy

    def step(i: int) -> None:
        x, y = pool[i % len(pool)], targets[i % len(pool)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    with torch.enable_grad():
        return time_iterations(step, warmup=warmup, iters=iters, device=_device_of(pool))


def make_input_pool(shape: Sequence[int], *, n: int = 4, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, seed: int = 0,
                    memory_format: torch.memory_format = torch.contiguous_format) -> list[torch.Tensor]:
    """``n`` distinct random tensors of ``shape`` (reproducible with ``seed``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
            .contiguous(memory_format=memory_format) for _ in range(n)]
