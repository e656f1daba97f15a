"""torchrun --nproc_per_node=2 train.py --device cpu (Gloo): disjoint equal shards, rank 0 writes,
and the reported test metrics equal evaluating the checkpoint afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")


def test_torchrun_two_processes_on_cpu(tmp_path, temporal_dataset):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), "--data_dir", str(temporal_dataset), "--out_dir", str(out),
           "--device", "cpu", "--model", "tsn_resnet18", "--clip_len", "4", "--size", "32",
           "--batch_size", "4", "--epochs", "2", "--lr", "1e-3", "--num_workers", "0",
           "--no_progress"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    # channels-last 1x1 convolution weights have canonical strides: DDP's buckets fit the grads
    assert "grad strides do not match" not in r.stderr.lower()
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["world_size"] == 2
    # 16 training videos -> 8 per rank, batch 4 -> 2 batches on each rank, no shared clip
    assert m["ddp"] == {"batches_per_rank": [2, 2], "clips_per_rank": [8, 8], "overlap": 0}
    # only rank 0 printed and wrote: one line per epoch, one CSV row per epoch
    assert r.stdout.count("epoch 1/2:") == 1 and r.stdout.count("test clip-level") == 1
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert m["epochs"][0]["train_clips"] == 16  # both ranks' clips counted

    ev = tmp_path / "eval"
    evaluate = load_script("evaluate", "evaluate_script_ddp")  # in this process: no interpreter start-up
    evaluate.main(evaluate.get_args_parser().parse_args([
        "--checkpoint", str(out / "best.pt"), "--data_dir", str(temporal_dataset), "--log_dir", str(ev),
        "--device", "cpu", "--no_progress"]))
    evaluated = json.loads((ev / "metrics.json").read_text())["test"]
    assert evaluated["clip"] == m["test"]["clip"] and evaluated["video"] == m["test"]["video"]


def test_a_torchrun_launch_of_one_process_makes_its_group_and_says_so():
    """torchrun --nproc_per_node=1 sets RANK and WORLD_SIZE=1: the process group (Gloo on the
    CPU) is made all the same, so the one-process GPU check runs DDP over NCCL; without
    torchrun's variables nothing is made."""
    code = (
        "import torch.distributed as dist\n"
        "from accel.train.distributed import init_distributed, destroy\n"
        "info = init_distributed('cpu', timeout_s=30)\n"
        "print(info.distributed, dist.is_initialized(), info.describe())\n"
        "destroy(info)\n")
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(29500 + os.getpid() % 1000), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[0] == "True True {'backend': 'gloo', 'world_size': 1}"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.stdout.split("\n")[0] == "False False {'backend': None, 'world_size': 1}", r.stderr[-2000:]
