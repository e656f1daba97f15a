"""``python -m benchmarks <command> [options]``; ``python -m benchmarks <command> --help``.

Each command lives in its own module with ``build_parser(prog) -> accel.cli.Parser`` and
``main(args) -> int``; only the chosen one is imported, so ``compare`` never loads torch.
A wrong option, or a wrong input found after parsing (``accel.cli.UsageError``), stops with
one line, ``prog: error: reason``, and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from benchmarks.common import TorchFreeParser

COMMANDS = {
    "models": ("benchmarks.models", "inference and training-step speed of the model zoo, per variant"),
    "loaders": ("benchmarks.loaders",
                "clips/s of each decode backend, the naive approach and the bare decoders"),
    "train": ("benchmarks.train", "end-to-end training throughput and data-stall share"),
    "stream": ("benchmarks.stream", "real-time sliding-window latency (frame arrival to logits)"),
    "manifests": ("benchmarks.manifests", "CSV manifest load time and forked-reader memory at 1M rows"),
    "compare": ("benchmarks.compare", "fail when a results file regresses against a baseline"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = TorchFreeParser(
        prog="python -m benchmarks",
        description="vidaccel benchmarks. Every command writes JSON, CSV and a Markdown table.",
        epilog="commands:\n" + "\n".join(f"  {k:<8} {v[1]}" for k, v in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("command", choices=list(COMMANDS), help="one of: " + ", ".join(COMMANDS))
    ns, rest = top.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[ns.command][0])
    prog = f"python -m benchmarks {ns.command}"
    args = module.build_parser(prog).parse_args(argv[1:])
    # The command recorded with every result, as a user would retype it.
    args.command_line = shlex.join(["python", "-m", "benchmarks", *argv])
    try:
        return int(module.main(args) or 0)
    except Exception as e:
        from accel.cli import UsageError, fail  # here, not above: compare must not import torch

        if isinstance(e, UsageError):
            fail(prog, str(e))
        raise


if __name__ == "__main__":
    sys.exit(main())
