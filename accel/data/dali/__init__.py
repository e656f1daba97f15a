"""NVIDIA DALI decoding (NVDEC): the same clips and batches as the CPU loader, on the GPU.

Importing this package does not import DALI; :func:`import_dali` does, on first use.

Modules, in the order a batch meets them: :mod:`.install` (can DALI run here),
:mod:`.plan` (which samples make each batch, which frames each gets), :mod:`.probe` (frame
count and codec by demux scan; what DALI's device can decode), :mod:`.feed` (DALI's external
source), :mod:`.pipeline` (the DALI graphs and the DLPack handover), :mod:`.augment`
(augmentation inside the pipeline), :mod:`.recovery` (stalls, replays, CPU fallback) and
:mod:`.loader` (:class:`DaliClipLoader`: iteration and batch assembly).
"""
from .augment import DaliAugment
from .install import (
    DALI_DEVICES,
    INSTALL_HINT,
    DaliUnavailable,
    dali_installed,
    dali_unavailable_message,
    dali_unavailable_reason,
    import_dali,
)
from .loader import DaliClipLoader
from .pipeline import decode_frames
from .probe import DALI_CODECS, NVDEC_CODECS, NVDEC_SIZES, VideoProbe, dali_route, nvdec_codecs, probe_video

__all__ = ["DaliClipLoader", "DaliAugment", "DaliUnavailable", "VideoProbe", "probe_video",
           "dali_unavailable_reason", "dali_unavailable_message", "dali_installed", "import_dali",
           "DALI_CODECS", "DALI_DEVICES", "NVDEC_CODECS", "NVDEC_SIZES", "nvdec_codecs", "dali_route",
           "INSTALL_HINT", "decode_frames"]
