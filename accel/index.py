"""``python -m accel.index DATA``: build a dataset's stream indexes ahead of time, or clear them.

Every reader builds a file's index on its first open anyway (:mod:`accel.io.index_store`);
building them here first, in parallel and with a progress bar, keeps that one-off cost (a demux
scan of every file: about a second per hour of video) out of the first epoch and out of the
timings. DATA is a video file, a folder (every video under it, any layout) or a CSV manifest.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
from pathlib import Path

from .cli import Parser, UsageError, fail, non_negative_int, one_line
from .data.manifests import VIDEO_EXTENSIONS, load_manifest
from .io import VideoDecodeError, index_stream
from .io.index_store import entries, entry_path, entry_source, file_key, index_dir

PROG = "python -m accel.index"


def dataset_videos(data: Path) -> list[str]:
    """The video files of DATA: itself, every video under a folder, or a CSV's rows."""
    if data.is_file() and data.suffix.lower() == ".csv":
        return sorted({item.path for item in load_manifest(data).items
                       if Path(item.path).suffix.lower() in VIDEO_EXTENSIONS})
    if data.is_file():
        return [str(data)]
    if not data.is_dir():
        raise UsageError(f"{data}: no such file or folder")
    found = [os.path.join(folder, name) for folder, _, names in os.walk(data) for name in names
             if Path(name).suffix.lower() in VIDEO_EXTENSIONS]
    if not found:
        raise UsageError(f"{data}: no video files under it (extensions: {', '.join(VIDEO_EXTENSIONS)})")
    return sorted(found)


def index_one(path: str) -> tuple[str, int | None, str | None]:
    """(path, frames, None) once ``path`` is indexed; (path, None, reason) if it cannot be."""
    try:
        return path, index_stream(path).num_frames, None
    except VideoDecodeError as e:
        return path, None, e.reason


def build(paths: list[str], workers: int) -> list[tuple[str, int | None, str | None]]:
    """Index every path in ``workers`` processes (0: this one), with a progress bar."""
    from tqdm import tqdm

    bar = dict(total=len(paths), unit="file", desc="indexing", disable=None)
    if workers == 0 or len(paths) == 1:
        return [index_one(p) for p in tqdm(paths, **bar)]
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(tqdm(pool.map(index_one, paths, chunksize=16), **bar))


def clear(paths: list[str]) -> int:
    """Remove the entries of ``paths`` (every stream asked for); how many were removed."""
    wanted = {os.path.abspath(p) for p in paths}
    removed = 0
    for entry in entries():
        if entry_source(entry) in wanted:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def parse_args(argv=None):
    p = Parser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1],
               epilog="The index folder: --index_dir, else $VIDACCEL_INDEX_DIR, else "
                      "$XDG_CACHE_HOME/vidaccel/index (~/.cache/vidaccel/index). Entries are "
                      "checked against each file's size and mtime, so a changed file is "
                      "re-indexed. Exit status: 0 all indexed, 1 some files could not be "
                      "(listed), 2 bad input.")
    p.add_argument("data", type=Path, help="a video file, a dataset folder (any layout) or a CSV")
    p.add("--index_dir", type=Path, default=None, help="where to keep the index (see below)")
    p.add("--workers", type=non_negative_int, default=max(1, len(os.sched_getaffinity(0))),
          help="processes scanning files (default: the cores this process may use; 0: none)")
    p.add_flag("--clear", False, "remove DATA's index entries instead of building them")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.index_dir is not None:
        os.environ["VIDACCEL_INDEX_DIR"] = str(args.index_dir)  # the workers inherit it
    try:
        paths = dataset_videos(args.data)
    except (UsageError, ValueError) as e:
        fail(PROG, one_line(e))
    folder = index_dir()
    if args.clear:
        print(f"removed {clear(paths)} index entries of {len(paths)} files from {folder}")
        return 0
    fresh = sum(_has_entry(p) for p in paths)
    t0 = time.perf_counter()
    results = build(paths, args.workers)
    failed = [(p, why) for p, frames, why in results if why is not None]
    frames = sum(f for _, f, _ in results if f)
    print(f"indexed {len(paths) - len(failed)} of {len(paths)} files ({fresh} were already indexed), "
          f"{frames} frames, in {time.perf_counter() - t0:.1f} s; index folder: {folder or 'memory only'}")
    for path, why in failed[:10]:
        print(f"  cannot index {path}: {why}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more")
    return 1 if failed else 0


def _has_entry(path: str) -> bool:
    folder = index_dir()
    if folder is None:
        return False
    try:
        return entry_path(folder, file_key(path)[0], None).is_file()
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
