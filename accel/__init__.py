"""vidaccel's library: decode, sample, load, augment, accelerate, export, measure.

The public API (shared/DESIGN.md section 2)::

    from accel import open_video, sample_indices, sample_clips, build_loader
"""
from .data import (Manifest, ManifestError, SkippedSample, VideoClipDataset, VideoItem,
                   csv_manifest, folder_manifest, load_manifest, stratified_split)
from .loader import ClipLoader, DevicePrefetcher, build_loader, collate_clips
from .sampling import SHORT_POLICIES, STRATEGIES, sample_clips, sample_indices
from .transforms import ClipTransform
from .video import BACKENDS, VideoDecodeError, VideoReader, available_backends, open_video

__all__ = [
    "open_video", "VideoReader", "VideoDecodeError", "available_backends", "BACKENDS",
    "sample_indices", "sample_clips", "STRATEGIES", "SHORT_POLICIES",
    "Manifest", "ManifestError", "VideoItem", "VideoClipDataset", "SkippedSample",
    "folder_manifest", "csv_manifest", "load_manifest", "stratified_split",
    "build_loader", "ClipLoader", "DevicePrefetcher", "collate_clips", "ClipTransform",
]
