"""Held-out users (strong generalisation, Liang et al. 2018) on ml-100k: MVAE, CFGAN (mode user), CVAE and
RecBole's MultiVAE, EASE, ItemKNN and Pop, each with its own defaults (nothing tuned to ml-100k).

Protocol: configs/protocols/ml100k_heldout_users.yaml -- 10 % of the users validate, 10 % test, withheld
from training; each scored from a random 80 % of their interactions (the fold-in), ranked on the rest.
Every (model, seed) runs in a fresh subprocess (wall times and peak RSS comparable), one after another;
a run that fails or exceeds --timeout is kept as a row saying so.  Rows are appended to the CSV as they
finish, and the Markdown table is rewritten after each, so an interrupted benchmark keeps what it did.

Usage:
    python benchmarks/ml100k_heldout.py                          # every model, seeds 2020 2021 2022
    python benchmarks/ml100k_heldout.py --models EASE Pop --seeds 2020
Writes benchmarks/results/ml100k_heldout.{csv,md} (see --out).
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTOCOL = os.path.join(ROOT, "configs", "protocols", "ml100k_heldout_users.yaml")
sys.path.insert(0, HERE)
from bench_io import number as _num  # noqa: E402  (a CSV cell back as int / float)
# rows of the table: (model, config dict on top of the protocol); any other name is a model with its defaults
VARIANTS = {
    "CFGAN-user": ("CFGAN", {"mode": "user"}),
}
MODELS = ["EASE", "ItemKNN", "Pop", "MVAE", "MultiVAE", "CFGAN-user"]
SEEDS = [2020, 2021, 2022]
REPORT = ["recall@20", "truncatedrecall@20", "recall@50", "truncatedrecall@50", "ndcg@100"]


def run_one(row: str, seed: int) -> dict:
    """Train + evaluate one table row in this process; return timings and metrics."""
    from recbole_ext.config import make_config
    from timed_run import timed_run

    model, overrides = VARIANTS.get(row, (row, {}))
    config = make_config(model, "ml-100k", [PROTOCOL], {**overrides, "seed": seed, "state": "WARNING"})
    return {"model": row, "seed": seed, **timed_run(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run (default 1200)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ml100k_heldout"))
    parser.add_argument("--append", action="store_true", help="keep the rows already in the CSV")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]))))
        return

    rows = read(args.out) if args.append else []
    command = " ".join(["python benchmarks/ml100k_heldout.py", *sys.argv[1:]])
    for model in args.models:
        for seed in args.seeds:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                try:
                    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", model, str(seed)],
                                         cwd=work, capture_output=True, text=True, timeout=args.timeout)
                    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                    failure = None if out.returncode == 0 and line else \
                        (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
                except subprocess.TimeoutExpired:
                    line, failure = [], f"timeout after {args.timeout:.0f} s"
            if failure:
                row = {"model": model, "seed": seed, "failure": failure, "wall_s": time.perf_counter() - start}
                print(f"{model:12s} seed {seed}: FAILED {failure}", flush=True)
            else:
                row = json.loads(line[0][7:])
                print(f"{model:12s} seed {seed}: " + " ".join(f"{k} {row[k]:.4f}" for k in REPORT) +
                      f" fit {row['fit_s']:.1f}s", flush=True)
            rows.append(row)
            write(rows, args.out, command)


def read(out: str) -> list[dict]:
    if not os.path.isfile(out + ".csv"):
        return []
    with open(out + ".csv", newline="") as f:
        return [{k: _num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def write(rows: list[dict], out: str, command: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)

    done = [r for r in rows if "failure" not in r]

    def ms(model, key, fmt="%.4f"):
        vals = [float(r[key]) for r in done if r["model"] == model]
        if not vals:
            return ""
        return (fmt + " ± " + fmt) % (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)

    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["# ml-100k, held-out users (Liang et al. 2018's strong generalisation), selection on valid NDCG@100",
             "", f"Command: `{command}`", "",
             "Protocol `configs/protocols/ml100k_heldout_users.yaml`: 10 % of the users validate and 10 % test, "
             "withheld from training (seeded by `seed`); each is scored from a random 80 % of their interactions "
             "(the fold-in, excluded from ranking) and ranks every item for the rest. Each model with its own "
             "defaults, nothing tuned to ml-100k. recall = RecBole's hits / |T|; truncatedrecall = the paper's "
             "hits / min(K, |T|). Test metrics by RecBole's evaluator (through `run_recbole`'s loop); mean ± std "
             "over the seeds that finished; each run in a fresh process, one after another, on a shared 2-core "
             "machine (wall times are loaded-machine times).", "",
             "| model | seeds | " + " | ".join(REPORT) + " |", "|---" * (len(REPORT) + 2) + "|"]
    for m in models:
        seeds = sorted(r["seed"] for r in done if r["model"] == m)
        lines.append(f"| {m} | {', '.join(map(str, seeds)) or '-'} | " + " | ".join(ms(m, k) for k in REPORT) + " |")
    lines += ["", "| model | fit (s) | epochs | best epoch (0-based) | peak RSS (MB) |", "|---|---|---|---|---|"]
    for m in models:
        best = ", ".join(str(r["best_epoch"]) for r in done if r["model"] == m)
        lines.append(f"| {m} | {ms(m, 'fit_s', '%.1f')} | {ms(m, 'epochs', '%.1f')} | {best} | "
                     f"{ms(m, 'peak_rss_mb', '%.0f')} |")
    failed = [r for r in rows if "failure" in r]
    if failed:
        lines += ["", "Runs that did not finish:", ""]
        lines += [f"- {r['model']} seed {r['seed']}: {r['failure']}" for r in failed]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
