"""A VideoDecodeError raised in a DataLoader worker arrives in the main process as itself."""
from __future__ import annotations

import pickle

import pytest
import torch

from accel import VideoDecodeError
from accel.data.reading import DecodeTimeout


class Failing(torch.utils.data.Dataset):
    def __init__(self, error: VideoDecodeError) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise self.error


@pytest.mark.parametrize("kind", [VideoDecodeError, DecodeTimeout])
def test_error_from_a_dataloader_worker_keeps_its_type_and_fields(tmp_path, kind):
    path = tmp_path / "clip: take 2.mp4"  # ": " in the path too
    path.write_bytes(b"not a video")
    reason = "cannot open (InvalidDataError: [Errno 1094995529] Invalid data: 'x')"
    loader = torch.utils.data.DataLoader(Failing(kind(path, reason)), num_workers=1)
    with pytest.raises(VideoDecodeError) as caught:
        next(iter(loader))
    e = caught.value
    assert type(e) is kind
    assert (e.path, e.reason) == (str(path), reason)
    assert "Traceback" in e.worker_traceback and "DataLoader worker" in e.worker_traceback


def test_rebuilt_from_its_message_or_pickled():
    e = VideoDecodeError("/data/a.mp4", "no video stream")
    assert (VideoDecodeError(str(e)).path, VideoDecodeError(str(e)).reason) == ("/data/a.mp4", "no video stream")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is VideoDecodeError and (back.path, back.reason) == (e.path, e.reason)
