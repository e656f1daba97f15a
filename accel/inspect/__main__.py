"""``python -m accel.inspect DATA``: see :mod:`accel.inspect`.

A package entry point, so the scan's worker processes import ``accel.inspect`` as a module and
never run it a second time as ``__main__``.
"""
import sys

from .cli import main

sys.exit(main())
