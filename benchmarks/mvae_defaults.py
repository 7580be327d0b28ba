"""How MVAE's default annealing and stopping rule were chosen: validation only, on seeds the
benchmarks do not report, on every real data set at hand (not ml-100k alone).

Each (candidate, data set, seed) trains once in a fresh process with early stopping off for
``--extra`` epochs past the annealing horizon, validating every epoch, and records the whole
validation curve (NDCG@20 on RecBole's default split).  A stopping rule ("patience P counted
after beta reaches its cap", or "patience P from the start") is then replayed on the curve:
the score the rule would have kept is the best validation score up to the epoch it stops at.
RecBole's MultiVAE runs with its own defaults (its stopping rule for real) as the reference.
Test metrics are never read here.

Usage:
    python benchmarks/mvae_defaults.py --datasets ml-100k lastfm-2k --data_path ../shared/data --seeds 7 8
    python benchmarks/mvae_defaults.py --render            # the table from the committed CSV
    python benchmarks/mvae_defaults.py --merge /tmp/a /tmp/b --note "one thread each"   # rows of runs made
                                                           # side by side with --out, into the committed table
Writes benchmarks/results/mvae_defaults.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_io import read_rows, recorded_command, run_subprocess, write_csv  # noqa: E402

#: protocol name -> (file, what the table says about it); the files hold no data-set specific keys
PROTOCOLS = {
    "default": (os.path.join(ROOT, "configs", "protocols", "ml100k_default.yaml"),
                "RecBole's default split (random 8:1:1 per user), full ranking"),
    "heldout": (os.path.join(ROOT, "configs", "protocols", "ml100k_heldout_users.yaml"),
                "held-out users (Liang et al.'s strong generalisation: 10 % of the users validate, never trained on, "
                "scored from a random 80 % of their interactions), full ranking"),
}
#: candidate -> MVAE settings (the rest at MVAE's defaults); ``MultiVAE`` is RecBole's model as it ships.
#: A candidate that leaves a setting out ran with that setting's default of its day; the ``-z200`` rows are
#: the default-split ones run while the default z had the paper's 200 dimensions (renamed from the plain names)
CANDIDATES = {
    "cap0.2-e150-z200": {"anneal_cap": 0.2, "anneal_epochs": 150, "latent_dimension": 200},
    "cap0.5-e100-z200": {"anneal_cap": 0.5, "anneal_epochs": 100, "latent_dimension": 200},
    "cap1.0-e100-z200": {"anneal_cap": 1.0, "anneal_epochs": 100, "latent_dimension": 200},
    "cap1.0-e200-z200": {"anneal_cap": 1.0, "anneal_epochs": 200, "latent_dimension": 200},
    "cap0.2-e50": {"anneal_cap": 0.2, "anneal_epochs": 50},
    "cap0.2-e150": {"anneal_cap": 0.2, "anneal_epochs": 150},
    "cap0.5-e100": {"anneal_cap": 0.5, "anneal_epochs": 100},
    "cap1.0-e200": {"anneal_cap": 1.0, "anneal_epochs": 200},
    "cap1.0-e100": {"anneal_cap": 1.0, "anneal_epochs": 100},
    "cap1.0-e100-z64": {"anneal_cap": 1.0, "anneal_epochs": 100, "latent_dimension": 64},
    "paper-steps": {"anneal_cap": 0.2, "total_anneal_steps": 200000},
    "cap1.0-e100-b100": {"anneal_cap": 1.0, "anneal_epochs": 100, "train_batch_size": 100},
    "cap1.0-e400": {"anneal_cap": 1.0, "anneal_epochs": 400},
    # what RecBole's MultiVAE does in effect on these data sizes (beta near 0, one big minibatch an epoch)
    "cap0-e100": {"anneal_cap": 0.0, "anneal_epochs": 100},
    "cap1.0-e100-b2048": {"anneal_cap": 1.0, "anneal_epochs": 100, "train_batch_size": 2048},
    # the default horizon with fewer, larger minibatches (the ML-1M-shape diagnosis's lead)
    "cap1.0-e200-b1000": {"anneal_cap": 1.0, "anneal_epochs": 200, "train_batch_size": 1000},
    "cap1.0-e200-b2048": {"anneal_cap": 1.0, "anneal_epochs": 200, "train_batch_size": 2048},
    # smaller Adam steps at the default horizon and batch (the same lead: the ML-1M shape overfits by pass 26)
    "cap1.0-e200-lr5e-4": {"anneal_cap": 1.0, "anneal_epochs": 200, "learning_rate": 5e-4},
    "cap1.0-e200-lr3e-4": {"anneal_cap": 1.0, "anneal_epochs": 200, "learning_rate": 3e-4},
    # diagnosis, not an MVAE option: RecBole's MultiVAE's sampling (noise scaled by 0.01, beta near 0)
    "noise0.01-cap0": {"anneal_cap": 0.0, "anneal_epochs": 100, "_noise_scale": 0.01},
    "noise0.01-cap0-b2048": {"anneal_cap": 0.0, "anneal_epochs": 100, "_noise_scale": 0.01, "train_batch_size": 2048},
    # the converse: RecBole's MultiVAE with the paper's unit noise, beside MVAE with beta 0 at its batch
    "cap0-b2048": {"anneal_cap": 0.0, "anneal_epochs": 100, "train_batch_size": 2048},
    "MultiVAE-noise1": {"_multivae_noise": 1.0},
    # a probe, not an MVAE option yet: after 10 validations without improvement, go back to the best
    # epoch's weights and Adam state and halve the step size (3 times at most); beta keeps its clock
    "cap1.0-e200-plateau-lr": {"anneal_cap": 1.0, "anneal_epochs": 200, "_plateau_lr": (10, 0.5, 3)},
    # the same where anneal_patience 40 cuts the wait for beta's cap (51 validations without improvement):
    # what anneal_restarts 3 does in training (it restarts one validation sooner, at the 40th refused request)
    "cap1.0-e200-cut-restart": {"anneal_cap": 1.0, "anneal_epochs": 200, "_plateau_lr": (51, 0.5, 3)},
    # a probe for the next change: the same, and from beta's cap on a restart also where RecBole's rule
    # (stopping_step 10) would stop, while restarts are left
    "cap1.0-e200-restart-after-cap": {"anneal_cap": 1.0, "anneal_epochs": 200, "_plateau_lr": (51, 0.5, 3, 11)},
}
RULES = [("after-anneal", 10), ("after-anneal", 20), ("from-start", 10), ("from-start", 30),
         ("after-anneal-cut50", 10)]
#: ``after-anneal-cutN``: ``after-anneal`` whose wait for beta's cap ends after N validations without improvement
CUT = "after-anneal-cut"


def run_one(candidate: str, dataset: str, seed: int, data_path: str | None, extra: int, protocol: str) -> dict:
    from recbole_ext.config import make_config
    from timed_run import timed_run

    overrides = {"seed": seed, "state": "WARNING"}
    if data_path:
        overrides["data_path"] = data_path
    if candidate == "MultiVAE" or "_multivae_noise" in CANDIDATES.get(candidate, {}):
        if candidate != "MultiVAE":
            _multivae_noise(CANDIDATES[candidate]["_multivae_noise"])
        config = make_config("MultiVAE", dataset, [PROTOCOLS[protocol][0]], overrides)
    else:
        settings = dict(CANDIDATES[candidate])
        if "_noise_scale" in settings:
            _scale_noise(settings.pop("_noise_scale"))
        if "_plateau_lr" in settings:
            _plateau_lr(*settings.pop("_plateau_lr"))
        if "anneal_epochs" not in settings:          # MVAE's default horizon, whatever it is today
            from lightning_genrec.models.mvae import MVAE
            settings["anneal_epochs"] = next(h.default for h in MVAE.HYPERPARAMETERS if h.name == "anneal_epochs")
        horizon = settings["anneal_epochs"]
        overrides.update(settings, epochs=int(horizon) + extra, stopping_step=10_000, stop_after_anneal=False)
        config = make_config("MVAE", dataset, [PROTOCOLS[protocol][0]], overrides)
    out = timed_run(config, curve=True)
    out["valid_metric"] = config["valid_metric"]
    keep = ("fit_s", "s_per_epoch", "epochs", "best_epoch", "best_valid", "peak_rss_mb", "valid_metric", "valid_curve")
    return {"candidate": candidate, "dataset": dataset, "seed": seed, "protocol": protocol,
            **{k: out[k] for k in keep if k in out}}


def _scale_noise(scale: float) -> None:
    """In this process only: MVAE draws z = mu + scale * eps * exp(logvar / 2) while training, as
    RecBole's MultiVAE does with 0.01 (a diagnosis of what makes it differ; the paper's is 1)."""
    import torch

    from lightning_genrec.models import mvae

    def randn_like(t, *args, **kwargs):
        return scale * torch.randn_like(t, *args, **kwargs)

    # the model's only normal draw is z's noise; its input dropout draws with torch.rand
    mvae.torch = type("ScaledNoiseTorch", (), {"__getattr__": lambda _, name: getattr(torch, name),
                                               "randn_like": staticmethod(randn_like)})()


def _plateau_lr(after: int, factor: float, times: int, after_cap: int | None = None) -> None:
    """In this process only: after ``after`` validations without improvement (``after_cap`` from
    the anneal's end on, when given) the run goes back to the best epoch's weights and Adam state
    with the step size times ``factor``, at most ``times`` times (a probe of a data-adaptive step
    size)."""
    import copy

    from recbole_ext.trainer import _RecBoleLog

    original = _RecBoleLog.on_validation_end

    def on_validation_end(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.sanity_checking:
            return
        optimizer = trainer.optimizers[0]
        if self.best_epoch == trainer.current_epoch:
            self._probe_best_optim = copy.deepcopy(optimizer.state_dict())
        left = getattr(self, "_probe_left", times)
        wait = after
        if after_cap is not None and trainer.current_epoch + 1 >= pl_module.hparams.anneal_epochs:
            wait = after_cap
        if self.cur_step >= wait and left > 0 and self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
            optimizer.load_state_dict(copy.deepcopy(self._probe_best_optim))   # it keeps the tensors given
            for group in optimizer.param_groups:
                group["lr"] = pl_module.hparams.learning_rate * factor ** (times - left + 1)
            self._probe_left, self.cur_step = left - 1, 0

    _RecBoleLog.on_validation_end = on_validation_end


def _multivae_noise(scale: float) -> None:
    """In this process only: RecBole's MultiVAE draws z = mu + scale * eps * exp(logvar / 2) while
    training (RecBole's own scale is 0.01; the paper's 1)."""
    import torch
    from recbole.model.general_recommender.multivae import MultiVAE

    def reparameterize(self, mu, logvar):
        if self.training:
            return mu + scale * torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return mu

    MultiVAE.reparameterize = reparameterize


def replay(curve: list[float], rule: str, patience: int, start: int) -> tuple[float, int]:
    """(best validation score kept, epochs trained) when ``rule`` stops a run with ``curve``
    (RecBole's rule: stop after ``patience`` + 1 validations without improvement, ties improve);
    ``after-anneal`` cannot stop before epoch ``start``; ``after-anneal-cutN`` can, once ``N`` + 1
    validations in a row have not improved."""
    cut = int(rule[len(CUT):]) if rule.startswith(CUT) else None
    best, best_at, bad = -1.0, -1, 0
    for epoch, score in enumerate(curve):
        if score >= best:
            best, best_at, bad = score, epoch, 0
        else:
            bad += 1
        if bad > patience and (rule == "from-start" or epoch + 1 >= start or (cut is not None and bad > cut)):
            return best, epoch + 1
    return best, len(curve)


def restarts_as_trained(curve: list[float], start: int, before: int, times: int, stopping_step: int = 10
                        ) -> tuple[float, int]:
    """(best validation score kept, epochs trained) of a ``-restart-after-cap`` probe curve (its restarts
    are in it) as ``restart_after_cap`` trains: RecBole's count of validations without improvement; a
    restart where the count reaches ``before`` before beta's cap (epoch ``start``) or exceeds
    ``stopping_step`` after it (where RecBole's rule would stop), the count then starting again;
    ``times`` restarts, then the stop at the next such point."""
    best, bad, left = -1.0, 0, times
    for epoch, score in enumerate(curve):
        if score >= best:
            best, bad = score, 0
        else:
            bad += 1
        if (bad > stopping_step) if epoch + 1 >= start else (bad >= before):
            if not left:
                return best, epoch + 1
            left, bad = left - 1, 0
    return best, len(curve)


def render(rows: list[dict], out: str, command: str) -> None:
    first = rows[0] if rows else {}
    protocol = first.get("protocol") or "default"          # rows from before --protocol: the default split
    metric = first.get("valid_metric") or "NDCG@20"
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    reference = {(r["dataset"], r["seed"]): r["best_valid"] for r in rows if r["candidate"] == "MultiVAE"}
    lines = ["# MVAE's annealing and stopping candidates against RecBole's MultiVAE (validation only)", "",
             f"Command: {command}", "",
             f"{PROTOCOLS[protocol][1]}, validation {metric}. Seeds here are "
             "not the seeds the benchmarks report. MVAE curves are trained with early stopping off and every rule is "
             "replayed on them; `after-anneal P`: patience P counted as RecBole does, but no stop before beta "
             "reaches its cap; `after-anneal-cut50 P`: the same, but a run whose validation has not improved for "
             "51 validations in a row ends before the cap; `from-start P`: RecBole's rule alone. MultiVAE: "
             "RecBole's defaults, run for real. The `-plateau-lr`, `-cut-restart` and `-restart-after-cap` curves "
             "contain their restarts (back to the best epoch with half the step after 10 or 51 validations without "
             "improvement, 3 at most; `-restart-after-cap` also after 11 from beta's cap on, where RecBole's rule "
             "would stop), so a rule replayed on them is approximate; for `-cut-restart` (what `anneal_restarts` "
             "does in training, restarting where the cut would stop) `after-anneal 10` is the one that matches "
             "training; `whole curve`: the best of the curve as trained, to its last epoch; `restart_after_cap` "
             "(for `-restart-after-cap`): where training with `restart_after_cap: true` stops, its 3 restarts "
             "spent (it restarts before the cap one validation sooner than the probe, at the 40th refused "
             "request, without starting RecBole's count again).", ""]
    for ds in datasets:
        lines += [f"## {ds}", "", f"| candidate | rule | valid {metric} per seed | / MultiVAE per seed | epochs per seed |",
                  "|---|---|---|---|---|"]
        seeds = sorted({r["seed"] for r in rows if r["dataset"] == ds})
        ref = [reference.get((ds, s)) for s in seeds]
        multivae_epochs = {r["seed"]: r["epochs"] for r in rows if r["dataset"] == ds and r["candidate"] == "MultiVAE"}
        lines.append(f"| MultiVAE (RecBole defaults) | its own | {', '.join('%.4f' % v if v else '-' for v in ref)} | "
                     f"1 | {', '.join(str(multivae_epochs.get(s, '-')) for s in seeds)} |")
        for cand in [c for c in CANDIDATES if any(r["candidate"] == c and r["dataset"] == ds for r in rows)]:
            runs = {r["seed"]: r for r in rows if r["candidate"] == cand and r["dataset"] == ds}
            horizon = CANDIDATES[cand].get("anneal_epochs", 0)
            rules = list(RULES)
            plateau = CANDIDATES[cand].get("_plateau_lr", ())
            if plateau:                                 # its restarts are in the curve: its best as trained too
                rules.append(("whole curve", ""))
            if len(plateau) == 4:                       # restarts after the cap too: what restart_after_cap keeps
                rules.append(("restart_after_cap", ""))

            def kept_by(rule, patience, curve):
                if rule == "whole curve":
                    return whole_curve(curve)
                if rule == "restart_after_cap":
                    return restarts_as_trained(curve, int(horizon), plateau[0], plateau[2])
                return replay(curve, rule, patience, int(horizon))

            for rule, patience in rules:
                kept = {s: kept_by(rule, patience, json.loads(runs[s]["valid_curve"])) for s in seeds if s in runs}
                scores = ", ".join("%.4f" % kept[s][0] if s in kept else "-" for s in seeds)
                ratios = ", ".join("%.3fx" % (kept[s][0] / reference[(ds, s)])
                                   if s in kept and reference.get((ds, s)) else "-" for s in seeds)
                epochs = ", ".join(str(kept[s][1]) if s in kept else "-" for s in seeds)
                lines.append(f"| {cand} | {f'{rule} {patience}'.strip()} | {scores} | {ratios} | {epochs} |")
        lines.append("")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))


def whole_curve(curve: list[float]) -> tuple[float, int]:
    """(best validation score, epochs) of a curve trained to its end (no rule replayed)."""
    return max(curve), len(curve)


def merge_rows(rows: list[dict], new: list[dict]) -> list[dict]:
    """``rows`` with ``new`` added; a new row replaces one of the same (candidate, data set, seed, protocol)."""
    def key(r):
        return r["candidate"], r["dataset"], str(r["seed"]), r.get("protocol", "default")

    merged = {key(r): r for r in rows}
    merged.update((key(r), r) for r in new)
    return list(merged.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=["MultiVAE", *CANDIDATES])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--data_path", default=None, help="folder holding the data sets (not needed for ml-100k)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8])
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default",
                        help="the split validation is read on (default: RecBole's; heldout: held-out users)")
    parser.add_argument("--extra", type=int, default=60, help="epochs trained past the annealing horizon")
    parser.add_argument("--out", default=None, help="results stem (default: results/mvae_defaults[_heldout])")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--merge", nargs="+", metavar="STEM",
                        help="rows (and Command lines) of other runs' --out stems into --out's table")
    parser.add_argument("--note", default="", help="with --merge: a note put before the merged runs' commands")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is None:
        stem = "mvae_defaults" + ("" if args.protocol == "default" else "_" + args.protocol)
        args.out = os.path.join(HERE, "results", stem)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.data_path, args.extra,
                                             args.protocol)))
        return
    old = read_rows(args.out + ".csv") if (args.append or args.render or args.merge) and os.path.exists(args.out + ".csv") else []
    command = f"`python benchmarks/mvae_defaults.py {' '.join(sys.argv[1:])}`"
    if args.merge:
        merged = merge_rows(old, [r for stem in args.merge for r in read_rows(stem + ".csv")])
        commands = " and ".join(recorded_command(stem) or "(unknown)" for stem in args.merge)
        note = f"({args.note}) " if args.note else ""
        write_csv(merged, args.out + ".csv")
        render(merged, args.out, f"{recorded_command(args.out) or '(unknown)'} then {note}{commands}")
        return
    if args.render:
        command = recorded_command(args.out) or "(unknown)"
    elif args.append and old:
        command = f"{recorded_command(args.out) or '(unknown)'} then {command}"
    rows = []
    if not args.render:
        for dataset in args.datasets:
            for seed in args.seeds:
                for cand in args.candidates:
                    extra = ["--extra", str(args.extra), "--protocol", args.protocol]
                    extra += ["--data_path", args.data_path] if args.data_path else []
                    row = run_subprocess(__file__, ["--one", cand, dataset, str(seed), *extra])
                    row["valid_curve"] = json.dumps(row.get("valid_curve", []))
                    rows.append(row)
                    print(f"{dataset} seed {seed} {cand}: best valid {row['best_valid']:.4f} at epoch "
                          f"{row['best_epoch']} of {row['epochs']} ({row['fit_s']:.0f} s)", flush=True)
                    merged = merge_rows(old, rows)
                    write_csv(merged, args.out + ".csv")
                    render(merged, args.out, command)
    else:
        render(old, args.out, command or "")


if __name__ == "__main__":
    main()
