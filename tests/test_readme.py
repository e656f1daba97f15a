"""The README's Python examples run as written, on real files made to their names.

Each ```python block of README.md runs in a fresh interpreter namespace, in a folder that holds
what the examples open (``clip.mp4``, ``phone.mp4``, ``two_streams.mkv``, a ``data/`` tree of class folders, a
``resnet18.pth``). A block preceded by ``<!-- readme-test: needs cuda -->`` (or ``dali``) skips
cleanly where that is missing. torchvision's weight download is answered offline with an
architecture's own random weights, so ``pretrained=True`` examples run without a network.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: needs ([\w, ]+) -->\n)?```python\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[int, set[str], str]]:
    """(line, needs, code) for every Python block of the README."""
    text = README.read_text()
    blocks = []
    for m in _BLOCK.finditer(text):
        needs = {n.strip() for n in (m.group(1) or "").split(",") if n.strip()}
        blocks.append((text.count("\n", 0, m.start(2)) + 1, needs, m.group(2)))
    return blocks


def test_readme_has_python_examples():
    assert len(readme_blocks()) >= 4


def _missing(needs: set[str]) -> str | None:
    if "cuda" in needs and not torch.cuda.is_available():
        return "needs CUDA"
    if "dali" in needs:
        from accel.data.dali import dali_installed

        if not dali_installed():
            return "needs DALI"
    return None


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A folder with the files the examples name."""
    from accel.synth import make_dataset, tag_rotation, write_index_video, write_two_stream_video

    root = tmp_path_factory.mktemp("readme")
    write_index_video(root / "clip.mp4", 40)
    tag_rotation(root / "clip.mp4", root / "phone.mp4", 90)
    write_two_stream_video(root / "two_streams.mkv")
    make_dataset(root / "data", classes=2, videos_per_class=5, frames=24, width=64, height=48)
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")
    return root


@pytest.fixture
def offline_weights(monkeypatch):
    """torchvision's download answered with the architecture's own random weights."""
    import torchvision.models as tvm
    from torchvision.models import WeightsEnum

    def random_weights(self, *args, **kwargs):
        for name in tvm.list_models():
            if tvm.get_model_weights(name) is type(self):
                num_classes = len(self.meta["categories"])
                return tvm.get_model(name, weights=None, num_classes=num_classes).state_dict()
        raise AssertionError(f"no torchvision model takes {type(self).__name__}")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", random_weights)


@pytest.mark.parametrize("line,needs,code", [pytest.param(*b, id=f"line{b[0]}") for b in readme_blocks()])
def test_readme_example_runs(line, needs, code, sandbox, offline_weights, monkeypatch):
    why = _missing(needs)
    if why:
        pytest.skip(f"README line {line}: {why}")
    monkeypatch.chdir(sandbox)
    namespace: dict = {"__name__": f"readme_line_{line}"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - the README's own code
