"""MVAE vs RecBole's MultiVAE, Pop, ItemKNN and EASE on ml-100k (RecBole's default split).

Every (model, seed) runs in a fresh subprocess, so wall times and peak memory
(max RSS of that process) are comparable.  Model selection on validation
(``valid_metric`` of the protocol YAML); test metrics from RecBole's evaluator.

Usage:
    python benchmarks/ml100k_spine.py                     # all models, seeds 2020 2021 2022
    python benchmarks/ml100k_spine.py --models MVAE MultiVAE --seeds 2020
Writes benchmarks/results/ml100k_spine.{csv,md} (see --out).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTOCOL = os.path.join(ROOT, "configs", "protocols", "ml100k_default.yaml")
# rows of the table; any other name is a model with its own defaults on the protocol
# (model, config files on top of the protocol, config dict on top of those)
VARIANTS = {
    "MVAE": ("MVAE", [os.path.join(ROOT, "configs", "protocols", "ml100k_mvae.yaml")], {}),
    # Liang et al.'s settings unchanged (beta stays ~0 on ml-100k), RecBole's patience alone
    "MVAE-paper": ("MVAE", [], {"anneal_cap": 0.2, "total_anneal_steps": 200000, "stop_after_anneal": False}),
    "MVAE-defaults": ("MVAE", [], {}),   # MVAE's defaults (horizon in passes over the data)
    # RecBole's out-of-the-box eval_batch_size (4096 scores = 2 ml-100k users a batch): what a
    # RecBole user runs today; the protocol's larger value is what every other row uses
    "MultiVAE-evalbs4096": ("MultiVAE", [], {"eval_batch_size": 4096}),
}
MODELS = ["MVAE", "MVAE-paper", "MultiVAE", "MultiVAE-evalbs4096", "EASE", "ItemKNN", "Pop"]
SEEDS = [2020, 2021, 2022]
REPORT = ["ndcg@20", "recall@20", "ndcg@10", "recall@10", "mrr@20", "precision@20",
          "novelty@20", "itemcoverage@20", "giniindex@20"]


def run_one(row: str, seed: int) -> dict:
    """Train + evaluate one table row in this process; return timings and metrics."""
    from recbole_ext.config import make_config
    from timed_run import timed_run

    model, files, overrides = VARIANTS.get(row, (row, [], {}))
    config = make_config(model, "ml-100k", [PROTOCOL, *files], {**overrides, "seed": seed, "state": "WARNING"})
    return {"model": row, "seed": seed, **timed_run(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ml100k_spine"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]))))
        return

    rows = []
    for seed in args.seeds:
        for model in args.models:
            with tempfile.TemporaryDirectory() as work:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", model, str(seed)],
                                     cwd=work, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
                raise SystemExit(f"{model} seed {seed} failed")
            row = json.loads(line[0][7:])
            rows.append(row)
            print(f"{model:19s} seed {seed}: ndcg@20 {row['ndcg@20']:.4f} recall@20 {row['recall@20']:.4f} "
                  f"to-best {row['time_to_best_s']:.1f}s fit {row['fit_s']:.1f}s", flush=True)
    write(rows, args.out, " ".join(sys.argv[1:]))


def write(rows: list[dict], out: str, argv: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    keys = list(rows[0])
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)

    def ms(model, key):
        vals = [r[key] for r in rows if r["model"] == model]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    models = list(dict.fromkeys(r["model"] for r in rows))
    n_seeds = len({r["seed"] for r in rows})
    lines = ["# ml-100k, RecBole default split (RS 8:1:1, full ranking), selection on valid NDCG@20",
             "", "Command: `" + " ".join(["python benchmarks/ml100k_spine.py", argv]).strip() + "`",
             f"Seeds: {sorted({r['seed'] for r in rows})} (mean ± std over {n_seeds}); test metrics by RecBole's "
             "evaluator; each run in a fresh process on the same machine, one after another.", "",
             "| model | " + " | ".join(REPORT) + " |", "|---" * (len(REPORT) + 1) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join("%.4f ± %.4f" % ms(m, k) for k in REPORT) + " |")
    lines += ["", "| model | time to best valid (s) | fit (s) | epochs | s / epoch | peak RSS (MB) |",
              "|---|---|---|---|---|---|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join("%.1f ± %.1f" % ms(m, k) if k != "s_per_epoch" else "%.3f ± %.3f" % ms(m, k)
                                              for k in ("time_to_best_s", "fit_s", "epochs", "s_per_epoch",
                                                        "peak_rss_mb")) + " |")
    if "MVAE" in models and "MultiVAE" in models:
        lines += ["", "Ratios MVAE / RecBole MultiVAE, per seed (same run):", ""]
        for seed in sorted({r["seed"] for r in rows}):
            a = next(r for r in rows if r["model"] == "MVAE" and r["seed"] == seed)
            b = next(r for r in rows if r["model"] == "MultiVAE" and r["seed"] == seed)
            line = (f"- seed {seed}: test NDCG@20 {a['ndcg@20'] / b['ndcg@20']:.3f}x, "
                    f"time to best valid {a['time_to_best_s'] / b['time_to_best_s']:.3f}x, "
                    f"s/epoch {a['s_per_epoch'] / b['s_per_epoch']:.3f}x")
            c = next((r for r in rows if r["model"] == "MultiVAE-evalbs4096" and r["seed"] == seed), None)
            if c:
                line += f"; time to best valid vs MultiVAE-evalbs4096 {a['time_to_best_s'] / c['time_to_best_s']:.3f}x"
            lines.append(line)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
