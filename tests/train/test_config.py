"""TrainConfig holds every train.py option; one parse tells given options from defaults;
the resume policy overlays only what was given again."""
from __future__ import annotations

import pytest
from conftest import load_script

from accel.train.checkpoint import ResumeMismatch, resumed_model_options, resumed_options
from accel.train.config import TrainConfig


@pytest.fixture(scope="module")
def parser():
    return load_script("train").get_args_parser()


def test_every_option_is_a_field(parser):
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == set(TrainConfig.option_names())


def test_given_options_come_from_one_parse(parser):
    a = parser.parse_args(["--data-dir", "d", "--no_channels_last", "--num_workers", "2", "--model_arg", "x=1"])
    assert a.given == {"data_dir", "channels_last", "num_workers", "model_arg"}  # 2 is also the default
    assert (a.num_workers, a.decoder, a.channels_last, a.model_arg) == (2, "auto", False, [("x", 1)])
    cfg = TrainConfig.from_options(a)
    assert cfg.model_arg == (("x", 1),) and cfg.model_options() == {"x": 1}
    assert cfg.replace(clip_len=8).clip_len == 8 and cfg.clip_len is None  # frozen: a new one
    with pytest.raises(AttributeError):
        cfg.clip_len = 8  # type: ignore[misc]


def test_help_during_the_parse_shows_the_defaults(capsys):
    from accel.cli import Parser

    p = Parser(prog="x")
    p.add("--fps", type=float, default=25.0, help="frames a second (default %(default)s)")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "(default 25.0)" in out and "SUPPRESS" not in out
    assert p.parse_args([]).fps == 25.0  # the defaults are back after --help


def test_resume_overlays_only_given_options(parser):
    ck = {"model_name": "tsn_resnet18", "model_kwargs": {"num_segments": 2},
          "config": {"model": "tsn_resnet18", "clip_len": 4, "lr": 0.5, "loss": "ce", "log_dir": "old"}}
    a = parser.parse_args(["--resume", "x.pt", "--lr", "0.1"])
    changes, replaced = resumed_options(ck, TrainConfig.from_options(a).as_dict(), a.given)
    assert changes == {"model": "tsn_resnet18", "clip_len": 4, "loss": "ce", "log_dir": "old"}
    assert [(r.option, r.value, r.saved) for r in replaced] == [("lr", 0.1, 0.5)]
    b = parser.parse_args(["--resume", "x.pt", "--model", "r3d_18", "--out_dir", "new"])
    with pytest.raises(ResumeMismatch) as e:
        resumed_options(ck, TrainConfig.from_options(b).as_dict(), b.given)
    assert (e.value.option, e.value.value, e.value.saved) == ("model", "r3d_18", "tsn_resnet18")
    assert "--" not in str(e.value)  # the script names the flags
    assert resumed_model_options(ck, None) == {"num_segments": 2}
    with pytest.raises(ResumeMismatch):
        resumed_model_options(ck, {"num_segments": 4})
