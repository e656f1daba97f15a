"""``python -m accel.inspect DATA``: know a dataset before training on it.

What is in it (per file: container, codec, profile, pixel format, bit depth, range, size,
fps, VFR, duration, frames, keyframe intervals, B-frames, streams, packed B-frames, edit
lists, bitrate), grouped by codec x resolution band x keyframe-interval band; which files
will break or take another decoder, and why (:mod:`.problems`); what a clip costs per group
and decoder, and what :mod:`accel.prepare` would gain (:mod:`.cost`); whether the decoders
return the same frames (:mod:`.verify`). Files are scanned in worker processes from their
headers and packets only (:mod:`.scan`), building the project's stream index on the way.
"""
from .layout import Entry, list_entries
from .scan import scan_entry

__all__ = ["Entry", "list_entries", "scan_entry"]
