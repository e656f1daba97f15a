"""Argument parsing shared by ``train.py`` and ``evaluate.py``.

Every ``--long_option`` is registered with both spellings (``--clip_len`` and
``--clip-len``), and a wrong input stops with one line, ``prog: error: reason``, and exit
status 2 (no usage dump, no traceback).
"""
from __future__ import annotations

import argparse
import ast
import functools
import sys
from typing import Any, NoReturn


class UsageError(ValueError):
    """A wrong input found after parsing (a folder, a checkpoint...): exit 2, one line."""


def _spellings(names) -> list[str]:
    spelled: list[str] = []
    for n in names:
        variants = [n]
        if n.startswith("--"):
            variants += [n.replace("_", "-"), "--" + n[2:].replace("-", "_")]
        for v in variants:
            if v not in spelled:
                spelled.append(v)
    return spelled


def _add(container, *names: str, **kwargs: Any) -> argparse.Action:
    """``add_argument`` with the dash and underscore spellings of every long option."""
    if "dest" not in kwargs and any(n.startswith("--") for n in names):
        first = next(n for n in names if n.startswith("--"))
        kwargs["dest"] = first[2:].replace("-", "_")
    return container.add_argument(*_spellings(names), **kwargs)


def _add_flag(container, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no_name`` (both spellings) for a boolean."""
    dest = name[2:].replace("-", "_")
    _add(container, name, dest=dest, action="store_true", default=default, help=help)
    _add(container, "--no_" + dest, dest=dest, action="store_false", help=argparse.SUPPRESS)


class Options(argparse.Namespace):
    """Parsed options; ``given``: the destinations the command line set (not a default)."""

    __slots__ = ("given",)  # not an option: vars() and == see the options only

    def __init__(self, **kwargs: Any) -> None:
        self.given: frozenset[str] = frozenset()
        super().__init__(**kwargs)

    def given_values(self, names) -> dict[str, Any]:
        """``{name: value}`` of those of ``names`` the command line gave."""
        return {n: getattr(self, n) for n in names if n in self.given}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``add`` / ``add_flag`` (also on its groups) register both
    spellings, and whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def add(self, *names: str, **kwargs: Any) -> argparse.Action:
        return _add(self, *names, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """Parse once with every default held back, so what the namespace holds is what the
        command line gave (``Options.given``), then fill in the defaults (a resumed or
        evaluated run overlays only the given options on what its checkpoint recorded)."""
        defaults = self._held_defaults = [(a, a.default) for a in self._actions]
        try:
            for a in self._actions:
                a.default = argparse.SUPPRESS
            ns, extras = super().parse_known_args(args, Options() if namespace is None else namespace)
        finally:
            self._held_defaults = None
            for a, default in defaults:
                a.default = default
        if isinstance(ns, Options):
            ns.given = frozenset(vars(ns))
        for a, default in defaults:  # the first action of a dest sets its default, as argparse does
            if a.dest != argparse.SUPPRESS and default is not argparse.SUPPRESS and not hasattr(ns, a.dest):
                setattr(ns, a.dest, a.type(default) if isinstance(default, str) and callable(a.type) else default)
        return ns, extras

    def format_help(self) -> str:
        """--help is printed during the parse, while the defaults are held back: show them."""
        held = getattr(self, "_held_defaults", None)
        if not held:
            return super().format_help()
        for a, default in held:
            a.default = default
        try:
            return super().format_help()
        finally:
            for a, _ in held:
                a.default = argparse.SUPPRESS

    def add_flag(self, name: str, default: bool, help: str) -> None:
        _add_flag(self, name, default, help)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add = functools.partial(_add, group)
        group.add_flag = functools.partial(_add_flag, group)
        return group


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def one_line(e: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """The first non-blank line of ``e``'s message (its type's name when it has none), for
    one-line errors and report cells; ``typed``: as ``Type: line``; ``limit``: at most
    that many characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if typed:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text or type(e).__name__
    return text if limit is None else text[:limit]


def flagged(e: BaseException) -> str:
    """``one_line(e)``, where a library message names the ``option`` it concerns (a parameter
    such as ``test_dir``; ``accel.data.manifests.OptionMessage``) naming it as the flag ``--option``."""
    option, naming = getattr(e, "option", None), getattr(e, "naming", None)
    return one_line(Exception(naming(f"--{option}"))) if option and callable(naming) else one_line(e)


# --------------------------------------------------------------------------- value types
def _bounded(kind: type, low: float, high: float | None, what: str):
    """An argparse type: ``kind(text)`` within [low, high] (no upper bound when None)."""
    span = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (v >= low and (high is None or v <= high)):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return v

    parse.__name__ = what  # argparse names the type by it in some messages
    return parse


unit_interval = _bounded(float, 0.0, 1.0, "a number in [0, 1]")
positive_int = _bounded(int, 1, None, "a positive integer")
non_negative_int = _bounded(int, 0, None, "an integer >= 0")
non_negative_float = _bounded(float, 0.0, None, "a number >= 0")


def positive_float(text: str) -> float:
    v = non_negative_float(text) if not text.strip().startswith("-") else -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def bounded_int(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (no upper bound when None)."""
    span = f"in [{low}, {high}]" if high is not None else f">= {low}"
    return _bounded(int, low, high, f"an integer {span}")


def comma_list(kind=str, *, choices=None):
    """An argparse type: ``a,b,c`` as a list of ``kind`` (empty items dropped), each one of
    ``choices`` when given; a wrong item is refused naming the allowed values."""
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        values = []
        for item in items:
            try:
                value = kind(item)
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise argparse.ArgumentTypeError(f"{item!r}: {one_line(e)}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {item!r} (choose from {', '.join(map(str, choices))})")
            values.append(value)
        return values

    parse.__name__ = "comma-separated list"
    return parse


def key_value(text: str) -> tuple[str, Any]:
    """``name=value``; the value parsed as a Python literal when it is one (``128``,
    ``0.5``, ``True``, ``'mean'``), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        value = v
    return k.strip(), value


def resolve_device(name: str, local_rank: int = 0):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a usage error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)
