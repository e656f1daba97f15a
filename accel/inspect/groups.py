"""The summary's groups: codec x resolution band x keyframe-interval band."""
from __future__ import annotations

from collections import defaultdict

# Upper bounds (inclusive) of the bands; above the last: ">last".
SHORT_SIDE_BANDS = (144, 240, 360, 480, 720, 1080)
KEYFRAME_BANDS = (1, 16, 64, 256)


def band(value: float, bounds: tuple[int, ...], unit: str = "") -> str:
    for bound in bounds:
        if value <= bound:
            return f"<={bound}{unit}"
    return f">{bounds[-1]}{unit}"


def group_key(record: dict) -> tuple[str, str, str]:
    """(codec, resolution band by the short side, keyframe-interval band by the mean)."""
    if record.get("container") == "frames":
        return ("frames", "-", "-")
    short = min(record["width"], record["height"])
    return (record["codec"], band(short, SHORT_SIDE_BANDS, "p"),
            band(record["keyframe_interval_mean"], KEYFRAME_BANDS))


def group_name(key: tuple[str, str, str]) -> str:
    codec, res, gop = key
    return codec if codec == "frames" else f"{codec} {res} gop{gop}"


def summary(records: list[dict]) -> list[dict]:
    """One row per group of readable files: files, hours, share of files and of hours."""
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if "skipped" not in r:
            by_group[group_key(r)].append(r)
    total_files = sum(len(v) for v in by_group.values()) or 1
    total_s = sum(r.get("duration_s", 0) for v in by_group.values() for r in v) or 1.0
    rows = []
    for key, members in sorted(by_group.items(), key=lambda kv: -len(kv[1])):
        seconds = sum(r.get("duration_s", 0) for r in members)
        rows.append({"group": group_name(key), "codec": key[0], "resolution": key[1],
                     "keyframe_interval": key[2], "files": len(members),
                     "hours": round(seconds / 3600, 4),
                     "share_files_pct": round(100 * len(members) / total_files, 1),
                     "share_hours_pct": round(100 * seconds / total_s, 1)})
    return rows


def members(records: list[dict]) -> dict[str, list[dict]]:
    """The readable records of each group, by group name."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if "skipped" not in r:
            out[group_name(group_key(r))].append(r)
    return dict(out)
