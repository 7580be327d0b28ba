"""SVAE on ml-100k: next-item protocol vs RecBole's GRU4Rec and SASRec, the
future-block protocol vs MVAE, and SVAE's batched vs batch-size-1 epoch time.

Parts (``--parts``, default all):
  next_item  configs/protocols/ml100k_next_item.yaml: RecBole's sequential protocol
             (time order, leave-one-out, full ranking). Rows SVAE, GRU4Rec, SASRec.
             Test metrics from RecBole's evaluator (nothing excluded, RecBole's rule
             for sequential models), and again with each user's seen items excluded
             (columns ``x:...``), for every row alike.
  block      configs/protocols/ml100k_future_block.yaml: last 20 % of each user's
             history by time is the target, scored from the first 80 %. Rows SVAE,
             MVAE (with configs/protocols/ml100k_mvae.yaml), Pop.
  speed      SVAE, next-item data: one training epoch (no validation) at the default
             train_batch_size and at train_batch_size=1; seconds and peak RSS.

Every (row, seed) runs in a fresh subprocess, one after another.

Usage:
    python benchmarks/ml100k_svae.py                           # everything, seeds 2020 2021 2022
    python benchmarks/ml100k_svae.py --parts block --seeds 2020
Writes benchmarks/results/ml100k_svae.{csv,md} (see --out).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench_io import command_of, has, mean_std, merge, pick, read_rows, run_subprocess, write_csv

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = "ml100k_svae.py"
ROOT = os.path.dirname(HERE)
PROTOCOLS = {"next_item": os.path.join(ROOT, "configs", "protocols", "ml100k_next_item.yaml"),
             "block": os.path.join(ROOT, "configs", "protocols", "ml100k_future_block.yaml")}
MVAE_ML100K = os.path.join(ROOT, "configs", "protocols", "ml100k_mvae.yaml")
ROWS = {"next_item": ["SVAE", "GRU4Rec", "SASRec"], "block": ["SVAE", "MVAE", "Pop"], "speed": ["SVAE"]}
# rows that are a model with different settings: name -> (model, config overrides)
VARIANTS = {
    # the next-item protocol's 10-epoch cap (set by RecBole's GRU4Rec / SASRec epoch cost) lifted for SVAE:
    # trained until RecBole's early stopping (5 validations without improvement, as in the block part),
    # 100 epochs at most
    "SVAE-converged": ("SVAE", {"epochs": 100, "stopping_step": 5}),
}
EXTRA_ROWS = {"next_item": ["SVAE-converged"]}   # run with --models; not part of the default run
SEEDS = [2020, 2021, 2022]
# RecBole's SASRec takes ~150-250 s an epoch here (2 CPU cores): one seed only, by time budget
SEED_LIMIT = {"SASRec": 1}
REPORT = {"next_item": ["ndcg@10", "recall@10", "ndcg@20", "recall@20", "mrr@10", "x:ndcg@10", "x:recall@10"],
          "block": ["ndcg@100", "recall@100", "precision@10", "ndcg@10", "recall@10"]}


def _exclusion_wrapper(net, data):
    """``full_sort_predict`` with each row's user history (training sequence + the row's
    item list) at -inf: the same exclusion for every model."""
    original = net.full_sort_predict
    uid_field = net.USER_ID

    def full_sort_predict(interaction):
        scores = original(interaction).view(len(interaction), -1)
        exclude = data.recbole_batch(interaction, uid_field)["exclude"].to(scores.device)
        return scores.masked_fill(exclude, float("-inf")).reshape(-1)

    return full_sort_predict


def run_one(part: str, row: str, seed: int, epochs: int | None = None) -> dict:
    from lightning_genrec.sequences import SequenceData
    from recbole_ext.config import data_options, make_config
    from timed_run import timed_run

    model, variant = VARIANTS.get(row, (row, {}))
    files = [PROTOCOLS[part]] + ([MVAE_ML100K] if model == "MVAE" else [])
    overrides = {**variant, "seed": seed, "state": "WARNING", **({"epochs": epochs} if epochs else {})}
    config = make_config(model, "ml-100k", files, overrides)

    def excluded(trainer, net, train, test):
        """Next-item: the same trained model re-scored with each user's seen items excluded."""
        if part != "next_item":
            return {}
        data = SequenceData.from_train_dataset(train._dataset, **data_options(SequenceData, config))
        data.exclude_history = True
        net.full_sort_predict = _exclusion_wrapper(net, data)
        again = trainer.evaluate(test, load_best_model=False, show_progress=False)
        return {f"x:{k}": float(v) for k, v in again.items()}

    return {"part": part, "model": row, "seed": seed, **timed_run(config, excluded)}


def run_speed(batch_size: int, seed: int) -> dict:
    """One SVAE training epoch on the next-item data at ``batch_size`` windows a batch."""
    import resource

    import pytorch_lightning as pl

    from lightning_genrec import SVAE
    from recbole_ext import RecBoleDataModule

    dm = RecBoleDataModule("ml-100k", model="SVAE", config_file_list=[PROTOCOLS["next_item"]],
                           config_dict={"seed": seed, "state": "WARNING"}, train_batch_size=batch_size or None)
    dm.setup()
    pl.seed_everything(seed, verbose=False)
    model = SVAE()
    seconds = []

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            seconds.append(time.perf_counter() - self.t)

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[Clock()])
    trainer.fit(model, dm)
    return {"part": "speed", "model": f"SVAE batch {dm.train_batch_size}", "seed": seed,
            "train_batch_size": dm.train_batch_size, "windows": len(dm.data.train_examples()),
            "epoch_s": seconds[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["next_item", "block", "speed"], choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ml100k_svae"))
    parser.add_argument("--epochs", type=int, help="cap every model's epochs (smoke runs; default: the protocol's)")
    parser.add_argument("--models", nargs="+", help="only these rows (default: every row of each part; "
                        "extra rows: " + ", ".join(r for rs in EXTRA_ROWS.values() for r in rs) + ")")
    parser.add_argument("--append", action="store_true",
                        help="merge into the existing results at --out (same part, row and seed: replaced)")
    parser.add_argument("--render", metavar="CSV", help="only rewrite the .md from a results CSV of this script")
    parser.add_argument("--one", nargs=3, metavar=("PART", "MODEL", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--speed", nargs=2, type=int, metavar=("BATCH", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.epochs)))
        return
    if args.speed:
        print("RESULT " + json.dumps(run_speed(*args.speed)))
        return
    if args.render:
        rows = read_rows(args.render)
        write(rows, args.out, command_of(args.out, SCRIPT) or "", csv_too=False)
        return

    rows = []
    for part in args.parts:
        if part == "speed":
            for batch in (0, 1):   # 0: the default train_batch_size
                row = run_subprocess(__file__, ["--speed", str(batch), str(args.seeds[0])])
                rows.append(row)
                print(f"{row['model']:20s}: epoch {row['epoch_s']:.1f}s peak RSS {row['peak_rss_mb']:.0f} MB",
                      flush=True)
            continue
        names = [m for m in ROWS[part] + EXTRA_ROWS.get(part, []) if m in args.models] if args.models else ROWS[part]
        for i, seed in enumerate(args.seeds):
            for model in names:
                if i >= SEED_LIMIT.get(model, len(args.seeds)):
                    continue
                row = run_subprocess(__file__, ["--one", part, model, str(seed)] + (["--epochs", str(args.epochs)] if args.epochs else []))
                rows.append(row)
                key = REPORT[part][0]
                print(f"{part:9s} {model:8s} seed {seed}: {key} {row[key]:.4f} to-best {row['time_to_best_s']:.1f}s "
                      f"fit {row['fit_s']:.1f}s epochs {row['epochs']}", flush=True)
    command = " ".join(sys.argv[1:])
    if args.append and os.path.exists(args.out + ".csv"):
        rows = merge(read_rows(args.out + ".csv"), rows)
        command = f"{command_of(args.out, SCRIPT) or ''}` then `python benchmarks/ml100k_svae.py {command}"
    write(rows, args.out, command)


def write(rows: list[dict], out: str, argv: str, csv_too: bool = True) -> None:
    if csv_too:
        write_csv(rows, out + ".csv")
    seeds = sorted({r["seed"] for r in rows if r["part"] != "speed"})
    lines = ["# SVAE on ml-100k", "", "Command: `" + " ".join(["python benchmarks/ml100k_svae.py", argv]).strip()
             + "`", f"Seeds: {seeds} (mean ± std); each run in a fresh process on the same machine, one after "
             "another; 2 CPU cores, no GPU.", ""]
    titles = {"next_item": "Next-item protocol (time order, leave-one-out, full ranking; selection on valid "
                           "NDCG@10). `x:` = the same trained model with each user's seen items excluded.",
              "block": "Future-block protocol (per user by time: 70 % train, 10 % valid, last 20 % test target; "
                       "test scored from the first 80 %; full ranking; selection on valid NDCG@100). SVAE: its "
                       "defaults, untuned. MVAE: configs/protocols/ml100k_mvae.yaml (tuned on RecBole's random "
                       "split). Every model trains until early stopping (5 validations without improvement)."}
    for part in ("next_item", "block"):
        models = list(dict.fromkeys(r["model"] for r in rows if r["part"] == part))
        if not models:
            continue
        lines += [f"## {titles[part]}", "", "| model | " + " | ".join(REPORT[part]) + " |",
                  "|---" * (len(REPORT[part]) + 1) + "|"]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(mean_std(rows, part, m, k) for k in REPORT[part]) + " |")
        lines += ["", "| model | time to best valid (s) | fit (s) | epochs | best epoch (0-based), per seed | "
                  "s / epoch (incl. validation) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
        for m in models:
            mine = [r for r in rows if r["part"] == part and r["model"] == m]
            best = ", ".join(f"{r['best_epoch']}" + (" (last)" if r["epochs"] > 1 and r["best_epoch"] == r["epochs"] - 1
                                                    else "") for r in mine)
            cells = [mean_std(rows, part, m, k, "%.1f") for k in ("time_to_best_s", "fit_s", "epochs")]
            cells += [best, mean_std(rows, part, m, "s_per_epoch", "%.3f"), mean_std(rows, part, m, "peak_rss_mb", "%.0f")]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("\"(last)\": the best validation was the last epoch run, i.e. the epoch cap, not early "
                     "stopping, ended training.")
        base = {"next_item": "GRU4Rec", "block": "MVAE"}[part]
        key = REPORT[part][0]
        for svae in [m for m in models if m.startswith("SVAE")]:
            if base in models:
                common = [s for s in seeds if has(rows, part, svae, s) and has(rows, part, base, s)]
                lines += ["", f"Per seed, {svae} / {base} test {key}: " + ", ".join(
                    f"{s}: {pick(rows, part, svae, s)[key] / pick(rows, part, base, s)[key]:.3f}x" for s in common)]
        if part == "next_item" and "SASRec" in models and "SVAE" in models:
            sas_seeds = sorted({r["seed"] for r in rows if r["part"] == part and r["model"] == "SASRec"})
            lines.append(f"Per seed, SVAE / SASRec test {key}: " + ", ".join(
                f"{s}: {pick(rows, part, 'SVAE', s)[key] / pick(rows, part, 'SASRec', s)[key]:.3f}x"
                for s in sas_seeds) + f" (SASRec: seeds {sas_seeds} only, by time budget)")
        lines.append("")
    speed = [r for r in rows if r["part"] == "speed"]
    if speed:
        lines += ["## Speed: one SVAE training epoch on the next-item data (no validation)", "",
                  "A unit is a window of one user's sequence (at most MAX_ITEM_LIST_LENGTH = 50 steps); batch 1 "
                  "trains one window at a time, as the authors' loop trains one sequence at a time.", "",
                  "| train_batch_size (windows) | windows | epoch (s) | peak RSS (MB) |", "|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['train_batch_size']} | {r['windows']} | {r['epoch_s']:.1f} | {r['peak_rss_mb']:.0f} |")
        one = next((r for r in speed if r["train_batch_size"] == 1), None)
        default = next((r for r in speed if r["train_batch_size"] != 1), None)
        if one and default:
            lines += ["", f"Batched speed-up: {one['epoch_s'] / default['epoch_s']:.1f}x "
                          f"(batch {default['train_batch_size']} vs 1)."]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
