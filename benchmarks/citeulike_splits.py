"""The CVAE paper's CiteULike-a splits as RecBole benchmark files.

The authors released each split as two files with one line per user (line k = user k):
``N id1 ... idN`` with 0-based article ids (``cf-train-{P}-users.dat`` and
``cf-test-{P}-users.dat``, P = 1 sparse, P = 10 dense).  :func:`write_benchmark` turns a pair
into RecBole's ``benchmark_filename`` files in a dataset folder:

    <folder>/<dataset>.train.inter   user_id:token  item_id:token
    <folder>/<dataset>.valid.inter   (same header; a slice of the training items, see below)
    <folder>/<dataset>.test.inter    the .dat test items, untouched
    <folder>/<dataset>.item          a copy of the .item file, when one is given

Validation (the paper has none): ``valid_share`` of the users that have at least two training
items give up one training item each, drawn with ``split_seed`` (a fixed seed, not the run's, so
every run sees the same files).  With ``valid_share = 0`` (P = 1: every user has one training
item) the validation file has the header only.  Test items are never moved or read for anything
but the test file.
"""
from __future__ import annotations

import os
import shutil

import numpy as np

HEADER = "user_id:token\titem_id:token\n"


def read_dat(path: str) -> list[list[int]]:
    """The rows of a ``.dat`` split file: ``rows[k]`` = user k's item ids, in file order.

    Raises ``ValueError`` naming the file and line when the count does not match the ids, an
    id is negative or not an integer, or an item repeats within a line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                raise ValueError(f"{path}:{lineno}: empty line (each line must be 'N id1 ... idN')")
            try:
                n, ids = int(parts[0]), [int(p) for p in parts[1:]]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: not integers: {line.strip()[:80]!r}") from None
            if n != len(ids):
                raise ValueError(f"{path}:{lineno}: says {n} items but lists {len(ids)}")
            if any(i < 0 for i in ids):
                raise ValueError(f"{path}:{lineno}: negative item id")
            if len(set(ids)) != len(ids):
                raise ValueError(f"{path}:{lineno}: an item id repeats")
            rows.append(ids)
    return rows


def carve_validation(train: list[list[int]], valid_share: float, split_seed: int = 0):
    """``(train, valid)`` rows: for a ``valid_share`` of the users with >= 2 training items
    (drawn with ``split_seed``), one of their training items (also drawn) moves to validation."""
    if not 0.0 <= valid_share <= 1.0:
        raise ValueError(f"valid_share must be in [0, 1], got {valid_share}")
    rng = np.random.default_rng(split_seed)
    eligible = np.array([u for u, items in enumerate(train) if len(items) >= 2], dtype=np.int64)
    chosen = set(rng.choice(eligible, size=int(round(valid_share * len(eligible))), replace=False).tolist()) \
        if len(eligible) else set()
    new_train, valid = [], []
    for u, items in enumerate(train):
        if u in chosen:
            k = int(rng.integers(len(items)))
            valid.append([items[k]])
            new_train.append(items[:k] + items[k + 1:])
        else:
            valid.append([])
            new_train.append(list(items))
    return new_train, valid


def _write_inter(path: str, rows: list[list[int]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER)
        for u, items in enumerate(rows):
            for i in items:
                f.write(f"{u}\t{i}\n")
                n += 1
    return n


def write_benchmark(train_dat: str, test_dat: str, folder: str, dataset: str, item_file: str | None = None,
                    valid_share: float = 0.0, split_seed: int = 0) -> dict:
    """Write the benchmark files of one split into ``folder`` (created).  Returns counts:
    ``users``, ``train``, ``valid``, ``test`` interactions, ``overlap`` (train/test pairs in both;
    must be 0) -- and raises ``ValueError`` if the two files disagree on the number of users or
    a user's test item is also one of their training items."""
    train, test = read_dat(train_dat), read_dat(test_dat)
    if len(train) != len(test):
        raise ValueError(f"{train_dat} has {len(train)} users but {test_dat} has {len(test)}")
    overlap = sum(len(set(a) & set(b)) for a, b in zip(train, test))
    if overlap:
        raise ValueError(f"{overlap} (user, item) pairs are both in {train_dat} and {test_dat}")
    train, valid = carve_validation(train, valid_share, split_seed)
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, dataset)
    counts = {"users": len(train), "train": _write_inter(base + ".train.inter", train),
              "valid": _write_inter(base + ".valid.inter", valid),
              "test": _write_inter(base + ".test.inter", test), "overlap": overlap}
    if item_file is not None:
        shutil.copyfile(item_file, base + ".item")
    return counts
