"""``python -m accel.prepare SRC DST``: transcode a dataset once into files that decode fast.

CPU decoders are already near the exact-decode floor on typical source files (640x360 H.264,
a keyframe every 2 s, B-frames): the remaining speed is in the files. Preparation writes every
video again, resized to ``--short-side``, a keyframe every ``--gop`` frames, ``--bframes``
B-frames, no audio, so a clip's frames are a short decode away. ``DST`` gets the same relative
paths as ``SRC`` (and a rewritten CSV when ``SRC`` is one), so manifests and scripts work on
``DST`` unchanged. Frame folders are hard-linked (copied across file systems) as they are.

Every output is checked while it is written: the same frame count and timestamps as the source
(variable frame rate too: the source's pts and time base are carried through the encoder), and
the PSNR of a few frames, read back through the project's reader, against the resized source
frames that went into the encoder. A file that fails is not kept and is listed.

Resumable: ``DST/.prepare/done.jsonl`` records each finished output with its source's size and
mtime and the settings; a rerun keeps those outputs while the source and settings are
unchanged, and redoes the rest. Outputs are written to ``<name>.part`` and renamed when
checked, so an interrupted run never leaves a half-written file under a real name. Each run
writes a JSON report to ``DST/.prepare/reports/``.

Modules: :mod:`.options` (:class:`PrepareOptions`), :mod:`.plan` (SRC's manifest -> jobs),
:mod:`.encode` (one output written) and :mod:`.verify` (checked against its source),
:mod:`.state` (the done record), :mod:`.run` (:func:`prepare`: workers, CSV, report) and
:mod:`.cli` (``main``, what ``python -m accel.prepare`` runs).
"""
from .cli import build_parser, main
from .encode import link_frames, output_size, prepare_video
from .options import CODECS, FORMAT_VERSION, PRESETS, TUNES, PrepareError, PrepareOptions
from .plan import Job, Plan, make_plan
from .run import prepare, run_job, summarize
from .state import STATE_DIR, DoneRecord, source_key
from .verify import frame_times, psnr

__all__ = ["prepare", "prepare_video", "link_frames", "PrepareOptions", "PrepareError", "frame_times",
           "output_size", "psnr", "main", "build_parser", "Job", "Plan", "make_plan", "run_job", "summarize",
           "DoneRecord", "source_key", "STATE_DIR", "CODECS", "TUNES", "PRESETS", "FORMAT_VERSION"]
