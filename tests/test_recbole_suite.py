"""The runner of RecBole's own test suite (tests/recbole_suite/run.py): its skip list, its refusal without
the suite, and one real part (the whole suite runs in CI: make test-recbole)."""
import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "recbole_suite", "run.py")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_expected_skip_names_a_test_and_gives_a_reason():
    suite_conftest = _load("suite_conftest", os.path.join(HERE, "recbole_suite", "suite_conftest.py"))
    skips = suite_conftest.expected_skips()
    assert len(skips) == 5
    for node, reason in skips.items():
        assert node.startswith("tests/model/test_model_auto.py::") and "needs " in reason, (node, reason)


def test_the_runner_refuses_at_once_without_the_suite(tmp_path):
    proc = subprocess.run([sys.executable, RUN, "--suite", str(tmp_path / "none")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "has no tests/ folder" in proc.stderr


def test_the_runner_runs_a_part_of_recboles_suite_with_recbole_ext_imported(tmp_path):
    run = _load("recbole_suite_run", RUN)
    if not os.path.isdir(os.path.join(run.DEFAULT_SUITE, "tests")):
        pytest.skip(f"RecBole's own tests are not at {run.DEFAULT_SUITE} (they are not in the recbole wheel)")
    out = tmp_path / "suite.md"
    proc = subprocess.run([sys.executable, RUN, "--parts", "metrics", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| metrics | 16 | 0 | 0 |" in out.read_text()
