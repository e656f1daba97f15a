"""What happens when DALI or a file fails: stall detection, replay, CPU fallback, counting.

Error policy:

* A file the probe rejects (cannot open, no video, no frames) is skipped and reported, or
  raised under ``on_error="raise"``. A file DALI's device cannot decode (CPU: all but
  VP8/VP9/MJPEG; GPU: a codec this GPU's NVDEC lacks, e.g. AV1 on Hopper, or a size outside
  NVDEC's limits, e.g. HEVC under 144x144: :func:`~accel.data.dali.probe.dali_route`) and
  frame folders go to the CPU decoder ``fallback`` (default: the best CPU backend) before
  DALI sees them (:class:`CpuFallback`, reading through
  :func:`accel.data.reading.read_frames`), and through the same DALI post-processing
  afterwards.
* A batch DALI fails on, or that gives no output within ``pipeline_timeout_s`` (a stalled
  pipeline: :func:`call_with_timeout` waits on a daemon thread; DALI releases the GIL while
  it waits), is replayed sample by sample on a fresh pipeline (:func:`replay_failed_batch`);
  the sample that fails alone goes to the CPU fallback (or is skipped / raised with DALI's
  reason). More than ``max_failures`` failures in a row stop the run with the last error
  (:class:`Recovery`).
* Every skipped file is in ``loader.skipped`` and in its batch's ``"skipped"``; files decoded
  by the fallback are in ``loader.fallbacks``.
"""
from __future__ import annotations

import threading

import torch

from ..reading import SkippedSample, read_frames
from .feed import Feed, Group, Unit
from .pipeline import DaliPipelines
from .plan import ClipPlan, Sample


class PipelineStalled(RuntimeError):
    """No batch came out of the DALI pipeline within the time limit."""


def call_with_timeout(fn, timeout: float | None):
    """``fn()`` in a daemon thread, abandoned (it cannot be killed) after ``timeout`` s."""
    if not timeout:
        return fn()
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="dali-outputs", daemon=True).start()
    if not done.wait(timeout):
        raise PipelineStalled(f"DALI pipeline stalled: no batch within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def dali_reason(e: BaseException) -> str:
    """The informative line of a DALI error. Not ``accel.cli.one_line``: DALI's messages span
    many lines, and the first ("Critical error in pipeline", a traceback's "File ...") is
    rarely the cause; without a line naming a failure, the last line is."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if any(k in ln for k in ("Assert", "Failed", "failed", "error:", "Error:", "Range", "stalled")) \
                and not ln.startswith(("Critical error", "Error in", "File ")):
            return f"DALI: {ln[:300]}"
    return f"DALI: {type(e).__name__}: {(lines[-1] if lines else '')[:300]}"


def replay_failed_batch(feed: Feed, reason: str) -> None:
    """The oldest batch in flight failed: queue its samples one by one (a sample that failed
    alone goes to the CPU fallback with ``reason``), then the later batches in flight."""
    inflight = list(feed.inflight)
    feed.inflight.clear()
    gid, samples = inflight[0]
    group = feed.groups[gid]
    replay = []
    if len(samples) > 1:
        group.pending += len(samples) - 1
        replay = [Unit(gid, samples=[s]) for s in samples]
    else:
        group.pending -= 1
        group.cpu.append((samples[0], reason))
    replay += [Unit(g, samples=ss) for g, ss in inflight[1:]]
    feed.queue.extendleft(reversed(replay))


class Recovery:
    """Counts DALI failures in a row, keeps stalled pipelines alive, replays the failed batch."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        self.failures = 0
        self.abandoned: list = []  # stalled pipelines, kept alive for their waiting threads

    def reset(self) -> None:
        """No failures in a row: a new epoch, or a batch came out."""
        self.failures = 0

    def recover(self, error: BaseException, pipe, feed: Feed) -> None:
        """``pipe`` failed (or stalled) on the oldest batch in flight: replay it, or stop the
        run once failures in a row exceed ``max_failures``. The caller builds a new pipeline."""
        stalled = isinstance(error, PipelineStalled)
        if stalled:
            self.abandoned.append(pipe)  # its thread still waits inside it
        self.failures += 1
        if self.failures > self.max_failures:
            raise RuntimeError(f"the DALI pipeline failed {self.failures} times in a row; last: "
                               f"{dali_reason(error)}") from error
        replay_failed_batch(feed, str(error) if stalled else dali_reason(error))


class CpuFallback:
    """Decodes a batch's fallback samples with a CPU backend, then DALI's post-processing.

    ``backend`` None: no fallback, such samples are skipped (or raised). ``fallbacks`` lists
    ``(path, why)`` for every file it decoded.
    """

    def __init__(self, backend: str | None, plan: ClipPlan, pipelines: DaliPipelines, *,
                 on_error: str, timeout_s: float | None):
        self.backend, self.plan, self.pipelines = backend, plan, pipelines
        self.on_error, self.timeout_s = on_error, timeout_s
        self.fallbacks: list[tuple[str, str]] = []
        self.post_pipe = None  # post-processing-only pipeline, built on first use

    def clips(self, group: Group) -> list[tuple[Sample, torch.Tensor]]:
        """The group's fallback samples decoded and post-processed, on the pipeline's device."""
        done = self.decode(group)
        if not done:
            return []
        if not self.pipelines.post_processes:
            return [(s, f.to(self.pipelines.torch_device)) for s, f in done]
        return self.post_process(done)

    def decode(self, group: Group) -> list[tuple[Sample, torch.Tensor]]:
        """uint8 (T, H, W, C) frames of each fallback sample it can read; the others fail."""
        done = []
        for s, why in group.cpu:
            if self.backend is None:
                group.fail(s, why, self.on_error)
                continue
            read = read_frames(s.path, self.backend, self.plan.chooser(s), on_error="skip",
                               timeout_s=self.timeout_s)
            if isinstance(read, SkippedSample):
                group.fail(s, f"{why}; fallback {self.backend}: {read.reason}", self.on_error)
                continue
            self.fallbacks.append((s.path, why))
            done.append((s, read[0]))
        return done

    def post_process(self, done: list[tuple[Sample, torch.Tensor]]) -> list[tuple[Sample, torch.Tensor]]:
        """Resize / augment decoded clips with the same DALI graph as the decoded batches."""
        pipe = self.post_pipe
        if pipe is None:
            pipe = self.post_pipe = self.pipelines.post_pipeline()
        inputs = {"frames": [f.numpy() for _, f in done]}
        for name in self.pipelines.param_names():
            inputs[name] = [(s.params or {})[name] for s, _ in done]
        (video,) = pipe.run(**inputs)
        clips = self.pipelines.to_torch(video, pipe)
        return [(s, clips[i]) for i, (s, _) in enumerate(done)]

    def close(self) -> None:
        self.post_pipe = None
