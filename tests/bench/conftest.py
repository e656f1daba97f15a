"""pytest-benchmark suite for CI on GPU runners; quick on CPU too.

    pytest tests/bench -o addopts="" --benchmark-json=bench.json
    python -m benchmarks compare bench.json baseline.json --metric mean --threshold 0.10

(pyproject's addopts ignores tests/bench so the default test run skips it; ``-o addopts=""``
lifts that.) Sizes are small on CPU and the seed's 16x112 on CUDA.
"""
import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    from accel.cli import resolve_device

    return resolve_device("auto")


@pytest.fixture(scope="session")
def clip_shape(device) -> tuple[int, int, int, int, int]:
    """(B, C, T, H, W): the seed's batch of 8 x 16x112 on GPU, a small one on CPU."""
    return (8, 3, 16, 112, 112) if device.type == "cuda" else (2, 3, 8, 64, 64)


@pytest.fixture(scope="session")
def sync(device):
    """Wait for queued GPU work: a benchmarked step must include its kernels."""
    from accel.deploy.perf import sync_device

    return lambda: sync_device(device)
