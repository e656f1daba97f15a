"""Long runs under torchrun (2 Gloo processes on CPU): SIGTERM to one rank stops every rank at
the same step, rank 0 writes one checkpoint, and --resume auto finishes with the metrics of a
run that never stopped; a rank killed outright is restarted by torchrun --max-restarts, which
resumes from the newest checkpoint on its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from accel.train.preempt import EXIT_PREEMPTED

sys.path.insert(0, str(Path(__file__).parent))
from test_long_runs import ENV, ROOT, TINY, assert_same_run, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")
# One epoch of 4 steps a rank (16 videos, 2 ranks, batch 2), a checkpoint after every step.
DDP = [*TINY, "--epochs", "1", "--save_every_steps", "1"]


def torchrun(data: Path, out: Path, *extra: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={restarts}", str(ROOT / "train.py"), "--data_dir", str(data),
            "--out_dir", str(out), *DDP, *extra]


def launch(cmd: list[str], logs: Path) -> subprocess.Popen:
    """Output to files, not pipes: a pipe nobody reads while the run goes on can fill and hang it."""
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=open(logs / "stdout", "w"),
                            stderr=open(logs / "stderr", "w"), start_new_session=True)


def finish(proc: subprocess.Popen, logs: Path, timeout: float = 300) -> tuple[str, str]:
    try:
        proc.wait(timeout=timeout)
    finally:
        end(proc)
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


def end(proc: subprocess.Popen) -> None:
    """torchrun and its workers (their own session), if still running: nothing outlives a test."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def agents():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        end(proc)


def rank_pid(agent: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    """The pid of the worker torchrun started for ``rank`` (read from /proc)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
            if ppid == agent.pid and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent.pid}")


@pytest.fixture(scope="module")
def ddp_uninterrupted(tmp_path_factory, temporal_dataset) -> Path:
    out = tmp_path_factory.mktemp("ddp_whole")
    r = subprocess.run(torchrun(temporal_dataset, out), cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_sigterm_to_one_rank_stops_both_and_resume_is_exact(ddp_uninterrupted, temporal_dataset, tmp_path, agents):
    out = tmp_path / "cut"
    agent = launch(torchrun(temporal_dataset, out), tmp_path)
    agents.append(agent)
    rank1 = rank_pid(agent, 1)
    wait_for("step-e0000-*.pt", out, agent)
    os.kill(rank1, signal.SIGTERM)  # rank 1 alone: the ranks agree at the next step
    _, err = finish(agent, tmp_path)
    assert agent.returncode != 0
    stop = [line for line in err.splitlines() if "preempted by SIGTERM" in line]
    assert len(stop) == 1, err[-4000:]  # rank 0 says it, once
    assert f"exitcode  : {EXIT_PREEMPTED}" in err or f"exit code {EXIT_PREEMPTED}" in err, err[-4000:]
    saved = Path(stop[0].split("checkpoint ")[1].split(";")[0])
    ck = torch.load(saved, weights_only=True)
    ranks = ck["in_epoch"]["ranks"]
    assert len(ranks) == 2 and ranks[0]["batches"] == ranks[1]["batches"]  # the same step on both

    r = subprocess.run(torchrun(temporal_dataset, out, "--resume", "auto"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {saved}" in r.stdout
    assert_same_run(ddp_uninterrupted, out)


def test_torchrun_restarts_a_killed_rank_and_resumes_on_its_own(ddp_uninterrupted, temporal_dataset, tmp_path, agents):
    out = tmp_path / "elastic"
    # Ranks of the restarted group start seconds apart on 2 cores: the first one up must not
    # read the dead attempt's addresses from torchrun's store (distributed.restart_store).
    agent = launch(torchrun(temporal_dataset, out, restarts=1), tmp_path)
    agents.append(agent)
    rank1 = rank_pid(agent, 1)
    wait_for("step-e0000-*.pt", out, agent)
    os.kill(rank1, signal.SIGKILL)
    stdout, err = finish(agent, tmp_path)
    assert agent.returncode == 0, err[-4000:]
    assert "(torchrun restart 1)" in stdout and "resumed from" in stdout, stdout[-3000:]
    assert_same_run(ddp_uninterrupted, out)
