"""What will go wrong, found from the scan's records alone (no decode).

Each problem is a kind and a reason, with the files it applies to; each file's record gets
the short reasons in its ``problems`` list. The rules are the loaders' own: the readers'
:func:`~accel.io.fallback.pyav_only_reason` and :func:`~accel.io.decord.decord_reason`, and the
DALI loader's :func:`~accel.data.dali.probe.dali_route` (NVDEC's codecs and sizes by GPU).
"""
from __future__ import annotations

from collections import Counter, defaultdict

from ..data.dali.probe import VideoProbe, dali_route

# The GPU the DALI route is judged for when this machine has none: the project's target
# (H100/H200, Hopper: compute capability 9.0).
DEFAULT_CAPABILITY = (9, 0)
KINDS = ("skipped", "to_pyav_torchcodec", "to_pyav_decord", "dali_to_cpu", "shorter_than_clip",
         "duplicate", "split_leak", "several_video_streams", "vfr")


def gpu_capability() -> tuple[tuple[int, int], str]:
    """The compute capability the DALI route is judged for, and where it comes from."""
    import torch

    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability(0)
        return (cap[0], cap[1]), f"{torch.cuda.get_device_name(0)} (compute capability {cap[0]}.{cap[1]})"
    cc = DEFAULT_CAPABILITY
    return cc, f"no GPU here: judged for compute capability {cc[0]}.{cc[1]} (H100/H200)"


def _file_reasons(r: dict, clip_len: int, capability: tuple[int, int]) -> list[tuple[str, str]]:
    """(kind, reason) for what one record shows by itself."""
    if "skipped" in r:
        return [("skipped", r["skipped"])]
    if r.get("container") == "frames":
        return [("shorter_than_clip", f"fewer frames than --clip_len {clip_len} (the loader "
                 "repeats the last)")] if r["frames"] < clip_len else []
    found = []
    for decoder in ("torchcodec", "decord"):
        why = r["pyav_reason"][decoder]
        if why:
            found.append((f"to_pyav_{decoder}", why))
    route = r["dali_cpu_reason"] or dali_route(
        VideoProbe(r["frames"], r["codec"], r["height"], r["width"]), "gpu", capability)
    if route:
        found.append(("dali_to_cpu", route))
    if r["frames"] < clip_len:
        found.append(("shorter_than_clip", f"fewer frames than --clip_len {clip_len} (the loader "
                      "repeats the last)"))
    if r["video_streams"] > 1:
        found.append(("several_video_streams", f"{r['video_streams']} video streams: the loaders "
                      "read FFmpeg's best one"))
    if r["vfr"]:
        found.append(("vfr", "variable frame rate: fps is the mean rate, frame indices are not "
                      "evenly spaced in time"))
    return found


def _content_reasons(records: list[dict]) -> dict[int, list[tuple[str, str]]]:
    """Duplicates (same first-packet hash, same split) and leaks (the hash in two splits)."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.get("content_hash"):
            by_hash[r["content_hash"]].append(i)
    out: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for same in by_hash.values():
        if len(same) < 2:
            continue
        splits = sorted({records[i]["split"] for i in same})
        for i in same:
            others = [records[j]["path"] for j in same if j != i]
            out[i].append(("duplicate", f"same content as {others[0]}"
                           + (f" and {len(others) - 1} more" if len(others) > 1 else "")))
            if len(splits) > 1:
                out[i].append(("split_leak", f"same content in splits {', '.join(splits)}"))
    return out


def find_problems(records: list[dict], *, clip_len: int, capability: tuple[int, int],
                  first: int = 3) -> list[dict]:
    """Groups ``{kind, reason, count, paths, first}``; fills each record's ``problems``."""
    content = _content_reasons(records)
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i, r in enumerate(records):
        reasons = _file_reasons(r, clip_len, capability) + content.get(i, [])
        r["problems"] = [f"{kind}: {why}" for kind, why in reasons]
        for kind, why in reasons:
            # Duplicates name the other file: group them by kind alone.
            grouped[(kind, "same content under another path" if kind == "duplicate" else why)
                    ].append(r["path"])
    rows = [{"kind": kind, "reason": why, "count": len(paths), "first": paths[:first], "paths": paths}
            for (kind, why), paths in grouped.items()]
    return sorted(rows, key=lambda row: (KINDS.index(row["kind"]), -row["count"]))


def class_balance(records: list[dict]) -> dict[str, dict[str, int]]:
    """Files per class in each split (skipped files included: the manifests list them)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r["split"]][r["label"]] += 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}
