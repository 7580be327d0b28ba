"""RecBole-style command line: ``python -m recbole_ext --model=MVAE --dataset=ml-100k
--config_files="a.yaml b.yaml" --epochs=20`` (any ``--key=value`` is a config override,
as in RecBole's ``run_recbole.py``).  Installed as the ``lightning-genrec`` command.

``python -m recbole_ext recommend --checkpoint saved/MVAE-....pth --users 1 2`` prints
recommendations from a saved model (``recommend --help``); ``python -m recbole_ext hyper
--model=MVAE`` runs RecBole's hyperparameter search (``hyper --help``)."""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

import recbole_ext
from lightning_genrec.errors import USER_ERRORS
from recbole_ext.hyper import ALGOS, run_hyper
from recbole_ext.quick_start import format_results
from recbole_ext.recommend import Recommender


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["recommend"]:
        return recommend_main(argv[1:])
    if argv[:1] == ["hyper"]:
        return hyper_main(argv[1:])
    parser = argparse.ArgumentParser(prog="lightning-genrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)   # --mode (CFGAN) is not --model
    parser.add_argument("--model", "-m", default="MVAE", help="model name (default MVAE)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (RecBole's nproc)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the machine of rank 0")
    parser.add_argument("--port", default="5678", help="free port on the machine of rank 0")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    parser.add_argument("--verbose", action="store_true",
                        help="show RecBole's configuration dump, the model and every log line on screen too")
    args, rest = parser.parse_known_args(argv)
    not_understood = [word for word in rest if not recbole_setting(word)]
    if not_understood:   # RecBole would log "will not be used" and train with every default
        print(f"lightning-genrec: error: {not_understood_message(rest, not_understood)}", file=sys.stderr)
        return 2
    files = args.config_files.strip().split(" ") if args.config_files else None
    if "--verbose" in sys.argv:
        sys.argv.remove("--verbose")             # RecBole's Config reads sys.argv and would not know it
    try:
        result = recbole_ext.run(model=args.model, dataset=args.dataset, config_file_list=files, nproc=args.nproc,
                                 world_size=args.world_size, ip=args.ip, port=args.port,
                                 group_offset=args.group_offset, config_dict={"verbose": True} if args.verbose else None)
    except USER_ERRORS as exc:
        print(f"lightning-genrec: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"{args.model} on {args.dataset} (best validation epoch; RecBole's evaluator)")
    print(format_results(result))
    print()
    if result.get("saved_model_file"):
        print(f"RecBole checkpoint: {result['saved_model_file']}")
    if result.get("log_file"):
        print(f"Log file: {os.path.relpath(result['log_file'])}")
    if result.get("comet_archive"):
        print(f"Comet offline archive: {result['comet_archive']}  (send it with: comet upload <file>)")
    return 0


SUBCOMMANDS = ("recommend", "hyper")


def recbole_setting(word: str) -> bool:
    """Whether RecBole's command-line reading takes ``word``: ``--key=value`` with exactly one ``=``
    (RecBole drops any other word with a "will not be used" log line)."""
    return word.startswith("--") and word[2:].count("=") == 1


def not_understood_message(rest: list[str], words: list[str]) -> str:
    """One line naming the command-line words neither we nor RecBole's ``--key=value`` reading take."""
    hints = [f"{flag}={value}" for flag, value in zip(rest, rest[1:])
             if flag.startswith("--") and "=" not in flag and not value.startswith("--")]
    hint = f" (did you mean {' '.join(hints)}?)" if hints else ""
    return (f"did not understand {' '.join(repr(w) for w in words)}{hint}. Settings are written --key=value "
            f"with one '=' (e.g. --epochs=20; a value holding '=' goes in a config file); the subcommands are {' and '.join(SUBCOMMANDS)}, as the first word "
            "(python -m recbole_ext --help).")


HYPER_HELP = """RecBole's hyperparameter search (HyperTuning with RecBole's objective_function, as its run_hyper.py).

  python -m recbole_ext hyper --model=MVAE --dataset=ml-100k --params_file=configs/hyper/mvae.hyper \\
      --config_files="configs/protocols/ml100k_default.yaml" --epochs=50

Trials are compared on valid_metric; each trial's test metrics are reported beside. Any --key=value
not listed below is a fixed setting of every trial, as on RecBole's command line.
"""


def hyper_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-genrec hyper", description=HYPER_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    parser.add_argument("--params_file", default=None,
                        help="the search space (default: the model's example, configs/hyper/<model>.hyper)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files fixed for every trial")
    parser.add_argument("--algo", choices=ALGOS, default="exhaustive", help="search algorithm (default exhaustive)")
    parser.add_argument("--max_evals", type=int, default=100, help="trials at most (random / bayes)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without improvement")
    parser.add_argument("--output_file", default="hyper.result", help="every trial's results (default hyper.result)")
    args, rest = parser.parse_known_args(argv)
    not_understood = [word for word in rest if not recbole_setting(word)]
    if not_understood:
        print(f"lightning-genrec hyper: error: {not_understood_message(rest, not_understood)}", file=sys.stderr)
        return 2
    files = args.config_files.strip().split(" ") if args.config_files else None
    # RecBole's Config reads --key=value from sys.argv in every trial: leave it only the fixed settings
    sys.argv[1:] = rest
    try:
        tuner = run_hyper(args.model, args.dataset, args.params_file, files, algo=args.algo,
                          max_evals=args.max_evals, early_stop=args.early_stop, output_file=args.output_file)
    except USER_ERRORS as exc:
        print(f"lightning-genrec hyper: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nbest parameters ({len(tuner.params2result)} trials, by validation): {tuner.best_params}")
    print(f"best valid score: {tuner.best_score}")
    print(f"every trial: {args.output_file}")
    return 0


RECOMMEND_HELP = """Recommendations from a saved model (a RecBole checkpoint of MVAE, SVAE, CVAE, CFGAN or LARA).

  top-k items for users of the data set (their ids as in the .inter file):
      recommend --checkpoint saved/MVAE-....pth --users 1 2 3 --k 10
  top-k items for a guest in no training data, from a few liked items and/or item-field tokens:
      recommend --checkpoint saved/MVAE-....pth --liked_items 50 181 --liked_tokens class=Horror,Comedy
  top-k users for a new item, by its attributes (LARA) or content (CVAE):
      recommend --checkpoint saved/LARA-....pth --new_item class=Comedy,Romance
"""


def _field_values(pairs: list[str], option: str) -> dict[str, list[str]]:
    """``field=a,b`` arguments as ``{field: [a, b]}``."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        field, sep, values = pair.partition("=")
        if not sep or not field or not values:
            raise ValueError(f"{option} takes field=value[,value...] (e.g. class=Comedy,Drama), got {pair!r}")
        out.setdefault(field, []).extend(v for v in values.split(",") if v)
    return out


def recommend_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-genrec recommend", description=RECOMMEND_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, help="the saved/<Model>-<date>.pth file run_recbole wrote")
    parser.add_argument("--users", nargs="+", default=None, help="user ids of the data set")
    parser.add_argument("--liked_items", nargs="+", default=None, help="a guest's liked item ids, oldest first")
    parser.add_argument("--liked_tokens", nargs="+", default=[], metavar="FIELD=A,B",
                        help="a guest's liked tokens of an item field (genres, tags)")
    parser.add_argument("--per_token", type=int, default=10,
                        help="items standing for each liked token: its most interacted ones (default 10)")
    parser.add_argument("--new_item", nargs="+", default=[], metavar="FIELD=A,B",
                        help="a new item's fields (LARA attributes, CVAE content): rank users for it")
    parser.add_argument("--ignore_unknown", action="store_true", help="new item: drop tokens the model never saw")
    parser.add_argument("--k", type=int, default=10, help="list length (default 10)")
    parser.add_argument("--include_seen", action="store_true", help="keep items the user has interacted with")
    parser.add_argument("--history", choices=["all", "train"], default="all",
                        help="score users from all their interactions (default) or from what the model trained on")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    asked = [bool(args.users), bool(args.liked_items or args.liked_tokens), bool(args.new_item)]
    if sum(asked) != 1:
        parser.error("ask one thing: --users, or a guest (--liked_items / --liked_tokens), or --new_item")
    try:
        tokens = _field_values(args.liked_tokens, "--liked_tokens")
        features = _field_values(args.new_item, "--new_item")
        rec = Recommender(args.checkpoint)
        if args.users:
            table = rec.top_items(args.users, args.k, exclude_seen=not args.include_seen, history=args.history)
        elif asked[1]:
            table = rec.for_guest(args.liked_items, tokens, args.k, per_token=args.per_token,
                                  exclude_seen=not args.include_seen)
        else:
            table = rec.users_for_new_item(features, args.k, history=args.history,
                                           unknown="ignore" if args.ignore_unknown else "error")
    except (*USER_ERRORS, ValueError) as exc:
        print(f"lightning-genrec recommend: error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"\nwritten to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
