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
    work = r.stdout.split(", steps in ", 1)[1].split(" (budget", 1)[0]
    assert work.startswith("/tmp/") and str(tmp_path / "out") not in work  # outside --out
    assert not Path(work).exists()
    steps = {"_work": (0, work)}
    for line in r.stdout.splitlines():
        if line.startswith("step "):
            head, cmd = line[len("step "):].split(": ", 1)
            name, secs = head.split(" (")
            steps[name] = (int(secs.rstrip("s)")), cmd)
    assert r.stdout.rstrip().splitlines()[-1].startswith(f"planned: {sum(s for s, _ in steps.values())}s")
    return steps


def helper_body(name: str) -> str:
    return SCRIPT.read_text().split(f"{name}() {{", 1)[1].split("\n}", 1)[0].replace("\\\n", " ")


CORE_STEPS = ["data", "pytest_gpu", "models_runtime", "models_exports", "train_amp", "nccl", "train_stall",
              "stream"]


def test_core_plan_fits_420_s_of_480_without_dali(tmp_path):
    steps = plan(tmp_path)
    del steps["_work"]
    assert list(steps) == CORE_STEPS
    assert sum(s for s, _ in steps.values()) <= 420  # 60 s of the 480 s budget left as slack
    for name, (_, cmd) in steps.items():
        assert "dali" not in name.lower() and "dali" not in cmd.lower(), name
        if cmd.startswith("fn:"):
            assert "dali" not in helper_body(cmd[3:]).lower() or cmd == "fn:step_train_stall_cpu"
    assert "pyav,decord" in helper_body("step_train_stall_cpu")


def test_dali_tier_plan(tmp_path):
    steps = plan(tmp_path, "--tier", "dali")
    assert sum(s for s, _ in steps.values()) <= 420
    assert {"dali_frames", "loaders", "train_stall_dali", "pytest_dali"} <= set(steps)
    assert "dali" in steps["loaders"][1] and "dali,pyav" in helper_body("step_train_stall_dali")


@pytest.mark.parametrize("tier", ["core", "dali", "rehearse"])
def test_every_planned_command_parses_and_writes_under_the_work_folder(tmp_path, tier):
    steps = plan(tmp_path, *(["--rehearse-cpu"] if tier == "rehearse" else ["--tier", tier]))
    out = steps.pop("_work")[1]
    if tier == "rehearse":
        assert list(steps) == CORE_STEPS
    for name, (_, cmd) in steps.items():
        if cmd.startswith("fn:"):
            body = helper_body(cmd[3:])
            assert body.strip(), cmd
            continue
        for part in cmd.split(" && "):  # a step may chain commands (stream: the benchmark, then predict.py's)
            check_planned_command(part, name, out, "cpu" if tier == "rehearse" else "cuda")


def check_planned_command(cmd: str, name: str, out, device: str) -> None:
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
        assert getattr(args, "device", device) == device, name
        if argv[3] in ("models", "stream"):
            names = args.models if isinstance(args.models, list) else args.models.split(",")
            assert names == ["all"] or set(names) <= set(list_models())
            variants = args.variants if isinstance(args.variants, list) else args.variants.split(",")
            for v in variants:
                parse_variant(v)
    elif argv[1] == "scripts/live_latency.py":
        assert argv[argv.index("--device") + 1] == device
        assert argv[argv.index("--json") + 1].startswith(str(out)), name
        runs = argv[argv.index("--runs") + 1].split(",")
        assert {r.split(":")[0] for r in runs} <= set(list_models())
    else:
        assert argv[1] == "-c" and "make_benchmark_data" in argv[2], name


def script_values(name: str) -> list[str]:
    """The GPU run's and the rehearsal's value of the script variable ``name``."""
    lines = [line.strip() for line in SCRIPT.read_text().splitlines() if line.strip().startswith(f'{name}="')]
    assert len(lines) == 2, lines
    return [line.split('"', 2)[1].replace("$NPROC", "16") for line in lines]


def test_train_helpers_parse_in_their_commands():
    from benchmarks import train as bench_train

    call = helper_body("step_train_stall").split('"$PY" -m benchmarks train', 1)[1].split("\n", 1)[0]
    for stall, device, model in zip(script_values("STALL"), ("cuda", "cpu"), ("r2plus1d_18", "tsn_resnet18")):
        values = {'"$1"': "pyav,decord", '"$DATA720"': "/data", "$STALL": stall, '"$DEV"': device,
                  '"$WORK/$2.json"': "/work/t.json"}
        line = call
        for var, value in values.items():
            line = line.replace(var, value)
        parsed = bench_train.build_parser("t").parse_args(shlex.split(line))
        assert parsed.model == model and parsed.device == device


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
    for nccl, device, amp in zip(script_values("NCCL"), ("cuda", "cpu"), ("fp16", "none")):
        line = call
        for var, value in {'"$SYNTH"': "/synth", '"$EXPORTS/nccl"': "/exports/nccl", '"$DEV"': device,
                           "$NCCL": nccl}.items():
            line = line.replace(var, value)
        args = train.get_args_parser().parse_args(shlex.split(line))
        assert args.amp == amp and args.device == device and args.epochs == 1


def test_preflight_without_cuda_says_what_it_finds_and_stops(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = run("--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert "CUDA" in r.stderr and "Traceback" not in r.stderr + r.stdout
    for what in ("preflight: CUDA", "preflight: libnvcuvid", "preflight: NVML counters", "preflight: DALI",
                 "preflight: NVDEC", "preflight: CPU decoders"):
        assert what in r.stdout, r.stdout
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]]  # one line
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
        fix_ns = "&& rm -f /tmp/site/nvidia/__init__.py &&"
        core = f"python3 -m pip install -q --no-index --no-deps --target /tmp/site {name}/core/*.whl {fix_ns}"
        assert core + " PYTHONPATH=/tmp/site:$PWD timeout -k 20 550 bash scripts/gpu_check.sh --out" in r.stdout
        calls = [line for line in r.stdout.splitlines() if line.strip().startswith("call ")]
        assert len(calls) == 3 and f'"{name}/dali/part_01"' in calls[1]
        assert "sha256sum -c" in calls[2] and "--tier dali" in calls[2]
        assert f"&& python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/kit/whl/*.whl " \
               f"{name}/core/*.whl {fix_ns} PYTHONPATH=/tmp/site:$PWD timeout -k 20 550 bash scripts/gpu_check.sh " \
               "--tier dali" in calls[2]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("args", [["--kit", "/tmp/kit"], ["--kit", "scripts"], ["--bogus"]])
def test_device_kit_bad_arguments(args):
    r = kit(*args)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("device_kit.sh: ")


def test_device_kit_check_without_a_kit_says_so():
    r = kit("--kit", ".device_kit/none_here", "--check")
    assert r.returncode == 1 and "run bash scripts/device_kit.sh" in r.stderr


def test_device_kit_leaves_the_machines_own_packages_alone():
    """typing_extensions, PyYAML and wheel come with the machine (DALI's wheel set has them):
    not carried, so the kit never shadows the machine's versions."""
    regex = next(line for line in KIT_SCRIPT.read_text().splitlines() if line.startswith("ON_MACHINE_RE="))
    regex = regex.split("=", 1)[1].strip("'")
    names = {"typing_extensions-4.12.2-py3-none-any.whl": True,
             "PyYAML-6.0.2-cp312-cp312-manylinux_2_17_x86_64.whl": True,
             "pyyaml-6.0.3-cp312-cp312-manylinux_2_28_x86_64.whl": True, "wheel-0.45.1-py3-none-any.whl": True,
             "numpy-2.2.0-cp312-cp312-manylinux_2_28_x86_64.whl": True, "six-1.17.0-py2.py3-none-any.whl": True,
             "nvidia_dali_cuda130-2.4.0-py3-none-manylinux_2_28_x86_64.whl": False,
             "nvidia_nvimgcodec_cu13-0.6.0-py3-none-manylinux2014_x86_64.whl": False,
             "optree-0.17.0-cp312-cp312-manylinux_2_28_x86_64.whl": False}
    for name, on_machine in names.items():
        r = subprocess.run(["grep", "-Eiq", regex], input=name, text=True)
        assert (r.returncode == 0) == on_machine, name
    assert 'rm -f "$site/nvidia/__init__.py"' in helper_body_of(KIT_SCRIPT, "join_install")


def helper_body_of(script: Path, name: str) -> str:
    return script.read_text().split(f"{name}() {{", 1)[1].split("\n}", 1)[0]


def test_the_readme_gives_the_exact_calls_device_kit_prints():
    """The README's core-tier call and DALI-tier sequence are device_kit.sh's output for a kit in
    .device_kit with 5 chunks (the checksum printed as SHA256)."""
    name = f".device_kit/readme_{os.getpid()}"
    root = ROOT / name
    try:
        (root / "core").mkdir(parents=True)
        (root / "core" / "av-0-cp311-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"x")
        (root / "dali").mkdir()
        for i in range(5):
            (root / "dali" / f"part_{i:02d}").write_bytes(b"y")
        (root / "dali" / "dali_kit.sha256").write_text("SHA256\n")
        (root / "dali" / "wheels.txt").write_text("w.whl\n")
        r = kit("--kit", name, "--check", "--dali")
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
    readme = (ROOT / "README.md").read_text()
    lines = [line.replace(name, ".device_kit") for line in r.stdout.splitlines()]
    core = lines[lines.index('On the GPU machine, one call (carry [".device_kit/core"]):') + 1]
    calls = [line for line in lines if line.strip().startswith("call ")]
    assert len(calls) == 6
    for line in [core, *calls]:
        assert f"\n{line}\n" in readme, line
