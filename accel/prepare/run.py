"""A preparation run: the jobs not done yet, in worker processes, recorded as each finishes,
then the rewritten CSV and the JSON report (:func:`prepare`)."""
from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime as _dt
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cli import one_line
from .encode import link_frames, prepare_video
from .options import PrepareError, PrepareOptions
from .plan import Job, Plan, make_plan
from .state import STATE_DIR, DoneRecord, source_key


def failure_reason(e: BaseException) -> str:
    """A failed file's reason: a PrepareError's own line; any other error's with its type."""
    text = one_line(e)
    return text if isinstance(e, PrepareError) or not str(e).strip() else f"{type(e).__name__}: {text}"


def run_job(job: Job, options: PrepareOptions) -> dict:
    """One job in a worker: never raises for a bad source, returns ``status="failed"``."""
    try:
        result = link_frames(job.src, job.dst) if job.is_frames else prepare_video(job.src, job.dst, options)
        return {"path": job.rel, "status": "copied" if job.is_frames else "prepared", **result}
    except Exception as e:  # any decoder or muxer error of one file: list it, go on
        return {"path": job.rel, "status": "failed", "reason": failure_reason(e)}


def _worker_context():
    """forkserver where there is one: workers fork from a clean process that imported this
    module once (no threads, nothing opened), instead of each importing torch again (spawn)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["accel.prepare"])
    return ctx


def _results(todo: list[Job], options: PrepareOptions, workers: int):
    """(job, result) as each job finishes; worker processes when ``workers > 1``."""
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            yield job, run_job(job, options)
        return
    with cf.ProcessPoolExecutor(workers, mp_context=_worker_context()) as pool:
        futures = {pool.submit(run_job, job, options): job for job in todo}
        try:
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _write_csv(plan: Plan, failed: set[str]) -> None:
    rows = []
    for row, rel in zip(plan.csv_rows, plan.rel_of_row):
        if rel not in failed:
            rows.append({**row, "path": rel})
    tmp = plan.csv_out.with_name(plan.csv_out.name + ".part")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=plan.csv_fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, plan.csv_out)


def _remove_stale(dst: Path) -> None:
    """An output of an earlier version of a source that now fails: it no longer matches."""
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()


def summarize(outputs: list[dict], failed: list[dict]) -> dict:
    by_status = {s: sum(1 for o in outputs if o["status"] == s) for s in ("prepared", "kept", "copied")}
    videos = [o for o in outputs if o["status"] != "copied"]
    values = [v for o in videos for v in o.get("psnr_db", [])]
    return {
        "files": {"total": len(outputs) + len(failed), **by_status, "failed": len(failed)},
        "frames": sum(o["frames"] for o in videos),
        "input_bytes": sum(o["input_bytes"] for o in outputs),
        "output_bytes": sum(o["output_bytes"] for o in outputs),
        "psnr_db": {"min": min(values) if values else None,
                    "mean": round(float(np.mean(values)), 2) if values else None,
                    "frames_checked": len(values)},
    }


def prepare(src: str | Path, dst: str | Path, options: PrepareOptions = PrepareOptions(), *,
            workers: int = 1, splits: Sequence[str] | None = None, progress: bool = True,
            report_path: str | Path | None = None, command: str = "") -> dict:
    """Prepare SRC into DST (see the module docstring); returns the run's report (also
    written as JSON). Raises :class:`~accel.data.manifests.ManifestError` for an unusable SRC."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    started = _dt.datetime.now(_dt.timezone.utc)
    plan = make_plan(src, dst, splits)
    dst.mkdir(parents=True, exist_ok=True)
    done = DoneRecord(dst)
    outputs: list[dict] = []
    failed: list[dict] = []
    todo, keys = [], {}
    for job in plan.jobs:
        entry = done.is_done(job, options)
        if entry is not None:
            outputs.append({**entry, "status": "kept"})
        else:
            todo.append(job)
            keys[job.rel] = source_key(job.src) if Path(job.src).exists() else None  # before reading it
    interrupted = False
    bar = tqdm(total=len(todo), desc=f"prepare {dst}", unit="file", disable=not progress)
    try:
        for job, result in _results(todo, options, workers):
            bar.update()
            if result["status"] == "failed":
                failed.append({"path": job.src, "rel": job.rel, "reason": result["reason"]})
                bar.write(f"skipped {job.src}: {result['reason']}")
                _remove_stale(Path(job.dst))
                continue
            result.update(input_bytes=keys[job.rel]["size"], source=keys[job.rel],
                          options=options.encoding())
            done.add(result)
            outputs.append(result)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if plan.csv_out is not None and not interrupted:
        _write_csv(plan, {f["rel"] for f in failed})
    report = {
        "command": command, "src": str(src), "dst": str(dst),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 2), "interrupted": interrupted,
        "options": asdict(options), "workers": workers,
        **summarize(outputs, failed),
        "failed": failed,
        "csv": str(plan.csv_out) if plan.csv_out else None,
        "outputs": [{k: o.get(k) for k in ("path", "status", "frames", "input_bytes", "output_bytes",
                                           "seconds", "psnr_db")} for o in outputs],
    }
    report_path = Path(report_path) if report_path else \
        dst / STATE_DIR / "reports" / f"report-{started:%Y%m%dT%H%M%SZ}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    report["report"] = str(report_path)
    if interrupted:
        raise KeyboardInterrupt(report_path)
    return report
