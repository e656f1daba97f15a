"""``python -m accel.demo DATA``: stream every split of a dataset through the loader and
report clips/s and the files that were skipped."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .data.loader import LOADER_BACKENDS, build_loader
from .data.manifests import SPLITS, load_manifest
from .data.sampling import STRATEGIES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m accel.demo", description=__doc__)
    p.add_argument("data", type=Path, help="dataset folder with train/val/test class folders")
    p.add_argument("--decoder", "--backend", dest="decoder", choices=LOADER_BACKENDS, default="auto",
                   help="video decoder (--backend: its old name)")
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--strategy", choices=STRATEGIES, default="uniform")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    splits = [s for s in SPLITS if (args.data / s).is_dir()] or [None]
    total_clips, total_s, skipped = 0, 0.0, []
    for split in splits:
        manifest = load_manifest(args.data, split)
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
