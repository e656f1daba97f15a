"""The report: tables for the terminal and ``inspect.md``, and ``inspect.json``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (missing cells blank; floats to 4 significant digits)."""
    def cell(v) -> str:
        if v is None:
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def cost_rows(cost: list[dict]) -> list[dict]:
    """One row per (group, decoder), the prepared speed-up on the group's fastest decoder's row."""
    rows = []
    for g in cost:
        prepare = g.get("prepare") or {}
        for decoder, c in g["decoders"].items():
            row = {"group": g["group"], "decoder": decoder, **c, "failed": len(c.get("failed", []))}
            if decoder == g["fastest"] and prepare.get("speedup") is not None:
                row["prepare_speedup"] = prepare["speedup"]
            rows.append(row)
    return rows


def balance_rows(balance: dict[str, dict[str, int]]) -> tuple[list[dict], list[str]]:
    classes = sorted({c for counts in balance.values() for c in counts})
    rows = [{"split": split, **{c: counts.get(c, 0) for c in classes}, "total": sum(counts.values())}
            for split, counts in balance.items()]
    return rows, ["split", *classes, "total"]


def problem_lines(problems: list[dict]) -> list[str]:
    lines = []
    for p in problems:
        lines.append(f"- **{p['kind']}** ({p['count']}): {p['reason']}")
        lines += [f"    - {path}" for path in p["first"]]
        if p["count"] > len(p["first"]):
            lines.append(f"    - ... and {p['count'] - len(p['first'])} more (inspect.json)")
    return lines or ["none"]


def verify_lines(v: dict) -> list[str]:
    lines = [f"{v['files']} files, {v['clips']} clips compared against {v['decoders'][0]} "
             f"({', '.join(v['decoders'][1:]) or 'no other decoder'}): {v['mismatches']} mismatches"]
    for d in v["details"]:
        what = d.get("error") or (f"max |diff| {d['max_abs_diff']} > {d['tolerance']}" if "max_abs_diff" in d
                                  else f"mean |diff| {d['mean_abs_diff']} > {d['tolerance']}")
        lines.append(f"- {d['path']}: {d['decoder']} vs {d['reference']} frames {d['frames']} ({what})")
    return lines


def render(report: dict) -> str:
    """The report as Markdown: what ``inspect.md`` holds and the terminal shows."""
    s = report["scan"]
    parts = [f"# Dataset inspection: {report['data']}", "",
             f"{s['files']} files, {s['readable']} readable, {s['skipped']} skipped; "
             f"{s['hours']:.3g} h; scanned in {s['seconds']:.1f} s with {s['workers']} "
             f"worker{'s' if s['workers'] > 1 else ''} ({s['cpu_seconds']:.1f} CPU-seconds)", "",
             "## Summary (codec x resolution band x keyframe-interval band)", "",
             markdown_table(report["groups"], ["group", "files", "hours", "share_files_pct",
                                               "share_hours_pct"]), "",
             "## Problems", "", f"DALI route: {report['dali_gpu']}", "",
             *problem_lines(report["problems"]), "", "## Class balance per split", ""]
    rows, columns = balance_rows(report["balance"])
    parts += [markdown_table(rows, columns), ""]
    if report.get("cost"):
        c = report["cost_options"]
        parts += [f"## Cost (clip_len {c['clip_len']}, size {c['size']}, sampling {c['sampling']}, "
                  f"{c['sample']} clips per group and decoder)", "",
                  markdown_table(cost_rows(report["cost"]), [
                      "group", "decoder", "ms_p50", "clips_per_s_1core", "clips_per_s_all_cores",
                      "files_handed_to_pyav", "failed", "prepare_speedup"]), "",
                  "prepare_speedup: median per-clip time ratio, original / `accel.prepare` output "
                  "(suggested settings), on the group's fastest decoder; clips/s for all cores is one "
                  "core's times the cores; files_handed_to_pyav: sampled files that decoder "
                  "hands to PyAV (so its row is PyAV's time); failed: clips that did not decode (listed in "
                  "inspect.json).", ""]
    if report.get("verify"):
        parts += ["## Verify", "", *verify_lines(report["verify"]), ""]
    return "\n".join(parts)


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """``inspect.json`` and ``inspect.md`` under ``out_dir`` (written whole, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "inspect.json", "md": out_dir / "inspect.md"}
    for key, text in (("json", json.dumps(report, indent=1, default=str)), ("md", render(report))):
        tmp = paths[key].with_name(paths[key].name + ".part")
        tmp.write_text(text)
        os.replace(tmp, paths[key])
    return paths
