"""One harness for every study: a study is a small YAML file (``benchmarks/studies/*.yaml``), the
harness runs its (row, seed) cells, each in a fresh process, and writes the results; ``report``
turns every study's results into ``benchmarks/RESULTS.md`` with plots.

    python benchmarks/harness.py run benchmarks/studies/ml100k_spine.yaml            # what is missing
    python benchmarks/harness.py run benchmarks/studies/ml100k_spine.yaml --seeds 2020 --rows MVAE --force
    python benchmarks/harness.py run STUDY --dataset my-data --data_path /data   # any RecBole atomic data set
    python benchmarks/harness.py report                                          # RESULTS.md + plots
    python benchmarks/harness.py compare benchmarks/results/rerun      # reruns beside the committed cells
    python benchmarks/harness.py merge /tmp/rerun      # adopt reruns (changed code or defaults) in their place

A study file::

    title: MVAE against RecBole's models            # a heading
    about: |                                        # prose under it (what is compared, why)
      ...
    dataset: ml-100k                                # default data set (--dataset / --data_path override)
    protocol: ml100k_default                        # configs/protocols/<name>.yaml (the split and metrics)
    seeds: [2020, 2021, 2022]
    report: [ndcg@20, recall@20, novelty@20]        # table columns; the first is the primary metric
    reference: MultiVAE                             # per-seed ratios to this row
    paired: [ndcg@100]                              # optional: paired tests on these too, not only the primary
    results: ml100k_spine                           # results/<name>.csv (default: the file's name)
    paper: {source: "...", figures: {ndcg@20: 0.43}}   # published figures, shown in their own column
    timeout: 1200                                   # optional: seconds per cell (then a "timeout" row)
    protocol_keys: [eval_args, metrics, topk]       # optional: take only these keys of the protocol
    rows:
      MVAE: {model: MVAE, config_files: [ml100k_mvae], config: {latent_dimension: 64}}
      MultiVAE: {model: MultiVAE}
      Random: {baseline: "ml100k_cvae:run_baseline", settings_of: CVAE}   # scored by a function here
      SVAE: {model: SVAE, after_test: "ml100k_svae:excluded_metrics", seeds: [2020]}
      CFGAN: {model: CFGAN, protocol: ml100k_cfgan}   # a row may have its own protocol

A row is a model trained by ``run_recbole``'s loop (:mod:`timed_run`) with the protocol, then its
``config_files`` (protocol files by name, or paths) and ``config``; or a ``baseline`` function
``module:function`` of this folder, called as ``function(name, config, primary_metric)`` with the
config of ``settings_of`` (the model whose data settings it reads); ``name`` is the row's name, or its
``as`` (which of the function's baselines a row with another name is).  ``after_test`` adds a row's extra
results.  Each cell also records per-user values of the primary metric (and of the ``paired``
metrics, which must be among ``report``; a ``baseline`` row: the primary metric only) on the test
split (``results/<name>.peruser.json``, for the report's paired significance tests), and is logged to
Comet with the study, row, model, protocol and seed as tags (an offline archive under
``--comet_dir`` without ``COMET_API_KEY``).

A cell that fails (an error, a collapsed GAN) is a row of the results with ``status: failed`` and
the error; the other cells still run.  A rerun skips finished cells unless ``--force``.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_io import read_rows, write_csv  # noqa: E402

STUDIES = os.path.join(HERE, "studies")
RESULTS = os.path.join(HERE, "results")
PROTOCOLS = os.path.join(ROOT, "configs", "protocols")
#: the metrics with a per-user form (:func:`metric_per_row`), for paired tests
PER_USER = ("ndcg", "recall", "precision", "mrr", "hit")
#: what a cell's result row keeps besides the metrics
TIMINGS = ("fit_s", "time_to_best_s", "epochs", "best_epoch", "s_per_epoch", "peak_rss_mb", "best_valid")


# -- study files ---------------------------------------------------------------------------------------
class StudyError(ValueError):
    """A study file that cannot be run as written."""


def load_study(path: str) -> dict:
    """The study of ``path``, checked, with defaults filled in."""
    with open(path) as f:
        study = yaml.safe_load(f)
    name = os.path.splitext(os.path.basename(path))[0]
    if not isinstance(study, dict) or not study.get("rows"):
        raise StudyError(f"{path}: a study needs 'rows' (name: {{model: ...}} or {{baseline: module:function}}).")
    study = {"dataset": "ml-100k", "seeds": [2020], "about": "", "config": {}, **study, "name": name,
             "path": os.path.abspath(path)}
    study.setdefault("results", name)
    study.setdefault("protocol", "ml100k_default")
    if not study.get("report"):
        raise StudyError(f"{path}: 'report' lists the metrics of the table (the first is the primary one).")
    study["report"] = [m.lower() for m in study["report"]]
    study["primary"] = str(study.get("primary", study["report"][0])).lower()
    study["paired"] = [str(m).lower() for m in study.get("paired") or []]
    for m in study["paired"]:
        name, _, k = m.partition("@")
        if name not in PER_USER or not k.isdigit():
            raise StudyError(f"{path}: paired: {m!r} has no per-user form; name ndcg, recall, precision, mrr or "
                             "hit @K (e.g. ndcg@20).")
        if m not in study["report"]:
            raise StudyError(f"{path}: paired: {m!r} is not in 'report'; a paired metric must be one of the "
                             "table's (its mean picks the row each test is against).")
    for row, spec in study["rows"].items():
        spec = spec or {}
        if not ("model" in spec) ^ ("baseline" in spec):
            raise StudyError(f"{path}: row {row!r} needs exactly one of 'model' or 'baseline'.")
        if "baseline" in spec:
            known = getattr(_function(spec["baseline"]), "BASELINES", None)
            if known is not None and spec.get("as", row) not in known:
                raise StudyError(f"{path}: row {row!r}: {spec['baseline']} computes {', '.join(sorted(known))}; "
                                 "name the row so, or say which with 'as:'.")
        spec.setdefault("config", {})
        spec.setdefault("config_files", [])
        study["rows"][row] = spec
    if study.get("reference") and study["reference"] not in study["rows"]:
        raise StudyError(f"{path}: reference {study['reference']!r} is not one of its rows.")
    return study


def protocol_file(name: str) -> str:
    """``configs/protocols/<name>.yaml`` for a bare name, else the path as given."""
    if os.sep in name or name.endswith(".yaml"):
        return name if os.path.isabs(name) else os.path.join(ROOT, name)
    return os.path.join(PROTOCOLS, f"{name}.yaml")


def results_stem(study: dict, dataset: str | None) -> str:
    base = study["results"]
    return base if dataset in (None, study["dataset"]) else f"{base}-{dataset}"


# -- one cell (in its own process) -----------------------------------------------------------------------
def cell_config(study: dict, row: str, seed: int, dataset: str, data_path: str | None):
    from recbole_ext.config import make_config

    spec = study["rows"][row]
    model = spec.get("model") or spec.get("settings_of") or "MVAE"
    protocol, protocol_name = {}, spec.get("protocol", study["protocol"])
    if study.get("protocol_keys"):        # only the split and the evaluation from the protocol, never training
        with open(protocol_file(protocol_name)) as f:
            protocol = {k: v for k, v in yaml.safe_load(f).items() if k in study["protocol_keys"]}
        files = [protocol_file(f) for f in spec["config_files"]]
    else:
        files = [protocol_file(protocol_name), *(protocol_file(f) for f in spec["config_files"])]
    overrides = {**protocol, **study["config"], **spec["config"], "seed": seed, "state": "WARNING", "comet": False,
                 "show_progress": False}
    if data_path:
        overrides["data_path"] = data_path
    return make_config(model, dataset, files, overrides)


def _function(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def metric_per_row(scores, target, metric: str):
    """(B,) values of ``metric`` (ndcg / recall / precision / mrr / hit @K) for score rows with
    ``-inf`` at what is not ranked and the bool ``target`` matrix; None for another metric."""
    import torch

    name, _, k = metric.partition("@")
    k = int(k)
    hits = target.gather(1, torch.topk(scores, k, dim=1).indices).float()          # (B, K)
    n_pos = target.sum(1).float()
    if name == "ndcg":
        disc = 1.0 / torch.log2(torch.arange(2, k + 2).float())
        ideal = torch.cumsum(disc, 0)[(n_pos.clamp(1, k) - 1).long()]
        return (hits * disc).sum(1) / ideal
    if name == "recall":
        return hits.sum(1) / n_pos.clamp(min=1)
    if name == "precision":
        return hits.sum(1) / k
    if name == "mrr":
        return torch.where(hits.any(1), 1.0 / (hits.argmax(1).float() + 1), torch.zeros_like(n_pos))
    if name == "hit":
        return hits.any(1).float()
    return None


def per_user(net, test, metric: str, more=()) -> dict | None:
    """The primary ``metric`` of each test row (a user; a user's target row in next-item protocols):
    ``{"u": user ids, "v": values}`` ordered by user id (the report pairs rows of a study by user id),
    plus ``"more": {name: values}`` (same order) for each metric of ``more`` (a study's ``paired``);
    None when the primary metric is not one :func:`metric_per_row` computes."""
    import torch

    if hasattr(net, "eval_phase"):
        net.eval_phase = "test"
    net.eval()
    metrics = [metric, *(m for m in more if m != metric)]
    pairs: list[tuple] = []                      # (user id, value of each metric)
    uid_field = test._dataset.uid_field
    try:
        with torch.no_grad():
            for interaction, history, positive_u, positive_i in test:
                scores = net.full_sort_predict(interaction.to(net.device)).view(len(interaction), -1).float().cpu()
                scores[:, 0] = -torch.inf
                if history is not None:
                    scores[history] = -torch.inf
                target = torch.zeros_like(scores, dtype=torch.bool)
                target[positive_u, positive_i] = True
                values = [metric_per_row(scores, target, m) for m in metrics]   # load_study checked `more`
                if values[0] is None:
                    return None
                users = interaction[uid_field].cpu().tolist()
                keep = (target.sum(1) > 0).tolist()
                columns = [v.tolist() for v in values]
                pairs += [(u, *(round(c[i], 5) for c in columns)) for i, u in enumerate(users) if keep[i]]
    finally:
        if hasattr(net, "eval_phase"):
            net.eval_phase = None
    pairs.sort(key=lambda p: p[0])
    out = {"u": [p[0] for p in pairs], "v": [p[1] for p in pairs]}
    if len(metrics) > 1:
        out["more"] = {m: [p[i + 1] for p in pairs] for i, m in enumerate(metrics) if i > 0}
    return out


def run_cell(study: dict, row: str, seed: int, dataset: str, data_path: str | None) -> dict:
    """Train and test one (row, seed); its result row (plus ``per_user`` values)."""
    from timed_run import timed_run

    spec = study["rows"][row]
    config = cell_config(study, row, seed, dataset, data_path)
    if "baseline" in spec:
        return _function(spec["baseline"])(spec.get("as", row), config, study["primary"])
    extra = _function(spec["after_test"]) if spec.get("after_test") else None

    def after_test(trainer, net, train, test):
        out = extra(trainer, net, train, test) if extra else {}
        values = None if study["primary"].startswith("item_") else per_user(net, test, study["primary"],
                                                                            study["paired"])
        if values:
            out["per_user"] = values
        return out

    return timed_run(config, after_test=after_test)


def log_to_comet(study: dict, row: str, seed: int, dataset: str, result: dict, comet_dir: str) -> str | None:
    """One Comet experiment for the cell: its settings and results, tagged study / row / model / protocol /
    seed; returns the offline archive (None online or when Comet is unavailable)."""
    from lightning_genrec.comet import comet_logger

    spec = study["rows"][row]
    model = spec.get("model") or "baseline"
    protocol = spec.get("protocol", study["protocol"])
    tags = [f"study:{study['name']}", f"row:{row}", f"model:{model}", f"protocol:{protocol}",
            f"seed:{seed}", f"dataset:{dataset}"]
    logger = comet_logger(project="lightning-genrec-benchmarks", name=f"{study['name']}/{row}/{seed}",
                          offline_directory=comet_dir, tags=tags)
    if logger is None:
        return None
    logger.log_hyperparams({"study": study["name"], "row": row, "model": model, "protocol": protocol,
                            "seed": seed, "dataset": dataset, **{f"config/{k}": v for k, v in spec["config"].items()}})
    logger.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    logger.experiment.end()
    return logger.archive_path()


# -- the run loop ---------------------------------------------------------------------------------------
def run_study(study: dict, seeds=None, rows=None, dataset=None, data_path=None, force=False, out_dir=RESULTS,
              comet_dir=None, quiet=False) -> list[dict]:
    """Run the missing cells of ``study`` one after another, each in a fresh process; returns every row
    of its results file (old and new)."""
    from tqdm import tqdm

    dataset = dataset or study["dataset"]
    stem = os.path.join(out_dir, results_stem(study, dataset))
    comet_dir = os.path.abspath(comet_dir or os.path.join(out_dir, "comet"))
    everything = read_rows(stem + ".csv") if os.path.exists(stem + ".csv") else []
    part = study.get("part")
    done = [r for r in everything if (part is None or r.get("part") == part) and r.get("dataset", dataset) == dataset]
    others = [r for r in everything if r not in done]
    peruser = _read_json(stem + ".peruser.json")
    todo = []
    for name in rows or list(study["rows"]):
        if name not in study["rows"]:
            raise StudyError(f"{study['path']}: no row {name!r} (rows: {', '.join(study['rows'])}).")
        for seed in seeds or study["rows"][name].get("seeds", study["seeds"]):
            finished = any(r["model"] == name and r["seed"] == seed and r.get("status", "ok") == "ok" for r in done)
            if force or not finished:
                todo.append((name, seed))
    bar = tqdm(todo, desc=study["name"], unit="cell", disable=quiet or not todo, file=sys.stderr)
    for name, seed in bar:
        bar.set_postfix_str(f"{name} seed {seed}")
        result = _cell_subprocess(study, name, seed, dataset, data_path, comet_dir, study.get("timeout"))
        values = result.pop("per_user", None)
        if values:
            peruser[f"{part or ''}|{name}|{seed}"] = values
        row = {**({"part": part} if part is not None else {}), "model": name, "seed": seed, "dataset": dataset,
               **result}
        done = [r for r in done if not (r["model"] == name and r["seed"] == seed)] + [row]
        write_csv(others + done, stem + ".csv")                     # after every cell: a crash loses nothing
        if peruser:
            with open(stem + ".peruser.json", "w") as f:
                json.dump(peruser, f, separators=(",", ":"))
        status = row.get("status", "ok")
        shown = f"{study['primary']} {row[study['primary']]:.4f}" if status == "ok" and study["primary"] in row else status
        bar.write(f"{study['name']}: {name} seed {seed}: {shown}, fit {row.get('fit_s', float('nan')):.1f} s")
    return done


def _cell_subprocess(study, row, seed, dataset, data_path, comet_dir, timeout=None) -> dict:
    args = [sys.executable, os.path.abspath(__file__), "cell", study["path"], row, str(seed), "--dataset", dataset,
            "--comet_dir", comet_dir]
    if data_path:
        args += ["--data_path", os.path.abspath(data_path)]
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
        try:
            out = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "error": f"timeout after {timeout} s"}
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode == 0 and line:
        return json.loads(line[0][7:])
    errors = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
    message = next((ln for ln in reversed(errors) if "Error" in ln or "error" in ln), errors[-1] if errors else "")
    return {"status": "failed", "error": message.strip()[:300]}


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


# -- tables ---------------------------------------------------------------------------------------------
def _mean_std(values: list[float], fmt: str = "%.4f") -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt % values[0]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{fmt % mean} ± {fmt % std}"


def ok_rows(rows: list[dict], row: str) -> list[dict]:
    return [r for r in rows if r["model"] == row and r.get("status", "ok") == "ok"]


def study_table(study: dict, rows: list[dict]) -> list[str]:
    """Markdown: metrics (mean ± std over seeds), paper figures, costs, per-seed ratios to the reference."""
    report, paper = study["report"], (study.get("paper") or {})
    names = [n for n in study["rows"] if any(r["model"] == n for r in rows)]
    mixed = any("protocol" in spec or "eval_args" in spec["config"] for spec in study["rows"].values())
    lines = ["| row | " + ("protocol | " if mixed else "") + "seeds | " + " | ".join(report) +
             " | fit (s) | s / epoch | epochs | peak RSS (MB) |", "|---|---|" + "---|" * (len(report) + 4 + mixed)]
    for name in names:
        got = ok_rows(rows, name)
        failed = [r for r in rows if r["model"] == name and r.get("status", "ok") != "ok"]
        spec = study["rows"][name]
        own = spec["config"].get("eval_args")
        where = (f"{spec.get('protocol', study['protocol'])}" + (f" + eval_args {own}" if own else "") + " | "
                 if mixed else "")
        if not got:
            lines.append(f"| {name} | {where}failed | " + " | ".join("-" for _ in report) + " | - | - | - | - |")
            continue
        cells = [_mean_std([r.get(k, math.nan) for r in got]) for k in report]
        costs = [_mean_std([r.get(k, math.nan) for r in got], fmt) for k, fmt in
                 (("fit_s", "%.1f"), ("s_per_epoch", "%.3f"), ("epochs", "%.0f"), ("peak_rss_mb", "%.0f"))]
        seeds = f"{len(got)}" + (f" (+{len(failed)} failed)" if failed else "")
        lines.append(f"| {name} | {where}{seeds} | " + " | ".join(cells) + " | " + " | ".join(costs) + " |")
    if paper.get("figures"):
        # published figures: other data and protocol, so a column of their own beside our means, never a row
        figures = {k.lower(): v for k, v in paper["figures"].items()}
        shown = [n for n in names if ok_rows(rows, n)]
        lines += ["", f"Published figures beside ours (not comparable cell by cell): {paper['source']}", "",
                  "| metric | " + " | ".join(shown) + f" | paper: {paper.get('model', 'its model')} |",
                  "|---|" + "---|" * (len(shown) + 1)]
        for metric, value in figures.items():
            means = [_mean_std([r.get(metric, math.nan) for r in ok_rows(rows, n)]).split(" ±")[0] for n in shown]
            lines.append(f"| {metric} | " + " | ".join(means) + f" | {value} |")
    ref = study.get("reference")
    if ref and ok_rows(rows, ref):
        metrics = [m.lower() for m in study.get("ratios", [study["primary"]])]
        lines += ["", f"Per-seed ratios to {ref} (same run):", ""]
        for name in names:
            if name == ref:
                continue
            for metric in metrics:
                parts = []
                for r in sorted(ok_rows(rows, name), key=lambda r: r["seed"]):
                    base = next((b for b in ok_rows(rows, ref) if b["seed"] == r["seed"]), None)
                    if base and base.get(metric) and metric in r:
                        parts.append(f"{r['seed']}: {r[metric] / base[metric]:.3f}x")
                if parts:
                    lines.append(f"- {name} / {ref}, {metric}: " + ", ".join(parts))
    failures = [r for r in rows if r.get("status", "ok") != "ok"]
    if failures:
        lines += ["", "Failed cells:", ""] + [f"- {r['model']} seed {r['seed']}: {r.get('error', '')}" for r in failures]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study's missing cells")
    run.add_argument("study", help="a study file (benchmarks/studies/<name>.yaml) or its name")
    run.add_argument("--seeds", nargs="+", type=int, default=None)
    run.add_argument("--rows", nargs="+", default=None)
    run.add_argument("--dataset", default=None, help="another RecBole atomic data set (results: <name>-<dataset>)")
    run.add_argument("--data_path", default=None, help="the folder holding --dataset")
    run.add_argument("--force", action="store_true", help="rerun finished cells too")
    run.add_argument("--out", default=RESULTS, help="results folder (default benchmarks/results)")
    run.add_argument("--comet_dir", default=None, help="Comet offline archives (default <out>/comet)")
    cell = sub.add_parser("cell", help=argparse.SUPPRESS)
    cell.add_argument("study")
    cell.add_argument("row")
    cell.add_argument("seed", type=int)
    cell.add_argument("--dataset", required=True)
    cell.add_argument("--data_path", default=None)
    cell.add_argument("--comet_dir", required=True)
    report = sub.add_parser("report", help="write RESULTS.md and the plots from every study's results")
    report.add_argument("--studies", nargs="+", default=None)
    compare = sub.add_parser("compare", help="reruns (run --out DIR) beside the committed cells: DIR/COMPARISON.md")
    compare.add_argument("rerun_dir")
    merge = sub.add_parser("merge", help="adopt reruns (run --out DIR) into the committed results, replacing "
                                         "the same cells; then run report")
    merge.add_argument("rerun_dir")
    args = parser.parse_args()

    if args.command == "cell":
        study = load_study(args.study)
        try:
            result = run_cell(study, args.row, args.seed, args.dataset, args.data_path)
        except Exception as exc:   # a failed cell is a reported row, with the error's own message
            from lightning_genrec.errors import GANCollapseError

            status = "collapsed" if isinstance(exc, GANCollapseError) else "failed"
            result = {"status": status, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:280]}"}
        if "status" not in result:
            result["status"] = "ok"
            archive = log_to_comet(study, args.row, args.seed, args.dataset, result, args.comet_dir)
            result["comet_archive"] = os.path.basename(archive) if archive else ""
        print("RESULT " + json.dumps(result))
        return
    if args.command == "run":
        path = args.study if os.path.exists(args.study) else os.path.join(STUDIES, f"{args.study}.yaml")
        if not os.path.exists(path):
            raise SystemExit(f"harness: no study {args.study!r} (a file, or a name in {STUDIES})")
        try:
            study = load_study(path)
            run_study(study, args.seeds, args.rows, args.dataset, args.data_path, args.force, args.out, args.comet_dir)
        except StudyError as exc:
            raise SystemExit(f"harness: {exc}") from None
        from report import plots, study_rows

        shown, _ = study_rows(study, args.out, args.dataset)
        print("\n".join(["", f"## {study['title']}", ""] + study_table(study, shown)))
        drawn = plots(study, shown, os.path.join(args.out, "plots"),
                      tag="" if args.dataset in (None, study["dataset"]) else f"-{args.dataset}")
        print(f"\nResults: {os.path.join(args.out, results_stem(study, args.dataset))}.csv")
        if drawn:
            print("Plots: " + ", ".join(drawn))
        comet = os.path.abspath(args.comet_dir or os.path.join(args.out, "comet"))
        if glob.glob(os.path.join(comet, "*.zip")):
            print(f"Comet offline archives: {comet} (send them with: comet upload {comet}/*.zip)")
        return
    import report as report_module

    if args.command == "compare":
        print(report_module.compare(args.rerun_dir))
        return
    if args.command == "merge":
        done = report_module.merge(args.rerun_dir)
        print("\n".join(done) if done else f"harness: no finished cells of any study in {args.rerun_dir}")
        return
    print(report_module.write_report(args.studies))


if __name__ == "__main__":
    main()
