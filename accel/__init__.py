"""vidaccel's library: decode, sample, load, augment, accelerate, export, measure.

The public API (README.md, "What is here"; the layout in "How the code is laid out")::

    from accel import open_video, sample_indices, sample_clips, build_loader
"""
from .data import (
    SHORT_POLICIES,
    STRATEGIES,
    ClipBatch,
    ClipBatchLoader,
    ClipLoader,
    ClipTransform,
    DaliOptions,
    DataConfig,
    DecodeOptions,
    DevicePrefetcher,
    Manifest,
    ManifestError,
    SkippedSample,
    VideoClipDataset,
    VideoItem,
    WatchdogOptions,
    build_loader,
    collate_clips,
    csv_manifest,
    folder_manifest,
    load_manifest,
    sample_clips,
    sample_indices,
    stratified_split,
)
from .io.backends import BACKENDS, available_backends, open_video
from .io.index import VideoDecodeError
from .io.reader import VideoReader

__all__ = [
    "open_video", "VideoReader", "VideoDecodeError", "available_backends", "BACKENDS",
    "sample_indices", "sample_clips", "STRATEGIES", "SHORT_POLICIES",
    "Manifest", "ManifestError", "VideoItem", "VideoClipDataset", "SkippedSample",
    "folder_manifest", "csv_manifest", "load_manifest", "stratified_split",
    "build_loader", "ClipLoader", "DevicePrefetcher", "collate_clips", "ClipTransform",
    "ClipBatch", "DataConfig", "ClipBatchLoader", "DecodeOptions", "WatchdogOptions", "DaliOptions",
]
