"""Distributed faults and topology on CPU (Gloo): a stopped rank ends the others within
``--dist_timeout``; two simulated nodes on localhost (two torchrun launches, c10d rendezvous)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")

STALL = """
import os, sys, time
import torch, torch.distributed as dist
from accel.train.distributed import init_distributed
out, timeout = sys.argv[1], float(sys.argv[2])
info = init_distributed("cpu", timeout_s=timeout)
with open(os.path.join(out, f"rank{info.rank}.pid"), "w") as f:
    f.write(str(os.getpid()))
t = torch.zeros(1)
try:
    while True:
        dist.all_reduce(t)
        time.sleep(0.05)
except RuntimeError as e:
    with open(os.path.join(out, f"rank{info.rank}.failed"), "w") as f:
        f.write(f"{time.time()} {e}")
    raise SystemExit(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(paths, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"not written in {seconds} s: {paths}"
        time.sleep(0.1)


def test_a_stopped_rank_ends_the_others_within_the_timeout(tmp_path):
    timeout = 4.0
    script = tmp_path / "stall.py"
    script.write_text(STALL)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(script), str(tmp_path), str(timeout)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = None
    try:
        _wait_for([tmp_path / "rank0.pid", tmp_path / "rank1.pid"], 180)
        stopped = int((tmp_path / "rank1.pid").read_text())
        time.sleep(0.5)  # a few all_reduces in
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.time()
        _wait_for([tmp_path / "rank0.failed"], timeout + 30)
        failed_at, message = (tmp_path / "rank0.failed").read_text().split(" ", 1)
        assert float(failed_at) - t0 < timeout + 10, message  # not torch's 10-30 minutes
        assert "timed out" in message.lower() or "timeout" in message.lower(), message
        os.kill(stopped, signal.SIGCONT)  # lets torchrun's SIGTERM end it now, not in 30 s
        assert run.wait(60) != 0
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if run.poll() is None:
            run.kill()
        run.wait()


def test_train_py_passes_dist_timeout():
    mod = load_script("train", "train_script_mn")
    p = mod.get_args_parser()
    assert p.parse_args(["--data_dir", "x"]).dist_timeout == 300.0
    assert p.parse_args(["--data_dir", "x", "--dist-timeout", "7.5"]).dist_timeout == 7.5


def test_two_nodes_on_localhost(tmp_path, temporal_dataset):
    """Two torchrun launches (--nnodes 2, 2 processes each) meet at one c10d rendezvous:
    four global ranks with disjoint shards, one checkpoint writer, and test metrics equal
    to evaluate.py on the checkpoint."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = []
    for node in (0, 1):
        out = tmp_path / f"node{node}"  # each node its own disk, as on a real cluster
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", "vidaccel-test", str(ROOT / "train.py"), "--data_dir", str(temporal_dataset),
               "--out_dir", str(out), "--device", "cpu", "--model", "tsn_resnet18", "--clip_len", "4",
               "--size", "32", "--batch_size", "2", "--epochs", "1", "--num_workers", "0",
               "--no_progress", "--no_tensorboard", "--no_video_eval", "--dist_timeout", "120"]
        nodes.append((out, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)))
    results = []
    for out, proc in nodes:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        results.append((out, proc.returncode, stdout, stderr))
    for _out, rc, stdout, stderr in results:
        assert rc == 0, (stdout[-2000:], stderr[-3000:])
    writers = [out for out, *_ in results if (out / "metrics.json").exists()]
    assert len(writers) == 1  # global rank 0 alone writes, on whichever node it landed
    out = writers[0]
    other = next(o for o, *_ in results if o != out)
    assert not other.exists() or not [p for p in other.rglob("*") if p.suffix in (".pt", ".json")]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["world_size"] == 4
    # 16 training videos over 4 ranks: 4 each, batch 2 -> 2 batches each, no clip on two ranks
    assert m["ddp"] == {"batches_per_rank": [2, 2, 2, 2], "clips_per_rank": [4, 4, 4, 4], "overlap": 0}
    assert m["epochs"][0]["train_clips"] == 16

    ev = tmp_path / "eval"
    evaluate = load_script("evaluate", "evaluate_script_mn")  # in this process: no interpreter start-up
    evaluate.main(evaluate.get_args_parser().parse_args([
        "--checkpoint", str(out / "best.pt"), "--data_dir", str(temporal_dataset), "--log_dir", str(ev),
        "--device", "cpu", "--no_progress"]))
    assert json.loads((ev / "metrics.json").read_text())["test"]["clip"] == m["test"]["clip"]
