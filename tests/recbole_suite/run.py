"""RecBole 1.2.1's own test suite, with ``import recbole_ext`` in effect.

    python tests/recbole_suite/run.py                     # every part, as RecBole's run_test.sh runs them
    python tests/recbole_suite/run.py --parts metrics data --out benchmarks/results/recbole_suite.md

The suite (an unmodified copy of RecBole's ``tests/``, ``../shared/recbole-1.2.1-tests`` beside this
checkout, or ``--suite``) is copied into a fresh folder, never edited; this folder's
``suite_conftest.py`` (``import recbole_ext``; the copy's ``conftest.py``) and ``expected_skips.txt`` (tests that need a package with no install for our
stack, a reason each) go beside the copy.  Each part runs in its own pytest process from the copy's
root, as RecBole's ``run_test.sh`` does (its model tests read ``data_path: tests/test_data/``).
Prints passed / failed / expected-skip per part; exits 1 if any test failed or was skipped for a reason
not in the list, 2 if the suite is not there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_SUITE = os.path.join(os.path.dirname(ROOT), "shared", "recbole-1.2.1-tests")

#: part -> what RecBole's run_test.sh runs for it (pytest paths; "script:" runs a file as a program)
PARTS = {
    "metrics": ["tests/metrics"],
    "config": ["tests/config/test_config.py", "tests/config/test_overall.py"],
    "config-cli": ["script:tests/config/test_command_line.py", "--use_gpu=False", "--valid_metric=Recall@10",
                            "--metrics=['Recall']", "--epochs=200", "--learning_rate=0.3"],
    "evaluation": ["tests/evaluation_setting"],
    "model-auto": ["tests/model/test_model_auto.py"],
    "model-manual": ["tests/model/test_model_manual.py"],
    "data": ["tests/data"],
    "hyper": ["tests/hyper_tuning/test_hyper_tuning.py"],
}


def copy_suite(suite: str, into: str) -> str:
    """A fresh copy of ``suite``'s ``tests/`` with our conftest and skip list beside it; returns its root."""
    root = os.path.join(into, "recbole-suite")
    shutil.copytree(os.path.join(suite, "tests"), os.path.join(root, "tests"))
    shutil.copy(os.path.join(HERE, "suite_conftest.py"), os.path.join(root, "conftest.py"))
    shutil.copy(os.path.join(HERE, "expected_skips.txt"), root)
    for folder, dirs, files in os.walk(root):        # the shared copy is read-only; the tests write beside it
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return root


def _counts(junit: str) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "expected skip": 0, "other skip": 0}
    others = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
        elif skipped is not None:
            expected = (skipped.get("message") or "").startswith("expected skip:")
            counts["expected skip" if expected else "other skip"] += 1
            if not expected:
                others.append(f"{case.get('classname')}::{case.get('name')}: {skipped.get('message')}")
        else:
            counts["passed"] += 1
    for line in others:
        print(f"    skipped for a reason not in expected_skips.txt: {line}")
    return counts


def run_part(name: str, root: str, python: str) -> tuple[dict[str, int], float, str]:
    spec = PARTS[name]
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if spec[0].startswith("script:"):
        code = ("import runpy, sys; import recbole_ext; sys.argv = [sys.argv[1], *sys.argv[2:]]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
        proc = subprocess.run([python, "-c", code, spec[0][len("script:"):], *spec[1:]], cwd=root, env=env,
                              capture_output=True, text=True)
        ok = proc.returncode == 0
        counts = {"passed": int(ok), "failed": int(not ok), "expected skip": 0, "other skip": 0}
        return counts, time.perf_counter() - start, "" if ok else proc.stdout[-2000:] + proc.stderr[-3000:]
    junit = os.path.join(root, f"junit-{name.replace(' ', '-')}.xml")
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                           f"--junitxml={junit}", *spec], cwd=root, env=env, capture_output=True, text=True)
    if not os.path.isfile(junit):
        return {"passed": 0, "failed": 1, "expected skip": 0, "other skip": 0}, time.perf_counter() - start, \
            proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = _counts(junit)
    failed = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR")))
    return counts, time.perf_counter() - start, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=DEFAULT_SUITE, help="RecBole's tests (a folder holding tests/)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.suite, "tests")):
        print(f"recbole suite: {args.suite} has no tests/ folder: RecBole 1.2.1's own tests are not here "
              "(they are not in the recbole wheel); pass --suite", file=sys.stderr)
        return 2
    rows, problems, total = [], 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_suite(args.suite, tmp)
        for name in args.parts:
            counts, seconds, failures = run_part(name, root, sys.executable)
            total += seconds
            rows.append((name, counts, seconds))
            print(f"{name:<20} {counts['passed']:>4} passed {counts['failed']:>4} failed "
                  f"{counts['expected skip']:>4} expected skip  ({seconds:.0f} s)", flush=True)
            if failures:
                print("    " + failures.replace("\n", "\n    "))
            problems += counts["failed"] + counts["other skip"]
    sums = {k: sum(c[k] for _, c, _ in rows) for k in ("passed", "failed", "expected skip", "other skip")}
    summary = (f"{sums['passed']} passed, {sums['failed']} failed, {sums['expected skip']} skipped "
               f"(expected), {sums['other skip']} skipped otherwise, in {total:.0f} s")
    print(summary)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("# RecBole 1.2.1's own test suite with `import recbole_ext`\n\n"
                    f"Made by `python tests/recbole_suite/run.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
                    "on a 2-core CPU machine (expected skips and their reasons: "
                    "`tests/recbole_suite/expected_skips.txt`).\n\n"
                    "| part | passed | failed | expected skip | seconds |\n|---|---|---|---|---|\n")
            for name, counts, seconds in rows:
                f.write(f"| {name} | {counts['passed']} | {counts['failed']} | {counts['expected skip']} "
                        f"| {seconds:.0f} |\n")
            f.write(f"\n{summary}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
