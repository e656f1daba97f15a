"""Checkpoints: weights-only round trip with RNG state, read errors, plain values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from accel.train.checkpoint import plain, read_checkpoint, save_checkpoint
from accel.train.rng import rng_state, seed_everything, set_rng_state


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    seed_everything(5)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
             "args": {"out": tmp_path, "sizes": (1, 2)}, "rng": rng_state(), "best": -math.inf}
    path = save_checkpoint(state, tmp_path / "c.pt")
    expect = (torch.rand(3), np.random.rand(), __import__("random").random())
    ck = torch.load(path, weights_only=True)  # plain types only
    assert ck["args"]["out"] == str(tmp_path) and ck["epoch"] == 3
    set_rng_state(read_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(expect[0], again[0]) and expect[1:] == again[1:]
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob(".*tmp*"))


def test_read_checkpoint_errors(tmp_path):
    from accel.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        read_checkpoint(tmp_path / "other.pt")


def test_plain_keeps_int_keys_and_tuples():
    out = plain({1: (2, 3), "p": __import__("pathlib").Path("/x"), "n": np.float32(1.5)})
    assert out == {1: (2, 3), "p": "/x", "n": 1.5}
