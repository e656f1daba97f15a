"""CPU seconds of this process's children, for the benchmarks that count what decode children
and DataLoader workers spend (``loaders --costs``, ``benchmarks.decode_child``)."""
from __future__ import annotations

import psutil


def children_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each live child of this process, by pid."""
    out = {}
    for p in psutil.Process().children():
        try:
            t = p.cpu_times()
        except psutil.Error:  # ended between the listing and the read
            continue
        out[p.pid] = t.user + t.system
    return out


def tree_cpu_s() -> float:
    """CPU seconds of this process, its live descendants and the children it reaped."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:  # ended between the listing and the read
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total
