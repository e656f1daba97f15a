"""``python -m models``: a Markdown table of the zoo (parameters, GFLOPs, usual input).

GFLOPs are :func:`accel.deploy.perf.count_gflops` (``FlopCounterMode``'s total / 1e9,
on the meta device) for one clip (batch 1) at the model's ``default_clip_len`` x
``default_size``; a multiply-add counts 2 FLOPs, elementwise ops, norms and pooling none.
The benchmarks report the same figure.
"""

from __future__ import annotations

import sys

import torch

from accel.cli import Parser, comma_list, positive_int
from accel.deploy.perf import count_gflops

from . import create_model, list_models


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def table(names: list[str], num_classes: int = 7) -> str:
    rows = [
        f"| model | params (M), {num_classes} classes | GFLOPs / clip | clip_len | size |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes)
        params = count_params(model) / 1e6
        gflops = count_gflops(model, clip_len=model.default_clip_len, size=model.default_size)
        rows.append(
            f"| `{name}` | {params:.2f} | {gflops:.1f} | {model.default_clip_len} | {model.default_size} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m models", description=__doc__.splitlines()[0])
    ap.add("--models", type=comma_list(choices=list_models()), default=list_models(),
           help="comma-separated names (default: all registered)")
    ap.add("--num-classes", type=positive_int, default=7)
    args = ap.parse_args(argv)
    names = args.models
    print(
        "GFLOPs = torch.utils.flop_counter.FlopCounterMode flops / 1e9 for one clip (batch 1) "
        "at the model's usual input (clip_len x size x size); a multiply-add counts 2.\n"
    )
    print(table(names, args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
