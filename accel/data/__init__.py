"""The data path: manifests, clip sampling, datasets, samplers, collate, loaders, transforms.

CPU decoding goes through :mod:`accel.io`; :mod:`accel.data.dali` (NVDEC) is imported only
when asked for, so this package imports without DALI.
"""
from .batch import ClipBatch
from .collate import collate_clips
from .config import DataConfig
from .dataset import VideoClipDataset
from .loader import LOADER_BACKENDS, ClipBatchLoader, ClipLoader, LoaderBackend, build_loader, choose_backend
from .manifests import (
    SPLITS,
    VIDEO_EXTENSIONS,
    CsvOptions,
    Manifest,
    ManifestError,
    VideoItem,
    csv_manifest,
    folder_manifest,
    load_manifest,
    stratified_split,
)
from .options import DaliOptions, DecodeOptions, WatchdogOptions
from .prefetch import DevicePrefetcher
from .reading import ON_ERROR, OnError, SkippedSample
from .sampling import SHORT_POLICIES, STRATEGIES, sample_clips, sample_indices
from .transforms import ClipTransform

__all__ = ["Manifest", "ManifestError", "VideoItem", "CsvOptions", "SPLITS", "VIDEO_EXTENSIONS",
           "folder_manifest", "csv_manifest", "load_manifest", "stratified_split",
           "sample_indices", "sample_clips", "STRATEGIES", "SHORT_POLICIES",
           "VideoClipDataset", "SkippedSample", "ON_ERROR", "OnError", "collate_clips",
           "build_loader", "choose_backend", "ClipLoader", "ClipBatchLoader", "LOADER_BACKENDS", "LoaderBackend",
           "DecodeOptions", "WatchdogOptions", "DaliOptions",
           "DevicePrefetcher", "ClipTransform", "ClipBatch", "DataConfig"]
