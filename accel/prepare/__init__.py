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
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.manifests import SPLITS, ManifestError, load_manifest
from ..io import index_stream
from ..io.index import choose_stream

CODECS = {"h264": "libx264", "hevc": "libx265"}
TUNES = ("none", "fastdecode")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
STATE_DIR = ".prepare"
# Bump when the outputs for the same options change (sizes, encoder settings): done records
# of other versions are redone.
FORMAT_VERSION = 1
# Containers that carry H.264/HEVC with per-frame timestamps keep their own muxer; the rest
# (AVI cannot carry variable frame rates, WebM cannot carry H.264, MPEG-PS is awkward) get MP4
# content under their original name: every decoder here probes the content, not the name.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


class PrepareError(RuntimeError):
    """A source that cannot be prepared (the run lists it and goes on)."""


@dataclass(frozen=True)
class PrepareOptions:
    """How outputs are encoded and checked. Part of every done record: change one, redo all."""

    short_side: int = 128
    gop: int = 16
    bframes: int = 0
    crf: int = 20
    codec: str = "h264"
    tune: str = "fastdecode"
    preset: str = "medium"
    check_frames: int = 4
    min_psnr: float = 25.0

    def __post_init__(self) -> None:
        for name, value, allowed in (("codec", self.codec, tuple(CODECS)), ("tune", self.tune, TUNES),
                                     ("preset", self.preset, PRESETS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        for name, value, low, high in (("short_side", self.short_side, 16, 4096),
                                       ("gop", self.gop, 1, 1000), ("bframes", self.bframes, 0, 16),
                                       ("crf", self.crf, 0, 51), ("check_frames", self.check_frames, 1, 64)):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")

    def encoding(self) -> dict:
        """The settings that change an output's bytes (what a done record is keyed on)."""
        kept = {k: v for k, v in asdict(self).items() if k not in ("check_frames", "min_psnr")}
        return {**kept, "format_version": FORMAT_VERSION}


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Job:
    src: str
    dst: str
    rel: str  # the output's path relative to DST, POSIX style: the report's and record's key

    @property
    def is_frames(self) -> bool:
        return Path(self.src).is_dir()


@dataclass
class Plan:
    jobs: list[Job]
    csv_out: Path | None = None        # the rewritten CSV, when SRC is one
    csv_rows: list[dict] = field(default_factory=list)
    csv_fields: list[str] = field(default_factory=list)
    rel_of_row: list[str] = field(default_factory=list)


def _rel_for_csv_path(path: Path, root: Path) -> str:
    """Where a CSV row's file goes under DST: its path below the CSV's folder, or, for a file
    elsewhere, ``external/<hash of its folder>/<name>`` (unique, stable between runs)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        digest = hashlib.blake2b(str(path.resolve().parent).encode(), digest_size=4).hexdigest()
        return f"external/{digest}/{path.name}"


def plan_csv(src: Path, dst: Path, splits: Sequence[str] | None) -> Plan:
    for split in splits or [None]:
        load_manifest(src, split)  # the same validation (and error messages) as every loader
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    if splits:
        rows = [r for r in rows if r.get("split") in splits]
    plan = Plan([], csv_out=dst / src.name, csv_rows=rows, csv_fields=fields)
    seen: dict[str, Job] = {}
    for row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else src.parent / path
        rel = _rel_for_csv_path(path, src.parent)
        plan.rel_of_row.append(rel)
        if rel not in seen:  # a file listed twice (two labels, two splits) is prepared once
            seen[rel] = Job(str(path), str(dst / rel), rel)
    plan.jobs = list(seen.values())
    return plan


def plan_folders(src: Path, dst: Path, splits: Sequence[str] | None) -> Plan:
    present = [s for s in SPLITS if (src / s).is_dir()]
    if splits:
        missing = [s for s in splits if s not in present]
        if missing:
            raise ManifestError(f"{src}: no split folders {missing} (found: {present or 'none'})")
        present = list(splits)
    manifests = [load_manifest(src, s) for s in present] if present else [load_manifest(src)]
    jobs = []
    for manifest in manifests:
        for item in manifest.items:
            rel = Path(item.path).relative_to(src).as_posix()
            jobs.append(Job(item.path, str(dst / rel), rel))
    return Plan(jobs)


def plan(src: Path, dst: Path, splits: Sequence[str] | None = None) -> Plan:
    """What to prepare: one job per video file or frame folder that SRC's manifest lists."""
    if not src.exists():
        raise ManifestError(f"{src}: no such file or folder")
    if src.resolve() == dst.resolve():
        raise ManifestError(f"{dst}: DST must differ from SRC")
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        raise ManifestError(f"{dst}: DST must not be inside SRC (its outputs would join SRC's manifest)")
    if src.suffix.lower() == ".csv":
        return plan_csv(src, dst, splits)
    return plan_folders(src, dst, splits)


# --------------------------------------------------------------------------- one video
def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side exactly ``short_side`` (even, for 4:2:0 chroma;
    never upscaled) and the long side following the aspect ratio, rounded to a multiple of 32
    (the decoders need 16; torchcodec converts widths that are multiples of 32 with swscale,
    others through a filter graph, 5-6x slower per clip here), never past the source's:
    640x360 -> 224x128, 360x640 -> 128x224.
    """
    even = lambda v: max(2, int(v) // 2 * 2)  # noqa: E731
    landscape = width >= height
    long_in, short_in = (width, height) if landscape else (height, width)
    short = even(min(short_side, short_in))
    target = long_in * short / short_in
    if target >= 32:
        long = int(round(target / 32)) * 32
        long = long - 32 if long > long_in else long
    else:
        long = even(round(target))
    long = max(long, short)  # rounding never makes the long side the short one
    return (long, short) if landscape else (short, long)


def frame_times(path: str | Path) -> tuple[list[int], Fraction]:
    """Sorted packet pts of the best video stream and its time base (a demux scan, no decode).

    The same frames, in the same order, as :class:`accel.io.pyav.PyAVReader` indexes: frame ``i``
    of the project's readers is the frame with the i-th smallest pts.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise PrepareError("no video stream")
        stream = choose_stream(container, str(path), None)  # the readers' stream: FFmpeg's best
        pts = sorted(p.pts for p in container.demux(stream)
                     if p.size and p.pts is not None and not p.is_discard)
        return pts, stream.time_base


def _encoder_options(options: PrepareOptions) -> dict[str, str]:
    common = f"keyint={options.gop}:min-keyint={options.gop}:scenecut=0:bframes={options.bframes}"
    enc = {"crf": str(options.crf), "preset": options.preset}
    if options.tune != "none":
        enc["tune"] = options.tune
    if options.codec == "h264":
        # One thread per encoder: parallelism comes from worker processes, and the output
        # does not depend on how many cores the machine has.
        enc["x264-params"] = f"{common}:open-gop=0:threads=1"
    else:
        enc["x265-params"] = f"{common}:open-gop=0:pools=1:frame-threads=1:log-level=error"
    return enc


def _check_indices(num_frames: int, k: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(k, num_frames))})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (100 for identical ones, so JSON stays finite)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0 ** 2 / mse))


def _encode(src: str, tmp: Path, container_format: str, options: PrepareOptions,
            src_pts: list[int], check: list[int]) -> dict[int, np.ndarray]:
    """Decode ``src`` in presentation order, resize, encode with the source's timestamps.

    Returns the resized source frames at ``check`` (RGB), the reference for the PSNR check.
    """
    import av

    reference: dict[int, np.ndarray] = {}
    wanted = set(check)
    with av.open(src) as inp, av.open(str(tmp), "w", format=container_format) as out:
        ist = choose_stream(inp, src, None)  # the stream training reads
        ist.codec_context.thread_count = 1
        time_base = ist.time_base
        width, height = output_size(ist.codec_context.width, ist.codec_context.height,
                                    options.short_side)
        rate = ist.average_rate or ist.guessed_rate or Fraction(25)
        ost = out.add_stream(CODECS[options.codec], rate=rate, options=_encoder_options(options))
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.codec_context.time_base = time_base  # the source's ticks reach the encoder unchanged
        ost.time_base = time_base
        ost.codec_context.gop_size = options.gop
        ost.codec_context.max_b_frames = options.bframes
        i = 0
        for frame in inp.decode(ist):
            if i >= len(src_pts) or frame.pts != src_pts[i]:
                got = "an extra frame" if i >= len(src_pts) else f"pts {frame.pts}"
                raise PrepareError(f"decoded frame {i} has {got}, expected pts "
                                   f"{src_pts[i] if i < len(src_pts) else None} (corrupt or out-of-order stream)")
            small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            small.pts, small.time_base = frame.pts, time_base
            # The decoder marks the source's keyframes, and x264 would force those too.
            small.pict_type = av.video.frame.PictureType.NONE
            if i in wanted:
                reference[i] = small.to_ndarray(format="rgb24")
            for packet in ost.encode(small):
                out.mux(packet)
            i += 1
        for packet in ost.encode():
            out.mux(packet)
    if i != len(src_pts):
        raise PrepareError(f"decoded {i} of {len(src_pts)} frames (truncated or corrupt)")
    return reference


def _verify(tmp: Path, options: PrepareOptions, src_pts: list[int], src_tb: Fraction,
            reference: dict[int, np.ndarray]) -> list[float]:
    """Same frame count and times as the source; PSNR of the reference frames read back."""
    from ..io.pyav import PyAVReader

    out_pts, out_tb = frame_times(tmp)
    if len(out_pts) != len(src_pts):
        raise PrepareError(f"output has {len(out_pts)} frames, source {len(src_pts)}")
    # Times relative to the first frame (muxers may shift the start with an edit list); one
    # tick of the coarser time base is the most rounding can move a timestamp.
    tol = float(max(src_tb, out_tb))
    src_t = (np.asarray(src_pts, dtype=np.float64) - src_pts[0]) * float(src_tb)
    out_t = (np.asarray(out_pts, dtype=np.float64) - out_pts[0]) * float(out_tb)
    worst = int(np.argmax(np.abs(src_t - out_t)))
    if abs(src_t[worst] - out_t[worst]) > tol:
        raise PrepareError(f"frame {worst} is at {out_t[worst]:.4f} s in the output, "
                           f"{src_t[worst]:.4f} s in the source")
    indices = sorted(reference)
    with PyAVReader(tmp) as reader:
        frames = reader.get_frames(indices).numpy()
    values = [round(float(psnr(f, reference[i])), 2) for f, i in zip(frames, indices)]
    if min(values) < options.min_psnr:
        bad = indices[int(np.argmin(values))]
        raise PrepareError(f"frame {bad} has PSNR {min(values):.1f} dB against the resized source "
                           f"(< {options.min_psnr:g}): wrong frame or broken encode")
    return values


def prepare_video(src: str, dst: str, options: PrepareOptions) -> dict:
    """Transcode one video to ``dst`` (via ``dst.part``) and check it; the result record."""
    t0 = time.perf_counter()
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_path.with_name(dst_path.name + ".part")
    try:
        src_pts, src_tb = frame_times(src)
        if not src_pts:
            raise PrepareError("no video frames")
        check = _check_indices(len(src_pts), options.check_frames)
        reference = _encode(src, tmp, _MUXERS.get(dst_path.suffix.lower(), "mp4"), options,
                            src_pts, check)
        values = _verify(tmp, options, src_pts, src_tb, reference)
        os.replace(tmp, dst_path)
        index_stream(dst_path)  # the output's stream index, so its first clip needs no scan
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"frames": len(src_pts), "output_bytes": dst_path.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 3), "psnr_db": values,
            "psnr_frames": sorted(reference)}


def link_frames(src: str, dst: str) -> dict:
    """A frame folder as it is: hard links (a copy across file systems), renamed into place."""
    t0 = time.perf_counter()
    dst_path = Path(dst)
    tmp = dst_path.with_name(dst_path.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    dst_path.parent.mkdir(parents=True, exist_ok=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link)
    shutil.rmtree(dst_path, ignore_errors=True)
    os.replace(tmp, dst_path)
    files = [p for p in dst_path.rglob("*") if p.is_file()]
    return {"frames": len(files), "output_bytes": sum(p.stat().st_size for p in files),
            "seconds": round(time.perf_counter() - t0, 3)}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text and not isinstance(e, PrepareError) else \
        (text[0] if text else type(e).__name__)


def run_job(job: Job, options: PrepareOptions) -> dict:
    """One job in a worker: never raises for a bad source, returns ``status="failed"``."""
    try:
        result = link_frames(job.src, job.dst) if job.is_frames else prepare_video(job.src, job.dst, options)
        return {"path": job.rel, "status": "copied" if job.is_frames else "prepared", **result}
    except Exception as e:  # any decoder or muxer error of one file: list it, go on
        return {"path": job.rel, "status": "failed", "reason": _one_line(e)}


# --------------------------------------------------------------------------- resuming
def source_key(path: str | Path) -> dict:
    """What says a source is unchanged: size and mtime (of every file, for a frame folder)."""
    p = Path(path)
    stats = [f.stat() for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [p.stat()]
    return {"size": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            "files": len(stats)}


class DoneRecord:
    """``DST/.prepare/done.jsonl``: one line per finished output, appended as it finishes
    (the last line of a killed run may be cut: unreadable lines are ignored)."""

    def __init__(self, dst: Path):
        self.path = dst / STATE_DIR / "done.jsonl"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["path"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def is_done(self, job: Job, options: PrepareOptions) -> dict | None:
        entry = self.entries.get(job.rel)
        if entry is None or not Path(job.src).exists() or not Path(job.dst).exists():
            return None
        if entry.get("source") != source_key(job.src):
            return None
        if not job.is_frames and (entry.get("options") != options.encoding()
                                  or Path(job.dst).stat().st_size != entry.get("output_bytes")):
            return None
        return entry

    def add(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["path"]] = entry


# --------------------------------------------------------------------------- a run
def _worker_context():
    """forkserver where there is one: workers fork from a clean process that imported this
    module once (no threads, nothing opened), instead of each importing torch again (spawn)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["accel.prepare"])
    return ctx


def _results(todo: list[Job], options: PrepareOptions, workers: int):
    """(job, result) as each job finishes; worker processes when ``workers > 1``."""
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            yield job, run_job(job, options)
        return
    with cf.ProcessPoolExecutor(workers, mp_context=_worker_context()) as pool:
        futures = {pool.submit(run_job, job, options): job for job in todo}
        try:
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _write_csv(plan_: Plan, failed: set[str]) -> None:
    rows = []
    for row, rel in zip(plan_.csv_rows, plan_.rel_of_row):
        if rel not in failed:
            rows.append({**row, "path": rel})
    tmp = plan_.csv_out.with_name(plan_.csv_out.name + ".part")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=plan_.csv_fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, plan_.csv_out)


def _remove_stale(dst: Path) -> None:
    """An output of an earlier version of a source that now fails: it no longer matches."""
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()


def summarize(outputs: list[dict], failed: list[dict]) -> dict:
    by_status = {s: sum(1 for o in outputs if o["status"] == s) for s in ("prepared", "kept", "copied")}
    videos = [o for o in outputs if o["status"] != "copied"]
    values = [v for o in videos for v in o.get("psnr_db", [])]
    return {
        "files": {"total": len(outputs) + len(failed), **by_status, "failed": len(failed)},
        "frames": sum(o["frames"] for o in videos),
        "input_bytes": sum(o["input_bytes"] for o in outputs),
        "output_bytes": sum(o["output_bytes"] for o in outputs),
        "psnr_db": {"min": min(values) if values else None,
                    "mean": round(float(np.mean(values)), 2) if values else None,
                    "frames_checked": len(values)},
    }


def prepare(src: str | Path, dst: str | Path, options: PrepareOptions = PrepareOptions(), *,
            workers: int = 1, splits: Sequence[str] | None = None, progress: bool = True,
            report_path: str | Path | None = None, command: str = "") -> dict:
    """Prepare SRC into DST (see the module docstring); returns the run's report (also
    written as JSON). Raises :class:`~accel.data.manifests.ManifestError` for an unusable SRC."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    started = _dt.datetime.now(_dt.timezone.utc)
    plan_ = plan(src, dst, splits)
    dst.mkdir(parents=True, exist_ok=True)
    done = DoneRecord(dst)
    outputs: list[dict] = []
    failed: list[dict] = []
    todo, keys = [], {}
    for job in plan_.jobs:
        entry = done.is_done(job, options)
        if entry is not None:
            outputs.append({**entry, "status": "kept"})
        else:
            todo.append(job)
            keys[job.rel] = source_key(job.src) if Path(job.src).exists() else None  # before reading it
    interrupted = False
    bar = tqdm(total=len(todo), desc=f"prepare {dst}", unit="file", disable=not progress)
    try:
        for job, result in _results(todo, options, workers):
            bar.update()
            if result["status"] == "failed":
                failed.append({"path": job.src, "rel": job.rel, "reason": result["reason"]})
                bar.write(f"skipped {job.src}: {result['reason']}")
                _remove_stale(Path(job.dst))
                continue
            result.update(input_bytes=keys[job.rel]["size"], source=keys[job.rel],
                          options=options.encoding())
            done.add(result)
            outputs.append(result)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if plan_.csv_out is not None and not interrupted:
        _write_csv(plan_, {f["rel"] for f in failed})
    report = {
        "command": command, "src": str(src), "dst": str(dst),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 2), "interrupted": interrupted,
        "options": asdict(options), "workers": workers,
        **summarize(outputs, failed),
        "failed": failed,
        "csv": str(plan_.csv_out) if plan_.csv_out else None,
        "outputs": [{k: o.get(k) for k in ("path", "status", "frames", "input_bytes", "output_bytes",
                                           "seconds", "psnr_db")} for o in outputs],
    }
    report_path = Path(report_path) if report_path else \
        dst / STATE_DIR / "reports" / f"report-{started:%Y%m%dT%H%M%SZ}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    report["report"] = str(report_path)
    if interrupted:
        raise KeyboardInterrupt(report_path)
    return report


# --------------------------------------------------------------------------- command line
def build_parser():
    from ..cli import Parser, non_negative_float, positive_int

    p = Parser(prog="python -m accel.prepare",
               description="Transcode a dataset once into files that decode fast: DST gets SRC's "
                           "relative paths, every output checked (frame count, timestamps, PSNR).",
               epilog="Exit status: 0 all prepared, 1 some sources failed (listed), 2 bad input, "
                      "130 interrupted (rerun to continue).")
    p.add_argument("src", type=Path, help="dataset: class folders (with or without train/val/test) or a CSV")
    p.add_argument("dst", type=Path, help="output folder: same relative paths (and CSV) as SRC")
    p.add("--short-side", type=positive_int, default=128,
          help="short side in pixels, exactly (even; never upscales; default 128); the long side "
               "keeps the aspect ratio, rounded to a multiple of 32")
    p.add("--gop", type=positive_int, default=16, help="frames between keyframes (default 16)")
    p.add("--bframes", type=int, default=0, help="max consecutive B-frames (default 0)")
    p.add("--crf", type=int, default=20, help="x264/x265 constant rate factor (default 20)")
    p.add("--codec", choices=tuple(CODECS), default="h264")
    p.add("--tune", choices=TUNES, default=PrepareOptions.tune,
          help=f"encoder tuning (default {PrepareOptions.tune}: measured 1.6-1.8x faster clips, README)")
    p.add("--preset", choices=PRESETS, default="medium", help="encoder speed/size trade-off")
    p.add("--workers", type=positive_int, default=max(1, len(os.sched_getaffinity(0))),
          help="parallel worker processes (default: the cores this process may use)")
    p.add("--split", action="append", choices=SPLITS,
          help="prepare only this split (repeatable; default: every split)")
    p.add("--check-frames", type=positive_int, default=4, help="frames per file checked by PSNR")
    p.add("--min-psnr", type=non_negative_float, default=25.0,
          help="a checked frame below this PSNR (dB) fails the file (default 25)")
    p.add("--report", type=Path, help="report path (default DST/.prepare/reports/report-<time>.json)")
    p.add_flag("--progress", True, "show a progress bar (--no-progress to hide it)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..cli import one_line

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = PrepareOptions(short_side=args.short_side, gop=args.gop, bframes=args.bframes,
                                 crf=args.crf, codec=args.codec, tune=args.tune, preset=args.preset,
                                 check_frames=args.check_frames, min_psnr=args.min_psnr)
    except ValueError as e:
        parser.error(one_line(e))
    command = shlex.join(["python", "-m", "accel.prepare", *argv])
    try:
        report = prepare(args.src, args.dst, options, workers=args.workers, splits=args.split,
                         progress=args.progress, report_path=args.report, command=command)
    except ManifestError as e:
        parser.error(one_line(e))
    except KeyboardInterrupt as e:
        print(f"interrupted: finished files are kept; rerun the same command to continue "
              f"(report: {e.args[0] if e.args else '-'})", file=sys.stderr)
        return 130
    files, ps = report["files"], report["psnr_db"]
    share = report["output_bytes"] / report["input_bytes"] if report["input_bytes"] else float("nan")
    print(f"{files['prepared']} prepared, {files['kept']} kept from earlier runs, {files['copied']} "
          f"frame folders linked, {files['failed']} failed; {report['frames']} frames, "
          f"{report['input_bytes'] / 1e6:.1f} MB -> {report['output_bytes'] / 1e6:.1f} MB "
          f"({share:.0%} of the input), PSNR min {ps['min']} mean {ps['mean']} dB, {report['seconds']:.1f} s")
    for f in report["failed"]:
        print(f"  failed {f['path']}: {f['reason']}")
    print(f"report: {report['report']}")
    return 1 if report["failed"] else 0
