"""Million-row manifests: CSV load time and the memory a forked worker copies by reading rows.

Writes a CSV of ``--rows`` rows ``path,label,split`` (clips cut from long recordings: 5 000
per recording folder, 7 class names, 60/20/20 splits), loads it with ``csv_manifest`` (all rows,
then the train split), and forks a process that reads every row's path and label. The
child's unique memory (``Private_Clean + Private_Dirty`` of ``/proc/PID/smaps_rollup``) is
measured before and after the reads: reading a Python object writes its reference count, so
rows kept as objects are copied page by page into every worker. The same read of the rows as
a list of ``VideoItem`` objects (what manifests held before) is measured in the same run.
``load_s`` is wall time, ``load_cpu_s`` this process's CPU time (what a busy machine does not
inflate), ``csv_module_s`` the time ``csv.reader`` alone takes to list the rows.
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from accel.cli import Parser, positive_int
from accel.data.manifests import Manifest, csv_manifest
from benchmarks.common import add_common_args

CLASSES = ("cholecystectomy", "appendectomy", "hernia_repair", "biopsy", "suture", "clip", "idle")
CLIPS_PER_RECORDING = 5_000


def write_manifest_csv(path: Path, rows: int, *, seed: int = 0) -> Path:
    """A ``path,label,split`` CSV of ``rows`` clips (relative paths; the files need not exist)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), rows)
    splits = np.array(["train", "val", "test"])[rng.choice(3, rows, p=[0.6, 0.2, 0.2])]
    with open(path, "w") as f:
        f.write("path,label,split\n")
        f.writelines(f"recordings/rec_{i // CLIPS_PER_RECORDING:04d}/clip_{i % CLIPS_PER_RECORDING:05d}"
                     f".mp4,{CLASSES[c]},{s}\n" for i, (c, s) in enumerate(zip(labels.tolist(), splits)))
    return path


def private_kb(pid: int | str = "self") -> int:
    """A process's unique memory in KiB: Private_Clean + Private_Dirty (smaps_rollup)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def read_every_row(rows: Manifest | list) -> int:
    """Touch every row's path and label, as a worker serving all samples would."""
    n = 0
    items = rows.items if isinstance(rows, Manifest) else rows  # items[i] calls path(i), label(i)
    for i in range(len(items)):
        item = items[i]
        n += len(item.path) + item.label
    return n


def fork_growth_mb(rows: Manifest | list) -> float:
    """How much a forked child's unique memory grows while it reads every row (MiB)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, read, measure, report, leave without cleanup
        try:
            os.close(read_end)
            before = private_kb()
            read_every_row(rows)
            os.write(write_end, str(private_kb() - before).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        reply = f.read()
    os.waitpid(pid, 0)
    if not reply:
        raise RuntimeError("the forked reader died before reporting its memory")
    return int(reply) / 1024


def measure(csv_path: Path, *, with_objects: bool = True) -> dict:
    """Load times and fork growth for one CSV (one record). ``csv_module_s``: only listing the
    rows with ``csv.reader``, what the per-row loader paid before any check (same run)."""
    t0 = time.perf_counter()
    with open(csv_path, newline="", encoding="utf-8") as f:
        listed = sum(1 for _ in csv.reader(f))
    csv_module_s = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    manifest = csv_manifest(csv_path)
    load_s, load_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    t0 = time.perf_counter()
    train = csv_manifest(csv_path, "train")
    train_s = time.perf_counter() - t0
    if listed != len(manifest) + 1:
        raise SystemExit(f"error: {csv_path}: csv.reader lists {listed - 1} rows, the manifest {len(manifest)}")
    record = {"rows": len(manifest), "train_rows": len(train), "load_s": round(load_s, 3),
              "load_cpu_s": round(load_cpu_s, 3), "csv_module_s": round(csv_module_s, 3),
              "load_train_s": round(train_s, 3), "fork_read_mb": round(fork_growth_mb(manifest), 2),
              "packed_mb": round((len(manifest.path_buffer) + manifest.path_offsets.nbytes
                                  + manifest.label_array.nbytes) / 2**20, 1)}
    del train
    if with_objects:
        objects = list(manifest.items)
        record["fork_read_objects_mb"] = round(fork_growth_mb(objects), 2)
    return record


def build_parser(prog: str) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add("--rows", type=positive_int, default=1_000_000, help="rows of the generated CSV")
    p.add("--csv", type=Path, default=None, help="measure this CSV instead of a generated one")
    add_common_args(p, json=Path("benchmarks/results/manifests_cpu.json"))
    return p


def main(args) -> int:
    from benchmarks.common import write_results

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = args.csv or write_manifest_csv(Path(tmp) / "clips.csv", args.rows)
        record = measure(csv_path)
    record["csv"] = str(args.csv) if args.csv else f"generated ({args.rows} rows)"
    columns = ["rows", "load_s", "load_cpu_s", "csv_module_s", "train_rows", "load_train_s", "packed_mb",
               "fork_read_mb", "fork_read_objects_mb"]
    paths = write_results([record], args.json, command=args.command_line, columns=columns,
                          title="Manifest load time and forked-reader memory")
    print(open(paths["md"]).read())
    return 0
