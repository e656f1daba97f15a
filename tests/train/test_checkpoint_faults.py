"""Bad checkpoints are one line and exit 2 (train.py --resume, evaluate.py); saves are
fsynced and leave no stale temporary file behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

from accel.train.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--model", "tsn_resnet18", "--clip_len", "4", "--size", "32", "--batch_size", "4",
        "--no_progress", "--num_workers", "0", "--device", "cpu", "--no_tensorboard"]


def _script(name: str):
    return load_script(name, f"{name}_script_ckpt")


@pytest.fixture(scope="module")
def scripts():
    return _script("train"), _script("evaluate")


@pytest.fixture(scope="module")
def good_ckpt(trained_run):
    """last.pt of the session's run (tsn_resnet18, 4 classes, 2 epochs: tests/conftest.py)."""
    return read_checkpoint(trained_run.model / "last.pt")


def _one_line_exit_2(fn, argv, capsys, prog) -> str:
    with pytest.raises(SystemExit) as exc:
        fn.main(fn.get_args_parser().parse_args([str(a) for a in argv]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    assert "weights_only" not in err and "Traceback" not in err
    return err


def _broken(ckpt: dict, change) -> dict:
    c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ckpt.items()}
    change(c)
    return c


def _drop_head(c):
    for k in [k for k in c["model"] if k.startswith("head") or k.startswith("fc")]:
        del c["model"][k]


def _wrong_shape(c):
    key = next(k for k, v in c["model"].items() if v.ndim == 4)
    c["model"][key] = torch.zeros(3, 3, 1, 1)


def _other_model(c):
    from models import create_model

    c["model"] = create_model("cnn_lstm", num_classes=4).state_dict()


RESUME_CASES = [
    ("missing_keys", _drop_head, r"weights do not fit \w+: \d+ missing keys \("),
    ("wrong_shape", _wrong_shape,
     r"first shape mismatch: \S+ is \(3, 3, 1, 1\) in the checkpoint, \(.*\) in the model"),
    ("other_model", _other_model, r"unexpected keys .*it was made for tsn_resnet18 with 4 classes"),
    ("no_optimizer", lambda c: c.pop("optimizer"), r"missing entries 'optimizer'"),
    ("no_rng", lambda c: c.pop("rng"), r"missing entries 'rng'"),
    ("no_classes", lambda c: c.pop("classes"), r"missing entries 'classes'"),
    ("bad_optimizer", lambda c: c.update(optimizer={"state": {}, "param_groups": []}),
     r"optimiser, schedule, selector or RNG state does not fit this run"),
]


@pytest.mark.parametrize("change,needle", [c[1:] for c in RESUME_CASES], ids=[c[0] for c in RESUME_CASES])
def test_resume_problems_are_one_line(good_ckpt, scripts, temporal_dataset, tmp_path, capsys, change, needle):
    import re

    path = tmp_path / "bad.pt"
    torch.save(_broken(good_ckpt, change), path)
    train, _ = scripts
    err = _one_line_exit_2(train, ["--data_dir", temporal_dataset, "--out_dir", tmp_path / "run",
                                   "--epochs", "3", "--resume", path, *FAST], capsys, "train.py")
    assert re.search(needle, err), err
    assert str(path) in err


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unsafe_pickle_is_refused_without_the_unsafe_hint(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert "refused" in msg and "posix.system" in msg and "weights_only" not in msg
    assert len(msg.splitlines()) == 1 and not (tmp_path / "pwned").exists()


EVAL_CASES = [
    ("no_classes", lambda c: c.pop("classes"), r"missing entries 'classes'"),
    ("unknown_options", lambda c: c.update(model_kwargs={"bogus_option": 3}),
     r"tsn_resnet18 does not take the recorded model options \{'bogus_option': 3\}"),
    ("wrong_shape", _wrong_shape, r"first shape mismatch"),
]


@pytest.mark.parametrize("change,needle", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_evaluate_problems_are_one_line(good_ckpt, scripts, temporal_dataset, tmp_path, capsys, change, needle):
    import re

    path = tmp_path / "bad.pt"
    torch.save(_broken(good_ckpt, change), path)
    _, evaluate = scripts
    err = _one_line_exit_2(evaluate, ["--checkpoint", path, "--data_dir", temporal_dataset,
                                      "--device", "cpu", "--no_progress"], capsys, "evaluate.py")
    assert re.search(needle, err), err


# --------------------------------------------------------------------------- saving
def test_stale_temporaries_are_removed_at_the_next_save(tmp_path):
    target = tmp_path / "best.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale_dead = tmp_path / f".best.pt.tmp{dead}"  # a save killed mid-write, process gone
    stale_ours = tmp_path / f".best.pt.tmp{os.getpid()}"  # an earlier failed save of ours
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    in_progress = tmp_path / f".best.pt.tmp{live.pid}"  # another live process: not ours to delete
    other = tmp_path / f".last.pt.tmp{dead}"  # another file's temporary: its own save cleans it
    try:
        for p in (stale_dead, stale_ours, in_progress, other):
            p.write_bytes(b"half a checkpoint")
        save_checkpoint({"model": {"w": torch.ones(2)}}, target)
        assert not stale_dead.exists() and not stale_ours.exists()
        assert in_progress.exists() and other.exists()
        assert torch.equal(read_checkpoint(target)["model"]["w"], torch.ones(2))
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
        assert not other.exists()
    finally:
        live.kill()
        live.wait()


def test_a_save_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    save_checkpoint({"model": {}}, tmp_path / "x.pt")
    assert events[:2] == ["fsync", "rename"]


def test_a_killed_save_leaves_nothing_after_the_next_one(tmp_path):
    """SIGKILL a process in the middle of writing a large checkpoint, then save again."""
    code = ("import sys, torch; from accel.train.checkpoint import save_checkpoint\n"
            "big = {'model': {'w': torch.zeros(64, 2**20)}}\n"
            "print('ready', flush=True)\n"
            "while True: save_checkpoint(big, sys.argv[1])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "best.pt")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "ready"
    deadline = 50
    while not list(tmp_path.glob(".best.pt.tmp*")) and deadline:  # kill it while a temporary exists
        import time

        time.sleep(0.1)
        deadline -= 1
    proc.kill()
    proc.wait()
    save_checkpoint({"model": {}}, tmp_path / "best.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
