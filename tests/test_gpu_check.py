"""benchmarks/gpu_check.py: it refuses at once without a GPU, and its whole plan runs (on the CPU, on a tiny
shape: the rows, the table, the FLOP/s arithmetic) so the check works the first time a GPU is lent."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_exits_2_at_once_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "t.md")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA GPU is usable here" in proc.stderr
    assert not (tmp_path / "t.md").exists()


def test_mvae_epoch_arithmetic_counts_each_layer():
    # 10 users, 50 items, 40 non-zeros; hidden [6], latent 2: encoder 40*6 (sparse) + 10*(6*4),
    # decoder 10*(2*6 + 6*50); a multiply-add is 2 FLOPs, backward twice the forward
    forward = 2 * (40 * 6 + 10 * (6 * 4 + 2 * 6 + 6 * 50))
    assert gpu_check.mvae_epoch_flops(10, 50, 40, [6], 2) == 3 * forward


@pytest.mark.slow
def test_the_whole_plan_runs_on_a_tiny_shape(tmp_path):
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run([sys.executable, SCRIPT, "--allow-cpu", "--shape", "150x80x2000", "--large-shape", "none",
                           "--data", str(tmp_path / "data"), "--out", str(out), "--budget", "1200"],
                          capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 150x80x2000")]
    assert len(rows) == 21                          # 5 models x 2 doors x 2 precisions, and the DDP row
    ok = [r for r in rows if "| ok |" in r]
    assert len(ok) == 20 and "skipped: 0 GPUs" in rows[-1]
    ndcgs = [float(row.split("|")[10]) for row in ok]
    assert all(0 <= v <= 1 for v in ndcgs) and sum(ndcgs) > 0, ndcgs
    assert all(" G" in r.split("|")[11] for r in ok if "| MVAE |" in r)   # MVAE's achieved FLOP/s
