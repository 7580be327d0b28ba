"""benchmarks/scale.py: the scale benchmark's rows (each a fresh process, failures as rows), its
--append merge and its --rewrite of the report from the CSV."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture(scope="module")
def scale():
    sys.path.insert(0, BENCH)                     # scale.py imports its neighbours (synthetic, bench_io)
    try:
        spec = importlib.util.spec_from_file_location("scale", os.path.join(BENCH, "scale.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(BENCH)


def _args(**kw):
    base = dict(data_seed=0, seed=2020, epochs=1, eval_batch_size=4096, timeout=60.0, max_rss_mb=None,
                max_batches=None, max_batches_models=["SVAE"])
    return argparse.Namespace(**{**base, **kw})


def _main(scale, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["scale.py", *argv])
    scale.main()


def test_rewrite_redraws_the_report_from_the_csv_with_each_rows_threads_and_generates_nothing(
        scale, tmp_path, monkeypatch):
    out = str(tmp_path / "res")
    rows = [{"model": "MVAE", "status": "ok", "protocol": "default", "train_inter": 1000, "threads": 1,
             "train_epoch_s": 2.0, "s_per_M": 2000.0, "peak_rss_mb": 700, "test_ndcg@20": 0.25},
            {"model": "MultiVAE", "status": "rss-limit", "protocol": "default", "threads": 2,
             "peak_rss_mb": 21036, "error": "above 21000 MB"}]
    data = {"name": "synth-300u-400i-9000", "users": 300, "items": 400, "interactions": 9000}
    scale.write(rows, out, "`python benchmarks/scale.py --users 300`", data, _args())
    with open(out + ".md") as f:
        first = f.read()
    assert "| threads |" in first and "OMP_NUM_THREADS=" not in first.split("Seconds:")[0].split("Machine:")[1][:60]
    with open(out + ".md", "w") as f:                    # a report drawn before, by older code: only its command counts
        f.write("# old\n\nCommand: `python benchmarks/scale.py --users 300`\n\n| model | status |\n")
    _main(scale, monkeypatch, "--users", "300", "--items", "400", "--interactions", "9000", "--out", out,
          "--data", str(tmp_path / "data"), "--rewrite", "--eval-batch-size", "4096", "--timeout", "60")
    with open(out + ".md") as f:
        text = f.read()
    assert text == first                                  # the same report, from the CSV alone
    assert "| MVAE | ok |" in text and "| MultiVAE | rss-limit |" in text and "- MultiVAE: above 21000 MB" in text
    assert not (tmp_path / "data").exists()               # --rewrite runs and generates nothing
    with pytest.raises(SystemExit, match="no results at"):
        _main(scale, monkeypatch, "--users", "300", "--items", "400", "--interactions", "9000",
              "--out", str(tmp_path / "none"), "--rewrite")


@pytest.mark.slow
def test_rows_run_in_fresh_processes_record_their_threads_and_append_replaces_only_their_row(
        scale, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, data = str(tmp_path / "res"), str(tmp_path / "data")
    shape = ["--users", "300", "--items", "200", "--interactions", "6000", "--data", data, "--out", out,
             "--eval-batch-size", "4096", "--timeout", "300"]
    _main(scale, monkeypatch, *shape, "--models", "MVAE", "EASE")
    rows = {r["model"]: r for r in scale.read_rows(out + ".csv")}
    for model in ("MVAE", "EASE"):
        assert rows[model]["status"] == "ok", rows[model].get("error")
        assert rows[model]["threads"] == 1 and rows[model]["train_inter"] > 4000
        assert 0 < rows[model]["test_ndcg@20"] <= 1 and rows[model]["peak_rss_mb"] > 100
    assert rows["MVAE"]["epochs"] == 1 and rows["MVAE"]["train_epoch_s"] > 0
    mvae = rows["MVAE"]
    _main(scale, monkeypatch, *shape, "--models", "EASE", "--append")
    again = scale.read_rows(out + ".csv")
    assert [r["model"] for r in again] == ["MVAE", "EASE"] and again[0] == mvae   # EASE's row replaced, MVAE's kept
    with open(out + ".md") as f:
        text = f.read()
    assert text.count("`python benchmarks/scale.py") == 2 and " then `python" in text
