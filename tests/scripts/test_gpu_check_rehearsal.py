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
import threading
import time
from dataclasses import dataclass
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
    """The data cache and exports, shared by the runs (the later ones reuse the videos)."""
    root = tmp_path_factory.mktemp("gpu_rehearsal")
    return dict(os.environ, PYTHONPATH=str(ROOT), GPU_CHECK_CACHE=str(root / "cache"),
                GPU_CHECK_EXPORTS=str(root / "exports"))


@dataclass
class Rehearsal:
    proc: subprocess.Popen
    folder: Path   # stdout, stderr; out/ (--out) and work/ (GPU_CHECK_WORK)
    started: float
    watcher: threading.Thread | None = None   # stops a part-way run (stop_part_way)
    status: int | None = None                 # the script's exit status after SIGTERM ("term")
    error: BaseException | None = None        # what went wrong in the watcher, for the test to raise

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def summary(self) -> str:
        summary = self.out / "SUMMARY.md"
        return summary.read_text() if summary.is_file() else ""


def launch(folder: Path, env: dict[str, str]) -> Rehearsal:
    """Output to files, not pipes: nobody reads them while the run goes on."""
    folder.mkdir(parents=True)
    with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
        proc = subprocess.Popen(["bash", str(SCRIPT), "--rehearse-cpu", "--out", str(folder / "out")], cwd=ROOT,
                                env=dict(env, GPU_CHECK_WORK=str(folder / "work")), stdout=stdout, stderr=stderr,
                                start_new_session=True)
    return Rehearsal(proc, folder, time.monotonic())


def end_group(run: Rehearsal) -> None:
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.proc.wait()


def stop_part_way(run: Rehearsal, how: str) -> None:
    """Once models_runtime is done: "kill" sends SIGKILL to the whole process group (what a call
    limit does), "term" sends SIGTERM to the script (what the outer timeout of device_kit.sh's
    call lines does: it stops the running step, marks it and packs)."""
    proc = run.proc
    try:
        deadline = time.monotonic() + 600
        while "| models_runtime | ok |" not in run.summary():
            assert proc.poll() is None and time.monotonic() < deadline, "the rehearsal ended before the kill"
            time.sleep(0.5)
        if how == "term":
            proc.send_signal(signal.SIGTERM)
            run.status = proc.wait(timeout=120)
    except BaseException as e:  # the test raises it
        run.error = e
    finally:
        if proc.poll() is None or how == "kill":
            end_group(run)


@pytest.fixture(scope="module")
def rehearsals(tmp_path_factory, shared) -> dict[str, Rehearsal]:
    """The module's three rehearsals at once (each is mostly one core's interpreter start-ups):
    the whole one, and two stopped part-way ("kill", "term") by a watcher as soon as their
    models_runtime step is done. The two start once the whole one's data step is done, so the
    videos are made once; they export to a folder of their own, as they are stopped mid-export."""
    root = tmp_path_factory.mktemp("rehearsals")
    runs = {"whole": launch(root / "whole", shared)}
    try:
        deadline = time.monotonic() + 300
        while "| data | ok |" not in runs["whole"].summary() and runs["whole"].proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        for how in ("kill", "term"):
            runs[how] = launch(root / how, dict(shared, GPU_CHECK_EXPORTS=str(root / how / "exports")))
            runs[how].watcher = threading.Thread(target=stop_part_way, args=(runs[how], how), daemon=True)
            runs[how].watcher.start()
        yield runs
    finally:
        for run in runs.values():
            if run.watcher is not None:
                run.watcher.join(timeout=700)
            if run.proc.poll() is None:
                end_group(run)


def unpack(out: Path) -> dict[str, bytes]:
    with tarfile.open(out / "results.tar.gz") as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def records(files: dict[str, bytes], name: str) -> dict[tuple, dict]:
    rows = json.loads(files[name])["records"]
    return {(r.get("model"), r.get("variant"), r.get("mode"), r.get("backend")): r for r in rows}


def status_of(rows: dict[tuple, dict]) -> dict[str, str]:
    return {f"{k[0]}/{k[1]}/{k[2]}" if k[3] is None else k[3]: r["status"] for k, r in rows.items()}


def test_the_cpu_rehearsal_makes_every_row(rehearsals):
    run = rehearsals["whole"]
    out, work = run.out, run.folder / "work"
    try:
        rc = run.proc.wait(timeout=900)
    finally:
        if run.proc.poll() is None:
            end_group(run)
    took = time.monotonic() - run.started
    assert rc == 0, ((run.folder / "stdout").read_text()[-3000:], (run.folder / "stderr").read_text()[-3000:])
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
def test_a_rehearsal_killed_part_way_keeps_its_summary_and_finished_steps(rehearsals, how):
    """Stopped once models_runtime is done (stop_part_way), by SIGKILL to its process group or
    SIGTERM to the script: either way --out holds the summary and every finished step's rows,
    and nothing more."""
    run = rehearsals[how]
    run.watcher.join(timeout=700)
    assert not run.watcher.is_alive(), "the rehearsal was not stopped in 700 s"
    if run.error is not None:
        raise run.error
    if how == "term":
        assert run.status == 1
    out, summary = run.out, run.out / "SUMMARY.md"
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
