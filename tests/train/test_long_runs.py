"""Long runs (issue 26): SIGTERM mid-epoch, then --resume auto, gives the per-step losses,
weights and metrics of a run that never stopped; a corrupt newest checkpoint falls back; a
non-finite loss is skipped and counted, K in a row stop the run; a full disk keeps the
previous checkpoint; a stalled data step is named. Real processes, real signals, real videos."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from accel.data.batch import ClipBatch
from accel.train.checkpoint import CheckpointWriteError, read_checkpoint, save_checkpoint
from accel.train.engine import EpochState, StepHooks, train_one_epoch
from accel.train.optim import LRSchedule
from accel.train.preempt import EXIT_NONFINITE, EXIT_PREEMPTED
from accel.train.rolling import RollingCheckpoints, newest_checkpoint, step_name

ROOT = Path(__file__).resolve().parents[2]
# The smallest model that trains here: a 1+1-layer ViViT of width 24 (dropout on, so the
# resumed run must also redraw the same dropout masks), 4-frame 32 px clips, 8 steps an epoch.
TINY = ["--model", "vivit", "--model_arg", "dim=24", "--model_arg", "spatial_depth=1",
        "--model_arg", "temporal_depth=1", "--model_arg", "heads=2", "--model_arg", "mlp_dim=48",
        "--model_arg", "dropout=0.1", "--model_arg", "image_size=32", "--model_arg", "num_frames=4",
        "--clip_len", "4", "--size", "32", "--batch_size", "2", "--epochs", "2", "--num_workers", "0",
        "--device", "cpu", "--no_progress", "--no_tensorboard", "--no_video_eval", "--save_every_steps", "2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
EXACT = ("epoch", "lr", "train_loss", "train_accuracy", "train_clips", "train_step_losses", "val_loss",
         "val_accuracy", "val_auroc", "score", "best", "train_nonfinite", "val")


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--data_dir", str(data), "--out_dir", str(out), *TINY, *extra]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV, **kw)


def wait_for(pattern: str, folder: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before writing {pattern}"
        assert time.monotonic() < end, f"no {pattern} in {folder} after {timeout} s"
        time.sleep(0.05)


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert len(ma["epochs"]) == len(mb["epochs"])
    for ea, eb in zip(ma["epochs"], mb["epochs"]):
        assert {k: ea[k] for k in EXACT} == {k: eb[k] for k in EXACT}
    assert ma["ddp"] == mb["ddp"] and ma["best_epoch"] == mb["best_epoch"]
    assert {k: v for k, v in ma["test"].items() if k != "checkpoint"} == \
        {k: v for k, v in mb["test"].items() if k != "checkpoint"}
    wa, wb = (read_checkpoint(d / "last.pt")["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class BackgroundRun:
    """A train.py run going on while the tests start theirs: every run here is single-threaded
    (OMP_NUM_THREADS=1) and the machine has 2 cores. ``finished()`` waits for it."""

    def __init__(self, cmd: list[str], folder: Path):
        self.folder = folder
        with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=stdout, stderr=stderr)

    def finished(self) -> subprocess.CompletedProcess:
        try:
            rc = self.proc.wait(timeout=300)
        finally:
            self.stop()
        r = subprocess.CompletedProcess(self.proc.args, rc, (self.folder / "stdout").read_text(),
                                        (self.folder / "stderr").read_text())
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, temporal_dataset):
    """The reference run, started at once; --resume auto in its empty folder starts fresh, and
    every data step is over --stall_warn_s (neither changes a number)."""
    folder = tmp_path_factory.mktemp("whole")
    run = BackgroundRun(train_cmd(temporal_dataset, folder / "run", "--resume", "auto", "--stall_warn_s", "0.000001"),
                        folder)
    yield run
    run.stop()


@pytest.fixture(scope="module")
def uninterrupted_run(reference) -> tuple[Path, subprocess.CompletedProcess]:
    return reference.folder / "run", reference.finished()


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run) -> Path:
    return uninterrupted_run[0]


def test_sigterm_mid_epoch_then_resume_auto_is_exact(reference, temporal_dataset, tmp_path):
    out = tmp_path / "cut"
    errors = tmp_path / "stderr"
    proc = subprocess.Popen(train_cmd(temporal_dataset, out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=open(errors, "w"))  # a file: a full pipe would stall the run
    try:
        wait_for("step-e0000-*.pt", out, proc)  # the first mid-epoch checkpoint of epoch 1 is there
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = errors.read_text()
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    stop = [line for line in err.splitlines() if "preempted by SIGTERM" in line]
    assert len(stop) == 1 and "--resume auto" in stop[0], err[-3000:]
    assert not (out / "metrics.json").exists() or json.loads((out / "metrics.json").read_text())["test"] is None
    newest = newest_checkpoint(out, require=("model",))[0]
    assert newest is not None and newest.name in stop[0]

    r = run(train_cmd(temporal_dataset, out, "--resume", "auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"--resume auto: {newest}" in r.stdout and f"resumed from {newest}" in r.stdout
    reference.finished()  # the reference run went on alongside this one
    assert_same_run(reference.folder / "run", out)
    assert len(list(out.glob("step-*.pt"))) == 2  # --keep_checkpoints 2


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(uninterrupted, temporal_dataset, tmp_path):
    out = tmp_path / "corrupt"
    out.mkdir()
    ck = read_checkpoint(uninterrupted / "step-e0001-s000000012.pt")
    save_checkpoint(ck, out / "step-e0001-s000000012.pt")
    newest = out / "step-e0001-s000000016.pt"
    newest.write_bytes((uninterrupted / "step-e0001-s000000016.pt").read_bytes()[:5000])  # truncated
    r = run(train_cmd(temporal_dataset, out, "--resume", "auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    fallback = [line for line in r.stdout.splitlines() if newest.name in line]
    assert len(fallback) == 1 and "falling back to step-e0001-s000000012.pt" in fallback[0], r.stdout
    assert f"resumed from {out / 'step-e0001-s000000012.pt'}" in r.stdout
    assert_same_run(uninterrupted, out)


def test_resume_auto_in_an_empty_folder_starts_fresh_and_stalls_are_named(uninterrupted_run):
    out, r = uninterrupted_run
    assert f"--resume auto: no checkpoint in {out}: starting fresh" in r.stdout
    # every data step is over a microsecond: each is named, with its decoder, once
    stalls = [line for line in r.stderr.splitlines() if line.startswith("warning: epoch ")]
    assert len(stalls) == 16 and "(decoder " in stalls[0] and "--stall_warn_s 1e-06" in stalls[0], r.stderr
    assert stalls[0].startswith("warning: epoch 1 step 1 ") and stalls[-1].startswith("warning: epoch 2 step 8 ")


class WatchedSteps(StepHooks):
    """The stall watch of LongRunHooks, alone: armed before each fetch, stopped on arrival."""

    def __init__(self, limit_s: float):
        from accel.train.longrun import StallWatch

        self.stall = StallWatch(limit_s, lambda step: f"step {step + 1}")

    def before_batch(self, step: int) -> None:
        self.stall.start(step)

    def got_batch(self, step: int, batch) -> None:
        self.stall.stop()

    def data_ended(self) -> None:
        self.stall.cancel()


class SlowToEnd:
    """Batches that arrive at once, then a loader that takes ``end_s`` to say it is done (as
    a DataLoader shutting its workers down)."""

    def __init__(self, batches: list, end_s: float):
        self.batches, self.end_s = batches, end_s

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches
        time.sleep(self.end_s)


def test_the_stall_watch_names_slow_steps_and_not_the_end_of_the_data(capsys):
    """Every step is over the limit and warned once; the wait for the loader's end is not a
    step: the warning for step 4 of 3 came under load, when the epoch's end took a while."""
    model = bn_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooks = WatchedSteps(1e-6)
    train_one_epoch(model, model, nn.CrossEntropyLoss(), opt, LRSchedule(opt, total_steps=3),
                    SlowToEnd(clip_batches(3), end_s=0.2), hooks=hooks)
    time.sleep(0.2)  # the watch thread looks every 10 ms: long enough to warn, were it armed
    hooks.stall.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["step 1", "step 2", "step 3"], lines
    assert all("took" in line or "has taken" in line for line in lines)


# --------------------------------------------------------------------------- non-finite losses
def clip_batches(n: int, *, poison=(), batch: int = 2) -> list[ClipBatch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        clip = torch.randn(batch, 3, 2, 8, 8, generator=g)
        if i in poison:
            clip[0, 0, 0, 0, 0] = float("nan")
        out.append(ClipBatch(clip=clip, label=torch.arange(batch) % 3, video_id=torch.arange(batch) + batch * i,
                             indices=torch.zeros(batch, 2, dtype=torch.int64)))
    return out


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4 * 2 * 8 * 8, 3))


def test_a_non_finite_batch_is_skipped_and_counted_and_poisons_nothing():
    model = bn_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_one_epoch(model, model, nn.CrossEntropyLoss(), opt, LRSchedule(opt, total_steps=4),
                            clip_batches(4, poison={1}))
    assert stats["nonfinite"] == 1 and stats["clips"] == 6
    assert stats["step_losses"][1] is None and all(v is not None for i, v in enumerate(stats["step_losses"]) if i != 1)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())  # BN statistics put back

    # the same as training on the three good batches alone
    clean = bn_model()
    opt2 = torch.optim.SGD(clean.parameters(), lr=0.1)
    good = [b for i, b in enumerate(clip_batches(4)) if i != 1]
    train_one_epoch(clean, clean, nn.CrossEntropyLoss(), opt2, LRSchedule(opt2, total_steps=4), good)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), clean.state_dict().values()))


def test_k_non_finite_losses_in_a_row_stop_the_run_with_one_line_and_a_checkpoint(temporal_dataset, tmp_path):
    """A real run whose learning rate makes the weights blow up: every loss is then non-finite."""
    out = tmp_path / "nan"
    r = run(train_cmd(temporal_dataset, out, "--lr", "1e30", "--opt", "sgd", "--max_nonfinite", "2",
                      "--save_every_steps", "0"))
    assert r.returncode == EXIT_NONFINITE, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if "non-finite losses in a row" in line]
    assert len(lines) == 1 and "--max_nonfinite 2" in lines[0] and str(temporal_dataset) in lines[0], r.stderr
    saved = Path(lines[0].split("last good state saved in ")[1])
    ck = read_checkpoint(saved)
    assert ck["in_epoch"]["ranks"][0]["nonfinite"] == 2
    # the last good state: weights of the last finite step (the step that blew up came after)
    finite = [v for v in ck["in_epoch"]["ranks"][0]["step_losses"] if v is not None]
    assert len(finite) == len(ck["in_epoch"]["ranks"][0]["step_losses"]) - 2


# --------------------------------------------------------------------------- disk full
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    rolling = RollingCheckpoints(tmp_path, keep=2)
    first = rolling.save({"model": {"w": torch.ones(3)}, "epoch": 0}, 0, 2)
    real_save = torch.save

    def full_disk(obj, f):
        real_save(obj, f)  # some bytes reach the file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as e:
        rolling.save({"model": {"w": torch.zeros(2**20)}, "epoch": 0}, 0, 4)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message and "no space left" in message
    assert "needs about 4.0 MB" in message  # 2**20 float32
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no partial file, nothing pruned
    assert torch.equal(read_checkpoint(first)["model"]["w"], torch.ones(3))


def test_only_the_newest_k_step_checkpoints_are_kept(tmp_path):
    rolling = RollingCheckpoints(tmp_path, keep=2)
    for samples in (2, 4, 6):
        rolling.save({"model": {}, "epoch": -1, "in_epoch": {"epoch": 0, "ranks": [{"samples": samples}]}}, 0, samples)
    assert sorted(p.name for p in tmp_path.iterdir()) == [step_name(0, 4), step_name(0, 6)]


class StopAtStep(StepHooks):
    def after_step(self, state: EpochState) -> bool:
        return state.batches == 2


def test_an_epoch_resumed_from_its_state_equals_the_whole_epoch():
    whole = bn_model()
    opt = torch.optim.SGD(whole.parameters(), lr=0.1)
    full = train_one_epoch(whole, whole, nn.CrossEntropyLoss(), opt, LRSchedule(opt, total_steps=4), clip_batches(4))

    part = bn_model()
    opt2 = torch.optim.SGD(part.parameters(), lr=0.1)
    sched = LRSchedule(opt2, total_steps=4)
    first = train_one_epoch(part, part, nn.CrossEntropyLoss(), opt2, sched, clip_batches(4), hooks=StopAtStep())
    assert first["stopped"] and first["state"].batches == 2 and first["state"].samples == 4
    state = EpochState.from_state_dict(first["state"].state_dict())
    rest = train_one_epoch(part, part, nn.CrossEntropyLoss(), opt2, sched, clip_batches(4)[2:], state=state)
    assert rest["step_losses"] == full["step_losses"] and rest["loss_sum"] == full["loss_sum"]
    assert rest["video_ids"] == full["video_ids"]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), part.state_dict().values()))


def test_a_resumed_position_counts_the_samples_of_skipped_batches(temporal_dataset, tmp_path):
    """A batch whose every file is unreadable is not trained, but its samples are part of the
    epoch's order: the next batch carries their skips, so a resumed epoch starts past them."""
    from accel import build_loader
    from accel.data.manifests import Manifest, VideoItem

    good = sorted((temporal_dataset / "train").rglob("*.mp4"))[:4]
    bad = []
    for i in range(2):
        bad.append(tmp_path / f"broken{i}.mp4")
        bad[-1].write_text("this is not a video\n" * 20)
    items = [VideoItem(str(p), 0) for p in [*bad, *good]]
    loader = build_loader(Manifest(items, ["a"]), batch_size=2, clip_len=2, num_workers=0, shuffle=False)
    loader.set_epoch(0)
    batches = list(loader)
    assert [b.video_id.tolist() for b in batches] == [[2, 3], [4, 5]]
    assert [p for p, _ in batches[0].skipped] == [str(p) for p in bad]  # carried from the dropped batch
    state = EpochState()
    for b in batches[:1]:
        state.samples += len(b.video_id) + len(b.skipped)
    loader.set_epoch(0, start=state.samples)  # resume after the first trained batch
    assert [b.video_id.tolist() for b in loader] == [[4, 5]]


def test_sigusr1_asks_to_stop_and_a_second_signal_exits_at_once():
    code = ("import os, signal, time\n"
            "from accel.train.preempt import PreemptionFlag\n"
            "flag = PreemptionFlag().install()\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\n"
            "time.sleep(0.1)\n"
            "print(flag.requested, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\n"
            "time.sleep(5)\n"
            "print('still running')\n")
    r = run([sys.executable, "-c", code])
    assert r.stdout.split() == ["SIGUSR1"], r.stdout + r.stderr
    assert r.returncode == 128 + signal.SIGUSR1 == 138
    assert r.stderr.strip() == "SIGUSR1 again: stopping at once, nothing saved"
