"""The ``conftest.py`` of a copy of RecBole 1.2.1's own ``tests/`` (``run.py`` puts it there): RecBole's suite with
``import recbole_ext`` in effect, as a RecBole user who adds the import would have it.

The tests in ``expected_skips.txt`` beside this file are skipped with their reason (a package with no
install for our stack); every other test runs as RecBole's authors wrote it.
"""
import os

import pytest

import recbole_ext  # noqa: F401  (the point: RecBole's suite with our changes in effect)

HERE = os.path.dirname(os.path.abspath(__file__))


def expected_skips(path: str = os.path.join(HERE, "expected_skips.txt")) -> dict[str, str]:
    """``{test node id: reason}`` from lines ``node id  # reason``."""
    skips = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                node, _, reason = line.partition("#")
                if node.strip():
                    skips[node.strip()] = reason.strip()
    return skips


def pytest_collection_modifyitems(config, items):
    skips = expected_skips()
    for item in items:
        reason = skips.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"expected skip: {reason}"))
