"""Hyperparameters declared once: name, type, default, allowed range and a one-line meaning.

Each model lists its :class:`Hyperparameter`\\ s in ``HYPERPARAMETERS``; from that
one list follow the model's constructor signature and docstring ``Args``, the
validation (:meth:`Hyperparameter.check`), the model's YAML defaults and the
docs table (``python -m recbole_ext.defaults`` writes those two; a test fails
when they disagree).  Data settings that a data form reads (``content_fields``,
``test_input`` ...) are declared the same way on the form (``SETTINGS``).
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from lightning_genrec.errors import HyperparameterError

KINDS = ("int", "float", "str", "bool", "int list", "str list")


@dataclass(frozen=True)
class Hyperparameter:
    """One setting.  ``low`` / ``high`` bound numbers (and each entry of an ``int list``),
    inclusive unless ``low_open`` / ``high_open``; ``choices`` lists the allowed strings;
    ``from_data``: ``None`` is allowed and means "size it from the data" (not a config key);
    ``optional``: ``None`` is allowed and means "not set" (another setting decides);
    ``what`` names it in errors (``hyperparameter`` of a model, or ``setting`` of data,
    training or a protocol)."""

    name: str
    kind: str
    default: Any
    meaning: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    from_data: bool = False
    optional: bool = False
    what: str = "hyperparameter"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")

    # -- what is allowed --------------------------------------------------------------------------
    def _range(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        return " and ".join(parts)

    def allowed(self) -> str:
        """What a valid value is, in words (the error message's second half)."""
        rng = self._range()
        if self.kind == "int":
            text = f"an integer {rng}".rstrip()
        elif self.kind == "float":
            text = f"a number {rng}".rstrip()
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = f"one of {list(self.choices)}" if self.choices else "a string"
        elif self.kind == "int list":
            text = f"a non-empty list of integers {rng}".rstrip()
        else:
            text = "a non-empty list of names"
        if self.from_data:
            return f"{text} (or None: sized from the data)"
        return f"{text} (or None: not set)" if self.optional else text

    def _in_range(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            return False
        return True

    def check(self, value: Any) -> Any:
        """``value`` in its canonical form (lists as lists, ints as ints, numbers as floats);
        :class:`~lightning_genrec.errors.HyperparameterError` naming the setting otherwise."""
        if value is None and (self.from_data or self.optional):
            return None
        ok, out = False, value
        if self.kind == "int":
            ok = _is_int(value) and self._in_range(value)
            out = int(value) if ok else value
        elif self.kind == "float":
            ok = _is_number(value) and self._in_range(float(value))
            out = float(value) if ok else value
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str) and (self.choices is None or value in self.choices)
        elif self.kind == "int list":
            ok = (isinstance(value, (list, tuple)) and len(value) > 0
                  and all(_is_int(v) and self._in_range(v) for v in value))
            out = [int(v) for v in value] if ok else value
        else:  # str list
            if isinstance(value, str):
                value = [value]
            ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) and v for v in value)
            out = list(value) if ok else value
        if not ok:
            raise HyperparameterError(f"invalid {self.what} {self.name}={value!r}: must be {self.allowed()}")
        return out

    def type_text(self) -> str:
        """``int``, ``float``, ... as the YAML comments and the docs tables write it."""
        return self.kind

    def invalid_examples(self) -> list:
        """Values :meth:`check` must refuse (the contract test tries each)."""
        out: list = []
        if self.kind in ("int", "float", "int list"):
            bad = ["abc"]
            if self.low is not None:
                bad.append(self.low if self.low_open else self.low - 1)
            if self.high is not None:
                bad.append(self.high if self.high_open else self.high + 1)
            if self.kind == "int":
                bad.append(1.5)
            out = [[b] for b in bad] + [[]] if self.kind == "int list" else bad
        elif self.kind == "str":
            out = [3] + (["no-such-choice"] if self.choices else [])
        elif self.kind == "bool":
            out = ["yes"]
        else:
            out = [[3], []]
        if not (self.from_data or self.optional):
            out.append(None)
        return out


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)     # numpy integers too


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)         # numpy floats too


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def setting(h: Hyperparameter) -> Hyperparameter:
    """``h`` as a setting of the data, the training or a protocol (so named in errors)."""
    return replace(h, what="setting")


def integer(name, default, meaning, low=1, high=None, **kw) -> Hyperparameter:
    return Hyperparameter(name, "int", default, meaning, low=low, high=high, **kw)


def number(name, default, meaning, low=0.0, high=None, **kw) -> Hyperparameter:
    return Hyperparameter(name, "float", default, meaning, low=low, high=high, **kw)


def choice(name, default, choices: Iterable[str], meaning) -> Hyperparameter:
    return Hyperparameter(name, "str", default, meaning, choices=tuple(choices))


def flag(name, default: bool, meaning) -> Hyperparameter:
    return Hyperparameter(name, "bool", default, meaning)


def int_list(name, default, meaning, low=1) -> Hyperparameter:
    return Hyperparameter(name, "int list", list(default), meaning, low=low)


def names(name, default, meaning) -> Hyperparameter:
    return Hyperparameter(name, "str list", list(default), meaning)


def sized_from_data(name, meaning) -> Hyperparameter:
    return Hyperparameter(name, "int", None, meaning, low=1, from_data=True)


def with_default(h: Hyperparameter, default, optional: bool | None = None) -> Hyperparameter:
    """``h`` with another default (a model whose authors chose differently); ``optional``: whether
    ``None`` (not set) is allowed for that model (another of its settings decides then)."""
    return replace(h, default=list(default) if isinstance(default, tuple) else default,
                   optional=h.optional if optional is None else optional)


def resolve(specs: Sequence[Hyperparameter], given: dict, owner: str) -> dict:
    """Every setting of ``specs``: the ``given`` ones checked, the rest at their defaults.
    An unknown name is a :class:`HyperparameterError` with the closest known names."""
    by_name = {h.name: h for h in specs}
    unknown = [k for k in given if k not in by_name]
    if unknown:
        hints = {k: difflib.get_close_matches(k, list(by_name), n=1) for k in unknown}
        said = ", ".join(f"{k!r}" + (f" (did you mean {hints[k][0]!r}?)" if hints[k] else "") for k in unknown)
        raise HyperparameterError(f"{owner} has no hyperparameter {said}; it has: {', '.join(by_name)}.")
    return {h.name: h.check(given[h.name]) if h.name in given else _copy(h.default) for h in specs}


def _copy(v):
    return list(v) if isinstance(v, list) else v


def args_doc(specs: Sequence[Hyperparameter]) -> str:
    """The ``Args:`` section of a docstring, one entry per setting."""
    lines = ["Args:"]
    for h in specs:
        default = "from the data" if h.from_data else repr(h.default)
        lines.append(f"    {h.name} ({h.type_text()}): {h.meaning} Allowed: {h.allowed()}. Default: {default}.")
    return "\n".join(lines)


__all__ = ["Hyperparameter", "args_doc", "choice", "flag", "int_list", "integer", "names", "number", "resolve",
           "setting", "sized_from_data", "with_default"]
