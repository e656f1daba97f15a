"""scripts/gpu_check.sh on the CPU: the plan (core tier <= 480 s, no DALI step), every
command it would run parses, the preflight's no-CUDA exit, packing to <= 8 files, and
the summary with its step table last."""
from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def run(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def plan(tmp_path, *args) -> dict[str, tuple[int, str]]:
    r = run("--dry-run", "--out", tmp_path / "out", *args)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out").exists()
    steps = {}
    for line in r.stdout.splitlines():
        if line.startswith("step "):
            head, cmd = line[len("step "):].split(": ", 1)
            name, secs = head.split(" (")
            steps[name] = (int(secs.rstrip("s)")), cmd)
    return steps


def helper_body(name: str) -> str:
    return SCRIPT.read_text().split(f"{name}() {{", 1)[1].split("\n}", 1)[0].replace("\\\n", " ")


def test_core_plan_fits_480_s_without_dali(tmp_path):
    steps = plan(tmp_path)
    assert list(steps) == ["data", "pytest_gpu", "models_runtime", "models_exports", "train_amp",
                           "nccl", "train_stall", "stream"]
    assert sum(s for s, _ in steps.values()) <= 480
    for name, (_, cmd) in steps.items():
        assert "dali" not in name.lower() and "dali" not in cmd.lower(), name
        if cmd.startswith("fn:"):
            assert "dali" not in helper_body(cmd[3:]).lower() or cmd == "fn:step_train_stall_cpu"
    assert "pyav,decord" in helper_body("step_train_stall_cpu")


def test_dali_tier_plan(tmp_path):
    steps = plan(tmp_path, "--tier", "dali")
    assert {"dali_frames", "loaders", "train_stall_dali", "pytest_dali"} <= set(steps)
    assert "dali" in steps["loaders"][1] and "dali,pyav" in helper_body("step_train_stall_dali")


@pytest.mark.parametrize("tier", ["core", "dali"])
def test_every_planned_command_parses_and_writes_under_out(tmp_path, tier):
    out = tmp_path / "out"
    steps = plan(tmp_path, "--tier", tier)
    for name, (_, cmd) in steps.items():
        if cmd.startswith("fn:"):
            body = helper_body(cmd[3:])
            assert body.strip(), cmd
            continue
        for part in cmd.split(" && "):  # a step may chain commands (stream: the benchmark, then predict.py's)
            check_planned_command(part, name, out)


def check_planned_command(cmd: str, name: str, out: Path) -> None:
    from benchmarks.models import parse_variant
    from models import list_models

    argv = shlex.split(cmd)
    if argv[1:3] == ["-m", "pytest"]:
        assert argv[3:5] == ["-m", "gpu"] and any(a.startswith(f"--junitxml={out}") for a in argv)
    elif argv[1:3] == ["-m", "benchmarks"]:
        module = importlib.import_module(f"benchmarks.{argv[3]}")
        args = module.build_parser(f"python -m benchmarks {argv[3]}").parse_args(argv[4:])
        assert str(args.json).startswith(str(out)), name
        if getattr(args, "export_dir", None) is not None:  # exports stay outside --out
            assert not str(args.export_dir).startswith(str(out))
        if argv[3] in ("models", "stream"):
            names = args.models if isinstance(args.models, list) else args.models.split(",")
            assert names == ["all"] or set(names) <= set(list_models())
            variants = args.variants if isinstance(args.variants, list) else args.variants.split(",")
            for v in variants:
                parse_variant(v)
    elif argv[1] == "scripts/live_latency.py":
        assert argv[argv.index("--device") + 1] == "cuda"
        assert argv[argv.index("--json") + 1].startswith(str(out)), name
        runs = argv[argv.index("--runs") + 1].split(",")
        assert {r.split(":")[0] for r in runs} <= set(list_models())
    else:
        assert argv[1] == "-c" and "make_benchmark_data" in argv[2], name


def test_train_helpers_parse_in_their_commands():
    from benchmarks import train as bench_train

    values = {'"$1"': "pyav,decord", '"$DATA720"': "/data", '"$NPROC"': "16", '"$OUT/$2.json"': "/out/t.json"}
    call = helper_body("step_train_stall").split('"$PY" -m benchmarks train', 1)[1].split("\n", 1)[0]
    for var, value in values.items():
        call = call.replace(var, value)
    parsed = bench_train.build_parser("t").parse_args(shlex.split(call))
    assert parsed.model == "r2plus1d_18" and parsed.device == "cuda"


def test_nccl_step_parses_with_train_py(monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_script", train)  # its dataclasses look it up
    spec.loader.exec_module(train)

    call = helper_body("step_nccl").split("train.py", 1)[1]
    assert '"$EXPORTS/nccl"' in call  # checkpoints stay outside --out
    call = call.split("&&", 1)[0]
    for var, value in {'"$SYNTH"': "/synth", '"$EXPORTS/nccl"': "/exports/nccl"}.items():
        call = call.replace(var, value)
    args = train.get_args_parser().parse_args(shlex.split(call))
    assert args.amp == "fp16" and args.device == "cuda"


def test_preflight_without_cuda_says_what_it_finds_and_stops(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = run("--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert "CUDA" in r.stderr and "Traceback" not in r.stderr + r.stdout
    for what in ("preflight: CUDA", "preflight: libnvcuvid", "preflight: NVML counters", "preflight: DALI",
                 "preflight: CPU decoders"):
        assert what in r.stdout, r.stdout
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_one_line_exit_2():
    for args in (["--tier", "gpu"], ["--budget", "soon"], ["--bogus"]):
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("gpu_check.sh: ")


def results_folder(out: Path) -> list[str]:
    """A folder the way a run leaves it before packing: 19 files in 4 folders."""
    names = ["SUMMARY.md", "steps.tsv", "preflight.json", "environment.json", "telemetry.json",
             "pytest_gpu.xml", "nccl/metrics.json", "nccl/log.csv"]
    names += [f"{b}.{ext}" for b in ("models_runtime", "stream", "train_stall") for ext in ("json", "csv", "md")]
    names += [f"logs/{s}.log" for s in ("data", "pytest_gpu")] + ["logs/deep/x.txt"]
    for n in names:
        (out / n).parent.mkdir(parents=True, exist_ok=True)
        (out / n).write_text(f"{n}\n")
    return names


def test_pack_leaves_at_most_8_files_and_keeps_everything(tmp_path):
    out = tmp_path / "out"
    names = results_folder(out)
    r = run("--pack", out)
    assert r.returncode == 0, r.stderr
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["SUMMARY.md", "results.tar.gz"]
    with tarfile.open(out / "results.tar.gz") as tar:
        packed = {m.name for m in tar.getmembers() if m.isfile()}
        assert packed == set(names) - {"SUMMARY.md"}
        assert tar.extractfile("nccl/metrics.json").read() == b"nccl/metrics.json\n"
    assert run("--pack", out).returncode == 0  # nothing new to pack: a no-op
    assert run("--pack", tmp_path / "missing").returncode == 2


def test_summary_sections_and_the_step_table_last(tmp_path):
    from benchmarks.gpu_summary import write_summary

    out = tmp_path / "out"
    out.mkdir()
    (out / "preflight.json").write_text(json.dumps({
        "tier": "core", "gpu": "NVIDIA H200", "capability": "9.0", "driver": "580.1", "torch": "2.11",
        "torch_cuda": "13.0", "dali": None, "libnvcuvid": ["libnvcuvid.so.1"],
        "nvml_counters": {"decoder": "ok", "encoder": "NVMLError_NotSupported: Not Supported"}}))
    (out / "stream.json").write_text(json.dumps({"records": [
        {"model": "r2plus1d_18", "variant": "eager", "status": "ok", "latency_p50_ms": 5.0,
         "latency_p99_ms": 9.5, "drop_pct": 0.0}]}))
    (out / "train_stall.json").write_text(json.dumps({"records": [
        {"backend": "pyav", "status": "ok", "data_stall_pct": 61.0, "clips_per_s": 80.0, "step_ms_mean": 100.0,
         "data_wait_ms_mean": 61.0, "timing": "cuda events on the compute stream", "nvdec_util": "n/a"}]}))
    (out / "steps.tsv").write_text("step\tstatus\tseconds\tlimit_s\tcommand\n"
                                   "stream\tok\t40\t45\tpython3 -m benchmarks stream\n"
                                   "nccl\ttimed out\t30\t30\tfn:step_nccl\n")
    text = write_summary(out).read_text()
    assert "NVIDIA H200" in text and "unsupported: encoder" in text
    assert "p50 5.0 / p99 9.5 ms" in text and "stall 61.0%" in text
    assert text.rstrip().splitlines()[-2:] == ["| stream | ok | 40 | 45 |", "| nccl | timed out | 30 | 30 |"]


def test_pack_refuses_a_result_too_big_to_come_back(tmp_path):
    out = tmp_path / "out"
    results_folder(out)
    (out / "logs" / "huge.bin").write_bytes(os.urandom(17 * 2**20))  # incompressible
    r = run("--pack", out)
    assert r.returncode == 1 and "over 16 MiB" in r.stderr and "results.tar.gz" in r.stderr


# --------------------------------------------------------------------------- device_kit.sh
KIT_SCRIPT = ROOT / "scripts" / "device_kit.sh"


def kit(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(KIT_SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_device_kit_check_prints_the_calls_for_a_kit(tmp_path):
    """--check on a (tiny, fake) kit: the size check, the install line, one call per chunk."""
    name = f".device_kit/test_{os.getpid()}"
    root = ROOT / name
    try:
        (root / "core").mkdir(parents=True)
        (root / "core" / "av-0-cp311-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"x" * 1000)
        (root / "dali").mkdir()
        for part in ("part_00", "part_01"):
            (root / "dali" / part).write_bytes(b"y" * 1000)
        (root / "dali" / "dali_kit.sha256").write_text("0" * 64 + "\n")
        (root / "dali" / "wheels.txt").write_text("nvidia_dali_cuda130-2.4.0-py3-none-manylinux_2_28_x86_64.whl\n")
        r = kit("--kit", name, "--check", "--dali")
        assert r.returncode == 0, r.stderr
        assert "size check: tree" in r.stdout and "(limit 60 MiB)" in r.stdout
        assert f"pip install -q --no-index --no-deps --target /tmp/site {name}/core/*.whl" in r.stdout
        assert "PYTHONPATH=/tmp/site:$PWD bash scripts/gpu_check.sh" in r.stdout
        calls = [line for line in r.stdout.splitlines() if line.strip().startswith("call ")]
        assert len(calls) == 3 and f'"{name}/dali/part_01"' in calls[1]
        assert "sha256sum -c" in calls[2] and "--tier dali" in calls[2]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("args", [["--kit", "/tmp/kit"], ["--kit", "scripts"], ["--bogus"]])
def test_device_kit_bad_arguments(args):
    r = kit(*args)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("device_kit.sh: ")


def test_device_kit_check_without_a_kit_says_so():
    r = kit("--kit", ".device_kit/none_here", "--check")
    assert r.returncode == 1 and "run bash scripts/device_kit.sh" in r.stderr
