"""``python -m benchmarks compare``: pass, regress, improve, lost and unmatched records."""
import json
import subprocess
import sys

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.compare import compare, direction


def rec(model="tsm_resnet18", variant="eager", bs=8, clips=100.0, p99=50.0, status="ok"):
    return {"model": model, "variant": variant, "mode": "infer", "batch_size": bs,
            "clips_per_s": clips, "p99_ms": p99, "status": status, "reason": ""}


def write(path, records):
    path.write_text(json.dumps({"command": "x", "environment": {}, "records": records}))
    return str(path)


def run(tmp_path, results, baseline, *extra):
    return bench_main(["compare", write(tmp_path / "new.json", results),
                       write(tmp_path / "base.json", baseline), *extra])


def test_within_threshold_passes(tmp_path, capsys):
    assert run(tmp_path, [rec(clips=95.0)], [rec(clips=100.0)], "--threshold", "0.10") == 0
    assert "0 regressed" in capsys.readouterr().out


def test_throughput_drop_past_threshold_fails(tmp_path, capsys):
    base = [rec(), rec(variant="channels_last", clips=200.0)]
    new = [rec(clips=99.0), rec(variant="channels_last", clips=150.0)]
    assert run(tmp_path, new, base, "--threshold", "0.10", "--metric", "clips_per_s") == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "1 regressed" in out and "-25.0" in out


def test_lower_is_better_metric(tmp_path):
    # p99 up 20%: worse; clips/s unchanged
    assert run(tmp_path, [rec(p99=60.0)], [rec(p99=50.0)], "--metric", "clips_per_s,p99_ms") == 1
    # p99 down 20%: an improvement, not a failure
    assert run(tmp_path, [rec(p99=40.0)], [rec(p99=50.0)], "--metric", "p99_ms") == 0


def test_variant_that_stopped_running_fails(tmp_path, capsys):
    assert run(tmp_path, [rec(status="error")], [rec()]) == 1
    assert "lost" in capsys.readouterr().out


def test_new_and_missing_records_do_not_fail(tmp_path, capsys):
    rc = run(tmp_path, [rec(), rec(model="vivit")], [rec(), rec(model="r3d_18")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "new" in out and "missing" in out


def test_nothing_matched_is_exit_2(tmp_path):
    assert run(tmp_path, [rec(bs=1)], [rec(bs=8)]) == 2


def test_unknown_metric_needs_a_direction(tmp_path, capsys):
    assert run(tmp_path, [rec()], [rec()], "--metric", "frobnication") == 2
    assert "--direction" in capsys.readouterr().err
    r = [dict(rec(), frobnication=10.0)]
    b = [dict(rec(), frobnication=5.0)]
    assert run(tmp_path, r, b, "--metric", "frobnication", "--direction", "lower") == 1


def test_pytest_benchmark_files(tmp_path):
    def pb(mean):
        return {"benchmarks": [{"fullname": "tests/bench/test_x.py::test_fwd", "stats":
                                {"mean": mean, "median": mean, "ops": 1 / mean}}]}
    (tmp_path / "a.json").write_text(json.dumps(pb(0.012)))
    (tmp_path / "b.json").write_text(json.dumps(pb(0.010)))
    assert bench_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert bench_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                       "--threshold", "0.25"]) == 0


def test_direction_known_by_name():
    assert direction("clips_per_s", None) == "higher" and direction("ms_per_clip", None) == "lower"
    rows = compare([rec(clips=80.0)], [rec(clips=100.0)], metrics=["clips_per_s"], threshold=0.1)
    assert rows[0]["verdict"] == "REGRESSED" and rows[0]["change_pct"] == pytest.approx(-20.0)


def test_compare_never_imports_torch(tmp_path):
    new, base = write(tmp_path / "n.json", [rec()]), write(tmp_path / "b.json", [rec()])
    code = ("import sys; from benchmarks.__main__ import main; "
            f"rc = main(['compare', {new!r}, {base!r}]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
