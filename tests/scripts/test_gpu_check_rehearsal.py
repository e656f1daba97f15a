"""scripts/gpu_check.sh --rehearse-cpu: the whole core tier on this CPU (stand-ins, tiny sizes)
makes every row a GPU run makes; killed part-way, it leaves its summary and finished steps."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")
STEPS = ["data", "pytest_gpu", "models_runtime", "models_exports", "train_amp", "nccl", "train_stall", "stream"]
MINS = {"data": 15, "pytest_gpu": 30, "models_runtime": 30, "models_exports": 40, "train_amp": 10, "nccl": 15,
        "train_stall": 25, "stream": 20}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, str]:
    """The data cache and exports, shared by both runs (the second reuses the videos)."""
    root = tmp_path_factory.mktemp("gpu_rehearsal")
    return dict(os.environ, PYTHONPATH=str(ROOT), GPU_CHECK_CACHE=str(root / "cache"),
                GPU_CHECK_EXPORTS=str(root / "exports"))


def unpack(out: Path) -> dict[str, bytes]:
    with tarfile.open(out / "results.tar.gz") as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def records(files: dict[str, bytes], name: str) -> dict[tuple, dict]:
    rows = json.loads(files[name])["records"]
    return {(r.get("model"), r.get("variant"), r.get("mode"), r.get("backend")): r for r in rows}


def status_of(rows: dict[tuple, dict]) -> dict[str, str]:
    return {f"{k[0]}/{k[1]}/{k[2]}" if k[3] is None else k[3]: r["status"] for k, r in rows.items()}


def test_the_cpu_rehearsal_makes_every_row(tmp_path, shared):
    out, work = tmp_path / "out", tmp_path / "work"
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "--rehearse-cpu", "--out", str(out)], capture_output=True, text=True,
                       timeout=900, cwd=ROOT, env=dict(shared, GPU_CHECK_WORK=str(work)))
    took = time.monotonic() - t0
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert sorted(p.name for p in out.iterdir()) == ["SUMMARY.md", "results.tar.gz"] and not work.exists()
    files = unpack(out)
    runtime = status_of(records(files, "models_runtime.json"))
    assert runtime == {"tsn_resnet18/eager/infer": "ok", "tsn_resnet18/channels_last/infer": "ok",
                       "tsn_resnet18/amp/infer": "ok", "tsn_resnet18/amp_fp16/infer": "skipped",
                       "tsn_resnet18/cuda_graphs/infer": "skipped"}
    assert {r["precision"] for r in records(files, "models_runtime.json").values()} == {"fp32", "bf16", "fp16"}
    assert status_of(records(files, "models_exports.json")) == {"tsn_resnet18/onnx/infer": "ok",
                                                                "tsn_resnet18/tensorrt/infer": "skipped"}
    assert status_of(records(files, "train_amp.json"))["tsn_resnet18/amp/train"] == "ok"  # bf16 on the CPU
    assert json.loads(files["nccl_metrics.json"])["distributed"] == {"backend": "gloo", "world_size": 1}
    stall = records(files, "train_stall.json")
    assert status_of(stall) == {"pyav": "ok", "decord": "ok"}
    assert all(0 <= row["data_stall_pct"] <= 100 for row in stall.values())
    assert set(status_of(records(files, "stream.json")).values()) == {"ok"}
    telemetry = json.loads(files["telemetry.json"])
    assert telemetry["samples"] and telemetry["summary"]["sm_util"] in ("n/a", None)
    assert json.loads(files["preflight.json"])["rehearsal_cpu"] is True

    steps = list(csv.DictReader(io.StringIO(files["steps.tsv"].decode()), delimiter="\t"))
    assert [s["step"] for s in steps] == STEPS and {s["status"] for s in steps} == {"ok"}
    used = 0
    for k, s in enumerate(steps):  # the time left minus what the later steps need, give or take publishing
        owed = sum(MINS[name] for name in STEPS[k + 1:])
        assert 480 - used - owed - 15 * (k + 1) <= int(s["limit_s"]) <= 480 - used - owed, s
        used += int(s["seconds"])
    summary = (out / "SUMMARY.md").read_text()
    assert "CPU rehearsal" in summary and "torchrun (gloo, world size 1" in summary
    assert summary.rstrip().splitlines()[-1].startswith("| stream | ok |")
    print(f"rehearsal took {took:.0f} s")  # the suite's budget for it is 3 minutes


@pytest.mark.parametrize("how", ["kill", "term"])
def test_a_rehearsal_killed_part_way_keeps_its_summary_and_finished_steps(tmp_path, shared, how):
    """Once models_runtime is done: "kill" sends SIGKILL to the whole process group (what a call
    limit does), "term" sends SIGTERM to the script (what the outer timeout of device_kit.sh's
    call lines does: it stops the running step, marks it and packs). Either way --out holds the
    summary and every finished step's rows, and nothing more."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(["bash", str(SCRIPT), "--rehearse-cpu", "--out", str(out)], cwd=ROOT,
                            env=dict(shared, GPU_CHECK_WORK=str(work)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        summary = out / "SUMMARY.md"
        while "| models_runtime | ok |" not in (summary.read_text() if summary.is_file() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "the rehearsal ended before the kill"
            time.sleep(0.5)
        if how == "term":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 1
    finally:
        if proc.poll() is None or how == "kill":
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = [p for p in out.rglob("*")]
    assert len(left) <= 8 and all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in left)
    assert {"SUMMARY.md", "results.tar.gz"} <= {p.name for p in left}
    files = unpack(out)
    steps = [row.split("\t")[:2] for row in files["steps.tsv"].decode().splitlines()[1:]]
    assert steps[:3] == [["data", "ok"], ["pytest_gpu", "ok"], ["models_runtime", "ok"]]
    if how == "term":
        assert steps[3:] == [["models_exports", "killed (call limit)"]] and "telemetry.json" in files
    assert status_of(records(files, "models_runtime.json"))["tsn_resnet18/eager/infer"] == "ok"
    text = summary.read_text()
    assert "| models_runtime | ok |" in text and "tsn_resnet18 | infer | eager | fp32 |" in text
