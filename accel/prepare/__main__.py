"""``python -m accel.prepare SRC DST``: see :mod:`accel.prepare` (arguments: :mod:`.cli`).

A package entry point, so worker processes import ``accel.prepare`` as a module and never
run it a second time as ``__main__``.
"""
import sys

from . import main

sys.exit(main())
