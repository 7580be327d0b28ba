"""benchmarks/harness.py and benchmarks/report.py: study files, the run loop (failed cells, skipping
finished ones), per-user values, and the report."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import FAST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import harness  # noqa: E402
import report  # noqa: E402

STUDY_FILES = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "studies", "*.yaml")))


def _write(tmp_path, study: dict, name: str = "tiny_study") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


@pytest.mark.parametrize("path", STUDY_FILES, ids=os.path.basename)
def test_committed_studies_name_real_models_protocols_files_and_hooks(path):
    from recbole.utils import get_model

    study = harness.load_study(path)
    for name, spec in study["rows"].items():
        assert os.path.isfile(harness.protocol_file(spec.get("protocol", study["protocol"])))
        for f in spec["config_files"]:
            assert os.path.isfile(harness.protocol_file(f)), f
        if "model" in spec:
            get_model(spec["model"])                                   # RecBole's or ours
        for ref in (spec.get("baseline"), spec.get("after_test")):
            if ref:
                assert callable(harness._function(ref)), ref


@pytest.mark.parametrize("bad, words", [
    ({"report": ["ndcg@10"]}, "needs 'rows'"),
    ({"rows": {"A": {"model": "Pop"}}}, "'report' lists the metrics"),
    ({"rows": {"A": {"model": "Pop", "baseline": "x:y"}}, "report": ["ndcg@10"]}, "exactly one of"),
    ({"rows": {"A": {"model": "Pop"}}, "report": ["ndcg@10"], "reference": "B"}, "reference 'B'"),
    ({"rows": {"Content KNN": {"baseline": "ml100k_cvae:run_baseline"}}, "report": ["ndcg@10"]},
     "computes ContentKNN, Random; name the row so, or say which with 'as:'"),
    ({"rows": {"A": {"model": "Pop"}}, "report": ["ndcg@10"], "paired": ["novelty@10"]}, "'novelty@10' has no per-user"),
    ({"rows": {"A": {"model": "Pop"}}, "report": ["ndcg@10"], "paired": ["ndcg"]}, "'ndcg' has no per-user"),
    ({"rows": {"A": {"model": "Pop"}}, "report": ["ndcg@10"], "paired": ["ndcg@20"]}, "'ndcg@20' is not in 'report'"),
])
def test_bad_study_files_are_named_errors(tmp_path, bad, words):
    with pytest.raises(harness.StudyError, match=words):
        harness.load_study(_write(tmp_path, bad))


def test_metric_per_row_averages_to_the_metrics_recboles_evaluator_computes():
    from lightning_genrec.metrics import TopKMetrics

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 40, generator=g)
    target = torch.rand(50, 40, generator=g) < 0.15
    scores[:, 0] = -torch.inf
    target[:, 0] = False
    target[target.sum(1) == 0, 1] = True
    metrics = TopKMetrics(40, [5])
    metrics.update(scores, target)
    expected = {k: float(v) for k, v in metrics.compute().items()}
    for name in ("ndcg", "recall", "precision", "mrr"):
        got = harness.metric_per_row(scores, target, f"{name}@5").mean().item()
        assert got == pytest.approx(expected[f"{name}@5"], abs=1e-6), name


def test_a_cell_in_process_gives_recboles_metrics_and_per_user_values_that_average_to_them(tiny_root, tmp_path):
    study = harness.load_study(_write_tiny(tmp_path, paired=["Recall@10", "ndcg@10"]))
    assert study["paired"] == ["recall@10", "ndcg@10"]
    result = harness.run_cell(study, "Pop", 2020, "tiny", tiny_root)
    values = result["per_user"]
    assert len(values["v"]) > 10 and values["u"] == sorted(values["u"]) and len(set(values["u"])) == len(values["u"])
    assert sum(values["v"]) / len(values["v"]) == pytest.approx(result["ndcg@10"], abs=1e-4)
    # the paired metrics' values, same users and order; the primary is not repeated among them
    assert set(values["more"]) == {"recall@10"} and len(values["more"]["recall@10"]) == len(values["u"])
    recall = values["more"]["recall@10"]
    assert sum(recall) / len(recall) == pytest.approx(result["recall@10"], abs=1e-4)
    assert recall != values["v"]
    # same user order: NDCG@10 and Recall@10 are 0 exactly for the users with no hit in the top 10
    assert [v == 0 for v in values["v"]] == [r == 0 for r in recall] and 0 < sum(r == 0 for r in recall) < len(recall)


def _write_tiny(folder, rows=None, paired=()) -> str:
    study = {"title": "tiny", "dataset": "tiny", "protocol": "ml100k_default", "seeds": [2020, 2021],
             **({"paired": list(paired)} if paired else {}),
             "report": ["ndcg@10", "recall@10", "itemcoverage@10"], "reference": "Pop",
             "config": {**FAST, "topk": [5, 10], "valid_metric": "NDCG@10", "epochs": 2},
             "rows": rows or {"MVAE": {"model": "MVAE", "config": {"mlp_hidden_size": [16], "latent_dimension": 4}},
                              "Pop": {"model": "Pop"}}}
    path = os.path.join(folder, "tiny_study.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(study, f)
    return path


def test_the_run_loop_reports_failed_cells_keeps_going_and_skips_finished_ones(tmp_path, monkeypatch):
    study = harness.load_study(_write(tmp_path, {
        "title": "fake", "report": ["ndcg@10"], "seeds": [1, 2], "reference": "B",
        "rows": {"A": {"model": "MVAE"}, "B": {"model": "Pop"}}}, "fake"))
    calls = []

    def fake_cell(study, row, seed, dataset, data_path, comet_dir, timeout=None):
        calls.append((row, seed))
        if (row, seed) == ("A", 2):
            return {"status": "failed", "error": "HyperparameterError: latent_dimension=-1"}
        return {"status": "ok", "ndcg@10": 0.1 * seed + (0.05 if row == "A" else 0), "fit_s": 1.0,
                "per_user": {"u": [1, 2], "v": [0.1, 0.2]}}

    monkeypatch.setattr(harness, "_cell_subprocess", fake_cell)
    rows = harness.run_study(study, out_dir=str(tmp_path), quiet=True)
    assert calls == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    assert {(r["model"], r["seed"], r["status"]) for r in rows} == {("A", 1, "ok"), ("A", 2, "failed"),
                                                                    ("B", 1, "ok"), ("B", 2, "ok")}
    peruser = json.load(open(tmp_path / "fake.peruser.json"))
    assert set(peruser) == {"|A|1", "|B|1", "|B|2"}
    # a rerun only retries the failed cell; --force reruns everything asked
    calls.clear()
    harness.run_study(study, out_dir=str(tmp_path), quiet=True)
    assert calls == [("A", 2)]
    calls.clear()
    harness.run_study(study, rows=["B"], seeds=[1], force=True, out_dir=str(tmp_path), quiet=True)
    assert calls == [("B", 1)]
    table = "\n".join(harness.study_table(study, harness.read_rows(str(tmp_path / "fake.csv"))))
    assert "| A | 1 (+1 failed) | 0.1500 |" in table and "A seed 2: HyperparameterError" in table
    assert "- A / B, ndcg@10: 1: 1.500x" in table
    with pytest.raises(harness.StudyError, match="no row 'C'"):
        harness.run_study(study, rows=["C"], out_dir=str(tmp_path), quiet=True)


def test_the_report_has_tables_significance_settings_and_plots(tmp_path, monkeypatch):
    studies, results = tmp_path / "studies", tmp_path / "results"
    studies.mkdir()
    results.mkdir()
    _write(studies, {"title": "Toy study", "about": "What it compares.", "report": ["ndcg@10", "itemcoverage@10",
                                                                                  "novelty@10", "giniindex@10"],
                     "seeds": [1, 2], "reference": "Pop", "paper": {"source": "A paper", "figures": {"ndcg@10": 0.5}},
                     "rows": {"MVAE": {"model": "MVAE", "config": {"anneal_cap": 0.5}}, "Pop": {"model": "Pop"},
                              "EASE": {"model": "EASE"}}}, "toy")
    rows = []
    peruser = {}
    for seed in (1, 2):
        for model, base in (("MVAE", 0.30), ("Pop", 0.10), ("EASE", 0.25)):
            rows.append({"model": model, "seed": seed, "status": "ok", "ndcg@10": base + 0.01 * seed,
                         "itemcoverage@10": base, "novelty@10": 2 + base, "giniindex@10": 1 - base,
                         "fit_s": 10 * base, "s_per_epoch": base, "epochs": 3, "peak_rss_mb": 500})
            # every row has users 0..29; MVAE's values listed in another order: pairing goes by user id
            ids = list(range(30)) if model != "MVAE" else list(range(29, -1, -1))
            peruser[f"|{model}|{seed}"] = {"u": ids, "v": [base + 0.001 * i for i in ids]}
    harness.write_csv(rows, str(results / "toy.csv"))
    (results / "toy.peruser.json").write_text(json.dumps(peruser))
    monkeypatch.setattr(report, "STUDIES", str(studies))
    monkeypatch.setattr(report, "RESULTS", str(results))
    monkeypatch.setattr(report, "PLOTS", str(results / "plots"))
    out = report.write_report(out=str(tmp_path / "RESULTS.md"))
    text = open(out).read()
    assert "## Toy study" in text and "What it compares." in text
    assert "| MVAE | 2 | 0.3150 ± 0.0071 |" in text
    assert "| metric | EASE | MVAE | Pop | paper: its model |" in text and "| ndcg@10 | 0.2650 | 0.3150 | 0.1150 | 0.5 |" in text
    assert "- MVAE / Pop, ndcg@10: 1: 2.818x, 2: 2.667x" in text
    assert "| MVAE | EASE | 30, 30 | 1: +0.0500, p=" in text      # against the strongest other row, by user id
    assert "**MVAE**: `MVAE`; `anneal_cap=0.5`" in text
    for png in ("toy_quality_time.png", "toy_beyond_accuracy.png"):
        assert (results / "plots" / png).stat().st_size > 1000
        assert png in text


def test_the_paired_test_names_our_rows_it_could_not_test():
    study = {"primary": "ndcg@10", "protocol": "p",
             "rows": {"MVAE": {"model": "MVAE", "config": {}}, "Old": {"model": "MVAE", "config": {}},
                      "Pop": {"model": "Pop", "config": {}}}}
    rows = [{"model": m, "seed": 1, "status": "ok", "ndcg@10": v} for m, v in (("MVAE", .3), ("Old", .2), ("Pop", .1))]
    values = {"u": list(range(20)), "v": [0.01 * i for i in range(20)]}
    lines = "\n".join(report.significance(study, rows, {"|MVAE|1": values, "|Pop|1": {**values, "v": [0] * 20}}))
    assert "| MVAE | Pop | 20 | 1: +0.0950, p=" in lines
    assert "no per-user values" in lines and lines.rstrip().endswith("Old.")
    # none of ours has values: the section says so instead of vanishing
    lines = "\n".join(report.significance(study, rows, {}))
    assert "| MVAE |" not in lines and "MVAE, Old." in lines


def test_paired_metrics_get_their_own_table_and_every_row_is_tested_against_the_reference_too():
    study = {"primary": "ndcg@100", "paired": ["ndcg@20", "recall@50"], "protocol": "p", "reference": "MultiVAE",
             "rows": {name: {"model": name, "config": {}} for name in ("MVAE", "MultiVAE", "EASE")}}
    rows = [{"model": m, "seed": s, "status": "ok", "ndcg@100": v, "ndcg@20": v}
            for s in (1, 2) for m, v in (("MVAE", .3), ("MultiVAE", .2), ("EASE", .4))]
    ids = list(range(20))

    def cell(primary, at20):
        return {"u": ids, "v": [primary] * 20, "more": {"ndcg@20": [at20 + 0.001 * i for i in ids]}}

    peruser = {}
    for s in (1, 2):
        peruser.update({f"|MVAE|{s}": cell(.3, .25), f"|MultiVAE|{s}": cell(.2, .3), f"|EASE|{s}": cell(.4, .35)})
    text = "\n".join(report.significance(study, rows, peruser))
    primary, at20 = text.split("ndcg@20 of each")
    assert "ndcg@100 of each" in primary and "recall@50" not in text       # no values of recall@50: no table
    assert "| MVAE | EASE | 20, 20 | 1: -0.1000" in primary and "| MVAE | MultiVAE | 20, 20 | 1: +0.1000" in primary
    assert "| MVAE | EASE | 20, 20 | 1: -0.1000" in at20 and "| MVAE | MultiVAE | 20, 20 | 1: -0.0500" in at20
    assert "all (seed, user) pairs" in at20 and "-0.0500, p=" in at20
    # the strongest row is chosen on each table's own metric: EASE leads ndcg@100, MultiVAE ndcg@20
    rows = [r if r["model"] != "EASE" else {**r, "ndcg@20": .1} for r in rows]
    primary, at20 = "\n".join(report.significance(study, rows, peruser)).split("ndcg@20 of each")
    assert primary.count("| MVAE |") == 2 and at20.count("| MVAE |") == 1      # the reference is the strongest
    assert "| MVAE | MultiVAE | 20, 20 | 1: -0.0500" in at20
    # a reference that is one of ours, or in another split, is not tested against
    for reference in ({"model": "MVAE", "config": {}}, {"model": "MultiVAE", "protocol": "q", "config": {}}):
        other = {**study, "rows": {**study["rows"], "MultiVAE": reference}}
        assert "| MVAE | MultiVAE |" not in "\n".join(report.significance(other, rows, peruser))
    # our row without the paired metric's values is named, with how to add them
    bare = {**peruser, "|MVAE|1": {"u": ids, "v": [.3] * 20}, "|MVAE|2": {"u": ids, "v": [.3] * 20}}
    primary, at20 = "\n".join(report.significance(study, rows, bare)).split("ndcg@20 of each")
    assert "| MVAE | EASE |" in primary and "no per-user ndcg@20" in at20 and "| MVAE |" not in at20


def _rerun_fixture(tmp_path, monkeypatch):
    """Two studies sharing one results file (parts p and q), committed results on two data sets (the
    other one's rows from before results had a data set column), and reruns of some cells."""
    studies, results, rerun = tmp_path / "studies", tmp_path / "results", tmp_path / "rerun"
    for folder in (studies, results, rerun):
        folder.mkdir()
    _write(studies, {"title": "Toy", "report": ["ndcg@10", "novelty"], "seeds": [1, 2], "part": "p",
                     "results": "shared", "rows": {"MVAE": {"model": "MVAE"}, "Pop": {"model": "Pop"}}}, "toy")
    _write(studies, {"title": "Toy q", "report": ["ndcg@10"], "part": "q", "results": "shared",
                     "rows": {"MVAE": {"model": "MVAE"}}}, "toyq")

    def row(model, seed, ndcg, dataset="ml-100k", part="p", **more):
        return {"part": part, "model": model, "seed": seed, "dataset": dataset, "ndcg@10": ndcg, **more}

    values, new, new_q = ({"u": [1, 2], "v": v} for v in ([0.1, 0.2], [0.3, 0.4], [0.5, 0.6]))
    harness.write_csv([row("MVAE", 1, 0.30), row("Pop", 1, 0.10, novelty=5.3032), row("MVAE", 1, 0.99, part="q"),
                       row("MVAE", 2, 0.31), row("Pop", 2, 0.1000)], str(results / "shared.csv"))
    (results / "shared.peruser.json").write_text(json.dumps({"p|MVAE|1": values, "q|MVAE|1": values}))
    harness.write_csv([{k: v for k, v in row("MVAE", 1, 0.20).items() if k != "dataset"}],
                      str(results / "shared-lastfm.csv"))
    (results / "shared-lastfm.peruser.json").write_text(json.dumps({"p|MVAE|1": values}))
    # Pop 1: its novelty one unit of the 4th decimal off (a tipped rounding); Pop 2: two units, a change
    harness.write_csv([row("MVAE", 1, 0.32), row("Pop", 1, 0.10, novelty=5.3031), row("MVAE", 2, None, status="failed"),
                       row("MVAE", 3, 0.33), row("MVAE", 1, 0.98, part="q"), row("Pop", 2, 0.1002)],
                      str(rerun / "shared.csv"))
    (rerun / "shared.peruser.json").write_text(json.dumps({"p|MVAE|1": new, "p|Pop|1": new, "p|Pop|2": new,
                                                           "q|MVAE|1": new_q}))
    harness.write_csv([row("MVAE", 1, 0.25, "lastfm")], str(rerun / "shared-lastfm.csv"))
    monkeypatch.setattr(report, "STUDIES", str(studies))
    monkeypatch.setattr(report, "RESULTS", str(results))
    return results, rerun, values, new, new_q


def test_compare_shows_reruns_on_every_data_set_and_adopts_per_user_values_of_identical_cells_only(
        tmp_path, monkeypatch):
    results, rerun, values, new, _ = _rerun_fixture(tmp_path, monkeypatch)
    text = open(report.compare(str(rerun))).read()
    assert "| MVAE | 1 | 0.3000 / 0.3200 | - | differs |" in text
    assert "| Pop | 1 | 0.1000 / 0.1000 | 5.3032 / 5.3031 | same |" in text
    assert "| Pop | 2 | 0.1000 / 0.1002 | - | differs |" in text
    assert "| MVAE | 2 | - | - | failed |" in text and "| MVAE | 3 | - | - | no committed cell |" in text
    assert "## Toy (lastfm)" in text and "| MVAE | 1 | 0.2000 / 0.2500 | differs |" in text
    assert "## Toy q\n" in text and "| MVAE | 1 | 0.9900 / 0.9800 | differs |" in text
    peruser = json.loads((results / "shared.peruser.json").read_text())
    assert peruser == {"p|MVAE|1": values, "q|MVAE|1": values, "p|Pop|1": new}   # changed cells keep their own
    assert json.loads((results / "shared-lastfm.peruser.json").read_text()) == {"p|MVAE|1": values}
    assert [r["ndcg@10"] for r in harness.read_rows(str(results / "shared.csv"))] == [0.30, 0.10, 0.99, 0.31, 0.10]


def test_compare_adopts_the_per_user_values_of_an_identical_rerun_that_adds_a_paired_metric(tmp_path, monkeypatch):
    results, rerun, values, new, _ = _rerun_fixture(tmp_path, monkeypatch)
    more, other = {**new, "more": {"ndcg@20": [0.5, 0.6]}}, {**values, "more": {"ndcg@20": [0.7, 0.8]}}
    (results / "shared.peruser.json").write_text(json.dumps({"p|Pop|1": values, "p|Pop|2": other}))
    (rerun / "shared.peruser.json").write_text(json.dumps({"p|Pop|1": more, "p|Pop|2": more}))
    report.compare(str(rerun))
    peruser = json.loads((results / "shared.peruser.json").read_text())
    # Pop 1 (same metrics) gains ndcg@20; Pop 2 (its metrics differ) keeps its own
    assert peruser == {"p|Pop|1": more, "p|Pop|2": other}
    report.compare(str(rerun))                          # nothing more to add: the committed values stay
    (rerun / "shared.peruser.json").write_text(json.dumps({"p|Pop|1": {**values, "more": {"ndcg@20": [0, 0]}}}))
    report.compare(str(rerun))
    assert json.loads((results / "shared.peruser.json").read_text())["p|Pop|1"] == more
    # a rerun with another paired metric adds it; the committed one's stay
    (rerun / "shared.peruser.json").write_text(json.dumps({"p|Pop|1": {**new, "more": {"recall@50": [1, 0]}}}))
    report.compare(str(rerun))
    assert json.loads((results / "shared.peruser.json").read_text())["p|Pop|1"] == {
        **new, "more": {"ndcg@20": [0.5, 0.6], "recall@50": [1, 0]}}


def test_merge_replaces_the_same_cells_in_place_with_their_per_user_values_and_keeps_everything_else(
        tmp_path, monkeypatch):
    results, rerun, values, new, new_q = _rerun_fixture(tmp_path, monkeypatch)
    done = report.merge(str(rerun))
    assert "toy ml-100k MVAE 1: ndcg@10 0.3000 -> 0.3200, per-user values" in done
    assert "toy ml-100k MVAE 2: not adopted (failed)" in done and "toy ml-100k MVAE 3: ndcg@10 new: 0.3300" in done
    assert "toyq ml-100k MVAE 1: ndcg@10 0.9900 -> 0.9800, per-user values" in done
    rows = harness.read_rows(str(results / "shared.csv"))
    assert [(r["part"], r["model"], r["seed"], r["ndcg@10"]) for r in rows] == [
        ("p", "MVAE", 1, 0.32), ("p", "Pop", 1, 0.10), ("q", "MVAE", 1, 0.98), ("p", "MVAE", 2, 0.31),
        ("p", "Pop", 2, 0.1002), ("p", "MVAE", 3, 0.33)]     # each part's own cell; the failed rerun's kept
    peruser = json.loads((results / "shared.peruser.json").read_text())
    assert peruser == {"p|MVAE|1": new, "q|MVAE|1": new_q, "p|Pop|1": new, "p|Pop|2": new}
    # a row without a data set column is the file's own data set's: replaced, not left beside the new one
    assert [r["ndcg@10"] for r in harness.read_rows(str(results / "shared-lastfm.csv"))] == [0.25]
    # the rerun had no per-user values there: the old cell's are gone, not left beside the new cell
    assert not (results / "shared-lastfm.peruser.json").exists()


@pytest.mark.slow
def test_the_command_line_runs_cells_in_fresh_processes_and_logs_each_to_comet(tiny_root, tmp_path):

    path = _write_tiny(tmp_path, rows={"Pop": {"model": "Pop"},
                                       "Broken": {"model": "MVAE", "config": {"latent_dimension": -1}}})
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "harness.py"), "run", path,
                           "--seeds", "2020", "--data_path", tiny_root, "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "COMET_API_KEY": ""}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["model"]: r for r in harness.read_rows(str(out / "tiny_study.csv"))}
    assert rows["Pop"]["status"] == "ok" and rows["Pop"]["comet_archive"].endswith(".zip")
    assert rows["Broken"]["status"] == "failed" and "latent_dimension=-1" in rows["Broken"]["error"]
    assert len(glob.glob(str(out / "comet" / "*.zip"))) == 1
    assert "| Pop | 1 |" in done.stdout and "Broken seed 2020: HyperparameterError" in done.stdout
    assert (out / "plots" / "tiny_study_quality_time.png").exists()


def test_mvae_defaults_replay_rules_stop_where_they_say():
    from mvae_defaults import replay

    early_peak = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9] + [0.8] * 150        # best at epoch 5, then flat below it
    assert replay(early_peak, "from-start", 10, 100) == (0.9, 17)      # 11 bad validations in a row
    assert replay(early_peak, "after-anneal", 10, 100) == (0.9, 100)   # waits for beta's cap
    assert replay(early_peak, "after-anneal-cut50", 10, 100) == (0.9, 57)   # 51 bad in a row end the wait
    late_gain = [0.5] + [0.4] * 45 + [0.6] + [0.3] * 150               # 45 bad, then a better one
    assert replay(late_gain, "after-anneal-cut50", 10, 100) == (0.6, 98)    # kept going, then cut at 46 + 51
    assert replay(late_gain, "from-start", 10, 100) == (0.5, 12)


def test_mvae_defaults_merge_adds_side_by_side_runs_rows_and_commands(tmp_path):
    # runs made side by side with --out /tmp/... are merged into the committed table: their rows replace
    # rows of the same (candidate, data set, seed, protocol), others are kept; their commands are recorded
    from bench_io import read_rows, write_csv

    def row(cand, seed, best):
        return {"candidate": cand, "dataset": "ml-100k", "seed": seed, "protocol": "default", "epochs": 3,
                "best_epoch": 1, "best_valid": best, "valid_curve": json.dumps([best - 0.1, best, best - 0.2])}

    table, side = str(tmp_path / "table"), str(tmp_path / "side")
    write_csv([row("MultiVAE", 7, 0.2), row("cap1.0-e200", 7, 0.25)], table + ".csv")
    (tmp_path / "table.md").write_text("# t\n\nCommand: `first`\n")
    write_csv([row("cap1.0-e200", 7, 0.3), row("cap1.0-e200-b2048", 7, 0.28)], side + ".csv")
    (tmp_path / "side.md").write_text("# t\n\nCommand: `second`\n")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "mvae_defaults.py"), "--merge", side,
                           "--note", "side by side", "--out", table], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["candidate"]: r["best_valid"] for r in read_rows(table + ".csv")}
    assert rows == {"MultiVAE": 0.2, "cap1.0-e200": 0.3, "cap1.0-e200-b2048": 0.28}
    md = (tmp_path / "table.md").read_text()
    assert "Command: `first` then (side by side) `second`" in md and "| cap1.0-e200 | after-anneal 10 | 0.3000 |" in md


def test_make_runs_plot_has_one_panel_per_protocol_on_its_own_metric(tmp_path):
    # the quick start's rows run in five protocols: each panel holds one protocol's rows, on the metric that
    # selects their epochs there (next item: NDCG@10; LARA, items -> users: item_ndcg@20), never one axis for all
    study = harness.load_study(os.path.join(ROOT, "benchmarks", "studies", "quickstart.yaml"))
    metrics = {name: report.row_metric(study, name) for name in study["rows"]}
    assert metrics["MVAE"] == metrics["MultiVAE"] == "ndcg@20"
    assert metrics["SVAE"] == "ndcg@10" and metrics["LARA"] == "item_ndcg@20"
    groups = report.protocols_of(study, list(study["rows"]))
    assert len(groups) == 5 and groups[("ml100k_next_item", "ndcg@10")] == ["SVAE", "Pop (next item)"]
    assert groups[("ml100k_cold_items", "item_ndcg@20")] == ["LARA", "GenreProfile (cold items)"]
    assert groups[("ml100k_cold_items", "ndcg@20")] == ["CVAE", "ContentKNN (cold items)"]
    rows = [{"model": name, "seed": 2020, "status": "ok", "fit_s": 1.0, metrics[name]: 0.1 + 0.01 * i}
            for i, name in enumerate(study["rows"])]
    paths = report.plots(study, rows, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["quickstart_protocols.png"]
    assert os.path.getsize(paths[0]) > 1000
