"""LARA on ml-100k's cold-start items: ranking users for new items (item -> users), against
random users, the most active users, a genre-profile baseline and CVAE.

Protocol: configs/protocols/ml100k_cold_items.yaml -- 20 % of the items held out entirely
(drawn with the run's seed); the interactions of half of them validate, of the other half
test.  For each held-out item of a phase, every user is ranked (users who already have the
item in their history excepted; under this protocol none do); the item's relevant users are
those who interacted with it.  Metrics: the paper's P@10/@20, NDCG@10/@20, MAP@10/@20 in
that direction (lightning_genrec.item_ranking: RecBole's normalisations, transposed).

Rows:
  LARA          configs/lara.yaml (the authors' settings; genres as attributes); the round
                with the best validation item_ndcg@20 is tested (early stopping: 40 rounds)
  LARA-full     the same, every one of the authors' 400 rounds validated (no early stopping)
  CVAE          configs/cvae.yaml (content: genres, title words, release year), scored in the
                item -> users direction (each item's column of the users' scores) and selected
                on validation item_ndcg@20 like LARA
  GenreProfile  cosine(each user's genre shares over their training items, the item's genres)
  MostActive    users ranked by their number of training interactions, for every item
  Random        uniform random scores (seeded)

Every (row, seed) runs in a fresh subprocess, one after another.

Usage:
    python benchmarks/ml100k_lara.py                        # every row, seeds 2020 2021 2022
    python benchmarks/ml100k_lara.py --models LARA --seeds 2020
Writes benchmarks/results/ml100k_lara.{csv,md} (see --out).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

from bench_io import has, mean_std, merge, pick, read_rows, recorded_command, run_rows, write_csv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = "ml100k_lara.py"
PROTOCOL = os.path.join(ROOT, "configs", "protocols", "ml100k_cold_items.yaml")
PART = "cold"
ROWS = ["LARA", "LARA-full", "CVAE", "GenreProfile", "MostActive", "Random"]
BASELINES = {"GenreProfile", "MostActive", "Random"}   # scored here, not trained
SEEDS = [2020, 2021, 2022]
REPORT = ["item_ndcg@20", "item_precision@20", "item_map@20", "item_ndcg@10", "item_precision@10", "item_map@10"]
# each trained model's own epoch budget (the protocol file allows 100 epochs, stopping after 10)
BUDGET = {"LARA": {"epochs": 400, "stopping_step": 40}, "LARA-full": {"epochs": 400, "stopping_step": 400},
          "CVAE": {"epochs": 100, "stopping_step": 10}}


def _config(model: str, seed: int, epochs: int | None):
    from recbole_ext.config import make_config

    extra = dict(BUDGET.get(model, {}))
    if epochs:
        extra["epochs"] = epochs
    # the baselines read LARA's attribute settings (attribute_fields: genres) from configs/lara.yaml
    name = "LARA" if model in BASELINES or model.startswith("LARA") else model
    return make_config(name, "ml-100k", [PROTOCOL],
                       {"seed": seed, "state": "WARNING", "item_metrics": True, "valid_metric": "item_ndcg@20",
                        **extra})


def baseline_scores(model: str, data, phase: str, rng):
    """``item_scores(items) -> (C, U)`` of a baseline, users as in ``phase``."""
    import numpy as np
    import torch

    counts = data.profile_counts(phase)                                # (U, A) genre counts
    if model == "GenreProfile":
        unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)   # noqa: E731
        return lambda items: torch.from_numpy(unit(data.attributes.matrix[items]) @ unit(counts).T)
    if model == "MostActive":
        activity = np.asarray(data.train.sum(axis=1), dtype=np.float32).ravel()
        return lambda items: torch.from_numpy(np.tile(activity, (len(items), 1)))
    return lambda items: torch.from_numpy(rng.random((len(items), data.n_users)))


def overlap_with_most_active(module, data, k: int) -> float:
    """Mean share of a test item's top-k users that are also among the k most active users."""
    import numpy as np
    import torch

    from lightning_genrec.item_ranking import phase_items

    items = phase_items(data, "test")
    with torch.no_grad():
        scores = module.item_user_scores(items, "test").float().cpu()
    scores[:, 0] = -torch.inf
    top = scores.topk(k, dim=1).indices.numpy()                                   # (C, k)
    activity = np.asarray(data.train.sum(axis=1)).ravel()
    active = set(np.argsort(-activity, kind="stable")[:k].tolist())
    return float(np.mean([len(active & set(row.tolist())) / k for row in top]))


def run_baseline(model: str, seed: int) -> dict:
    import numpy as np

    from lightning_genrec.item_ranking import phase_item_metrics
    from recbole_ext.config import load_data, data_from_recbole

    config = _config(model, seed, None)
    start = time.perf_counter()
    _, train, valid, test = load_data(config)
    data = data_from_recbole("LARA", train, valid, test, config)
    rng = np.random.default_rng(seed)
    out = {}
    for phase in ("valid", "test"):
        values = phase_item_metrics(data, phase, baseline_scores(model, data, phase, rng), config["topk"])
        if phase == "test":
            out.update(values)
        else:
            out["best_valid"] = values["item_ndcg@20"]
    seconds = time.perf_counter() - start
    return {"fit_s": seconds, "time_to_best_s": seconds, "epochs": 1, "best_epoch": 0, "s_per_epoch": seconds,
            "train_s_per_epoch": 0.0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_test_items": int(len(np.flatnonzero(np.asarray(data.test.positives.sum(0)).ravel()))), **out}


def run_one(part: str, model: str, seed: int, epochs: int | None = None) -> dict:
    if model in BASELINES:
        result = run_baseline(model, seed)
    else:
        from timed_run import timed_run

        def train_seconds(trainer, net, train, test):
            return {"train_s_per_epoch": statistics.mean(trainer.epoch_seconds),
                    "overlap_most_active@20": overlap_with_most_active(net.module, net.data, 20)}

        result = timed_run(_config(model, seed, epochs), after_test=train_seconds)
    return {"part": part, "model": model, "seed": seed, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--models", nargs="+", choices=ROWS, help="only these rows (default: all)")
    parser.add_argument("--epochs", type=int, help="cap the trained models' epochs (smoke runs)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ml100k_lara"))
    parser.add_argument("--append", action="store_true",
                        help="merge into the existing results at --out (same row and seed: replaced)")
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
    jobs = [(PART, model, seed) for seed in args.seeds for model in ROWS if not args.models or model in args.models]
    rows = run_rows(__file__, jobs, ["--epochs", str(args.epochs)] if args.epochs else [], key="item_ndcg@20")
    command = f"`{' '.join(['python', 'benchmarks/' + SCRIPT, *sys.argv[1:]])}`"
    if args.append and os.path.exists(args.out + ".csv"):
        rows = merge(read_rows(args.out + ".csv"), rows)
        command = f"{recorded_command(args.out) or '(unknown)'} then {command}"
    write_csv(rows, args.out + ".csv")
    write(rows, args.out, command)


def write(rows: list[dict], out: str, argv: str) -> None:
    seeds = sorted({r["seed"] for r in rows})
    rows = sorted(rows, key=lambda r: r["seed"])
    present = {r["model"] for r in rows}
    models = [m for m in ROWS if m in present]
    lines = ["# LARA on ml-100k: ranking users for new items", "", f"Command: {argv}",
             f"Seeds: {seeds} (mean ± std); each run in a fresh process on the same machine, one after another; "
             "2 CPU cores, no GPU.", "",
             "Protocol: configs/protocols/ml100k_cold_items.yaml (20 % of the items held out entirely, drawn with "
             "the seed; half validate, half test). For each test item every user is ranked; relevant = the users "
             "who interacted with it. Trained rows are selected on validation item_ndcg@20, never on test.", "",
             "| model | " + " | ".join(REPORT) + " | valid item_ndcg@20 (best) |", "|---" * (len(REPORT) + 2) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(mean_std(rows, PART, m, k) for k in REPORT + ["best_valid"]) + " |")
    lines += ["", "Share of a test item's top-20 users who are also among the 20 most active users (trained rows): "
              + ", ".join(f"{m} {mean_std(rows, PART, m, 'overlap_most_active@20', '%.2f')}" for m in models
                          if m not in BASELINES), ""]
    lines += ["| model | fit (s) | epochs | best epoch (0-based), per seed | training s / epoch | "
              "s / epoch (incl. validation) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        best = ", ".join(str(r["best_epoch"]) for r in mine)
        lines.append(f"| {m} | {mean_std(rows, PART, m, 'fit_s', '%.1f')} | {mean_std(rows, PART, m, 'epochs', '%.1f')}"
                     f" | {best} | {mean_std(rows, PART, m, 'train_s_per_epoch', '%.3f')}"
                     f" | {mean_std(rows, PART, m, 's_per_epoch', '%.3f')} | {mean_std(rows, PART, m, 'peak_rss_mb', '%.0f')} |")
    for lara in ("LARA", "LARA-full"):
        for base in ("GenreProfile", "MostActive", "CVAE"):
            common = [s for s in seeds if has(rows, PART, lara, s) and has(rows, PART, base, s)]
            if common:
                lines += ["", f"Per seed, {lara} / {base} test item_ndcg@20: " + ", ".join(
                    f"{s}: {pick(rows, PART, lara, s)['item_ndcg@20'] / pick(rows, PART, base, s)['item_ndcg@20']:.3f}x"
                    for s in common)]
    lines.append("")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
