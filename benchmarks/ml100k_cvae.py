"""CVAE on ml-100k: the cold-start item protocol vs content-KNN and random, and
RecBole's default (warm) split vs MVAE and RecBole's baselines.

Parts (``--parts``, default both):
  cold  configs/protocols/ml100k_cold_items.yaml: 20 % of the items held out entirely
        (drawn with the run's seed); the interactions of half of them validate, of the
        other half test; each user ranks only the held-out items of the phase. Rows:
          CVAE        configs/cvae.yaml defaults (content: genres, title words, release year)
          ContentKNN  user profile = mean content vector of the user's training items;
                      score = cosine(profile, item content); the same content rows as CVAE
          Random      uniform random scores (seeded)
  warm  configs/protocols/ml100k_default.yaml (RecBole's RS 8:1:1, full ranking). Rows CVAE,
        MVAE (configs/protocols/ml100k_mvae.yaml), RecBole's MultiVAE, EASE, ItemKNN, Pop.

Test metrics: RecBole's evaluator for trained models, lightning_genrec.metrics.TopKMetrics
(equal to it, tested) for ContentKNN and Random, on the same users, candidates and positives.
Every (row, seed) runs in a fresh subprocess, one after another.

Usage:
    python benchmarks/ml100k_cvae.py                        # both parts, seeds 2020 2021 2022
    python benchmarks/ml100k_cvae.py --parts cold --seeds 2020
Writes benchmarks/results/ml100k_cvae.{csv,md} (see --out).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from bench_io import has, mean_std, merge, pick, read_rows, recorded_command, run_rows, write_csv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = "ml100k_cvae.py"
PROTOCOLS = {"cold": os.path.join(ROOT, "configs", "protocols", "ml100k_cold_items.yaml"),
             "warm": os.path.join(ROOT, "configs", "protocols", "ml100k_default.yaml")}
MVAE_ML100K = os.path.join(ROOT, "configs", "protocols", "ml100k_mvae.yaml")
ROWS = {"cold": ["CVAE", "ContentKNN", "Random"], "warm": ["CVAE", "MVAE", "MultiVAE", "EASE", "ItemKNN", "Pop"]}
BASELINES = {"ContentKNN", "Random"}   # scored here, not trained by RecBole
SEEDS = [2020, 2021, 2022]
REPORT = {"cold": ["ndcg@20", "recall@20", "ndcg@10", "recall@10", "precision@20", "mrr@20", "itemcoverage@20"],
          "warm": ["ndcg@20", "recall@20", "ndcg@10", "recall@10", "precision@20", "mrr@20", "novelty@20",
                   "itemcoverage@20", "giniindex@20"]}


def _config(part: str, model: str, seed: int, epochs: int | None):
    from recbole_ext.config import make_config

    files = [PROTOCOLS[part]] + ([MVAE_ML100K] if model == "MVAE" else [])
    # CVAE: the authors' 100 epochs on both protocols (ml100k_default.yaml allows 300 for the fast models)
    extra = {"epochs": epochs} if epochs else ({"epochs": 100} if model == "CVAE" else {})
    # the baselines read CVAE's content settings (content_fields, content_min_count) from configs/cvae.yaml
    return make_config("CVAE" if model in BASELINES else model, "ml-100k", files,
                       {"seed": seed, "state": "WARNING", **extra})


def content_knn_scores(data, users):
    """cosine(mean content of each user's training items, each item's content): (B, I)."""
    import numpy as np

    X = data.content.matrix
    R = data.train[users]
    profile = np.asarray(R @ X) / np.maximum(np.asarray(R.sum(axis=1)), 1.0)
    unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)   # noqa: E731
    return unit(profile) @ unit(X).T


def run_baseline(part: str, model: str, seed: int) -> dict:
    import numpy as np
    import torch

    from lightning_genrec.metrics import TopKMetrics
    from recbole_ext.config import load_data, data_from_recbole

    config = _config(part, model, seed, None)
    start = time.perf_counter()
    _, train, valid, test = load_data(config)
    data = data_from_recbole("CVAE", train, valid, test, config)
    rng = np.random.default_rng(seed)
    out = {}
    for phase in ("valid", "test"):
        users = data.split(phase).users
        batch = data.rows(users, phase)
        if model == "ContentKNN":
            scores = torch.from_numpy(content_knn_scores(data, users)).float()
        else:
            scores = torch.from_numpy(rng.random((len(users), data.n_items))).float()
        scores = scores.masked_fill(batch["exclude"], -float("inf"))
        scores[:, 0] = -float("inf")
        metrics = TopKMetrics(data.n_items, list(config["topk"]), torch.as_tensor(data.item_counts),
                              data.n_train_users)
        metrics.update(scores, batch["target"])
        values = {k: float(v) for k, v in metrics.compute().items()}
        if phase == "test":
            out.update(values)
        else:
            out["best_valid"] = values[config["valid_metric"].lower()]
    seconds = time.perf_counter() - start
    return {"fit_s": seconds, "time_to_best_s": seconds, "epochs": 1, "best_epoch": 0, "s_per_epoch": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **out}


def run_one(part: str, model: str, seed: int, epochs: int | None = None) -> dict:
    if model in BASELINES:
        result = run_baseline(part, model, seed)
    else:
        from timed_run import timed_run

        result = timed_run(_config(part, model, seed, epochs))
    return {"part": part, "model": model, "seed": seed, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--models", nargs="+", help="only these rows (default: every row of each part)")
    parser.add_argument("--epochs", type=int, help="cap every model's epochs (smoke runs; default: the protocol's)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ml100k_cvae"))
    parser.add_argument("--append", action="store_true",
                        help="merge into the existing results at --out (same part, row and seed: replaced)")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .csv at --out")
    parser.add_argument("--one", nargs=3, metavar=("PART", "MODEL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import json

        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.epochs)))
        return
    if args.render:
        write(read_rows(args.out + ".csv"), args.out, recorded_command(args.out) or "(unknown)")
        return
    jobs = [(part, model, seed) for part in args.parts for seed in args.seeds
            for model in ROWS[part] if not args.models or model in args.models]
    rows = run_rows(__file__, jobs, ["--epochs", str(args.epochs)] if args.epochs else [])
    command = f"`{' '.join(['python', 'benchmarks/' + SCRIPT, *sys.argv[1:]])}`"
    if args.append and os.path.exists(args.out + ".csv"):
        rows = merge(read_rows(args.out + ".csv"), rows)
        command = f"{recorded_command(args.out) or '(unknown)'} then {command}"
    write_csv(rows, args.out + ".csv")
    write(rows, args.out, command)


def write(rows: list[dict], out: str, argv: str) -> None:
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# CVAE on ml-100k", "", f"Command: {argv}",
             f"Seeds: {seeds} (mean ± std); each run in a fresh process on the same machine, one after another; "
             "2 CPU cores, no GPU. CVAE's fit time includes its 20 pre-training epochs.", ""]
    rows = sorted(rows, key=lambda r: r["seed"])
    titles = {"cold": "Cold-start items (configs/protocols/ml100k_cold_items.yaml: 20 % of the items held out "
                      "entirely, drawn with the seed; half validate, half test; each user ranks only the held-out "
                      "items of the phase; selection on valid NDCG@20)",
              "warm": "Warm split (RecBole's default: RS 8:1:1 per user, full ranking; selection on valid NDCG@20)"}
    for part in ("cold", "warm"):
        present = {r["model"] for r in rows if r["part"] == part}
        models = [m for m in ROWS[part] if m in present] + sorted(present - set(ROWS[part]))
        if not models:
            continue
        keys = REPORT[part] + ["best_valid"]
        lines += [f"## {titles[part]}", "", "| model | " + " | ".join(REPORT[part]) + " | valid NDCG@20 (best) |",
                  "|---" * (len(keys) + 1) + "|"]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(mean_std(rows, part, m, k) for k in keys) + " |")
        lines += ["", "| model | fit (s) | epochs | best epoch (0-based), per seed | s / epoch (incl. validation), "
                  "per seed | peak RSS (MB) |", "|---|---|---|---|---|---|"]
        for m in models:
            mine = [r for r in rows if r["part"] == part and r["model"] == m]
            best = ", ".join(str(r["best_epoch"]) for r in mine)
            per_epoch = ", ".join("%.3f" % r["s_per_epoch"] for r in mine)
            lines.append(f"| {m} | {mean_std(rows, part, m, 'fit_s', '%.1f')} | {mean_std(rows, part, m, 'epochs', '%.1f')}"
                         f" | {best} | {per_epoch} | {mean_std(rows, part, m, 'peak_rss_mb', '%.0f')} |")
        base = {"cold": "ContentKNN", "warm": "MVAE"}[part]
        if "CVAE" in models and base in models:
            common = [s for s in seeds if has(rows, part, "CVAE", s) and has(rows, part, base, s)]
            for key in ("ndcg@20", "recall@20"):
                lines += ["", f"Per seed, CVAE / {base} test {key}: " + ", ".join(
                    f"{s}: {pick(rows, part, 'CVAE', s)[key] / pick(rows, part, base, s)[key]:.3f}x" for s in common)]
        lines.append("")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
