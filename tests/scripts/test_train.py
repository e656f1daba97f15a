"""train.py: start-up errors, outputs, checkpoints, bad files, seed flags, resume.

Training runs use the session's tiny temporal dataset (4 classes x 6 videos, 32 px) and the
cheapest model (tsn_resnet18, 4-frame clips), so each run takes seconds on 2 CPU cores.
The learning acceptance runs live in tests/scripts/test_train_acceptance.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--model", "tsn_resnet18", "--clip_len", "4", "--size", "32", "--batch_size", "4",
        "--lr", "1e-3", "--no_progress", "--num_workers", "0"]


def run_script(script: str, *args, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=e)


def load_train_module():
    return load_script("train")


@pytest.fixture(scope="module")
def train_mod():
    return load_train_module()


def startup_error(train_mod, capsys, argv) -> str:
    """Run train.py's main in-process; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        train_mod.main(train_mod.get_args_parser().parse_args([str(a) for a in argv]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: "), err
    return err


# --------------------------------------------------------------------------- start-up errors
def test_missing_folder(train_mod, capsys, tmp_path):
    err = startup_error(train_mod, capsys, ["--data_dir", tmp_path / "nope", *FAST])
    assert "nope" in err and "no such" in err


def test_empty_class_folder(train_mod, capsys, tmp_path, temporal_dataset):
    data = tmp_path / "data"
    shutil.copytree(temporal_dataset, data)
    for f in (data / "train" / "dip").iterdir():
        f.unlink()
    err = startup_error(train_mod, capsys, ["--data_dir", data, *FAST])
    assert "dip" in err and "no videos" in err


def test_one_class_only(train_mod, capsys, tmp_path, temporal_dataset):
    data = tmp_path / "one"
    shutil.copytree(temporal_dataset / "train" / "peak", data / "peak")
    err = startup_error(train_mod, capsys, ["--data_dir", data, *FAST])
    assert "only one class" in err


def test_missing_test_dir(train_mod, capsys, tmp_path, temporal_dataset):
    err = startup_error(train_mod, capsys, ["--data_dir", temporal_dataset, "--test_dir",
                                            tmp_path / "gone", *FAST])
    assert "--test_dir" in err


@pytest.mark.parametrize("argv, needle", [
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--loss_weight", "1.5"], "--loss_weight"),
    (["--loss-weight", "-0.1"], "must be in [0, 1]"),
    (["--train_sampling", "sideways"], "invalid choice: 'sideways'"),
    (["--epochs", "0"], "must be >= 1"),
    (["--model", "r3d_18_late_fusion", "--clip_len", "6"], "cannot take 6-frame clips"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--decoder", "dali"], "--"),
    pytest.param(["--decoder", "dali"], "--decoder dali: backend 'dali' decodes on the GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    pytest.param(["--backend", "dali"], "--decoder dali: backend 'dali' decodes on the GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    (["--decoder", "ffmpeg"], "invalid choice: 'ffmpeg'"),
])
def test_bad_arguments(train_mod, capsys, temporal_dataset, argv, needle):
    err = startup_error(train_mod, capsys, ["--data_dir", temporal_dataset, *FAST, *argv])
    assert needle in err


def test_startup_error_in_a_real_process(tmp_path):
    """Exit status 2, one line, no traceback, from the command line."""
    r = run_script("train.py", "--data_dir", tmp_path / "missing", "--model", "cnn_lstm")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("train.py: error: ")


def test_dash_and_underscore_spellings(train_mod):
    p = train_mod.get_args_parser()
    a = p.parse_args(["--data-dir", "x", "--clip-len", "8", "--loss-weight", "0.5", "--train-sampling",
                      "dense", "--no-channels-last", "--log-dir", "L", "--model-dir", "M"])
    b = p.parse_args(["--data_dir", "x", "--clip_len", "8", "--loss_weight", "0.5", "--train_sampling",
                      "dense", "--no_channels_last", "--log_dir", "L", "--model_dir", "M"])
    assert vars(a) == vars(b)
    assert a.clip_len == 8 and a.channels_last is False and a.train_sampling == "dense"


def test_decoder_and_its_old_name(train_mod, capsys):
    """--decoder is the video decoder; --backend, its old name, parses to the same thing. The
    choices are the loader's list, and a wrong one is refused naming them."""
    from accel.data.loader import LOADER_BACKENDS

    p = train_mod.get_args_parser()
    for name in LOADER_BACKENDS:
        a, b = p.parse_args(["--decoder", name]), p.parse_args(["--backend", name])
        assert a.decoder == b.decoder == name and vars(a) == vars(b) and not hasattr(a, "backend")
    assert p.parse_args([]).decoder == "auto"
    for flag in ("--decoder", "--backend"):
        with pytest.raises(SystemExit) as exc:
            p.parse_args([flag, "ffmpeg"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "invalid choice: 'ffmpeg'" in err and all(name in err for name in LOADER_BACKENDS), err
    help_text = " ".join(p.format_help().split())  # unwrapped
    assert "--decoder" in help_text and "--backend is its old name" in help_text


def test_seed_command_line_is_accepted(train_mod):
    """The laryngoscopy seed's README command, verbatim apart from the script path."""
    a = train_mod.get_args_parser().parse_args(
        "--data_dir path/to/train_and_val_dataset --test_dir path/to/test_dataset --log_dir logs "
        "--model_dir models --train_sampling uniform --val_sampling uniform --test_sampling uniform "
        "--loss_weight 0.3".split())
    assert (a.data_dir, a.test_dir, a.log_dir, a.model_dir, a.loss_weight) == (
        "path/to/train_and_val_dataset", "path/to/test_dataset", "logs", "models", 0.3)
    assert a.model is None
    assert train_mod.TrainConfig.from_options(a).default_model() == "resnet50_lstm"  # the seed's
    # seed 004's flags (late fusion): --data_root --num_frames --segments --wd --augment
    b = train_mod.get_args_parser().parse_args(
        "--data_root d --num_frames 16 --segments 4 --epochs 30 --batch_size 8 --lr 1e-4 --wd 1e-4 "
        "--patience 5 --num_workers 4 --out_dir output --augment".split())
    assert (b.data_dir, b.clip_len, b.segments, b.weight_decay, b.augment) == ("d", 16, 4, 1e-4, "full")
    assert train_mod.TrainConfig.from_options(b).default_model() == "r3d_18_late_fusion"  # --segments


def test_the_models_statistics_reach_training_and_evaluation(train_mod):
    """train.py normalises (and records for evaluate.py) what the model's data config says:
    Kinetics for the torchvision 3-D models, ImageNet for the 2-D trunks."""
    from accel.data.config import IMAGENET_MEAN, IMAGENET_STD, KINETICS400_MEAN, KINETICS400_STD
    from accel.train.evaluation import EvalSettings
    from models import create_model, resolve_data_config

    a = train_mod.get_args_parser().parse_args(["--data_dir", "x", "--clip_len", "4", "--size", "32"])
    cfg = train_mod.TrainConfig.from_options(a, decode_size=32)  # as set-up leaves it
    for name, stats in (("r3d_18", (KINETICS400_MEAN, KINETICS400_STD)),
                        ("tsm_resnet18", (IMAGENET_MEAN, IMAGENET_STD))):
        mean, std = resolve_data_config(create_model(name, num_classes=2)).stats
        s = EvalSettings.of_run(cfg, "uniform", mean=mean, std=std, video_level=False)
        assert (tuple(s.mean), tuple(s.std)) == stats, name


# --------------------------------------------------------------------------- a short run
# The session's trained_run (tests/conftest.py): two epochs with logs and checkpoints in separate
# folders (the seed's layout), warm-up, label smoothing, clipping, accumulation 2, balanced sampler.
def test_run_writes_every_report(trained_run):
    log, model = trained_run.log, trained_run.model
    for name in ("metrics.json", "config.json", "log.csv", "loss_curves.png", "accuracy_curves.png",
                 "test_confusion_matrix.png", "test_roc_curve.png", "test_per_class_accuracy.png",
                 "test_video_confusion_matrix.png", "test_predictions.csv"):
        assert (log / name).is_file(), name
    assert list((log / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in model.iterdir()} >= {"best.pt", "last.pt"}
    assert not list(log.glob("*.pt")) and not list(model.glob("*.png"))
    rows = (log / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,lr,train_loss")
    out = trained_run.stdout
    assert "test clip-level: n=4 accuracy=" in out and "test video-level" in out and "plots:" in out


def test_metrics_json_contents(trained_run):
    m = json.loads((trained_run.log / "metrics.json").read_text())
    assert m["model"] == "tsn_resnet18" and m["classes"] == ["dip", "peak", "ramp_down", "ramp_up"]
    assert [e["epoch"] for e in m["epochs"]] == [0, 1]
    e = m["epochs"][0]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auroc", "score",
                "lr", "train_clips_per_s", "train_data_wait"):
        assert key in e
    assert e["val"]["confusion_matrix"] and e["val"]["per_class"]
    assert m["best_epoch"] in (0, 1) and m["best_val"] is not None
    t = m["test"]
    assert t["clip"]["n"] == 4 and t["video"]["n"] == 4 and t["video"]["windows"] >= 4
    assert t["checkpoint"].endswith("best.pt") and t["epoch"] == m["best_epoch"]
    assert m["skipped"] == {"train": [], "val": [], "test": []} and m["num_skipped"] == 0
    assert m["config"]["loss_weight"] == 0.3 and m["config"]["balanced_sampler"] is True


def test_checkpoints_are_plain_and_complete(trained_run):
    ck = torch.load(trained_run.model / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["model_name"] == "tsn_resnet18"
    for key in ("model", "optimizer", "schedule", "scaler", "selector", "rng", "args", "classes",
                "history", "eval", "model_kwargs"):
        assert key in ck, key
    assert ck["schedule"]["step_count"] == 4  # 16 clips / batch 4 = 4 batches, accum 2 -> 2 steps x 2
    best = torch.load(trained_run.model / "best.pt", weights_only=True)
    assert best["epoch"] == best["selector"]["best_epoch"]
    from models import create_model, load_weights

    load_weights(create_model("tsn_resnet18", num_classes=4), trained_run.model / "best.pt")


# --------------------------------------------------------------------------- bad files
def run_main(train_mod, *argv) -> None:
    """train.py's main in this process: no interpreter start-up for a run whose claim is not
    about the process (test_startup_error_in_a_real_process and the resume test are)."""
    train_mod.main(train_mod.get_args_parser().parse_args([str(a) for a in argv]))


def test_bad_files_are_skipped_and_listed(train_mod, capsys, tmp_path, temporal_dataset):
    data = tmp_path / "data"
    shutil.copytree(temporal_dataset, data)
    (data / "train" / "dip" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    good = next((data / "train" / "peak").glob("*.mp4"))
    (data / "train" / "peak" / "truncated.mp4").write_bytes(good.read_bytes()[:300])
    (data / "test" / "ramp_up" / "empty.mp4").write_bytes(b"")
    out = tmp_path / "run"
    run_main(train_mod, "--data_dir", data, "--out_dir", out, "--epochs", "1", *FAST)
    stdout = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    train_names = {Path(p).name for p, _ in m["skipped"]["train"]}
    assert {"broken.mp4", "truncated.mp4"} <= train_names
    assert {Path(p).name for p, _ in m["skipped"]["test"]} == {"empty.mp4"}
    assert m["num_skipped"] == len(train_names) + 1
    assert all(reason for _, reason in m["skipped"]["train"])
    assert m["test"]["clip"]["n"] == 4  # the 4 good test videos
    assert "skipped" in stdout


def test_csv_manifest_without_val_split(train_mod, capsys, tmp_path, temporal_dataset):
    """A CSV path,label,split with no val rows: val is split off train, stratified."""
    rows = ["path,label,split"]
    for split in ("train", "test"):
        for f in sorted((temporal_dataset / split).rglob("*.mp4")):
            rows.append(f"{f},{f.parent.name},{split}")
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    run_main(train_mod, "--data_dir", csv_path, "--out_dir", out, "--epochs", "1", *FAST,
             "--no_video_eval", "--no_tensorboard", "--loss", "focal", "--sched", "plateau",
             "--opt", "sgd", "--class_weights", "1,2,1,1")
    assert "held out 4" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"][0]["val"]["n"] == 4 and "video" not in m["test"]
    assert (m["config"]["loss"], m["config"]["sched"], m["config"]["opt"]) == ("focal", "plateau", "sgd")
    assert not (out / "tensorboard").exists()


# --------------------------------------------------------------------------- resume
def _final_weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_resume_after_kill_gives_the_same_weights(tmp_path, temporal_dataset):
    """A run killed (SIGKILL) after an epoch and resumed ends with the same weights, optimiser
    state and history as an uninterrupted run (CPU, fixed seed, random sampling + augmentation)."""
    common = ["--data_dir", temporal_dataset, "--epochs", "3", *FAST, "--train_sampling", "random",
              "--warmup_epochs", "1", "--seed", "3", "--no_video_eval", "--no_tensorboard"]
    full = tmp_path / "full"
    r = run_script("train.py", *common, "--out_dir", full)
    assert r.returncode == 0, r.stderr[-3000:]

    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, common), "--out_dir", part],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (part / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(part / "last.pt", weights_only=True)["epoch"]
    assert killed_at < 2, "the run finished before it could be killed"
    r = run_script("train.py", *common, "--out_dir", part, "--resume", part / "last.pt")
    assert r.returncode == 0, r.stderr[-3000:]
    # 1-based, as the epoch lines count: the epoch after the one the checkpoint finished
    assert f"resumed from {part / 'last.pt'}: epoch {killed_at + 2} of 3" in r.stdout

    a, b = _final_weights(full / "last.pt"), _final_weights(part / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca, cb = torch.load(full / "last.pt", weights_only=True), torch.load(part / "last.pt", weights_only=True)
    for k, v in ca["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], cb["optimizer"]["state"][k]["exp_avg"])
    assert ca["schedule"] == cb["schedule"] and ca["selector"] == cb["selector"]
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((part / "metrics.json").read_text())
    strip = ("train_time_s", "epoch_time_s", "train_clips_per_s", "train_data_wait")
    assert [{k: v for k, v in e.items() if k not in strip} for e in ma["epochs"]] == \
           [{k: v for k, v in e.items() if k not in strip} for e in mb["epochs"]]
    assert ma["test"]["clip"] == mb["test"]["clip"]


# --------------------------------------------------------------------------- loggers, compile
def test_wandb_offline(tmp_path, temporal_dataset):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    r = run_script("train.py", "--data_dir", temporal_dataset, "--out_dir", out, "--epochs", "1", *FAST,
                   "--no_video_eval", "--wandb", "--wandb_project", "vidaccel-test",
                   env={"WANDB_SILENT": "true", "WANDB_API_KEY": "", "WANDB_MODE": "offline",
                        "WANDB_DISABLE_GIT": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))


def test_wandb_missing_is_a_startup_error(train_mod, capsys, monkeypatch, temporal_dataset):
    import importlib.util as iu

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    err = startup_error(train_mod, capsys, ["--data_dir", temporal_dataset, *FAST, "--wandb"])
    assert "pip install 'vidaccel[wandb]'" in err


def test_tensorboard_events_have_the_scalars(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_run.log / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_auroc", "score", "lr"} <= tags
    assert len(acc.Scalars("val_loss")) == 2


@pytest.mark.slow
@pytest.mark.compile
def test_compile_and_channels_last_run(tmp_path, temporal_dataset):
    out = tmp_path / "run"
    r = run_script("train.py", "--data_dir", temporal_dataset, "--out_dir", out, "--epochs", "1", *FAST,
                   "--no_video_eval", "--compile", "--amp", "bf16", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["compile"] == "default" and m["test"]["clip"]["n"] == 4
    assert "note: --amp bf16 is for CUDA" in r.stdout  # CPU: float32
