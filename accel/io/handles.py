"""Decoder handles kept open between clips of the same file, in each process.

Opening a file is not free: the MP4 demuxer parses one table entry per frame (8 ms for an
hour of 30 fps video here), torchcodec builds its decoder, decord scans every packet. A
DataLoader worker (or its decode child) that reads several clips of one long recording would
pay that on every clip. A reader's ``close()`` therefore hands its open handle here, and the
next reader of the same file version, backend, stream and thread count in the same process
takes it back instead of opening again. At most :data:`CAPACITY` handles are kept (the least
recently used is closed), so open files and decoder memory stay bounded.

Handles never cross a fork (decord's must not, and two processes must not share a demuxer's
file position): a forked child starts with none of its parent's, which it neither uses nor
closes.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable

CAPACITY = 4


class OpenHandles:
    """A small LRU of open decoder handles, keyed by what makes one reusable."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple[Any, Callable[[Any], None]]] = OrderedDict()
        self._inherited: list[Any] = []  # a parent's handles after a fork: kept, never used

    def take(self, key: tuple) -> Any | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def give(self, key: tuple, handle: Any, close: Callable[[Any], None]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            old[1](old[0])
        self._entries[key] = (handle, close)
        while len(self._entries) > self.capacity:
            _, (stale, closer) = self._entries.popitem(last=False)
            closer(stale)

    def close_all(self) -> None:
        while self._entries:
            _, (handle, closer) = self._entries.popitem(last=False)
            closer(handle)

    def forget_inherited(self) -> None:
        self._inherited.extend(self._entries.values())
        self._entries.clear()


HANDLES = OpenHandles(CAPACITY)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=HANDLES.forget_inherited)
