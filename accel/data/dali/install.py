"""Whether DALI can run here, and the one line that says why not.

Nothing here imports DALI at module import time: :func:`import_dali` does, on first use, so
``accel.data.dali`` (and ``build_loader``'s backend choice) import on machines without it.
An explicit request for DALI that cannot be met stops with one line naming the missing piece
(no CUDA device, the loader's device not CUDA, DALI not installed) and the extra to install.
"""
from __future__ import annotations

import importlib.util

import torch

from ..options import DALI_DEVICES


def dali_install_hint(torch_cuda: str | None = None) -> str:
    """The pip line for the DALI wheel matching torch's CUDA major (DALI must match it):
    ``vidaccel[dali-cu13]`` for a CUDA 13 torch, ``vidaccel[dali]`` (CUDA 12) otherwise."""
    cuda = torch.version.cuda if torch_cuda is None else torch_cuda
    major = (cuda or "").split(".")[0]
    return "pip install 'vidaccel[dali-cu13]'" if major == "13" else "pip install 'vidaccel[dali]'"


INSTALL_HINT = dali_install_hint()


class DaliUnavailable(RuntimeError):
    """DALI cannot run here; the message is one line saying why."""


_IMPORT_ERROR: list[str | None] = []  # cached outcome of the first import attempt


def dali_installed() -> bool:
    """Whether ``nvidia.dali`` imports here (tried once per process)."""
    if not _IMPORT_ERROR:
        try:
            if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
                raise ImportError("no module named nvidia.dali")
            import nvidia.dali.fn  # noqa: F401  (a wheel for another CUDA fails here)
            _IMPORT_ERROR.append(None)
        except Exception as e:
            _IMPORT_ERROR.append(f"{type(e).__name__}: {e}")
    return _IMPORT_ERROR[0] is None


def import_dali():
    """``(nvidia.dali, nvidia.dali.fn, nvidia.dali.types)``, or one sentence naming the extra."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
    except ImportError as e:
        raise DaliUnavailable(f"NVIDIA DALI is not installed or does not import ({e}): "
                              f"{INSTALL_HINT}") from None
    return dali, fn, types


def dali_unavailable_reason(dali_device: str = "gpu",
                            device: torch.device | str | None = None) -> str | None:
    """None when DALI can run on ``dali_device`` here, else a short clause saying why not."""
    if dali_device not in DALI_DEVICES:
        return f"dali_device must be one of {', '.join(DALI_DEVICES)}, not {dali_device!r}"
    if dali_device == "gpu":
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        if device is not None and torch.device(device).type != "cuda":
            return f"the loader's device is {device}, not a CUDA device"
    if not dali_installed():
        return f"NVIDIA DALI is not installed ({INSTALL_HINT})"
    return None


def dali_unavailable_message(dali_device: str = "gpu",
                             device: torch.device | str | None = None) -> str | None:
    """None, or the one line that stops an explicit request for DALI."""
    why_not = dali_unavailable_reason(dali_device, device)
    if why_not is None:
        return None
    if dali_device == "gpu" and dali_installed():
        return (f"backend 'dali' decodes on the GPU (NVDEC), and {why_not}; "
                f"dali=DaliOptions(device='cpu') runs DALI's CPU decoder (VP8/VP9/MJPEG only)")
    return f"backend 'dali': {why_not}"


def require_dali(dali_device: str = "gpu") -> None:
    """Raise :class:`DaliUnavailable` (one line) unless DALI runs on ``dali_device`` here."""
    why_not = dali_unavailable_message(dali_device)
    if why_not:
        raise DaliUnavailable(why_not)
    import_dali()  # fail now, in one sentence, not at the first batch
