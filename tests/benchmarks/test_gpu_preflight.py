"""The GPU check's preflight: NVDEC is tested (libnvcuvid loaded with ctypes, one tiny H.264
file decoded through DALI's mixed decoder), and a dali tier that cannot decode stops in one
line, exit 4, before it burns its minutes."""
from __future__ import annotations

import json

import torch

from accel import open_video
from benchmarks import gpu_preflight as pf


def pyav_decode(requests, device):
    """DALI's decode_frames stand-in: the CPU decoder reads the requested frames."""
    assert device == "gpu"
    return [open_video(path, "pyav").get_frames(idx) for path, idx in requests]


def test_libnvcuvid_is_loaded_not_looked_up():
    assert pf.probe_nvcuvid("libc.so.6") is None
    why = pf.probe_nvcuvid("libnvcuvid_absent_here.so.1")
    assert why.startswith("libnvcuvid_absent_here.so.1 does not load (") and "\n" not in why


def test_nvdec_probe_decodes_one_h264_file_frame_exact(tmp_path):
    assert pf.probe_nvdec(pyav_decode, workdir=tmp_path) is None

    def wrong_frames(requests, device):
        return [frames[[0, 0, 0]] for frames in pyav_decode(requests, device)]

    assert pf.probe_nvdec(wrong_frames, workdir=tmp_path) == "frames [3, 3, 3] came back for [3, 0, 7]"

    def no_decoder(requests, device):
        raise RuntimeError("CUDA_ERROR_NO_DEVICE: cuvidCreateDecoder failed\nmore")

    why = pf.probe_nvdec(no_decoder, workdir=tmp_path)
    assert why == "RuntimeError: CUDA_ERROR_NO_DEVICE: cuvidCreateDecoder failed"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_a_dali_tier_without_nvdec_stops_in_one_line():
    found = {"cuda_available": True, "dali": "2.4.0", "nvdec": "RuntimeError: cuvidCreateDecoder failed"}
    status, line = pf.verdict(found, "dali", cpu=False)
    assert status == 4 and "NVDEC does not work here (RuntimeError: cuvidCreateDecoder failed)" in line
    assert pf.verdict(found, "core", cpu=False) == (0, "")  # the core tier goes on without NVDEC
    assert pf.verdict({**found, "nvdec": "ok"}, "dali", cpu=False) == (0, "")
    assert pf.verdict({**found, "dali": None}, "dali", cpu=False)[0] == 4
    assert pf.verdict({**found, "cuda_available": False}, "core", cpu=False)[0] == 3
    assert pf.verdict({**found, "cuda_available": False}, "core", cpu=True) == (0, "")


def test_the_preflight_here_writes_what_it_found(tmp_path, capsys):
    out = tmp_path / "preflight.json"
    status = pf.main([str(out), "--tier", "core", "--cpu"])
    found = json.loads(out.read_text())
    assert status == 0 and found["rehearsal_cpu"] is True and found["tier"] == "core"
    printed = capsys.readouterr().out
    for key in ("CUDA", "libnvcuvid", "NVML counters", "DALI", "NVDEC", "CPU decoders"):
        assert f"preflight: {key}: " in printed
    if not torch.cuda.is_available():
        assert found["nvdec"] != "ok" and pf.main([str(out), "--tier", "dali"]) == 3
