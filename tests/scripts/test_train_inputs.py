"""train.py / evaluate.py on the inputs users bring: missing and unreadable files, empty splits,
resumed runs, the seeds' flags; each problem is one line and exit status 2."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--model", "tsn_resnet18", "--clip_len", "4", "--size", "32", "--batch_size", "4", "--lr", "1e-3",
        "--no_progress", "--num_workers", "0", "--epochs", "1", "--no_video_eval", "--no_tensorboard"]


def load(script: str):
    return load_script(script.removesuffix(".py"), f"{script}_mod")


@pytest.fixture(scope="module")
def train_mod():
    return load("train.py")


@pytest.fixture(scope="module")
def eval_mod():
    return load("evaluate.py")


def run_main(mod, argv) -> dict:
    return mod.main(mod.get_args_parser().parse_args([str(a) for a in argv]))


def one_line_exit(mod, capsys, argv, prog="train.py") -> str:
    with pytest.raises(SystemExit) as e:
        run_main(mod, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    return err


def csv_of(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("path,label,split\n" + "".join(f"{p},{lbl},{s}\n" for p, lbl, s in rows))
    return path


def dataset_rows(root: Path) -> list[tuple[str, str, str]]:
    return [(str(p), p.parent.name, split) for split in ("train", "val", "test")
            for p in sorted((root / split).glob("*/*.mp4"))]


# --------------------------------------------------------------------------- missing and bad files
def test_missing_files_named_before_training_and_skips_listed_at_the_end(train_mod, capsys, tmp_path,
                                                                          temporal_dataset):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    rows = dataset_rows(temporal_dataset) + [("gone1.mp4", "peak", "train"), ("gone2.mp4", "dip", "train"),
                                             ("notes.mp4", "peak", "train")]
    data = csv_of(tmp_path / "data.csv", rows)
    run_main(train_mod, ["--data_dir", data, "--out_dir", tmp_path / "run", *FAST])
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("warning: train:"))
    assert "2 of the 19 files" in warning and "gone1.mp4" in warning and "gone2.mp4" in warning
    assert out.index(warning) < out.index("epoch 1/1")  # before training
    tail = out[out.index("skipped 3 files"):]
    assert "metrics.json" in tail.splitlines()[0]
    assert f"{tmp_path / 'gone1.mp4'}: missing (no such file)" in tail
    assert f"{tmp_path / 'notes.mp4'}: not a video" in tail
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reasons = dict(m["skipped"]["train"])
    assert reasons[str(tmp_path / "gone2.mp4")].startswith("missing") and m["num_skipped"] == 3


def test_no_listed_file_exists_is_one_line(train_mod, capsys, tmp_path):
    data = csv_of(tmp_path / "meta.csv", [(f"v{i}.mp4", "ab"[i % 2], "train") for i in range(8)])
    err = one_line_exit(train_mod, capsys, ["--data_dir", data, *FAST])
    assert "none of the" in err and "v0.mp4" in err and "--video_root" in err


def test_missing_file_under_on_error_raise_is_one_line(train_mod, capsys, tmp_path, temporal_dataset):
    data = csv_of(tmp_path / "d.csv", dataset_rows(temporal_dataset) + [("gone.mp4", "peak", "train")])
    err = one_line_exit(train_mod, capsys, ["--data_dir", data, "--on_error", "raise", *FAST])
    assert "1 of the 17 files" in err and "gone.mp4" in err


def _text_videos(folder: Path, classes=("dip", "peak"), n=2) -> None:
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            (folder / c / f"{c}{i}.mp4").write_text("text, not a video\n")


def test_no_readable_training_video_is_one_line(train_mod, capsys, tmp_path, temporal_dataset):
    _text_videos(tmp_path / "d" / "train")
    for c in ("dip", "peak"):
        shutil.copytree(temporal_dataset / "val" / c, tmp_path / "d" / "val" / c)
    err = one_line_exit(train_mod, capsys, ["--data_dir", tmp_path / "d", "--out_dir", tmp_path / "o", *FAST])
    assert "train: no readable video: all 4" in err and "not a video" in err


def test_empty_validation_after_skipping_is_refused(train_mod, capsys, tmp_path, temporal_dataset):
    for c in ("dip", "peak"):
        shutil.copytree(temporal_dataset / "train" / c, tmp_path / "d" / "train" / c)
    _text_videos(tmp_path / "d" / "val")
    err = one_line_exit(train_mod, capsys, ["--data_dir", tmp_path / "d", "--out_dir", tmp_path / "o", *FAST])
    assert "val: no readable video" in err and "best checkpoint" in err
    assert not (tmp_path / "o" / "best.pt").exists()


def test_on_error_raise_is_one_line_from_workers(tmp_path, temporal_dataset):
    data = tmp_path / "d"
    shutil.copytree(temporal_dataset, data)
    (data / "train" / "peak" / "notes.mp4").write_text("text, not a video\n")
    # train.py drops a last batch of one (BatchNorm); a batch size that leaves none makes sure
    # the bad file is read whatever the shuffled order
    n = sum(1 for f in (data / "train").rglob("*.mp4"))
    batch = next(b for b in (4, 3, 5) if n % b != 1)
    cmd = [sys.executable, str(ROOT / "train.py"), "--data_dir", str(data), "--out_dir", str(tmp_path / "o"),
           "--on_error", "raise", *FAST[:6], "--batch_size", str(batch), "--lr", "1e-3",
           "--num_workers", "2", "--epochs", "1", "--no_progress"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(err) == 1, r.stderr[-3000:]
    assert err[0].startswith("train.py: error: --on_error raise: ") and "notes.mp4: not a video" in err[0]


def test_debug_shows_the_exception(train_mod, tmp_path):
    from accel.cli import UsageError

    with pytest.raises(UsageError, match="no such file"):
        run_main(train_mod, ["--data_dir", tmp_path / "nope", *FAST, "--debug"])


@pytest.mark.parametrize("body, needle", [
    ("path,label\nv.mp4,0\nw\xe9.mp4,1\n".encode("latin-1"), ":3: not UTF-8"),
    (b"path,label\nv.mp4,0\nw.mp4,\n", ":3: no 'label' value"),
    (b"path,label\nv.mp4,0\nw.mp4,--1\n", ":3: label '--1'"),
    (b"file_name_x,label\nv.mp4,0\n", "no path column"),
])
def test_csv_problems_stop_train_py_with_one_line(train_mod, capsys, tmp_path, body, needle):
    f = tmp_path / "labels.csv"
    f.write_bytes(body)
    err = one_line_exit(train_mod, capsys, ["--data_dir", f, *FAST])
    assert f"{f}" in err and needle in err


# --------------------------------------------------------------------------- seeds' flags
def test_seed_flag_errors_are_one_line(train_mod, capsys, tmp_path, temporal_dataset, monkeypatch):
    err = one_line_exit(train_mod, capsys, ["--data_dir", temporal_dataset, *FAST, "--segments", "4"])
    assert "add --model r3d_18_late_fusion" in err
    err = one_line_exit(train_mod, capsys, ["--data_dir", temporal_dataset, *FAST, "--loss", "bce"])
    assert "two classes" in err and "4" in err
    # no network: the message names train.py's flag, not the Python API
    import urllib.error

    from torchvision.models import WeightsEnum

    def offline(self, *a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    err = one_line_exit(train_mod, capsys, ["--data_dir", temporal_dataset, *FAST, "--pretrained"])
    assert "--weights FILE" in err and "checkpoint_path" not in err
    a = train_mod.get_args_parser().parse_args(["--data_dir", "d", "--model", "cnnlstm"])
    assert a.model == "cnn_lstm"


# --------------------------------------------------------------------------- resume
# On the session's trained_run (tests/conftest.py): 2 epochs of tsn_resnet18, 4x32 clips,
# --train_sampling random; checkpoints in trained_run.model, reports in trained_run.log.
def test_resume_restores_model_clip_size_and_data(train_mod, capsys, tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run.model, run)
    capsys.readouterr()
    # --out_dir: the copy's outputs go to the copy (the checkpoint names the shared run's folders)
    result = run_main(train_mod, ["--resume", run / "last.pt", "--epochs", "3", "--no_progress",
                                  "--num_workers", "0", "--out_dir", run])
    assert len(result["history"]) == 3
    config = json.loads((run / "config.json").read_text())  # written by the resumed run
    assert (config["model"], config["clip_len"], config["size"], config["train_sampling"]) == (
        "tsn_resnet18", 4, 32, "random")
    err = one_line_exit(train_mod, capsys, ["--resume", run / "last.pt", "--model", "tsm_resnet18"])
    assert "trained with --model tsn_resnet18, not --model tsm_resnet18" in err


def test_resume_states_a_changed_option(train_mod, trained_run):
    import torch

    ck = torch.load(trained_run.model / "last.pt", weights_only=True)
    last = str(trained_run.model / "last.pt")
    args = train_mod.get_args_parser().parse_args(["--resume", last, "--clip_len", "8"])
    assert args.given == {"resume", "clip_len"}  # one parse tells given options from defaults
    cfg, resumed, notes = train_mod.resume_checkpoint(train_mod.TrainConfig.from_options(args), args.given)
    assert notes == ["--clip_len 8 replaces the checkpoint's 4"] and resumed["epoch"] == ck["epoch"]
    assert (cfg.size, cfg.model, cfg.clip_len, cfg.num_workers) == (32, "tsn_resnet18", 8, 2)
    assert ck["config"]["clip_len"] == 4 and ck["config"]["model"] == "tsn_resnet18"  # the run's TrainConfig
    old = {k: v for k, v in ck.items() if k != "config"}  # a checkpoint from before "config"
    assert train_mod.resume_checkpoint(train_mod.TrainConfig.from_options(args), args.given)[0] == cfg
    from accel.train.checkpoint import resumed_options

    assert resumed_options(old, cfg.as_dict(), args.given)[0]["size"] == 32


# --------------------------------------------------------------------------- evaluate.py / test.py
def test_evaluate_checks_num_frames_and_segments(eval_mod, capsys, trained_run, temporal_dataset):
    common = ["--model_path", trained_run.model / "best.pt", "--data_root", temporal_dataset, "--no_progress"]
    err = one_line_exit(eval_mod, capsys, [*common, "--num_frames", "16"], prog="evaluate.py")
    assert "--num_frames 16" in err and "4-frame clips" in err
    err = one_line_exit(eval_mod, capsys, [*common, "--segments", "4"], prog="evaluate.py")
    assert "--segments 4" in err and "no segments" in err
    err = one_line_exit(eval_mod, capsys, ["--model_path", trained_run.model / "nothing.pth", "--data_root",
                                           temporal_dataset], prog="evaluate.py")
    assert "nothing.pth" in err


def test_test_py_is_evaluate_py_under_seed_004s_name(tmp_path, trained_run, temporal_dataset):
    r = subprocess.run([sys.executable, str(ROOT / "test.py"), "--data_root", str(temporal_dataset),
                        "--model_path", str(trained_run.model / "best_model.pth"), "--num_frames", "4",
                        "--batch_size", "8", "--out_dir", str(tmp_path / "output_test"), "--no_progress",
                        "--no_video_eval"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"using {trained_run.model / 'best.pt'}" in r.stdout
    assert json.loads((tmp_path / "output_test" / "metrics.json").read_text())["test"]["clip"]["n"] == 4
