"""How every model scales with the data: one run per model on a synthetic MovieLens-shaped data set
(benchmarks/synthetic.py), each in a fresh process, timed piece by piece.

Rows: our MVAE, SVAE, CVAE, CFGAN, LARA and RecBole's MultiVAE and EASE (``--models``), each
through RecBole's entry point (``recbole_ext.config.load_data``, ``get_model``, ``get_trainer``,
``fit``, ``evaluate``: what ``run_recbole`` does) with its own defaults except for what this
script sets for all rows: ``epochs`` (``--epochs``, default 1), ``topk: [10, 20]``, metrics Recall
and NDCG, selection on NDCG@20 (LARA: its own ``item_ndcg@20``), ``eval_batch_size`` (scores per
evaluation batch, ``--eval-batch-size``, default 409600 as in configs/trainer.yaml), Comet off.
``--set KEY=VALUE`` / ``--set MODEL.KEY=VALUE`` adds settings (YAML values).

Recorded per row (the child process prints them as JSON lines as it goes, so a run that is killed
still leaves what it measured):

* ``load_s``: ``load_data`` (RecBole reads, filters and splits the atomic files);
* ``build_s``: the model's construction (ours: also the data form it trains on);
* ``train_epoch_s``: training seconds of an epoch (mean over epochs; validation not included),
  also per million training interactions (``s_per_M``), so shapes compare;
  ``--max-batches N`` stops SVAE's epochs after N batches (Lightning's ``limit_train_batches``,
  given to the Lightning Trainer by this script: no config key passes it) and the full epoch is
  extrapolated (``est_epoch_s``);
* ``valid_s``: one validation pass (mean): ours, Lightning's validation loop; RecBole's models,
  RecBole's ``_valid_epoch``.  ``revalid_s`` (ours): the re-validation of the best epoch with
  RecBole's evaluator at the end of ``fit``;
* ``test_s``: ``trainer.evaluate`` on the test split (RecBole's evaluator, best weights loaded);
* ``peak_rss_mb``: the child process's peak resident memory (``wait4``); on a GPU also
  ``peak_gpu_mb`` (``torch.cuda.max_memory_allocated``) and the ``device``;
* a failure as the row's ``status`` (``error`` with the exception type and first line, ``timeout``,
  ``killed`` by a signal -- usually the out-of-memory killer -- or ``rss-limit`` above
  ``--max-rss-mb``) instead of stopping the benchmark.

Protocols: ``--protocol default`` (each model's own: RecBole's random 8:1:1 split by user; SVAE:
leave-one-out in time order; LARA: the cold-start item split its YAML sets) or ``cold-start``
(``cold_item_split: true`` for every row: recbole_ext/cold_start.py; SVAE, a sequential model, is
refused there).  ``--item-metrics`` turns on the item -> users metrics (``item_metrics: true``)
for our general models.

Usage:
    python benchmarks/scale.py --users 2000 --items 1000 --interactions 60000
    python benchmarks/scale.py --shape ml-1m --timeout 3600
    python benchmarks/scale.py --shape ml-20m --models MVAE EASE --max-batches 200 --max-rss-mb 20000
Writes benchmarks/results/scale_<shape>.{csv,md} (``--out``).  The data are generated into
``--data`` (default /tmp/lightning-genrec-synth) unless already there.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import sys
import tempfile
import time

import synthetic
from bench_io import read_rows, recorded_command

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = ("MVAE", "SVAE", "CVAE", "CFGAN", "LARA")
MODELS = OURS + ("MultiVAE", "EASE")
SEQUENTIAL = ("SVAE",)
PROTOCOLS = ("default", "cold-start")


# -- the child: one run, measured ------------------------------------------------------------------------

def _emit(kind: str, values: dict) -> None:
    print(f"{kind} " + json.dumps(values), flush=True)


def _split_name(config) -> str:
    if config["cold_item_split"]:
        return f"cold items {config['cold_item_ratio'] or 0.2}"
    split = (config["eval_args"] or {}).get("split") or {}
    if "LS" in split:
        return f"leave-one-out ({config['eval_args'].get('order')})"
    if "RS" in split:
        return "RS " + ":".join(f"{r:g}" for r in split["RS"]) + f" ({config['eval_args'].get('order')})"
    return str(split)


def _lightning_clock(out: dict):
    """A Lightning callback that times the training part and the validation of each epoch into
    ``out["train"]`` / ``out["valid"]`` and counts the batches (defined here: only the child
    process imports Lightning)."""
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start, self.train_end = time.perf_counter(), None
            out["batches"] = trainer.num_training_batches
            try:
                out["full_batches"] = len(trainer.train_dataloader)
            except TypeError:
                out["full_batches"] = None

        def on_validation_start(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            if self.train_end is None:
                self.train_end = time.perf_counter()
                out["train"].append(self.train_end - self.start)
            self.valid_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                out["valid"].append(time.perf_counter() - self.valid_start)

        def on_train_epoch_end(self, trainer, pl_module):
            if self.train_end is None:
                out["train"].append(time.perf_counter() - self.start)
            _emit("MEASURE", {"train_epochs_s": out["train"], "valid_runs_s": out["valid"]})

    return Clock()


def _time_lightning(bridge_module, clock, max_batches: int | None) -> None:
    """Make the bridge trainer's ``pl.Trainer(...)`` add ``clock`` (and ``limit_train_batches``): a
    stand-in for the ``pl`` name inside ``recbole_ext.trainer`` only, nothing global."""
    import types

    import pytorch_lightning as pl

    class TimedTrainer(pl.Trainer):
        def __init__(self, *args, **kwargs):
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), clock]
            if max_batches:
                kwargs["limit_train_batches"] = max_batches
            super().__init__(*args, **kwargs)

    proxy = types.ModuleType("pytorch_lightning_timed")
    proxy.__dict__.update(vars(pl))
    proxy.Trainer = TimedTrainer
    bridge_module.pl = proxy


def _wrap(trainer, name: str, seconds: list, after=None) -> None:
    real = getattr(trainer, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = real(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        if after:
            after()
        return result

    setattr(trainer, name, timed)


def run_one(model: str, config_dict: dict) -> dict:
    """Train and test ``model`` as ``run_recbole`` does, timing each part; emits MEASURE lines."""
    out: dict = {"model": model}
    settings = dict(config_dict)
    max_batches = settings.pop("_max_batches", None)
    times = {"train": [], "valid": [], "recbole_valid": []}
    try:
        start = time.perf_counter()
        import recbole_ext.trainer as bridge   # imports recbole_ext: RecBole's fixes and our models first
        from recbole.utils import get_model, get_trainer, init_logger, init_seed

        import torch
        from recbole_ext.config import load_data, make_config

        out["import_s"] = time.perf_counter() - start
        out["threads"] = torch.get_num_threads()                  # rows run with other thread counts say so
        config = make_config(model, settings["dataset"], config_dict={k: v for k, v in settings.items()
                                                                      if k != "dataset"})
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        out["split"] = _split_name(config)
        out["device"] = str(config["device"])
        start = time.perf_counter()
        dataset, train, valid, test = load_data(config)
        out["load_s"] = time.perf_counter() - start
        out.update(users=dataset.user_num - 1, items=dataset.item_num - 1, inter=dataset.inter_num,
                   train_inter=train._dataset.inter_num)
        _emit("MEASURE", out)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        start = time.perf_counter()
        net = get_model(config["model"])(config, train._dataset).to(config["device"])
        out["build_s"] = time.perf_counter() - start
        _emit("MEASURE", out)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        ours = model in OURS
        if ours:
            _time_lightning(bridge, _lightning_clock(times), max_batches)
        else:
            _wrap(trainer, "_train_epoch", times["train"],
                  lambda: _emit("MEASURE", {"train_epochs_s": times["train"]}))
        _wrap(trainer, "_valid_epoch", times["valid"] if not ours else times["recbole_valid"])
        start = time.perf_counter()
        trainer.fit(train, valid, saved=True, show_progress=False)
        out["fit_s"] = time.perf_counter() - start
        # the rest of fit: Lightning's set-up, CVAE's pre-training, the checkpoint, RecBole's bookkeeping
        out["fit_other_s"] = out["fit_s"] - sum(sum(times[k]) for k in ("train", "valid", "recbole_valid"))
        out.update(_epoch_summary(times, out))
        _emit("MEASURE", out)
        start = time.perf_counter()
        result = trainer.evaluate(test, load_best_model=True, show_progress=False)
        out["test_s"] = time.perf_counter() - start
        out.update({f"test_{k}": float(v) for k, v in result.items()})
        out["status"] = "ok"
    except Exception as exc:  # a failure is a row of the benchmark
        out.update(_epoch_summary(times, out))
        first = (str(exc).strip().splitlines() or [""])[0]
        out["status"], out["error"] = "error", f"{type(exc).__name__}: {first[:300]}"
    import resource

    out["child_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        out["peak_gpu_mb"] = sys.modules["torch"].cuda.max_memory_allocated() / 2 ** 20
    return out


def _epoch_summary(times: dict, out: dict) -> dict:
    summary = {}
    if times["train"]:
        summary["epochs"] = len(times["train"])
        summary["train_epoch_s"] = sum(times["train"]) / len(times["train"])
    if times["valid"]:
        summary["valid_s"] = sum(times["valid"]) / len(times["valid"])
    if times["recbole_valid"]:
        summary["revalid_s"] = times["recbole_valid"][-1]
    if "batches" in times:
        summary["batches"], summary["full_batches"] = times["batches"], times.get("full_batches")
    return summary


# -- the parent: one fresh process per row ---------------------------------------------------------------

def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(model: str, config_dict: dict, timeout: float, max_rss_mb: float | None) -> dict:
    """``scale.py --one`` in a fresh process (cwd: an empty temporary folder); the row it reported
    (its last RESULT, else what its MEASURE lines had), the peak RSS from ``wait4``, the status."""
    import subprocess

    with tempfile.TemporaryDirectory() as work:
        out_path, err_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
        with open(out_path, "w") as stdout, open(err_path, "w") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--one", model,
                                     json.dumps(config_dict)], cwd=work, stdout=stdout, stderr=stderr)
            stopped = None
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > timeout:
                    stopped = f"timeout after {timeout:.0f} s"
                elif max_rss_mb and (_rss_mb(proc.pid) or 0) > max_rss_mb:
                    stopped = f"rss-limit: above {max_rss_mb:.0f} MB"
                if stopped:
                    os.kill(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
            proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here, not by Popen
            wall = time.perf_counter() - start
        with open(out_path) as f:
            lines = f.read().splitlines()
        with open(err_path) as f:
            err_tail = [ln for ln in f.read().splitlines() if ln.strip()][-3:]
    row: dict = {"model": model}
    for line in lines:
        kind, _, payload = line.partition(" ")
        if kind in ("MEASURE", "RESULT"):
            row.update(json.loads(payload))
    row["wall_s"] = wall
    row["peak_rss_mb"] = usage.ru_maxrss / 1024
    if stopped:
        row["status"], row["error"] = stopped.split(":")[0].split(" after")[0], stopped
    elif "status" not in row:
        code = proc.returncode
        if code < 0:
            row["status"], row["error"] = "killed", f"signal {signal.Signals(-code).name} (out of memory?)"
        else:
            row["status"], row["error"] = "error", f"exit code {code}: {' | '.join(err_tail)[-300:]}"
    for key in ("train_epochs_s", "valid_runs_s"):   # partial measurements of a run that did not finish
        values = row.pop(key, None)
        if values and "train_epoch_s" not in row and key == "train_epochs_s":
            row["epochs"], row["train_epoch_s"] = len(values), sum(values) / len(values)
        if values and "valid_s" not in row and key == "valid_runs_s":
            row["valid_s"] = sum(values) / len(values)
    if row.get("train_epoch_s") and row.get("train_inter"):
        full = row["train_epoch_s"]
        if row.get("batches") and row.get("full_batches") and row["batches"] < row["full_batches"]:
            full = row["train_epoch_s"] * row["full_batches"] / row["batches"]
            row["est_epoch_s"] = full
        row["s_per_M"] = full / (row["train_inter"] / 1e6)
    return row


def model_settings(model: str, args, dataset: str) -> dict:
    """The config_dict of one row."""
    settings = {"dataset": dataset, "data_path": args.data, "seed": args.seed, "state": "WARNING",
                "show_progress": False, "epochs": args.epochs, "eval_batch_size": args.eval_batch_size,
                "topk": [10, 20], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@20"}
    if model in OURS:
        settings["comet"] = False
    if model == "LARA":
        settings.pop("valid_metric")                                  # its own: item_ndcg@20
    if args.protocol == "cold-start":
        settings["cold_item_split"] = True
    if args.item_metrics and model in OURS and model not in SEQUENTIAL:
        settings["item_metrics"] = True
    if args.max_batches and model in args.max_batches_models:
        settings["_max_batches"] = args.max_batches
    settings.update(_overrides(args.set, model))
    return settings


def _overrides(pairs, model: str) -> dict:
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: write KEY=VALUE or MODEL.KEY=VALUE")
        target, dot, name = key.partition(".")
        if dot and target in MODELS:
            if target != model:
                continue
            key = name
        out[key] = yaml.safe_load(value)
    return out


COLUMNS = [("model", "model", "%s"), ("status", "status", "%s"), ("protocol", "protocol", "%s"),
           ("split", "split", "%s"), ("train_inter", "train inter", "%d"), ("epochs", "epochs", "%d"),
           ("load_s", "load s", "%.1f"), ("build_s", "build s", "%.1f"), ("train_epoch_s", "epoch s", "%.2f"),
           ("batches", "batches", "%s"), ("s_per_M", "epoch s / M inter", "%.2f"), ("valid_s", "valid s", "%.2f"),
           ("fit_other_s", "other fit s", "%.1f"), ("revalid_s", "re-valid s", "%.2f"), ("test_s", "test s", "%.2f"),
           ("peak_rss_mb", "peak RSS MB", "%.0f"), ("peak_gpu_mb", "peak GPU MB", "%.0f"),
           ("device", "device", "%s"), ("threads", "threads", "%s"), ("test_ndcg@20", "test NDCG@20", "%.4f"),
           ("test_item_ndcg@20", "test item NDCG@20", "%.4f")]


def _cell(row: dict, key: str, fmt: str) -> str:
    if key == "batches":
        if not row.get("batches"):
            return ""
        done, full = row["batches"], row.get("full_batches")
        return f"{done}/{full}" if full and full != done else str(done)
    if key == "s_per_M" and row.get("est_epoch_s"):
        return (fmt % row[key]) + " (est.)"
    value = row.get(key)
    if value is None or value == "":
        return ""
    try:
        return fmt % value
    except TypeError:
        return str(value)


def write(rows: list[dict], out: str, command: str, data: dict, args) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    used = [c for c in COLUMNS if any(_cell(r, c[0], c[2]) for r in rows)
            and (c[0] != "protocol" or len({r.get("protocol") for r in rows}) > 1)]
    lines = [f"# Scale benchmark: {data['name']}", "", f"Command: {command}", "",
             f"Data: {data['name']} (benchmarks/synthetic.py, seed {args.data_seed}; RecBole seed {args.seed}): "
             f"{data['users']:,} users, {data['items']:,} items, {data['interactions']:,} interactions"
             + (f"; generated in {data['generate_s']:.1f} s" if data.get("generate_s") else "") + ".",
             f"Protocol: {', '.join(sorted({str(r.get('protocol')) for r in rows}))}. Settings"
             + (" (of the last command)" if " then " in command else "")
             + f": epochs at most {args.epochs}; eval_batch_size {args.eval_batch_size}; "
             f"timeout {args.timeout:.0f} s per run"
             + (f"; RSS limit {args.max_rss_mb:.0f} MB" if args.max_rss_mb else "")
             + (f"; {', '.join(args.max_batches_models)} limited to {args.max_batches} training batches an epoch"
                if args.max_batches else "") + ".",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {_memory_gb():.0f} GB; each row a fresh "
             "process; threads = torch's threads in that row's process (OMP_NUM_THREADS).", "",
             "Seconds: load = RecBole's load_data (read, filter, split); build = the model and its data form; "
             "epoch = training part of an epoch (mean; validation excluded), also per million training "
             "interactions ((est.): extrapolated from the batches run); valid = one validation pass (ours: "
             "Lightning's loop; RecBole's models: RecBole's); other fit = the rest of fit (set-up, CVAE's "
             "pre-training, checkpoint); re-valid = ours re-validating the best epoch with "
             "RecBole's evaluator after fit; test = RecBole's evaluate on the test split. Peak RSS of the run's "
             "process.", "",
             "| " + " | ".join(c[1] for c in used) + " |", "|" + "---|" * len(used)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r, key, fmt) for key, _, fmt in used) + " |")
    failures = [r for r in rows if r.get("status") != "ok"]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {r['model']}: {r.get('error', r.get('status'))}" for r in failures]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    synthetic.add_shape_args(parser)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-batches", type=int, help="training batches an epoch at most (SVAE by default)")
    parser.add_argument("--max-batches-models", nargs="+", default=list(SEQUENTIAL), choices=list(OURS),
                        help="the rows --max-batches applies to (ours only)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    parser.add_argument("--max-rss-mb", type=float, help="kill a run whose resident memory exceeds this")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="default")
    parser.add_argument("--item-metrics", action="store_true", help="item_metrics: true for our general models")
    parser.add_argument("--eval-batch-size", type=int, default=409_600)
    parser.add_argument("--set", nargs="+", metavar="[MODEL.]KEY=VALUE", help="more settings (YAML values)")
    parser.add_argument("--seed", type=int, default=2020, help="RecBole's seed (splits, initialisation)")
    parser.add_argument("--data-seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "lightning-genrec-synth"),
                        help="folder of the synthetic data sets (generated there if missing)")
    parser.add_argument("--out", help="results path without suffix (default benchmarks/results/scale_<shape>)")
    parser.add_argument("--append", action="store_true",
                        help="merge into the results at --out (the same model and protocol: replaced)")
    parser.add_argument("--rewrite", action="store_true",
                        help="run nothing: rewrite the .md from the .csv at --out (the settings line from this "
                             "command's options: give the last command's)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "CONFIG_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _emit("RESULT", run_one(args.one[0], json.loads(args.one[1])))
        return
    shape_name, shape = synthetic.shape_from_args(args)
    shape = shape.resolved()
    name = synthetic.default_name(shape_name, shape)
    label = name[len("synth-"):]                       # the data set's name, tails included
    out = args.out or os.path.join(HERE, "results", f"scale_{label}")
    data = {"name": name, "users": shape.users, "items": shape.items, "interactions": shape.interactions}
    if args.rewrite:
        if not os.path.exists(out + ".csv"):
            raise SystemExit(f"--rewrite: no results at {out}.csv (give the --out of the runs)")
        write(read_rows(out + ".csv"), out, recorded_command(out) or "(unknown)", data, args)
        print(f"wrote {out}.md")
        return
    meta = os.path.join(args.data, name, f"{name}.synth.json")
    existing = None
    if os.path.isfile(meta):
        with open(meta) as f:
            existing = json.load(f)
    wanted = {"seed": args.data_seed, **{k: v for k, v in vars(shape).items()}}
    if existing is None or any(existing.get(k) != v for k, v in wanted.items()):
        print(f"generating {name} into {args.data} ...", flush=True)
        summary = synthetic.generate(args.data, shape, args.data_seed, name, log=None)
        data["generate_s"] = summary["seconds"]
        print(f"  {summary['interactions']:,} interactions in {summary['seconds']:.1f} s", flush=True)
    rows = []
    for model in args.models:
        row = run_child(model, model_settings(model, args, name), args.timeout, args.max_rss_mb)
        row["protocol"] = args.protocol
        rows.append(row)
        print(f"{model:9s} {row['status']:8s} load {row.get('load_s', float('nan')):7.1f}s  "
              f"epoch {row.get('train_epoch_s', float('nan')):8.2f}s  valid {row.get('valid_s', float('nan')):7.2f}s  "
              f"test {row.get('test_s', float('nan')):7.2f}s  peak {row['peak_rss_mb']:7.0f} MB"
              + (f"  {row['error']}" if row.get("error") else ""), flush=True)
    command = "`" + " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]) + "`"
    if args.append and os.path.exists(out + ".csv"):
        new = {(r["model"], r["protocol"]) for r in rows}
        rows = [r for r in read_rows(out + ".csv") if (r["model"], r.get("protocol")) not in new] + rows
        command = f"{recorded_command(out) or '(unknown)'} then {command}"
    write(rows, out, command, data, args)
    print(f"wrote {out}.csv and {out}.md")


if __name__ == "__main__":
    main()
