"""``benchmarks/RESULTS.md`` and its plots, from every study's committed results.

    python benchmarks/harness.py report            # or: python benchmarks/report.py

For each study file (``benchmarks/studies/*.yaml``): its table (mean ± std over seeds, per-seed
ratios to the reference row, wall time, seconds per epoch, peak memory), the exact settings of each
row, the papers' figures in their own column, a paired significance test of each of our models
against the strongest other row of the study and against its reference row where that is not one of
ours (on the primary metric and the study's ``paired`` metrics), and two plots: quality against
training time, and accuracy against beyond-accuracy (NDCG against coverage, novelty and Gini).
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_io import read_rows, write_csv  # noqa: E402
from harness import (RESULTS, STUDIES, _read_json, load_study, ok_rows, protocol_file, results_stem,  # noqa: E402
                     study_table)

PLOTS = os.path.join(RESULTS, "plots")
#: a rerun's metric is the committed one's when within this (``math.isclose``): one unit of the 4 decimals
#: RecBole rounds its metrics to (another run's float sums can tip a rounding), plus float noise
SAME = {"rel_tol": 0.0, "abs_tol": 1e-4 + 1e-9}
OURS = {"MVAE", "SVAE", "CVAE", "CFGAN", "LARA"}


def _mean(values):
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def study_datasets(study: dict, out_dir: str | None = None) -> list[str]:
    """The study's own data set, then every other one it has results for (``<results>-<dataset>.csv``)."""
    out_dir = out_dir or RESULTS
    found = []
    for path in sorted(glob.glob(os.path.join(out_dir, study["results"] + "-*.csv"))):
        dataset = os.path.basename(path)[len(study["results"]) + 1:-4]
        part = study.get("part")
        if any(part is None or r.get("part") == part for r in read_rows(path)):
            found.append(dataset)
    return [study["dataset"], *found]


def study_rows(study: dict, out_dir: str | None = None, dataset: str | None = None) -> tuple[list[dict], dict]:
    """The study's result rows on ``dataset`` (its part of a shared file) and per-user values."""
    out_dir, dataset = out_dir or RESULTS, dataset or study["dataset"]
    stem = os.path.join(out_dir, results_stem(study, dataset))
    rows = read_rows(stem + ".csv") if os.path.exists(stem + ".csv") else []
    part = study.get("part")
    if part is not None:
        rows = [r for r in rows if r.get("part") == part]
    rows = [r for r in rows if r["model"] in study["rows"] and r.get("dataset", dataset) == dataset]
    peruser = {}
    if os.path.exists(stem + ".peruser.json"):
        with open(stem + ".peruser.json") as f:
            peruser = {k: v for k, v in json.load(f).items() if k.split("|")[0] == (part or "")}
    return rows, peruser


def is_ours(study: dict, row: str) -> bool:
    return study["rows"][row].get("model") in OURS


def split_of(study: dict, row: str) -> str:
    """What decides a row's test users and targets: its protocol and any eval_args of its own."""
    spec = study["rows"][row]
    own = spec["config"].get("eval_args")
    return spec.get("protocol", study["protocol"]) + (f" {json.dumps(own, sort_keys=True)}" if own else "")


def _paired(a, b) -> list[float]:
    """Differences ``a - b`` for the users both have (per-user values ``{"u": ids, "v": values}``)."""
    if not isinstance(a, dict) or not isinstance(b, dict):     # values without ids cannot be paired safely
        return []
    other = dict(zip(b["u"], b["v"]))
    return [v - other[u] for u, v in zip(a["u"], a["v"]) if u in other]


def metric_values(entry, metric: str, primary: str) -> dict | None:
    """A cell's per-user values of ``metric`` as ``{"u", "v"}``: the primary metric's own, or one of the
    study's ``paired`` metrics (``entry["more"]``); None when the cell has none of them."""
    if not isinstance(entry, dict):
        return None
    if metric == primary:
        return entry
    values = entry.get("more", {}).get(metric)
    return {"u": entry["u"], "v": values} if values is not None else None


def significance(study: dict, rows: list[dict], peruser: dict) -> list[str]:
    """Wilcoxon signed-rank tests, per test user (paired by user id), of each of our rows against the
    strongest other row with per-user values in the same split (highest mean of the metric), and
    against the study's reference row when that is another such row (not one of ours, same split, with
    values): per seed, and over all (seed, user) pairs.  One table for the primary metric, one for
    each of the study's ``paired`` metrics that any cell has values of."""
    primary = study["primary"]
    if primary.startswith("item_"):
        return []
    out = _significance(study, rows, peruser, primary)
    for metric in study.get("paired", []):
        if metric != primary and any(metric_values(v, metric, primary) for v in peruser.values()):
            out += _significance(study, rows, peruser, metric)
    return out


def _significance(study: dict, rows: list[dict], peruser: dict, metric: str) -> list[str]:
    from scipy.stats import wilcoxon

    primary, part = study["primary"], study.get("part") or ""

    def values(name, seed):
        return metric_values(peruser.get(f"{part}|{name}|{seed}"), metric, primary)

    def has_values(name):
        return any(values(name, r["seed"]) for r in ok_rows(rows, name))

    lines, skipped, missing = [], [], []
    for name in study["rows"]:
        if not is_ours(study, name):
            continue
        if not has_values(name):
            if ok_rows(rows, name):
                missing.append(name)
            continue
        others = [n for n in study["rows"] if not is_ours(study, n) and ok_rows(rows, n) and has_values(n)
                  and split_of(study, n) == split_of(study, name)]
        if not others:
            skipped.append(name)
            continue
        best = max(others, key=lambda n: _mean([r.get(metric, math.nan) for r in ok_rows(rows, n)]))
        against = [best] + [n for n in [study.get("reference")] if n in others and n != best]
        for other in against:
            cells, pooled, users = [], [], []
            for seed in sorted({r["seed"] for r in ok_rows(rows, name)}):
                a, b = values(name, seed), values(other, seed)
                diff = _paired(a, b) if a and b else []
                if not diff:
                    continue
                pooled += diff
                users.append(str(len(diff)))
                cells.append(f"{seed}: {_mean(diff):+.4f}, p={_p(wilcoxon, diff)}")
            if cells:
                lines.append(f"| {name} | {other} | {', '.join(users)} | {'; '.join(cells)} | "
                             f"{_mean(pooled):+.4f}, p={_p(wilcoxon, pooled)} |")
    if not lines and not skipped and not missing:
        return []
    out = ["", f"Paired test per test user (paired by user id), {metric} of each of our models minus the strongest "
               "other row with per-user values in the same split, and minus the reference row where that is "
               "another (two-sided Wilcoxon signed-rank; zero differences dropped, scipy's default):", ""]
    if lines:
        out += ["| ours | against | users per seed | per seed: mean difference, p | all (seed, user) pairs |",
                "|---|---|---|---|---|", *lines]
    if skipped:
        out += ["", f"Not tested (no other row of the same split has per-user values): {', '.join(skipped)}."]
    if missing and metric == primary:
        out += ["", f"Not tested (no per-user values: its cells ran before the harness recorded them; rerun with "
                    f"`harness.py run --force` to add them): {', '.join(missing)}."]
    elif missing:
        out += ["", f"Not tested (no per-user {metric}: its cells ran before the study named it `paired`; rerun "
                    f"them with `harness.py run --force --out DIR`, then `harness.py compare DIR` lends identical "
                    f"cells the values): {', '.join(missing)}."]
    return out


def _p(test, diff) -> str:
    if not any(diff):
        return "1 (no difference)"
    p = float(test(diff).pvalue)
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def row_metric(study: dict, row: str) -> str:
    """The metric a row is judged on in its own protocol: the ``valid_metric`` its config, the study's
    config or its protocol file sets (what selects its epochs), else the study's primary metric."""
    spec = study["rows"][row]
    metric = spec["config"].get("valid_metric") or study["config"].get("valid_metric")
    if not metric:
        with open(protocol_file(spec.get("protocol", study["protocol"])), encoding="utf-8") as f:
            metric = (yaml.safe_load(f) or {}).get("valid_metric")
    return str(metric or study["primary"]).lower()


def protocols_of(study: dict, names: list[str]) -> dict[tuple[str, str], list[str]]:
    """(protocol, metric) -> the rows run in that protocol and judged on that metric (a protocol can serve
    two tasks: cold-start items ranked for users, and users ranked for them), in the study's order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        key = (study["rows"][name].get("protocol", study["protocol"]), row_metric(study, name))
        groups.setdefault(key, []).append(name)
    return groups


def plots(study: dict, rows: list[dict], out_dir: str | None = None, tag: str = "") -> list[str]:
    """Quality against training time; accuracy against beyond-accuracy.  A study whose rows run in
    several protocols (``make run``'s) gets one panel per protocol instead, each row on that protocol's
    own metric: numbers of different protocols are never put on one axis.  Returns the PNG paths."""
    out_dir = out_dir or PLOTS
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    primary = study["primary"]
    names = [n for n in study["rows"] if ok_rows(rows, n)]
    if not names:
        return []
    paths = []

    def scatter(ax, x_key: str, floor: float = -math.inf) -> None:
        """One point per row: mean ``x_key`` against the mean primary metric (ours: red circles)."""
        for name in names:
            got = ok_rows(rows, name)
            x, y = _mean([r.get(x_key, math.nan) for r in got]), _mean([r.get(primary, math.nan) for r in got])
            if math.isfinite(x) and math.isfinite(y):
                x = max(x, floor)
                ax.scatter([x], [y], marker="o" if is_ours(study, name) else "s",
                           color="tab:red" if is_ours(study, name) else "tab:blue")
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_ylabel(f"test {primary}")
        ax.grid(alpha=0.3)

    def save(fig, kind: str) -> None:
        fig.tight_layout()
        path = os.path.join(out_dir, f"{study['name']}{tag}_{kind}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    groups = protocols_of(study, names)
    if len(groups) > 1:
        fig, axes = plt.subplots(1, len(groups), figsize=(2.8 * len(groups), 3.8), squeeze=False)
        for ax, ((protocol, metric), members) in zip(axes[0], groups.items()):
            values = [_mean([r.get(metric, math.nan) for r in ok_rows(rows, m)]) for m in members]
            ax.bar(range(len(members)), [v if math.isfinite(v) else 0.0 for v in values],
                   color=["tab:red" if is_ours(study, m) else "tab:blue" for m in members])
            for i, v in enumerate(values):
                ax.annotate(f"{v:.3f}" if math.isfinite(v) else "n/a", (i, v if math.isfinite(v) else 0.0),
                            ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(members)), members, rotation=25, ha="right", fontsize=7)
            ax.set_title(f"{protocol}\ntest {metric}", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(study["title"] + " (ours red; each panel its protocol's own metric)", fontsize=8)
        save(fig, "protocols")
        return paths

    fig, ax = plt.subplots(figsize=(6, 4))
    scatter(ax, "fit_s", floor=0.01)                    # a log axis: instant baselines sit at 0.01 s
    ax.set_xscale("log")
    ax.set_xlabel("training time, s (log scale; mean over seeds)")
    ax.set_title(study["title"], fontsize=9)
    save(fig, "quality_time")

    k = primary.partition("@")[2]
    beyond = [m for m in (f"itemcoverage@{k}", f"novelty@{k}", f"giniindex@{k}")
              if any(m in r for r in rows)]
    if beyond and not primary.startswith("item_"):
        fig, axes = plt.subplots(1, len(beyond), figsize=(4 * len(beyond), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], beyond):
            scatter(ax, metric)
            ax.set_xlabel(metric + (" (lower: more even exposure)" if metric.startswith("gini") else ""))
        fig.suptitle(study["title"], fontsize=9)
        save(fig, "beyond_accuracy")
    return paths


def settings(study: dict) -> list[str]:
    lines = ["", "Settings (each row: the protocol, then its files, then its config; everything else the "
                 "model's defaults):", ""]
    for name, spec in study["rows"].items():
        what = f"`{spec['model']}`" if "model" in spec else f"baseline `{spec['baseline']}`"
        files = ", ".join(f"`{f}`" for f in spec["config_files"])
        config = ", ".join(f"{k}={v}" for k, v in {**study["config"], **spec["config"]}.items())
        protocol = f"; protocol `{spec['protocol']}`" if spec.get("protocol") else ""
        lines.append(f"- **{name}**: {what}{protocol}" + (f"; files {files}" if files else "") +
                     (f"; `{config}`" if config else "") + (f"; seeds {spec['seeds']}" if spec.get("seeds") else ""))
    return lines


def write_report(names: list[str] | None = None, out: str = os.path.join(HERE, "RESULTS.md")) -> str:
    """Write the report of every study (or of ``names``) to ``out``; returns ``out``."""
    paths = sorted(glob.glob(os.path.join(STUDIES, "*.yaml")))
    if names:
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in names]
    studies = [load_study(p) for p in paths]
    studies = sorted((s for s in studies if not s.get("hidden")), key=lambda s: (s.get("order", 99), s["name"]))
    lines = ["# Results", "",
             "Every study of `benchmarks/studies/`, from its committed results "
             "(`benchmarks/results/<name>.csv`). Rerun a study with "
             "`python benchmarks/harness.py run benchmarks/studies/<name>.yaml` (finished cells are kept; "
             "`--force` reruns them) and this file with `python benchmarks/harness.py report`.", "",
             "Machine for the committed numbers: 2 CPU cores, 24 GB, no GPU; each cell in a fresh process, "
             "one after another; times are wall-clock seconds of that process, memory its peak RSS. Metrics: "
             "RecBole's evaluator on the test split, at the epoch selected on validation (never on test). "
             "Papers' figures come from other data and protocols: they stand in their own row, not comparable "
             "cell by cell.", ""]
    if os.path.exists(os.path.join(RESULTS, "rerun", "COMPARISON.md")):
        lines += ["Reruns of committed cells through the harness, beside the committed numbers: "
                  "[results/rerun/COMPARISON.md](results/rerun/COMPARISON.md).", ""]
    lines += ["## Contents", ""]
    lines += [f"- [{s['title']}](#{_anchor(s['title'])})" for s in studies]
    for study in studies:
        lines += ["", f"## {study['title']}", "", study["about"].strip(), "",
                  f"Study `benchmarks/studies/{study['name']}.yaml`; protocol "
                  f"`configs/protocols/{study['protocol']}.yaml`; seeds {study['seeds']}; primary metric "
                  f"{study['primary']}."]
        lines += settings(study)
        for dataset in study_datasets(study):
            rows, peruser = study_rows(study, dataset=dataset)
            lines += ["", f"### {dataset}", ""]
            if not rows:
                lines.append("No results yet.")
                continue
            lines += study_table(study, rows)
            lines += significance(study, rows, peruser)
            for path in plots(study, rows, tag="" if dataset == study["dataset"] else f"-{dataset}"):
                lines += ["", f"![{os.path.basename(path)}]({os.path.relpath(path, os.path.dirname(os.path.abspath(out)))})"]
        if study.get("notes"):
            lines += ["", study["notes"].strip()]
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    return out


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


if __name__ == "__main__":
    print(write_report(sys.argv[1:] or None))


def compare(rerun_dir: str, out: str | None = None) -> str:
    """Markdown: every cell of the reruns in ``rerun_dir`` (``harness.py run ... --out rerun_dir``, on any
    data set) beside the committed cell of the same study, data set, row and seed, metric by metric;
    written to ``<rerun_dir>/COMPARISON.md``.  Also copies the per-user values of reruns whose metrics
    all equal the committed ones (within :data:`SAME`: the same run, up to a tipped rounding) into the
    committed ``.peruser.json`` where the committed cell has none or lacks one of the rerun's ``paired``
    metrics, for the report's paired tests.  Reruns that differ are only shown:
    :func:`merge` adopts them."""
    out = out or os.path.join(rerun_dir, "COMPARISON.md")
    lines = ["# Reruns of committed cells through the harness", "",
             f"Rerun cells (`{os.path.relpath(rerun_dir, HERE)}`) beside the committed ones: the metrics of the "
             "study table, at 4 decimals. `same`: every metric equal within 1e-4, one unit of the 4 decimals RecBole "
             "keeps (another run's float sums can tip a rounding). Times are not compared (other load).", ""]
    for study, dataset, rerun, rerun_peruser in _reruns(rerun_dir):
        committed, committed_peruser = study_rows(study, dataset=dataset)
        metrics = [m for m in study["report"] if any(m in r for r in rerun)]
        shown = "" if dataset == study["dataset"] else f" ({dataset})"
        lines += [f"## {study['title']}{shown}", "", "| row | seed | " +
                  " | ".join(f"{m} committed / rerun" for m in metrics) + " | same |",
                  "|---|---|" + "---|" * (len(metrics) + 1)]
        adopted = {}
        for r in rerun:
            old = next((c for c in committed if c["model"] == r["model"] and c["seed"] == r["seed"]
                        and c.get("status", "ok") == "ok"), None)
            if r.get("status", "ok") != "ok" or old is None:
                lines.append(f"| {r['model']} | {r['seed']} | " + " | ".join("-" for _ in metrics) +
                             f" | {r.get('status', 'no committed cell')} |")
                continue
            pairs = [(old.get(m), r.get(m)) for m in metrics]
            present = [(a, b) for a, b in pairs if a is not None or b is not None]   # a row's own columns
            same = bool(present) and all(a is not None and b is not None and math.isclose(a, b, **SAME)
                                         for a, b in present)
            lines.append(f"| {r['model']} | {r['seed']} | " + " | ".join(
                f"{a:.4f} / {b:.4f}" if a is not None and b is not None else "-" for a, b in pairs) +
                f" | {'same' if same else 'differs'} |")
            key = _peruser_key(study, r)
            if same and key in rerun_peruser and _adds_values(rerun_peruser[key], committed_peruser.get(key)):
                adopted[key] = _lent(rerun_peruser[key], committed_peruser.get(key))
        lines.append("")
        if adopted:
            stem = os.path.join(RESULTS, results_stem(study, dataset))
            peruser = _read_json(stem + ".peruser.json")
            peruser.update(adopted)
            _write_peruser(stem, peruser)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


def merge(rerun_dir: str) -> list[str]:
    """Adopt the finished cells of ``rerun_dir`` (``harness.py run ... --out rerun_dir``) into the committed
    results: each replaces the committed row of the same study part, data set, row and seed (in place; a
    new cell is appended), and its per-user values replace the committed ones (a rerun without them
    removes the old values, which belonged to the old cell).  Failed cells are not adopted.  Returns one
    line per cell: what it replaced.  Run ``harness.py report`` after it."""
    done = []
    for study, dataset, rerun, rerun_peruser in _reruns(rerun_dir):
        stem = os.path.join(RESULTS, results_stem(study, dataset))
        rows = read_rows(stem + ".csv") if os.path.exists(stem + ".csv") else []
        peruser = _read_json(stem + ".peruser.json")
        part, primary = study.get("part"), study["primary"]
        for r in rerun:
            if r.get("status", "ok") != "ok":
                done.append(f"{study['name']} {dataset} {r['model']} {r['seed']}: not adopted ({r.get('status')})")
                continue
            r = {**({"part": part} if part is not None else {}), **r, "dataset": dataset}

            def same_cell(c):
                return ((part is None or c.get("part") == part) and c["model"] == r["model"]
                        and c["seed"] == r["seed"] and c.get("dataset", dataset) == dataset)

            matches = [i for i, c in enumerate(rows) if same_cell(c)]
            was = rows[matches[0]].get(primary) if matches else None
            if matches:
                rows[matches[0]] = r
                rows = [c for i, c in enumerate(rows) if i not in matches[1:]]
            else:
                rows.append(r)
            key = _peruser_key(study, r)
            peruser.pop(key, None)
            if key in rerun_peruser:
                peruser[key] = rerun_peruser[key]
            now = r.get(primary)
            done.append(f"{study['name']} {dataset} {r['model']} {r['seed']}: {primary} "
                        + (f"{was:.4f} -> " if isinstance(was, (int, float)) else "new: ")
                        + (f"{now:.4f}" if isinstance(now, (int, float)) else "-")
                        + (", per-user values" if key in rerun_peruser else ""))
        write_csv(rows, stem + ".csv")
        _write_peruser(stem, peruser)
    return done


def _reruns(rerun_dir: str):
    """(study, data set, rerun rows, rerun per-user values) for every study and data set with cells in
    ``rerun_dir``."""
    for path in sorted(glob.glob(os.path.join(STUDIES, "*.yaml"))):
        study = load_study(path)
        for dataset in study_datasets(study, rerun_dir):
            rerun, rerun_peruser = study_rows(study, rerun_dir, dataset)
            if rerun:
                yield study, dataset, rerun, rerun_peruser


def _adds_values(rerun, committed) -> bool:
    """Whether a rerun cell's per-user values add to the committed cell's: it has none, or the rerun
    has a ``paired`` metric it lacks."""
    if not isinstance(committed, dict):
        return True
    return bool(set(rerun.get("more", {})) - set(committed.get("more", {})))


def _lent(rerun: dict, committed) -> dict:
    """The committed cell's per-user values after an identical rerun lends it its own: the rerun's, with
    any paired metric only the committed cell has kept (same users)."""
    if isinstance(committed, dict) and committed.get("u") == rerun.get("u") and committed.get("more"):
        return {**rerun, "more": {**committed["more"], **rerun.get("more", {})}}
    return rerun


def _peruser_key(study: dict, row: dict) -> str:
    return f"{study.get('part') or ''}|{row['model']}|{row['seed']}"


def _write_peruser(stem: str, peruser: dict) -> None:
    if peruser:
        with open(stem + ".peruser.json", "w") as f:
            json.dump(peruser, f, separators=(",", ":"))
    elif os.path.exists(stem + ".peruser.json"):
        os.remove(stem + ".peruser.json")
