"""``python -m accel.demo DATA``: stream every split of a dataset through the loader and
report clips/s and the files that were skipped."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from .cli import Parser, fail, non_negative_int, one_line, positive_int
from .data.loader import LOADER_BACKENDS, build_loader
from .data.manifests import SPLITS, ManifestError, load_manifest
from .data.sampling import STRATEGIES

PROG = "python -m accel.demo"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog=PROG, description=__doc__)
    p.add("data", type=Path, help="dataset folder with train/val/test class folders")
    p.add("--decoder", "--backend", dest="decoder", choices=LOADER_BACKENDS, default="auto",
          help="video decoder (--backend: its old name)")
    p.add("--clip-len", type=positive_int, default=16)
    p.add("--strategy", choices=STRATEGIES, default="uniform")
    p.add("--batch-size", type=positive_int, default=8)
    p.add("--workers", type=non_negative_int, default=2)
    args = p.parse_args(argv)
    if not args.data.exists():
        fail(PROG, f"{args.data}: no such folder")
    splits = [s for s in SPLITS if (args.data / s).is_dir()] or [None]
    total_clips, total_s, skipped = 0, 0.0, []
    for split in splits:
        try:
            manifest = load_manifest(args.data, split)
        except ManifestError as e:
            fail(PROG, one_line(e))
        loader = build_loader(manifest, batch_size=args.batch_size, clip_len=args.clip_len,
                              strategy=args.strategy, backend=args.decoder,
                              num_workers=args.workers, persistent_workers=False)
        clips, start = 0, time.perf_counter()
        with tqdm(loader, desc=f"{split or 'all'} ({loader.backend})", unit="batch") as bar:
            for batch in bar:
                clips += batch.clip.shape[0]
                bar.set_postfix(clips_per_s=f"{clips / (time.perf_counter() - start):.0f}")
        total_clips += clips
        total_s += time.perf_counter() - start
        skipped += loader.skipped
        print(f"{split or 'all'}: {clips} clips {tuple(batch.clip.shape[1:])} uint8 "
              f"channels_last_3d via {loader.backend} ({loader.reason})")
    print(f"throughput: {total_clips / total_s:.1f} clips/s "
          f"({total_clips} clips in {total_s:.1f} s, {args.workers} workers); "
          f"files skipped: {len(skipped)}")
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
