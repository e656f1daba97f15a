#!/usr/bin/env bash
# The test command: set up, then the default suite (GPU tests skip without CUDA, slow ones
# run with `make test-all`). pytest's exit code 5 (no test ran) is a failure here.
set -uo pipefail
PY=${PY:-python3}
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# Lint everything and type-check accel (io, data, train, deploy); the tests run either way,
# and any finding fails the run.
lint=0
"$PY" -m ruff check . || { echo "test.sh: ruff found problems (ruff check . --fix fixes some)" >&2; lint=1; }
"$PY" -m mypy accel/io accel/data accel/train accel/deploy || { echo "test.sh: mypy found type errors in accel/io, accel/data, accel/train or accel/deploy" >&2; lint=1; }
# -n: test files spread over pytest-xdist workers, one per core up to 4 (PYTEST_WORKERS=N
# to choose; 0 runs in this process). Alone, the suite keeps about one core busy: its tests
# wait on subprocesses, encoders and sockets. --dist loadfile keeps a file's tests, and its
# module fixtures, on one worker.
# -p no:benchmark: no test here times anything with pytest-benchmark (tests/bench does, on its
# own command, README "Model benchmarks"), and under xdist it warns that it turned itself off.
# --durations=15: the 15 slowest tests, so what the suite's time goes to stays in view.
workers=${PYTEST_WORKERS:-$("$PY" -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(min(n or 1, 4))")}
"$PY" -m pytest -m "not slow" -n "$workers" --dist loadfile -p no:benchmark --durations=15 "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ "$rc" = 0 ] && [ "$lint" = 1 ] && exit 1
exit "$rc"
