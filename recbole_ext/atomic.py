"""Atomic files read as RecBole reads them, with the file and line named where something is off.

RecBole's ``Dataset._load_feat`` reads ``.inter`` / ``.user`` / ``.item`` files with pandas.  Where it
would crash with a message that names no file or line, the check raises :class:`DataFileError` first
(a header without ``name:type`` columns, an empty or header-only file, a float column value that does
not parse).  Where RecBole reads a line anyway -- one with too many columns (the extra ones are
dropped) or too few (the missing ones are read as empty values, which RecBole fills: a float with its
column's mean) -- the file loads exactly as in RecBole and one :class:`DataFileWarning` per file says
how many such lines there are and quotes the first.  The checks read the file once more, line by line
without splitting (0.24 s per million lines here, so about 5 s for ML-20M); the slow search for a bad
float runs only when pandas has already failed (on a column it loads).

With ``rm_dup_inter`` unset RecBole keeps repeated (user, item) rows; :func:`warn_duplicates` counts
them in a warning that names the setting.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from lightning_genrec.errors import DataFileError, DataFileWarning

TYPES = ("token", "token_seq", "float", "float_seq")


def _show(line: str) -> str:
    line = line.rstrip("\r\n")
    return repr(line if len(line) <= 120 else line[:117] + "...")


def check_header(path: str, header: str, sep: str) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` of the header line, or :class:`DataFileError`."""
    fields = []
    for column in header.rstrip("\r\n").split(sep):
        name, colon, kind = column.partition(":")
        if kind not in TYPES and any(other in kind for other in (",", ";", "\t", " ") if other != sep):
            raise DataFileError(f"{path}, line 1: the header {header.strip()!r} does not split into columns at "
                                f"field_separator={sep!r}; set field_separator to the file's separator.")
        if not colon or not name:
            raise DataFileError(f"{path}, line 1: the header column {column!r} has no type. RecBole's atomic files "
                                f"name every column as name:type ({', '.join(TYPES)}), separated by "
                                f"{sep!r}, e.g. 'user_id:token{sep}item_id:token{sep}timestamp:float'.")
        if kind not in TYPES:
            raise DataFileError(f"{path}, line 1: column {name!r} has type {kind!r}; RecBole knows "
                                f"{', '.join(TYPES)}.")
        fields.append((name, kind))
    return fields


def check_lines(path: str, sep: str, encoding: str, allow_empty: bool = False) -> list[tuple[str, str]]:
    """Check the header and count the lines RecBole would pad or cut (one warning for the file);
    returns the header's ``(name, type)`` pairs.

    ``allow_empty``: a header-only file is fine (a benchmark_filename part other than the first:
    a protocol without validation still needs RecBole's three files)."""
    with open(path, encoding=encoding) as f:
        header = f.readline()
        if not header.strip():
            raise DataFileError(f"{path} is empty: an atomic file starts with a header line of name:type columns.")
        fields = check_header(path, header, sep)
        n_sep, lines, short, long, first = len(fields) - 1, 0, 0, 0, None
        for number, line in enumerate(f, start=2):
            if line.count(sep) != n_sep:
                if not line.strip():
                    continue                                            # a blank line (often the last)
                short, long = short + (line.count(sep) < n_sep), long + (line.count(sep) > n_sep)
                first = first or (number, line)
            lines += 1
    if lines == 0 and not allow_empty:
        raise DataFileError(f"{path} has a header but no data lines.")
    if first is not None:
        number, line = first
        warnings.warn(
            f"{path}: {short + long} of {lines} lines do not have the header's {len(fields)} columns "
            f"({long} more, {short} fewer); the first is line {number} ({line.count(sep) + 1} columns): "
            f"{_show(line)}. RecBole reads them anyway: extra columns are dropped, missing ones are empty "
            f"values it fills (a float with its column's mean). Fix the lines if that is not what they mean "
            f"(columns are separated by {sep!r}; an empty value still needs its separator).",
            DataFileWarning, stacklevel=2)
    return fields


def find_bad_float(path: str, sep: str, encoding: str, fields: list[tuple[str, str]]) -> str | None:
    """The message for the first float value that does not parse, or ``None``."""
    columns = [i for i, (_, kind) in enumerate(fields) if kind == "float"]
    with open(path, encoding=encoding) as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split(sep)
            for i in columns:
                if i < len(parts) and parts[i].strip():
                    try:
                        float(parts[i])
                    except ValueError:
                        return (f"{path}, line {number}: column {fields[i][0]!r} is a float column but holds "
                                f"{parts[i]!r}: {_show(line)}. Fix the value, or declare the column as "
                                f"{fields[i][0]}:token.")
    return None


def checked_load_feat(original, name):
    """``Dataset._load_feat`` with the checks of the module docstring."""

    def _load_feat(self, filepath, source):
        sep, encoding = self.config["field_separator"] or "\t", self.config["encoding"] or "utf-8"
        load_col, _ = self._get_load_and_unload_col(source)
        read = load_col != set() and os.path.isfile(filepath)       # RecBole skips a file it loads nothing of
        parts = self.config["benchmark_filename"] or []
        later_part = any(os.path.basename(filepath) == f"{self.dataset_name}.{part}.inter" for part in parts[1:])
        fields = check_lines(filepath, sep, encoding, allow_empty=later_part) if read else None
        try:
            return original(self, filepath, source)
        except ValueError as exc:
            message = fields and find_bad_float(filepath, sep, encoding, fields)
            if message:
                raise DataFileError(message) from None
            raise DataFileError(f"{filepath}: RecBole could not read it: {exc}") from None

    return _load_feat


def count_repeats(users, items) -> int:
    """How many rows repeat a (user, item) pair of an earlier row."""
    u, i = pd.factorize(pd.Series(users))[0], pd.factorize(pd.Series(items))[0]
    keys = u.astype(np.int64) * (int(i.max()) + 1 if len(i) else 1) + i
    return int(len(keys) - len(pd.unique(keys)))


def warn_duplicates(original, name):
    """``Dataset._remove_duplication``: with ``rm_dup_inter`` unset (RecBole keeps every row), one
    warning counting the repeated (user, item) rows and naming the setting that removes them."""

    def _remove_duplication(self):
        feat = self.inter_feat
        if (self.config["rm_dup_inter"] is None and feat is not None
                and self.uid_field in feat and self.iid_field in feat):
            repeats = count_repeats(feat[self.uid_field], feat[self.iid_field])
            if repeats:
                warnings.warn(
                    f"{self.dataset_name}: {repeats} of {len(feat)} interactions repeat a (user, item) pair of an "
                    "earlier line. RecBole keeps them (rm_dup_inter is unset), so a pair can be in training and "
                    "in test at once, and counts more than once. Set rm_dup_inter: first (or last) to keep one "
                    "of each, unless the repeats are meant (plays in a listening history).",
                    DataFileWarning, stacklevel=2)
        return original(self)

    return _remove_duplication


__all__ = ["check_header", "check_lines", "checked_load_feat", "count_repeats", "find_bad_float", "warn_duplicates"]
