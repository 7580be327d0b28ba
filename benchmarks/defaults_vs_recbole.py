"""Our models with their defaults against RecBole's MultiVAE with its defaults: nothing tuned,
no model settings in any protocol file (issue: "defaults that win out of the box").

Parts:
  split   RecBole's default split (random 8:1:1 per user), full ranking: MVAE vs MultiVAE,
          on ml-100k or any RecBole atomic data set (``--dataset``, ``--data_path``)
  cfgan   the CFGAN paper's protocol (configs/protocols/ml100k_cfgan.yaml: RS 0.72/0.08/0.2,
          P/R/NDCG at 5 and 20): CFGAN vs MultiVAE
Only the split, the metrics and the evaluation batch come from the protocol; epochs and
stopping rules are each model's own defaults (RecBole's for MultiVAE: 300 epochs, stopping
after 10 validations without improvement; ours from configs/<model>.yaml).

Usage:
    python benchmarks/defaults_vs_recbole.py --parts split cfgan --seeds 2020 2021 2022
    python benchmarks/defaults_vs_recbole.py --parts split --dataset lastfm-2k --data_path ../shared/data --append
Writes benchmarks/results/defaults_vs_recbole.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_io import read_rows, recorded_command, run_subprocess, write_csv  # noqa: E402

PROTOCOLS = {"split": os.path.join(ROOT, "configs", "protocols", "ml100k_default.yaml"),
             "cfgan": os.path.join(ROOT, "configs", "protocols", "ml100k_cfgan.yaml")}
MODELS = {"split": ["MVAE", "MultiVAE"], "cfgan": ["CFGAN", "MultiVAE"]}
#: what a protocol file may set here: the split and the evaluation, never training
PROTOCOL_KEYS = ("eval_args", "metrics", "topk", "valid_metric", "eval_batch_size", "comet", "show_progress", "use_gpu")
REPORT = {"split": ["ndcg@20", "recall@20", "ndcg@10", "itemcoverage@20"],
          "cfgan": ["precision@20", "ndcg@20", "precision@5", "ndcg@5"]}


def run_one(part: str, model: str, seed: int, dataset: str, data_path: str | None) -> dict:
    from recbole_ext.config import make_config
    from timed_run import timed_run

    with open(PROTOCOLS[part]) as f:
        protocol = {k: v for k, v in yaml.safe_load(f).items() if k in PROTOCOL_KEYS}
    overrides = {**protocol, "seed": seed, "state": "WARNING"}
    if data_path:
        overrides["data_path"] = data_path
    config = make_config(model, dataset, [], overrides)
    return {"part": part, "dataset": dataset, "model": model, "seed": seed, **timed_run(config)}


def render(rows: list[dict], out: str, command: str) -> None:
    lines = ["# Defaults against RecBole's MultiVAE defaults", "", f"Command: `python benchmarks/defaults_vs_recbole.py "
             f"{command}`", "", "Each (model, seed) in a fresh process, one after another, 2 CPU cores. Nothing "
             "tuned: every model at its defaults; the protocol files give only the split and the metrics. Test "
             "metrics of the epoch selected on validation.", ""]
    for part, dataset in dict.fromkeys((r["part"], r["dataset"]) for r in rows):
        sub = [r for r in rows if r["part"] == part and r["dataset"] == dataset]
        seeds = sorted({r["seed"] for r in sub})
        keys = REPORT[part]
        title = "RecBole's default split" if part == "split" else "the CFGAN paper's protocol"
        lines += [f"## {dataset}, {title}", "",
                  "| model | " + " | ".join(f"{k} per seed" for k in keys) + " | epochs | fit (s) |",
                  "|---|" + "---|" * (len(keys) + 2)]
        for model in MODELS[part]:
            runs = {r["seed"]: r for r in sub if r["model"] == model}
            cells = [", ".join("%.4f" % runs[s][k] if s in runs else "-" for s in seeds) for k in keys]
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {', '.join(str(runs[s]['epochs']) for s in seeds if s in runs)}"
                         f" | {', '.join('%.0f' % runs[s]['fit_s'] for s in seeds if s in runs)} |")
        ours = MODELS[part][0]
        for k in keys[:2]:
            ratios = []
            for s in seeds:
                a = next((r for r in sub if r["model"] == ours and r["seed"] == s), None)
                b = next((r for r in sub if r["model"] == "MultiVAE" and r["seed"] == s), None)
                ratios.append(f"{s}: {a[k] / b[k]:.3f}x" if a and b and b[k] else f"{s}: -")
            lines.append(f"\n- {ours} / MultiVAE, test {k} per seed: " + ", ".join(ratios))
        lines.append("")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["split", "cfgan"], choices=list(PROTOCOLS))
    parser.add_argument("--models", nargs="+", default=None, help="a subset of the parts' models")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "defaults_vs_recbole"))
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.dataset, args.data_path)))
        return
    old = read_rows(args.out + ".csv") if (args.append or args.render) and os.path.exists(args.out + ".csv") else []
    if args.render:
        render(old, args.out, recorded_command(args.out) or "")
        return
    command = " ".join(sys.argv[1:])
    if args.append and recorded_command(args.out):
        command = f"{recorded_command(args.out)}` then `python benchmarks/defaults_vs_recbole.py {command}"
    rows = []
    for part in args.parts:
        for seed in args.seeds:
            for model in [m for m in MODELS[part] if args.models is None or m in args.models]:
                extra = ["--dataset", args.dataset] + (["--data_path", args.data_path] if args.data_path else [])
                row = run_subprocess(__file__, ["--one", part, model, str(seed), *extra])
                rows.append(row)
                print(f"{args.dataset} {part} {model} seed {seed}: " + ", ".join(
                    f"{k} {row[k]:.4f}" for k in REPORT[part][:2]) + f" epochs {row['epochs']} fit {row['fit_s']:.0f}s",
                    flush=True)
                keys = {(r["part"], r["dataset"], r["model"], r["seed"]) for r in rows}
                merged = [r for r in old if (r["part"], r["dataset"], r["model"], r["seed"]) not in keys] + rows
                write_csv(merged, args.out + ".csv")
                render(merged, args.out, command)


if __name__ == "__main__":
    main()
